//! One prompt turn: from `agent_start` to `agent_end`; and closing or resuming a turn that a
//! crash left open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colloquy_core_model::{
    AgentSpec, BudgetLimit, ContentPart, Conversation, ConversationId, Message, MessageDelta, MessageRole, NewMessage,
    Participant, ParticipantId, StopReason, ToolCallId, ToolChoice, TurnError, TurnErrorKind, TurnEvent, TurnId, Usage,
};
use colloquy_llm_providers::{
    FinishReason, LlmProvider, LlmRequest, ProviderError, ProviderEvent, ResponseAccumulator, estimate_request_tokens,
};
use colloquy_store::{MessageEvent, StoreError};
use colloquy_tools::{ExecutionEvent, ExecutorConfig, ToolCallRequest, ToolContext};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::context::{PROVIDER_STATE, TransformContext, provider_state, request_messages};
use crate::inner::Inner;
use crate::recorder::Recorder;
use crate::responders;
use crate::state::{HISTORY_LIMIT, Loaded};

/// Answers the next message that awaits an answer (see [`crate::responders`]): one turn per
/// responding agent, in order, each seeing the whole history (prompts that arrived meanwhile
/// are queued outside it until the turn boundary). Whatever goes wrong inside a turn ends it
/// with a stop reason. `loaded` takes in every event the turns write. Returns the newest seq of
/// history now answered, or `None` when nothing awaited an answer.
pub(crate) async fn run(
    inner: &Inner,
    loaded: &mut Loaded,
    answered_through: Option<u64>,
    force: bool,
    cancel: CancellationToken,
) -> Option<u64> {
    let conversation = loaded.conversation.id;
    let plan = responders::plan(&inner.providers, loaded, answered_through, force).await?;
    let answered = plan.history.last().map_or(plan.trigger, |m| m.seq);
    for (agent, spec) in plan.responders {
        let setup = Setup {
            conversation: plan.conversation.clone(),
            agent,
            spec,
            history: plan.history.clone(),
            names: plan.names.clone(),
        };
        let mut turn = Turn {
            inner,
            conversation,
            turn_id: TurnId::new(),
            setup,
            cancel: cancel.clone(),
            usage: Usage::default(),
            request: 0,
            recorder: Recorder::new(conversation),
            loaded: Some(&mut *loaded),
        };
        let span = tracing::info_span!(
            "turn",
            conversation_id = %conversation,
            turn_id = %turn.turn_id,
            gen_ai.agent.name = %turn.setup.agent.display_name,
            gen_ai.agent.id = %turn.setup.agent.id,
        );
        tracing::Instrument::instrument(
            async move {
                // Written with the first request's `turn_start` and `message_start`.
                turn.push(TurnEvent::AgentStart { turn_id: turn.turn_id, agent: turn.setup.agent.id });
                let stop = turn.requests(1).await;
                turn.end(stop).await;
            },
            span,
        )
        .await;
    }
    Some(answered)
}

struct Setup {
    conversation: Conversation,
    agent: Participant,
    spec: AgentSpec,
    /// What the agent is answering: the stored history, then the turn's own messages.
    history: Vec<Message>,
    /// Display names, to prefix other speakers' messages (not in `user_agent` conversations).
    names: Option<Arc<HashMap<ParticipantId, String>>>,
}

/// Closes or resumes the turn a crash left open at `start_seq` (its `agent_start`). A turn
/// whose unanswered tool calls are all replay-safe (or that has none) is resumed: those calls
/// run again and the turn goes on. Otherwise each unanswered call gets an `interrupted` result
/// (it may have had side effects, so it is never run twice silently) and the turn ends with
/// `error: interrupted`. Either way the history is valid for the next request.
/// With `allow_resume` false (a fork taken mid-turn) the turn is always closed.
pub(crate) async fn recover(
    inner: &Inner,
    conversation: ConversationId,
    start_seq: u64,
    allow_resume: bool,
) -> Result<(), StoreError> {
    let log = inner.store.events_after(conversation, start_seq.saturating_sub(1), HISTORY_LIMIT).await?;
    let Some(TurnEvent::AgentStart { turn_id, agent: agent_id }) = log.first().map(|e| e.event.clone()) else {
        return Ok(());
    };
    // Ended meanwhile (in a cluster, the node that ran it finished it): nothing to recover.
    if log.iter().any(|e| matches!(e.event, TurnEvent::AgentEnd { turn_id: ended, .. } if ended == turn_id)) {
        return Ok(());
    }
    let (mut request, mut request_open) = (0, false);
    for envelope in &log {
        match envelope.event {
            TurnEvent::TurnStart { request: r, .. } => (request, request_open) = (r, true),
            TurnEvent::TurnEnd { .. } => request_open = false,
            _ => {}
        }
    }
    let record = inner.store.conversation(conversation).await?;
    let participants = inner.store.participants(conversation).await?;
    let names = responders::names(record.kind, &participants);
    let Some(agent) = participants.into_iter().find(|p| p.id == agent_id) else { return Ok(()) };
    let spec = agent.agent.clone().unwrap_or(AgentSpec {
        provider: String::new(),
        model: String::new(),
        system_prompt: None,
        tools: Vec::new(),
    });
    let after = record.last_seq.saturating_sub(HISTORY_LIMIT);
    let history = inner.store.messages_after(conversation, after, HISTORY_LIMIT).await?;
    let pending = unanswered_calls(&history, turn_id);
    let resumable = allow_resume
        && !spec.provider.is_empty()
        && pending.iter().all(|call| inner.tools.registry().is_replay_safe(&call.name));
    tracing::warn!(%conversation, %turn_id, pending = pending.len(), resumable, "recovering a turn left open by a crash");
    let setup = Setup { conversation: record, agent, spec, history, names };
    let mut turn = Turn {
        inner,
        conversation,
        turn_id,
        setup,
        cancel: CancellationToken::new(),
        usage: Usage::default(),
        request: 0,
        recorder: Recorder::new(conversation),
        loaded: None,
    };
    let stop = if resumable {
        let offered = turn.offered_tools();
        match turn.run_tools(pending, &offered).await {
            Some(stop) => stop,
            None => {
                if request_open {
                    turn.push(TurnEvent::TurnEnd { turn_id, request });
                }
                turn.requests(request + 1).await
            }
        }
    } else {
        let reason = "interrupted: the server stopped before this call finished; it was not run again because it \
                      may have side effects";
        turn.refuse_calls(pending, reason);
        if request_open {
            turn.push(TurnEvent::TurnEnd { turn_id, request });
        }
        {
            StopReason::Error {
                error: TurnError {
                    kind: TurnErrorKind::Interrupted,
                    message: "the server stopped during this turn; its unfinished tool calls were closed, send the \
                              prompt again to continue"
                        .to_owned(),
                },
            }
        }
    };
    turn.end(stop).await;
    Ok(())
}

/// The turn's tool calls that have no result in `history`, in call order.
fn unanswered_calls(history: &[Message], turn_id: TurnId) -> Vec<ToolCallRequest> {
    let answered: Vec<&ToolCallId> = history
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|part| match part {
            ContentPart::ToolResult { tool_call_id, .. } => Some(tool_call_id),
            _ => None,
        })
        .collect();
    history
        .iter()
        .filter(|m| m.turn_id == Some(turn_id) && m.role == MessageRole::Assistant)
        .flat_map(|m| m.tool_calls())
        .filter(|(id, _, _)| !answered.contains(id))
        .map(|(id, name, arguments)| ToolCallRequest {
            id: id.clone(),
            name: name.to_owned(),
            arguments: arguments.clone(),
        })
        .collect()
}

fn store_failure(error: &StoreError) -> StopReason {
    StopReason::Error {
        error: TurnError { kind: TurnErrorKind::Store, message: format!("the conversation store failed: {error}") },
    }
}

fn provider_failure(error: &ProviderError) -> StopReason {
    StopReason::Error { error: TurnError { kind: TurnErrorKind::Provider, message: error.to_string() } }
}

/// What one LLM request ended with.
enum Reply {
    /// The reply is complete and stored.
    Complete { message: Box<Message>, finish: Option<FinishReason> },
    /// The turn must stop (cancelled or failed); any partial text is stored.
    Stopped(StopReason),
}

struct Turn<'a, 'l> {
    inner: &'a Inner,
    conversation: ConversationId,
    turn_id: TurnId,
    setup: Setup,
    cancel: CancellationToken,
    usage: Usage,
    /// The LLM request under way, for its span.
    request: u32,
    /// The step's events, written together.
    recorder: Recorder,
    /// The runner's state of the conversation, kept current with what the turn writes.
    loaded: Option<&'l mut Loaded>,
}

impl Turn<'_, '_> {
    /// Adds an event to the step under way (written at the next [`Turn::flush`]).
    fn push(&mut self, event: TurnEvent) {
        self.recorder.push(event);
    }

    /// Writes the step's events and publishes them; the turn's own history takes the stored
    /// messages (with their seqs) in place of the copies it went on with.
    async fn flush(&mut self, sync: bool) -> Result<(), StoreError> {
        for envelope in self.recorder.flush(self.inner, sync).await? {
            if let Some(loaded) = self.loaded.as_deref_mut() {
                loaded.apply(&envelope);
            }
            let Some(message) = envelope.event.recorded_message() else { continue };
            if let Some(copy) = self.setup.history.iter_mut().rev().find(|m| m.id == message.id) {
                copy.clone_from(message);
            }
        }
        Ok(())
    }

    /// Records `agent_end` with whatever the last step left, in one commit that is on disk before
    /// anyone is told the turn ended.
    async fn end(mut self, stop: StopReason) {
        crate::telemetry::turn_ended(&stop);
        let (conversation, turn_id) = (self.conversation, self.turn_id);
        let usage = self.usage;
        self.push(TurnEvent::AgentEnd { turn_id, stop, usage });
        if let Err(error) = self.flush(true).await {
            tracing::error!(%conversation, %turn_id, %error, "could not record the end of a turn");
        }
    }

    /// The tools this request offers: none for `tool_choice: none`, the one named by
    /// `{function: name}` (if the agent has it), else all of the agent's tools.
    fn offered_tools(&self) -> Vec<String> {
        match &self.setup.conversation.options.tool_choice {
            ToolChoice::None => Vec::new(),
            ToolChoice::Function(name) => self.setup.spec.tools.iter().filter(|t| *t == name).cloned().collect(),
            ToolChoice::Auto | ToolChoice::Required => self.setup.spec.tools.clone(),
        }
    }

    /// The budget the next request would exceed, if any. Checked before every request, so a
    /// limit is overshot by at most the one request that crossed it.
    fn budget_exceeded(&self, request: &LlmRequest) -> Option<StopReason> {
        let options = &self.setup.conversation.options;
        if let Some(limit) = options.cost_limit {
            let spent = self.setup.conversation.totals.cost_usd + self.usage.cost_usd.unwrap_or(0.0);
            if spent >= limit {
                return Some(StopReason::BudgetExceeded { limit: BudgetLimit::Cost });
            }
        }
        // An empty window means not even the newest prompt fits.
        if let Some(limit) = options.context_limit
            && (request.messages.is_empty() || estimate_request_tokens(request) > u64::from(limit))
        {
            return Some(StopReason::BudgetExceeded { limit: BudgetLimit::Context });
        }
        None
    }

    /// LLM requests and tool rounds from request number `first` until a stop reason.
    async fn requests(&mut self, first: u32) -> StopReason {
        let spec = self.setup.spec.clone();
        let provider = if self.setup.agent.a2a_url.is_some() {
            match self.inner.remote_agent(&self.setup.agent).await {
                Ok(provider) => Some(provider),
                Err(error) => return store_failure(&error),
            }
        } else {
            self.inner.providers.get(&spec.provider).map(Arc::clone)
        };
        let Some(provider) = provider else {
            return StopReason::Error {
                error: TurnError {
                    kind: TurnErrorKind::Provider,
                    message: format!(
                        "agent `{}` uses provider `{}`, which is not configured: add it to colloquy.toml or use one of: {}",
                        self.setup.agent.display_name,
                        spec.provider,
                        self.inner.providers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                },
            };
        };
        let options = self.setup.conversation.options.clone();
        let offered = self.offered_tools();
        for request in first.. {
            if request > options.max_turn_requests {
                return StopReason::MaxTurnRequests;
            }
            if self.cancel.is_cancelled() {
                return StopReason::Cancelled;
            }
            let model = options.model.clone().unwrap_or_else(|| spec.model.clone());
            let transform = TransformContext {
                model: &model,
                system_prompt: spec.system_prompt.as_deref(),
                context_limit: options.context_limit,
            };
            let messages = self.inner.transformer.transform(
                request_messages(&self.setup.history, self.setup.agent.id, self.setup.names.as_deref()),
                &transform,
            );
            let llm_request = LlmRequest {
                model,
                system_prompt: spec.system_prompt.clone(),
                messages,
                tools: self.inner.tools.registry().specs(&offered),
                tool_choice: options.tool_choice.clone(),
                temperature: options.temperature,
                max_tokens: options.max_tokens,
                conversation: Some(self.conversation),
                provider_state: provider_state(&self.setup.history, self.setup.agent.id),
            };
            if let Some(stop) = self.budget_exceeded(&llm_request) {
                return stop;
            }
            self.push(TurnEvent::TurnStart { turn_id: self.turn_id, request });
            self.request = request;
            let (message, finish) = match self.stream_reply(provider.as_ref(), llm_request).await {
                Reply::Complete { message, finish } => (message, finish),
                Reply::Stopped(stop) => {
                    // Keep events nested: this request's turn_start gets its turn_end.
                    self.push(TurnEvent::TurnEnd { turn_id: self.turn_id, request });
                    return stop;
                }
            };
            let mut calls: Vec<ToolCallRequest> = message
                .tool_calls()
                .map(|(id, name, arguments)| ToolCallRequest {
                    id: id.clone(),
                    name: name.to_owned(),
                    arguments: arguments.clone(),
                })
                .collect();
            self.setup.history.push(*message);
            let stop = match finish {
                Some(FinishReason::Length) => Some(StopReason::MaxTokens),
                Some(FinishReason::Refusal) => Some(StopReason::Refusal),
                _ if calls.is_empty() => Some(StopReason::EndTurn),
                _ => None,
            };
            let tool_stop = match stop {
                // A reply cut off by its token limit may hold half-written calls: answer them
                // without running them, so the history stays valid.
                Some(_) => {
                    self.refuse_calls(calls, "not executed: the reply was cut off before the call was complete");
                    None
                }
                None => {
                    let limit = options.max_tool_calls.map_or(usize::MAX, |n| n as usize);
                    let extra = calls.split_off(limit.min(calls.len()));
                    let reason = format!(
                        "not executed: limit of {limit} tool calls per reply (max_tool_calls); call fewer tools at once"
                    );
                    let run = self.run_tools(calls, &offered).await;
                    self.refuse_calls(extra, &reason);
                    run
                }
            };
            self.push(TurnEvent::TurnEnd { turn_id: self.turn_id, request });
            if let Some(stop) = tool_stop.or(stop) {
                return stop;
            }
        }
        StopReason::MaxTurnRequests
    }

    /// Streams one reply, publishing deltas, and stores it.
    async fn stream_reply(&mut self, provider: &dyn LlmProvider, request: LlmRequest) -> Reply {
        let message_id = colloquy_core_model::MessageId::new();
        // The step so far (`agent_start`, `turn_start`, tool results, `turn_end`) and
        // `message_start` are stored and published before the first delta.
        self.push(TurnEvent::MessageStart { turn_id: self.turn_id, message_id, role: MessageRole::Assistant });
        if let Err(error) = self.flush(false).await {
            return Reply::Stopped(store_failure(&error));
        }
        let (model, temperature) = (request.model.clone(), request.temperature);
        let started = Instant::now();
        let mut telemetry = crate::telemetry::LlmRequest::start(provider.name(), &model, self.request);
        let mut stream = provider.stream(request);
        let mut accumulator = ResponseAccumulator::new();
        let mut interrupted = None;
        let mut failure = None;
        let span = telemetry.span();
        let idle = Duration::from_millis(self.inner.provider_idle_ms.load(std::sync::atomic::Ordering::Relaxed));
        // One timer for the whole reply, pushed back at each event.
        let silence = tokio::time::sleep(idle);
        tokio::pin!(silence);
        loop {
            let item = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    interrupted = Some(StopReason::Cancelled);
                    break;
                }
                item = tracing::Instrument::instrument(stream.next(), span.clone()) => item,
                () = &mut silence => {
                    let message = format!(
                        "provider `{}` sent nothing for {} s in the middle of its reply, so the turn gave up on it: \
                         check that the model server (or remote agent) is up, then send the message again",
                        provider.name(),
                        idle.as_secs_f64()
                    );
                    failure = Some(message.clone());
                    interrupted =
                        Some(StopReason::Error { error: TurnError { kind: TurnErrorKind::Provider, message } });
                    break;
                }
            };
            silence.as_mut().reset(tokio::time::Instant::now() + idle);
            let event = match item {
                None => break,
                Some(Err(error)) => {
                    failure = Some(error.to_string());
                    interrupted = Some(provider_failure(&error));
                    break;
                }
                Some(Ok(event)) => event,
            };
            telemetry.event();
            accumulator.push(&event);
            let delta = match event {
                ProviderEvent::TextDelta(text) => MessageDelta::Text { text },
                ProviderEvent::ToolCallDelta { index, id, name, arguments } => {
                    MessageDelta::ToolCall { index, id: id.map(ToolCallId::from), name, arguments }
                }
                ProviderEvent::Usage(_) | ProviderEvent::Finish(_) | ProviderEvent::State(_) => continue,
            };
            self.inner.emit_ephemeral(
                self.conversation,
                TurnEvent::MessageUpdate { turn_id: self.turn_id, message_id, delta },
            );
        }
        drop(stream);
        let response = accumulator.finish();
        let finish = response.finish.as_ref().map(|f| format!("{f:?}").to_lowercase());
        telemetry.finish(&response.usage, finish.as_deref(), failure.as_deref());
        self.usage.add(&response.usage);
        let mut content = response.content;
        if interrupted.is_some() {
            // Keep what was said, but no half-made tool calls: they could never get results.
            content.retain(|part| matches!(part, ContentPart::Text { .. }));
        }
        let mut message = NewMessage::new(MessageRole::Assistant, content);
        message.id = message_id;
        message.sender = Some(self.setup.agent.id);
        message.turn_id = Some(self.turn_id);
        message.usage = Some(response.usage);
        message.model = Some(model);
        message.provider = Some(provider.name().to_owned());
        message.temperature = temperature;
        message.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        let mut metadata = serde_json::Map::new();
        if interrupted.is_some() {
            metadata.insert("incomplete".to_owned(), true.into());
        }
        if let Some(state) = response.state {
            metadata.insert(PROVIDER_STATE.to_owned(), state);
        }
        if !metadata.is_empty() {
            message.metadata = metadata.into();
        }
        // Written with the step that follows: the calls' starts, or the turn's end.
        let copy = message.clone().into_message(self.conversation, 0, chrono::Utc::now());
        self.recorder.push_message(message, MessageEvent::End { turn_id: self.turn_id });
        match interrupted {
            Some(stop) => Reply::Stopped(stop),
            None => Reply::Complete { message: Box::new(copy), finish: response.finish },
        }
    }

    /// Runs the calls and stores each result as it arrives; returns a stop reason if the turn
    /// must end (cancelled, or the store failed).
    async fn run_tools(&mut self, calls: Vec<ToolCallRequest>, offered: &[String]) -> Option<StopReason> {
        let options = &self.setup.conversation.options;
        let ctx = ToolContext::new(
            self.conversation,
            self.setup.agent.id,
            options.context.clone(),
            self.cancel.child_token(),
        );
        let config = ExecutorConfig {
            concurrency: options.tool_concurrency,
            timeout: Duration::from_millis(options.tool_timeout_ms),
            approval_timeout: Duration::from_millis(options.approval_timeout_ms),
            ..ExecutorConfig::default()
        };
        let mut execution = self.inner.tools.execute(calls.clone(), offered, ctx, config);
        let mut failure = None;
        let mut started: Vec<Option<Instant>> = vec![None; calls.len()];
        let mut live = Vec::new();
        while let Some(first) = execution.next().await {
            // Everything the executor has ready is one step: the starts of calls running in
            // parallel, their results. Progress keeps its place: what came before it is written
            // and published first.
            let mut sync = false;
            let mut next = Some(first);
            while let Some(event) = next {
                sync |= self.on_execution(event, &calls, &mut started, &mut live);
                if !live.is_empty() {
                    if let Err(error) = self.flush(std::mem::take(&mut sync)).await {
                        failure.get_or_insert(store_failure(&error));
                    }
                    for event in live.drain(..) {
                        self.inner.emit_ephemeral(self.conversation, event);
                    }
                }
                next = execution.next().now_or_never().flatten();
            }
            if let Err(error) = self.flush(sync).await {
                failure.get_or_insert(store_failure(&error));
            }
        }
        failure.or_else(|| self.cancel.is_cancelled().then_some(StopReason::Cancelled))
    }

    /// Adds what the executor reported to the step (durable events) or to `live` (ephemeral
    /// ones). Returns whether the step must be on disk before it is published: a call that is not
    /// replay-safe has started acting on the world.
    fn on_execution(
        &mut self,
        event: ExecutionEvent,
        calls: &[ToolCallRequest],
        started: &mut [Option<Instant>],
        live: &mut Vec<TurnEvent>,
    ) -> bool {
        match event {
            ExecutionEvent::Started { index } => {
                started[index] = Some(Instant::now());
                let call = &calls[index];
                self.push(TurnEvent::ToolExecutionStart {
                    turn_id: self.turn_id,
                    tool_call_id: call.id.clone(),
                    tool_name: call.name.clone(),
                    arguments: call.arguments.clone(),
                });
                return !self.inner.tools.registry().is_replay_safe(&call.name);
            }
            ExecutionEvent::Finished { result, index } => {
                let took = started.get(index).copied().flatten().map(|at| at.elapsed()).unwrap_or_default();
                crate::telemetry::tool_finished(&result.name, result.is_error, took);
                self.store_result(result.id, result.name, result.content, result.is_error);
            }
            // Live only: a client that reconnects sees the finished call instead.
            ExecutionEvent::Progress { index, progress } => live.push(self.tool_update(&calls[index].id, progress)),
            ExecutionEvent::ApprovalRequested { index } => {
                let call = &calls[index];
                self.push(TurnEvent::ApprovalRequested {
                    turn_id: self.turn_id,
                    tool_call_id: call.id.clone(),
                    tool_name: call.name.clone(),
                    arguments: call.arguments.clone(),
                });
            }
            ExecutionEvent::CircuitChanged { index, tool, state } => {
                crate::telemetry::circuit(&tool, state);
                live.push(self.tool_update(&calls[index].id, serde_json::json!({ "circuit": state, "tool": tool })));
            }
        }
        false
    }

    /// A `tool_execution_update` (ephemeral).
    fn tool_update(&self, tool_call_id: &ToolCallId, progress: serde_json::Value) -> TurnEvent {
        TurnEvent::ToolExecutionUpdate { turn_id: self.turn_id, tool_call_id: tool_call_id.clone(), progress }
    }

    /// Answers calls that will not run, so each still has its one result (written with the step).
    fn refuse_calls(&mut self, calls: Vec<ToolCallRequest>, reason: &str) {
        for call in calls {
            self.store_result(call.id, call.name, reason.to_owned(), true);
        }
    }

    /// Adds a call's result to the step, and to the turn's history for the next request.
    fn store_result(&mut self, id: ToolCallId, name: String, content: String, is_error: bool) {
        let part = ContentPart::ToolResult { tool_call_id: id.clone(), name: name.clone(), content, is_error };
        let mut message = NewMessage::new(MessageRole::Tool, vec![part]);
        message.sender = Some(self.setup.agent.id);
        message.turn_id = Some(self.turn_id);
        let event =
            MessageEvent::ToolExecutionEnd { turn_id: self.turn_id, tool_call_id: id, tool_name: name, is_error };
        self.setup.history.push(message.clone().into_message(self.conversation, 0, chrono::Utc::now()));
        self.recorder.push_message(message, event);
    }
}
