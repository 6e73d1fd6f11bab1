//! The WebSocket frames of `/v1/ws` (documented in docs/protocol.md).

use colloquy_core_model::limits::{MAX_JSON_DEPTH, json_depth};
use colloquy_core_model::{ContentPart, ConversationId, MessageId, ParticipantId, TurnEvent};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

/// What a client sends. Every frame may carry an `id` that the reply echoes.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Replay durable events after `after_seq`, then follow live.
    Subscribe {
        id: Option<String>,
        conversation_id: ConversationId,
        #[serde(default)]
        after_seq: u64,
    },
    /// Stop following a conversation.
    Unsubscribe { id: Option<String>, conversation_id: ConversationId },
    /// Post a message.
    Send {
        id: Option<String>,
        conversation_id: ConversationId,
        client_msg_id: Option<String>,
        content: Content,
        sender: Option<ParticipantId>,
        /// `false`: refuse (code `busy`) instead of queueing when the agent is answering.
        #[serde(default = "default_true")]
        queue: bool,
    },
    /// Cancel the running turn.
    Cancel { id: Option<String>, conversation_id: ConversationId },
    /// Allow or deny a tool call that waits for approval (owners).
    Approve {
        id: Option<String>,
        conversation_id: ConversationId,
        tool_call_id: colloquy_core_model::ToolCallId,
        decision: Decision,
        reason: Option<String>,
    },
    /// Tell the others the caller is typing (live only).
    Typing { id: Option<String>, conversation_id: ConversationId },
    /// Replace a message's content between turns (`message_updated`).
    Edit { id: Option<String>, conversation_id: ConversationId, message_id: MessageId, content: Content },
    /// Liveness check.
    Ping { id: Option<String> },
}

/// The answer to a tool call waiting for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Run it.
    Allow,
    /// Refuse it; the model is told why.
    Deny,
}

impl Decision {
    /// The engine's answer, with the reason the model is told on a denial.
    pub fn answer(self, reason: Option<String>) -> colloquy_tools::ApprovalAnswer {
        match self {
            Self::Allow => colloquy_tools::ApprovalAnswer::Allow,
            Self::Deny => colloquy_tools::ApprovalAnswer::Deny(
                reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "denied by the conversation's owner".to_owned()),
            ),
        }
    }
}

fn default_true() -> bool {
    true
}

impl ClientFrame {
    /// The frame's `type`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Send { .. } => "send",
            Self::Cancel { .. } => "cancel",
            Self::Approve { .. } => "approve",
            Self::Typing { .. } => "typing",
            Self::Edit { .. } => "edit",
            Self::Ping { .. } => "ping",
        }
    }

    /// The frame's `id`, which its reply echoes.
    pub fn id(&self) -> Option<String> {
        match self {
            Self::Subscribe { id, .. }
            | Self::Unsubscribe { id, .. }
            | Self::Send { id, .. }
            | Self::Cancel { id, .. }
            | Self::Approve { id, .. }
            | Self::Typing { id, .. }
            | Self::Edit { id, .. }
            | Self::Ping { id } => id.clone(),
        }
    }
}

/// The frame types a client may send, for the `unknown_frame` error.
pub const CLIENT_FRAME_TYPES: [&str; 8] =
    ["subscribe", "unsubscribe", "send", "cancel", "approve", "typing", "edit", "ping"];

/// How [`Content`] looks in the OpenAPI description.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only its OpenAPI description is used")]
pub enum ContentSchema {
    /// One text part.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// Message content: a plain string, or content parts.
#[derive(Debug)]
pub enum Content {
    /// Shorthand for one text part.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

impl<'de> Deserialize<'de> for Content {
    // By hand rather than `untagged`, so that a bad part is reported as what is wrong with it
    // ("unknown field `txt`") instead of "did not match any variant".
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(Self::Text(text)),
            parts @ serde_json::Value::Array(_) => {
                serde_json::from_value(parts).map(Self::Parts).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom("`content` must be a string or an array of content parts")),
        }
    }
}

impl Content {
    pub fn into_parts(self) -> Vec<ContentPart> {
        match self {
            Self::Text(text) => vec![ContentPart::Text { text }],
            Self::Parts(parts) => parts,
        }
    }
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// An event of a subscribed conversation.
    Event {
        conversation_id: ConversationId,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        event: &'a TurnEvent,
    },
    /// A client frame succeeded.
    Ack(Ack),
    /// A client frame failed; the connection stays usable.
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(flatten)]
        error: ApiError,
    },
    /// Answers `ping`.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Who is connected to a conversation, right after a subscription's ack; changes follow as
    /// `participant_presence` events.
    Presence { conversation_id: ConversationId, online: Vec<ParticipantId> },
}

/// The success reply to a client frame; which fields are set depends on the frame.
#[derive(Debug, Default, Serialize)]
pub struct Ack {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub conversation_id: Option<ConversationId>,
    /// `send`: the message's seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `send`: the stored message's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// `send`: whether the `client_msg_id` was already stored (nothing new happened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// `send`: whether the message waits for the running turn to end (`message_queued`); it
    /// joins the history at the turn boundary with a new seq (`message_posted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<bool>,
    /// `cancel`: whether a turn was running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
}

/// The `invalid_frame` error for a frame nested deeper than [`MAX_JSON_DEPTH`].
fn too_deep(depth: Option<usize>) -> ApiError {
    let depth = depth.map_or_else(|| "more than 127".to_owned(), |d| d.to_string());
    ApiError::bad_request(
        ErrorCode::InvalidFrame,
        format!(
            "the frame nests {depth} levels of arrays and objects, more than the limit of {MAX_JSON_DEPTH}: send \
             flatter JSON (custom content and context values included)"
        ),
    )
}

/// Parses a text frame, with errors a client can act on. A frame nested deeper than
/// [`MAX_JSON_DEPTH`] is refused before anything looks inside it, so nothing the gateway accepts
/// is too deep to be stored and read back.
pub fn parse(text: &str) -> Result<ClientFrame, (Option<String>, ApiError)> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // serde_json stops at 128 levels; that is a frame too deep, not a syntax error.
        if e.to_string().starts_with("recursion limit exceeded") {
            return (None, too_deep(None));
        }
        (
            None,
            ApiError::bad_request(
                ErrorCode::BadJson,
                format!("the frame is not valid JSON ({e}): send one JSON object per text frame"),
            ),
        )
    })?;
    let id = value.get("id").and_then(serde_json::Value::as_str).map(str::to_owned);
    let depth = json_depth(&value);
    if depth > MAX_JSON_DEPTH {
        return Err((id, too_deep(Some(depth))));
    }
    let Some(kind) = value.get("type").and_then(serde_json::Value::as_str).map(str::to_owned) else {
        return Err((
            id,
            ApiError::bad_request(
                ErrorCode::InvalidFrame,
                "the frame has no string field `type`: use one of subscribe, unsubscribe, send, cancel, approve, typing, edit, ping",
            ),
        ));
    };
    if !CLIENT_FRAME_TYPES.contains(&kind.as_str()) {
        return Err((
            id,
            ApiError::bad_request(
                ErrorCode::UnknownFrame,
                format!("unknown frame type `{kind}`: use one of {}", CLIENT_FRAME_TYPES.join(", ")),
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        (
            id,
            ApiError::bad_request(
                ErrorCode::InvalidFrame,
                format!("invalid `{kind}` frame: {e}; see docs/protocol.md"),
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
            prop::sample::select(vec!["subscribe", "unsubscribe", "send", "cancel", "ping", "type", "content"])
                .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "type",
                        "id",
                        "conversation_id",
                        "content",
                        "after_seq",
                        "sender",
                        "queue",
                        "text",
                        "value",
                        "x"
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..6,
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A refusal must be one of the parse codes, with a message that says something.
    fn coded(error: &ApiError) -> bool {
        matches!(error.code, ErrorCode::BadJson | ErrorCode::InvalidFrame | ErrorCode::UnknownFrame)
            && error.message.len() > 10
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_the_parser_and_is_refused_with_a_code(text in "\\PC{0,200}") {
            if let Err((_, error)) = parse(&text) {
                prop_assert!(coded(&error), "{error:?}");
            }
        }

        #[test]
        fn arbitrary_bytes_as_text_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Err((_, error)) = parse(&text) {
                prop_assert!(coded(&error), "{error:?}");
            }
        }

        #[test]
        fn arbitrary_json_never_panics_the_parser_and_is_refused_with_a_code(value in any_json()) {
            if let Err((_, error)) = parse(&value.to_string()) {
                prop_assert!(coded(&error), "{error:?}");
            }
        }
    }
}
