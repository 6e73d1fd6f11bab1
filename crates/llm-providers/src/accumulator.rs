//! Folds a provider's event stream into the finished reply.

use colloquy_core_model::{ContentPart, ToolCallId, Usage};

use crate::{FinishReason, ProviderEvent};

/// A reply as a whole: its content parts in order (text first, then tool calls), usage and
/// finish reason.
#[derive(Debug, Clone, PartialEq)]
pub struct AssembledResponse {
    /// Text and tool-call parts.
    pub content: Vec<ContentPart>,
    /// The last usage the provider reported (zero if it reported none).
    pub usage: Usage,
    /// Why it stopped; `None` if the stream ended without saying.
    pub finish: Option<FinishReason>,
    /// What the provider keeps for its next request ([`ProviderEvent::State`]; the last wins).
    pub state: Option<serde_json::Value>,
}

#[derive(Debug, Default)]
struct PartialToolCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Collects [`ProviderEvent`]s. Tool-call pieces are joined by their index, so calls whose
/// arguments arrive interleaved across many chunks come out whole.
#[derive(Debug, Default)]
pub struct ResponseAccumulator {
    text: String,
    tool_calls: Vec<(u32, PartialToolCall)>,
    usage: Usage,
    finish: Option<FinishReason>,
    state: Option<serde_json::Value>,
}

impl ResponseAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one event.
    pub fn push(&mut self, event: &ProviderEvent) {
        match event {
            ProviderEvent::TextDelta(text) => self.text.push_str(text),
            ProviderEvent::ToolCallDelta { index, id, name, arguments } => {
                let call = match self.tool_calls.iter_mut().position(|(i, _)| i == index) {
                    Some(pos) => &mut self.tool_calls[pos].1,
                    None => {
                        self.tool_calls.push((*index, PartialToolCall::default()));
                        let last = self.tool_calls.len() - 1;
                        &mut self.tool_calls[last].1
                    }
                };
                if let Some(id) = id.as_ref().filter(|id| !id.is_empty()) {
                    call.id = Some(id.clone());
                }
                if let Some(name) = name {
                    call.name.push_str(name);
                }
                call.arguments.push_str(arguments);
            }
            ProviderEvent::Usage(usage) => self.usage = *usage,
            ProviderEvent::Finish(reason) => self.finish = Some(reason.clone()),
            ProviderEvent::State(state) => self.state = Some(state.clone()),
        }
    }

    /// Whether a tool call has started.
    pub fn has_tool_calls(&self) -> bool {
        !self.tool_calls.is_empty()
    }

    /// The reply so far. Tool-call arguments that are not JSON are kept as a JSON string, so the
    /// executor can tell the model what was wrong; calls without an id get a fresh one.
    pub fn finish(mut self) -> AssembledResponse {
        let mut content = Vec::with_capacity(1 + self.tool_calls.len());
        if !self.text.is_empty() {
            content.push(ContentPart::Text { text: self.text });
        }
        self.tool_calls.sort_by_key(|(index, _)| *index);
        for (_, call) in self.tool_calls {
            let arguments = if call.arguments.trim().is_empty() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::String(call.arguments))
            };
            let id = call.id.map_or_else(ToolCallId::generate, ToolCallId::from);
            content.push(ContentPart::ToolCall { id, name: call.name, arguments });
        }
        AssembledResponse { content, usage: self.usage, finish: self.finish, state: self.state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_tool_call_pieces_are_joined_by_index() {
        let mut acc = ResponseAccumulator::new();
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| ProviderEvent::ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.to_owned(),
        };
        acc.push(&ProviderEvent::TextDelta("Let me ".into()));
        acc.push(&ProviderEvent::TextDelta("check.".into()));
        acc.push(&piece(1, Some("call_b"), Some("clock"), ""));
        acc.push(&piece(0, Some("call_a"), Some("calculator"), "{\"expr"));
        acc.push(&piece(1, None, None, "{}"));
        acc.push(&piece(0, None, None, "ession\": \"1+1\"}"));
        acc.push(&ProviderEvent::Finish(FinishReason::ToolCalls));
        let response = acc.finish();
        assert_eq!(
            response.content,
            vec![
                ContentPart::text("Let me check."),
                ContentPart::ToolCall {
                    id: "call_a".into(),
                    name: "calculator".into(),
                    arguments: serde_json::json!({"expression": "1+1"})
                },
                ContentPart::ToolCall { id: "call_b".into(), name: "clock".into(), arguments: serde_json::json!({}) },
            ]
        );
        assert_eq!(response.finish, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn arguments_that_are_not_json_are_kept_as_text_and_missing_ids_are_minted() {
        let mut acc = ResponseAccumulator::new();
        acc.push(&ProviderEvent::ToolCallDelta {
            index: 0,
            id: None,
            name: Some("calculator".into()),
            arguments: "{not json".into(),
        });
        let response = acc.finish();
        let Some(ContentPart::ToolCall { id, arguments, .. }) = response.content.first() else {
            panic!("expected a tool call, got {:?}", response.content);
        };
        assert!(id.as_str().starts_with("call_"));
        assert_eq!(arguments, &serde_json::json!("{not json"));
    }
}
