//! Turns a conversation's stored history into the messages of an LLM request, as one agent sees
//! it, keeping every tool call next to its result.

use std::collections::HashMap;

use colloquy_core_model::{ContentPart, Message, MessageRole, ParticipantId};
use colloquy_llm_providers::RequestMessage;

/// The request messages for `agent`, oldest first.
///
/// - `system` and `custom` messages and `custom` parts are never sent (the system prompt comes
///   from the agent's spec);
/// - the agent's own messages are `assistant`; tool results are sent only to the agent whose
///   call they answer;
/// - each tool result is moved right after the assistant message that made the call, and
///   anything posted in between (a human typing while tools run) follows the results, because
///   providers reject a history where other messages separate a call from its result.
pub(crate) fn request_messages(history: &[Message], agent: ParticipantId) -> Vec<RequestMessage> {
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
                if content.is_empty() {
                    continue;
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
        let roles: Vec<MessageRole> = request_messages(&history, agent).iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            vec![MessageRole::User, MessageRole::Assistant, MessageRole::Tool, MessageRole::Tool, MessageRole::User]
        );
    }
}
