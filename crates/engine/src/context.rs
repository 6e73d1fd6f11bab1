//! Turns a conversation's stored history into the messages of an LLM request, as one agent sees
//! it, keeping every tool call next to its result; and the context window that trims them.

use std::collections::HashMap;

use colloquy_core_model::{ContentPart, Message, MessageRole, ParticipantId};
use colloquy_llm_providers::{RequestMessage, count_tokens, message_tokens};

/// The key of a reply's metadata that holds what its provider keeps for its next request
/// ([`colloquy_llm_providers::ProviderEvent::State`]).
pub(crate) const PROVIDER_STATE: &str = "provider_state";

/// How many of an agent's newest replies are searched for its provider's state: a provider that
/// keeps one gives it with every reply, so it is near; every request of every other agent pays
/// for the search, so it is bounded.
const PROVIDER_STATE_REPLIES: usize = 8;

/// What `agent`'s provider kept with its newest replies in `history`.
pub(crate) fn provider_state(history: &[Message], agent: ParticipantId) -> Option<serde_json::Value> {
    history
        .iter()
        .rev()
        .filter(|m| m.sender == Some(agent) && m.role == MessageRole::Assistant)
        .take(PROVIDER_STATE_REPLIES)
        .find_map(|m| m.metadata.get(PROVIDER_STATE).cloned())
}

/// What a [`MessageTransformer`] knows about the request it shapes.
#[derive(Debug, Clone, Copy)]
pub struct TransformContext<'a> {
    /// The model the request goes to (token counting depends on it).
    pub model: &'a str,
    /// The system prompt, which is always sent and counts against the limit.
    pub system_prompt: Option<&'a str>,
    /// `Options::context_limit`, in tokens.
    pub context_limit: Option<u32>,
}

/// Shapes the messages of every LLM request before it is sent: filters, trims, summarizes.
/// The result must keep each tool call's assistant message together with its results.
pub trait MessageTransformer: Send + Sync + 'static {
    /// The messages to send, oldest first.
    fn transform(&self, messages: Vec<RequestMessage>, ctx: &TransformContext<'_>) -> Vec<RequestMessage>;
}

/// The default transformer: with a `context_limit`, keeps the newest messages that fit it
/// together with the system prompt, dropping whole exchanges from the oldest end (an assistant
/// message with tool calls and its results go or stay together), and starts the window at a
/// user message, as providers require. Without a limit, sends everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextWindow;

impl MessageTransformer for ContextWindow {
    fn transform(&self, messages: Vec<RequestMessage>, ctx: &TransformContext<'_>) -> Vec<RequestMessage> {
        let Some(limit) = ctx.context_limit else { return messages };
        let mut budget = u64::from(limit).saturating_sub(ctx.system_prompt.map_or(0, |s| count_tokens(ctx.model, s)));
        // Group boundaries: a group starts at every message that is not a tool result.
        let starts: Vec<usize> =
            messages.iter().enumerate().filter(|(_, m)| m.role != MessageRole::Tool).map(|(i, _)| i).collect();
        let mut keep_from = messages.len();
        for (n, &start) in starts.iter().enumerate().rev() {
            let end = starts.get(n + 1).copied().unwrap_or(messages.len());
            let cost: u64 = messages[start..end].iter().map(|m| message_tokens(ctx.model, m)).sum();
            if cost > budget {
                break;
            }
            budget -= cost;
            keep_from = start;
        }
        // Never start with an assistant turn: skip to the first user message in the window.
        while keep_from < messages.len() && messages[keep_from].role != MessageRole::User {
            keep_from += 1;
        }
        messages.into_iter().skip(keep_from).collect()
    }
}

/// The request messages for `agent`, oldest first.
///
/// - `system` and `custom` messages and `custom` parts are never sent (the system prompt comes
///   from the agent's spec);
/// - the agent's own messages are `assistant`; tool results are sent only to the agent whose
///   call they answer;
/// - each tool result is moved right after the assistant message that made the call, and
///   anything posted in between (a human typing while tools run) follows the results, because
///   providers reject a history where other messages separate a call from its result.
/// - with `names` (conversations with more than two sides), everyone else's messages are
///   prefixed with the sender's name, `[ada]: `, so the agent can tell speakers apart.
pub(crate) fn request_messages(
    history: &[Message],
    agent: ParticipantId,
    names: Option<&HashMap<ParticipantId, String>>,
) -> Vec<RequestMessage> {
    let mut calls_by_id: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<RequestMessage> = Vec::with_capacity(history.len());
    // Index in `out` of the assistant message whose results are still arriving, and where the
    // next result goes.
    let mut open_call: Option<(usize, usize)> = None;

    for message in history {
        let content: Vec<ContentPart> =
            message.content.iter().filter(|part| !matches!(part, ContentPart::Custom { .. })).cloned().collect();
        match message.role {
            MessageRole::System | MessageRole::Custom => {}
            MessageRole::Assistant if message.sender == Some(agent) => {
                // A reply interrupted before its first word says nothing a provider would accept.
                if content.is_empty() {
                    continue;
                }
                let position = out.len();
                let mut has_calls = false;
                for (id, _, _) in message.tool_calls() {
                    calls_by_id.insert(id.as_str(), position);
                    has_calls = true;
                }
                out.push(RequestMessage { role: MessageRole::Assistant, content });
                open_call = has_calls.then_some((position, position + 1));
            }
            MessageRole::Tool => {
                let answers = content.iter().find_map(|part| match part {
                    ContentPart::ToolResult { tool_call_id, .. } => calls_by_id.get(tool_call_id.as_str()).copied(),
                    _ => None,
                });
                // A result for a call this agent did not make is not its business.
                let Some(call_position) = answers else { continue };
                let insert_at = match open_call {
                    Some((position, next)) if position == call_position => next,
                    _ => out.len(),
                };
                out.insert(insert_at, RequestMessage { role: MessageRole::Tool, content });
                if let Some((position, next)) = open_call.as_mut()
                    && *position == call_position
                {
                    *next += 1;
                }
            }
            MessageRole::User | MessageRole::Assistant => {
                // Another agent's tool calls are its own business; its words are what it said.
                let mut content: Vec<ContentPart> =
                    content.into_iter().filter(|p| !matches!(p, ContentPart::ToolCall { .. })).collect();
                if content.is_empty() {
                    continue;
                }
                if let Some(name) = names.and_then(|names| message.sender.and_then(|id| names.get(&id))) {
                    match content.iter_mut().find_map(|p| match p {
                        ContentPart::Text { text } => Some(text),
                        _ => None,
                    }) {
                        Some(text) => text.insert_str(0, &format!("[{name}]: ")),
                        None => content.insert(0, ContentPart::text(format!("[{name}]:"))),
                    }
                }
                out.push(RequestMessage { role: MessageRole::User, content });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use colloquy_core_model::{ConversationId, NewMessage, ToolCallId};

    use super::*;

    fn stored(role: MessageRole, sender: Option<ParticipantId>, content: Vec<ContentPart>, seq: u64) -> Message {
        let mut message = NewMessage::new(role, content);
        message.sender = sender;
        message.into_message(ConversationId::new(), seq, Utc::now())
    }

    fn result(id: &str) -> ContentPart {
        ContentPart::ToolResult {
            tool_call_id: ToolCallId::from(id),
            name: "calculator".into(),
            content: "2".into(),
            is_error: false,
        }
    }

    fn text(role: MessageRole, text: &str) -> RequestMessage {
        RequestMessage { role, content: vec![ContentPart::text(text)] }
    }

    #[test]
    fn the_window_keeps_the_newest_exchanges_that_fit_and_never_splits_a_call_from_its_result() {
        let call = RequestMessage {
            role: MessageRole::Assistant,
            content: vec![ContentPart::ToolCall {
                id: "a".into(),
                name: "calculator".into(),
                arguments: serde_json::json!({}),
            }],
        };
        let long = "word ".repeat(200);
        let messages = vec![
            text(MessageRole::User, &long),
            text(MessageRole::Assistant, &long),
            text(MessageRole::User, "what is 1+1?"),
            call,
            RequestMessage { role: MessageRole::Tool, content: vec![result("a")] },
            text(MessageRole::Assistant, "2"),
        ];
        let ctx = TransformContext { model: "llama3", system_prompt: Some("Be brief."), context_limit: Some(60) };
        let kept: Vec<MessageRole> = ContextWindow.transform(messages.clone(), &ctx).iter().map(|m| m.role).collect();
        assert_eq!(kept, [MessageRole::User, MessageRole::Assistant, MessageRole::Tool, MessageRole::Assistant]);
        // A limit too small for the newest exchange leaves nothing that starts with a user message.
        let tiny = TransformContext { context_limit: Some(10), ..ctx };
        let kept: Vec<MessageRole> = ContextWindow.transform(messages.clone(), &tiny).iter().map(|m| m.role).collect();
        assert_eq!(kept, Vec::<MessageRole>::new());
        let unlimited = TransformContext { context_limit: None, ..ctx };
        assert_eq!(ContextWindow.transform(messages.clone(), &unlimited), messages);
    }

    #[test]
    fn openai_models_are_counted_with_their_tokenizer_and_others_estimated() {
        assert_eq!(count_tokens("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count_tokens("gpt-4", "hello world"), 2);
        assert_eq!(count_tokens("llama3", "hello world"), 3);
    }

    #[test]
    fn a_message_posted_while_tools_run_follows_the_results() {
        let (agent, human) = (ParticipantId::new(), ParticipantId::new());
        let call = |id: &str| ContentPart::ToolCall {
            id: id.into(),
            name: "calculator".into(),
            arguments: serde_json::json!({}),
        };
        let history = vec![
            stored(MessageRole::User, Some(human), vec![ContentPart::text("1+1?")], 1),
            stored(MessageRole::Assistant, Some(agent), vec![call("a"), call("b")], 2),
            stored(MessageRole::User, Some(human), vec![ContentPart::text("hurry")], 3),
            stored(MessageRole::Tool, Some(agent), vec![result("b")], 4),
            stored(MessageRole::Tool, Some(agent), vec![result("a")], 5),
            stored(MessageRole::Custom, Some(human), vec![ContentPart::Custom { value: serde_json::json!(1) }], 6),
        ];
        let roles: Vec<MessageRole> = request_messages(&history, agent, None).iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            vec![MessageRole::User, MessageRole::Assistant, MessageRole::Tool, MessageRole::Tool, MessageRole::User]
        );
    }
}
