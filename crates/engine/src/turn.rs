//! One prompt turn: from `agent_start` to `agent_end`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use colloquy_core_model::{
    AgentSpec, ContentPart, Conversation, ConversationId, Message, MessageDelta, MessageRole, NewMessage, Participant,
    ParticipantKind, StopReason, ToolCallId, ToolChoice, TurnError, TurnErrorKind, TurnEvent, TurnId, Usage,
};
use colloquy_llm_providers::{
    FinishReason, LlmProvider, LlmRequest, ProviderError, ProviderEvent, ResponseAccumulator,
};
use colloquy_store::{MessageEvent, StoreError};
use colloquy_tools::{ExecutionEvent, ExecutorConfig, ToolCallRequest, ToolContext};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::context::request_messages;
use crate::engine::Inner;

/// History read for one turn; older messages are left out (a context window comes later).
const HISTORY_LIMIT: u64 = 10_000;

/// Runs one turn of the conversation's agent if a message awaits an answer: one posted after
/// `answered_through` (the newest seq the previous turn's last request included) or, for the
/// first turn of a runner, after the agent's last reply. Never fails: whatever goes wrong ends
/// the turn with a stop reason. Returns the newest seq the turn's requests included.
pub(crate) async fn run(
    inner: &Inner,
    conversation: ConversationId,
    answered_through: Option<u64>,
    cancel: CancellationToken,
) -> Option<u64> {
    let setup = match load(inner, conversation, answered_through).await {
        Ok(Some(setup)) => setup,
        Ok(None) => return answered_through,
        Err(error) => {
            tracing::error!(%conversation, %error, "could not load the conversation for a turn");
            return answered_through;
        }
    };
    let turn_id = TurnId::new();
    let answered_through = setup.history.last().map(|m| m.seq);
    let mut turn = Turn { inner, conversation, turn_id, setup, cancel, usage: Usage::default(), answered_through };
    let stop = match turn.emit(TurnEvent::AgentStart { turn_id, agent: turn.setup.agent.id }).await {
        Ok(()) => turn.requests().await,
        Err(error) => store_failure(&error),
    };
    let usage = turn.usage;
    if let Err(error) = turn.emit(TurnEvent::AgentEnd { turn_id, stop, usage }).await {
        tracing::error!(%conversation, %turn_id, %error, "could not record the end of a turn");
    }
    turn.answered_through
}

struct Setup {
    conversation: Conversation,
    agent: Participant,
    spec: AgentSpec,
    history: Vec<Message>,
}

/// Reads what a turn needs, or `None` when there is nothing to answer.
async fn load(
    inner: &Inner,
    conversation: ConversationId,
    answered_through: Option<u64>,
) -> Result<Option<Setup>, StoreError> {
    let record = inner.store.conversation(conversation).await?;
    let participants = inner.store.participants(conversation).await?;
    let answering = participants.into_iter().find_map(|p| match &p.agent {
        Some(spec) if p.kind == ParticipantKind::Agent && p.left_at.is_none() => Some((spec.clone(), p)),
        _ => None,
    });
    let Some((spec, agent)) = answering else {
        return Ok(None);
    };
    let after = record.last_seq.saturating_sub(HISTORY_LIMIT);
    let history = inner.store.messages_after(conversation, after, HISTORY_LIMIT).await?;
    let threshold = answered_through.unwrap_or_else(|| {
        history
            .iter()
            .rev()
            .find(|m| m.role == MessageRole::Assistant && m.sender == Some(agent.id))
            .map_or(0, |m| m.seq)
    });
    let awaits_answer = history
        .iter()
        .rev()
        .take_while(|m| m.seq > threshold)
        .any(|m| m.role == MessageRole::User && m.sender != Some(agent.id));
    Ok(awaits_answer.then_some(Setup { conversation: record, agent, spec, history }))
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
    /// The newest seq of history included in a request so far.
    answered_through: Option<u64>,
}

impl Turn<'_> {
    async fn emit(&self, event: TurnEvent) -> Result<(), StoreError> {
        self.inner.emit(self.conversation, event).await.map(|_| ())
    }

    /// LLM requests and tool rounds until a stop reason.
    async fn requests(&mut self) -> StopReason {
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
        for request in 1u32.. {
            if request > options.max_turn_requests {
                return StopReason::MaxTurnRequests;
            }
            if self.cancel.is_cancelled() {
                return StopReason::Cancelled;
            }
            if let Err(error) = self.emit(TurnEvent::TurnStart { turn_id: self.turn_id, request }).await {
                return store_failure(&error);
            }
            self.answered_through = self.setup.history.last().map(|m| m.seq).or(self.answered_through);
            let llm_request = LlmRequest {
                model: options.model.clone().unwrap_or_else(|| spec.model.clone()),
                system_prompt: spec.system_prompt.clone(),
                messages: request_messages(&self.setup.history, self.setup.agent.id),
                tools: self.inner.tools.registry().specs(&spec.tools),
                tool_choice: options.tool_choice.clone(),
                temperature: options.temperature,
                max_tokens: options.max_tokens,
            };
            let (message, finish) = match self.stream_reply(provider.as_ref(), llm_request).await {
                Reply::Complete { message, finish } => (message, finish),
                Reply::Stopped(stop) => return stop,
            };
            let calls: Vec<ToolCallRequest> = message
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
                None => self.run_tools(calls, &spec.tools, &options).await,
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
        let model = request.model.clone();
        let started = Instant::now();
        let mut stream = provider.stream(request);
        let mut accumulator = ResponseAccumulator::new();
        let mut interrupted = None;
        loop {
            let item = tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    interrupted = Some(StopReason::Cancelled);
                    break;
                }
                item = stream.next() => item,
            };
            let event = match item {
                None => break,
                Some(Err(error)) => {
                    interrupted = Some(provider_failure(&error));
                    break;
                }
                Some(Ok(event)) => event,
            };
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
    async fn run_tools(
        &mut self,
        calls: Vec<ToolCallRequest>,
        offered: &[String],
        options: &colloquy_core_model::Options,
    ) -> Option<StopReason> {
        let offered: &[String] = if options.tool_choice == ToolChoice::None { &[] } else { offered };
        let ctx = ToolContext {
            conversation_id: self.conversation,
            caller: self.setup.agent.id,
            context: options.context.clone(),
            cancel: self.cancel.child_token(),
        };
        let config = ExecutorConfig {
            concurrency: options.tool_concurrency,
            timeout: Duration::from_millis(options.tool_timeout_ms),
        };
        let mut execution = self.inner.tools.execute(calls.clone(), offered, ctx, config);
        let mut failure = None;
        while let Some(event) = execution.next().await {
            let outcome = match event {
                ExecutionEvent::Started { index } => {
                    let call = &calls[index];
                    self.emit(TurnEvent::ToolExecutionStart {
                        turn_id: self.turn_id,
                        tool_call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    })
                    .await
                }
                ExecutionEvent::Finished { result, .. } => {
                    self.store_result(result.id, result.name, result.content, result.is_error).await
                }
            };
            if let Err(error) = outcome {
                failure.get_or_insert(store_failure(&error));
            }
        }
        failure.or_else(|| self.cancel.is_cancelled().then_some(StopReason::Cancelled))
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
