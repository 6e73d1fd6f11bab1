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
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::context::{TransformContext, request_messages};
use crate::engine::Inner;
use crate::responders::{self, HISTORY_LIMIT};

/// Answers the next message that awaits an answer (see [`crate::responders`]): one turn per
/// responding agent, in order, each seeing the whole history (prompts that arrived meanwhile
/// are queued outside it until the turn boundary). Whatever goes wrong inside a turn ends it
/// with a stop reason; only a failure to load the conversation is an error. Returns the newest
/// seq of history now answered, or `None` when nothing awaited an answer.
pub(crate) async fn run(
    inner: &Inner,
    conversation: ConversationId,
    answered_through: Option<u64>,
    force: bool,
    cancel: CancellationToken,
) -> Result<Option<u64>, StoreError> {
    let Some(plan) = responders::plan(inner, conversation, answered_through, force).await? else {
        return Ok(None);
    };
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
                let started = TurnEvent::AgentStart { turn_id: turn.turn_id, agent: turn.setup.agent.id };
                let stop = match turn.emit(started).await {
                    Ok(()) => turn.requests(1).await,
                    Err(error) => store_failure(&error),
                };
                turn.end(stop).await;
            },
            span,
        )
        .await;
    }
    Ok(Some(answered))
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
    };
    let stop = if resumable {
        let offered = turn.offered_tools();
        match turn.run_tools(pending, &offered).await {
            Some(stop) => stop,
            None => {
                if request_open {
                    turn.emit(TurnEvent::TurnEnd { turn_id, request }).await?;
                }
                turn.requests(request + 1).await
            }
        }
    } else {
        let reason = "interrupted: the server stopped before this call finished; it was not run again because it \
                      may have side effects";
        if let Some(stop) = turn.refuse_calls(pending, reason).await {
            stop
        } else {
            if request_open {
                turn.emit(TurnEvent::TurnEnd { turn_id, request }).await?;
            }
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

struct Turn<'a> {
    inner: &'a Inner,
    conversation: ConversationId,
    turn_id: TurnId,
    setup: Setup,
    cancel: CancellationToken,
    usage: Usage,
    /// The LLM request under way, for its span.
    request: u32,
}

impl Turn<'_> {
    async fn emit(&self, event: TurnEvent) -> Result<(), StoreError> {
        self.inner.emit(self.conversation, event).await.map(|_| ())
    }

    /// Records `agent_end`.
    async fn end(self, stop: StopReason) {
        crate::telemetry::turn_ended(&stop);
        let (conversation, turn_id) = (self.conversation, self.turn_id);
        if let Err(error) = self.emit(TurnEvent::AgentEnd { turn_id, stop, usage: self.usage }).await {
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
        let Some(provider) = self.inner.providers.get(&spec.provider).map(Arc::clone) else {
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
            };
            if let Some(stop) = self.budget_exceeded(&llm_request) {
                return stop;
            }
            if let Err(error) = self.emit(TurnEvent::TurnStart { turn_id: self.turn_id, request }).await {
                return store_failure(&error);
            }
            self.request = request;
            let (message, finish) = match self.stream_reply(provider.as_ref(), llm_request).await {
                Reply::Complete { message, finish } => (message, finish),
                Reply::Stopped(stop) => {
                    // Keep events nested: this request's turn_start gets its turn_end.
                    return match self.emit(TurnEvent::TurnEnd { turn_id: self.turn_id, request }).await {
                        Ok(()) => stop,
                        Err(error) => store_failure(&error),
                    };
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
                    self.refuse_calls(calls, "not executed: the reply was cut off before the call was complete").await
                }
                None => {
                    let limit = options.max_tool_calls.map_or(usize::MAX, |n| n as usize);
                    let extra = calls.split_off(limit.min(calls.len()));
                    let reason = format!(
                        "not executed: limit of {limit} tool calls per reply (max_tool_calls); call fewer tools at once"
                    );
                    let run = self.run_tools(calls, &offered).await;
                    let refused = self.refuse_calls(extra, &reason).await;
                    run.or(refused)
                }
            };
            if let Err(error) = self.emit(TurnEvent::TurnEnd { turn_id: self.turn_id, request }).await {
                return store_failure(&error);
            }
            if let Some(stop) = tool_stop.or(stop) {
                return stop;
            }
        }
        StopReason::MaxTurnRequests
    }

    /// Streams one reply, publishing deltas, and stores it.
    async fn stream_reply(&mut self, provider: &dyn LlmProvider, request: LlmRequest) -> Reply {
        let message_id = colloquy_core_model::MessageId::new();
        let start = TurnEvent::MessageStart { turn_id: self.turn_id, message_id, role: MessageRole::Assistant };
        if let Err(error) = self.emit(start).await {
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
        loop {
            let item = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    interrupted = Some(StopReason::Cancelled);
                    break;
                }
                item = tracing::Instrument::instrument(stream.next(), span.clone()) => item,
            };
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
                ProviderEvent::Usage(_) | ProviderEvent::Finish(_) => continue,
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
        if interrupted.is_some() {
            message.metadata = serde_json::json!({ "incomplete": true });
        }
        let stored =
            self.inner.emit_message(self.conversation, message, MessageEvent::End { turn_id: self.turn_id }).await;
        match (stored, interrupted) {
            (Err(error), _) => Reply::Stopped(store_failure(&error)),
            (Ok(_), Some(stop)) => Reply::Stopped(stop),
            (Ok(message), None) => Reply::Complete { message: Box::new(message), finish: response.finish },
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
        while let Some(event) = execution.next().await {
            let outcome = match event {
                ExecutionEvent::Started { index } => {
                    started[index] = Some(Instant::now());
                    let call = &calls[index];
                    self.emit(TurnEvent::ToolExecutionStart {
                        turn_id: self.turn_id,
                        tool_call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    })
                    .await
                }
                ExecutionEvent::Finished { result, index } => {
                    let took = started.get(index).copied().flatten().map(|at| at.elapsed()).unwrap_or_default();
                    crate::telemetry::tool_finished(&result.name, result.is_error, took);
                    self.store_result(result.id, result.name, result.content, result.is_error).await
                }
                // Live only: a client that reconnects sees the finished call instead.
                ExecutionEvent::Progress { index, progress } => {
                    self.tool_update(&calls[index].id, progress);
                    Ok(())
                }
                ExecutionEvent::ApprovalRequested { index } => {
                    let call = &calls[index];
                    self.emit(TurnEvent::ApprovalRequested {
                        turn_id: self.turn_id,
                        tool_call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    })
                    .await
                }
                ExecutionEvent::CircuitChanged { index, tool, state } => {
                    crate::telemetry::circuit(&tool, state);
                    self.tool_update(&calls[index].id, serde_json::json!({ "circuit": state, "tool": tool }));
                    Ok(())
                }
            };
            if let Err(error) = outcome {
                failure.get_or_insert(store_failure(&error));
            }
        }
        failure.or_else(|| self.cancel.is_cancelled().then_some(StopReason::Cancelled))
    }

    /// Publishes a `tool_execution_update` (ephemeral).
    fn tool_update(&self, tool_call_id: &ToolCallId, progress: serde_json::Value) {
        let event =
            TurnEvent::ToolExecutionUpdate { turn_id: self.turn_id, tool_call_id: tool_call_id.clone(), progress };
        self.inner.emit_ephemeral(self.conversation, event);
    }

    /// Answers calls that will not run, so each still has its one result.
    async fn refuse_calls(&mut self, calls: Vec<ToolCallRequest>, reason: &str) -> Option<StopReason> {
        for call in calls {
            if let Err(error) = self.store_result(call.id, call.name, reason.to_owned(), true).await {
                return Some(store_failure(&error));
            }
        }
        None
    }

    async fn store_result(
        &mut self,
        id: ToolCallId,
        name: String,
        content: String,
        is_error: bool,
    ) -> Result<(), StoreError> {
        let part = ContentPart::ToolResult { tool_call_id: id.clone(), name: name.clone(), content, is_error };
        let mut message = NewMessage::new(MessageRole::Tool, vec![part]);
        message.sender = Some(self.setup.agent.id);
        message.turn_id = Some(self.turn_id);
        let event =
            MessageEvent::ToolExecutionEnd { turn_id: self.turn_id, tool_call_id: id, tool_name: name, is_error };
        let stored = self.inner.emit_message(self.conversation, message, event).await?;
        self.setup.history.push(stored);
        Ok(())
    }
}
