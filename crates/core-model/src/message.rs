//! Messages and their content parts.

use serde::{Deserialize, Serialize};

use crate::{ConversationId, MessageId, ParticipantId, Timestamp, ToolCallId, TurnId};

/// Who a message speaks as, in the terms every LLM provider understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    /// Instructions to the model.
    System,
    /// A human's or a service's input.
    User,
    /// A model's reply, possibly with tool calls.
    Assistant,
    /// Results of tool calls.
    Tool,
    /// Application data kept in history but never sent to a model.
    Custom,
}

impl MessageRole {
    /// The stable lowercase name used in storage and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
            Self::Custom => "custom",
        }
    }
}

/// Where an attachment's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MediaSource {
    /// Inline, base64-encoded.
    Base64 {
        /// e.g. `image/png`.
        mime_type: String,
        /// The base64 text.
        data: String,
    },
    /// A URL the provider fetches.
    Url {
        /// An `https:` or `data:` URL.
        url: String,
    },
}

/// One part of a message's content. Unknown fields are refused, so a misspelt field is an
/// error rather than silently dropped data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image attachment.
    Image {
        /// Where the image is.
        source: MediaSource,
    },
    /// A file attachment.
    File {
        /// The file's name as the sender gave it.
        name: String,
        /// Where the file is.
        source: MediaSource,
    },
    /// The model asks for a tool to be run.
    ToolCall {
        /// The provider's id for the call; its result must quote it.
        id: ToolCallId,
        /// The tool's name.
        name: String,
        /// The arguments, as JSON (a string the model produced that is not JSON is kept as a string).
        arguments: serde_json::Value,
    },
    /// The outcome of one tool call.
    ToolResult {
        /// The call this answers.
        tool_call_id: ToolCallId,
        /// The tool that ran (or was refused).
        name: String,
        /// What the model is shown.
        content: String,
        /// Whether the call failed; a failure is information for the model, not a turn error.
        is_error: bool,
    },
    /// Application JSON that is stored and streamed but never sent to a model.
    Custom {
        /// The application's payload.
        value: serde_json::Value,
    },
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// The part's `type` name on the wire.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Image { .. } => "image",
            Self::File { .. } => "file",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::Custom { .. } => "custom",
        }
    }

    /// Whether the part says nothing: text that is empty once trimmed, an attachment with no
    /// data or URL, or a custom value that is `null`, `{}`, `[]` or an empty string.
    pub fn is_empty(&self) -> bool {
        let blank_source = |source: &MediaSource| match source {
            MediaSource::Base64 { data, .. } => data.trim().is_empty(),
            MediaSource::Url { url } => url.trim().is_empty(),
        };
        match self {
            Self::Text { text } => text.trim().is_empty(),
            Self::Image { source } | Self::File { source, .. } => blank_source(source),
            Self::ToolCall { name, .. } => name.is_empty(),
            Self::ToolResult { .. } => false,
            Self::Custom { value } => match value {
                serde_json::Value::Null => true,
                serde_json::Value::String(s) => s.trim().is_empty(),
                serde_json::Value::Array(items) => items.is_empty(),
                serde_json::Value::Object(map) => map.is_empty(),
                serde_json::Value::Bool(_) | serde_json::Value::Number(_) => false,
            },
        }
    }
}

/// Tokens and money spent on one LLM request (or summed over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Usage {
    /// Prompt tokens, including cached ones.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: u64,
    /// Cost in USD when the model's price is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The provider reported no usage, so the tokens were counted locally (see
    /// `colloquy_llm_providers::Counted`); for a sum, whether any part was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

impl Usage {
    /// Input plus output tokens.
    pub const fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Adds another request's usage to this one; cost stays unknown only if both are unknown,
    /// and the sum is estimated if either part is.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        self.estimated |= other.estimated;
    }
}

/// A message as stored: every message has its conversation's `seq` of the event that recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// The message's id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Position in the conversation's event log (gap-free across all durable events).
    pub seq: u64,
    /// The participant who sent it (absent for system messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<ParticipantId>,
    /// The role it plays for a model.
    pub role: MessageRole,
    /// What it says.
    pub content: Vec<ContentPart>,
    /// The prompt turn that produced it, for assistant and tool messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<TurnId>,
    /// Tokens and cost of the LLM request that produced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The model that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider that served the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The sampling temperature the reply was generated with, when one was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Time from request to the last streamed byte, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The sender's idempotency key: a retried send with the same key is stored once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// When it was stored.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Application metadata.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
}

impl Message {
    /// All text parts joined, for display and search.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// The tool calls this message asks for.
    pub fn tool_calls(&self) -> impl Iterator<Item = (&ToolCallId, &str, &serde_json::Value)> {
        self.content.iter().filter_map(|part| match part {
            ContentPart::ToolCall { id, name, arguments } => Some((id, name.as_str(), arguments)),
            _ => None,
        })
    }
}

/// A message before the store has given it a `seq` and a timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Chosen by the writer so that live events can name the message before it is stored.
    pub id: MessageId,
    /// See [`Message::sender`].
    pub sender: Option<ParticipantId>,
    /// See [`Message::role`].
    pub role: MessageRole,
    /// See [`Message::content`].
    pub content: Vec<ContentPart>,
    /// See [`Message::turn_id`].
    pub turn_id: Option<TurnId>,
    /// See [`Message::usage`].
    pub usage: Option<Usage>,
    /// See [`Message::model`].
    pub model: Option<String>,
    /// See [`Message::provider`].
    pub provider: Option<String>,
    /// See [`Message::temperature`].
    pub temperature: Option<f32>,
    /// See [`Message::latency_ms`].
    pub latency_ms: Option<u64>,
    /// See [`Message::client_msg_id`].
    pub client_msg_id: Option<String>,
    /// See [`Message::metadata`].
    pub metadata: serde_json::Value,
}

impl NewMessage {
    /// A message with the given role and content and nothing else set.
    pub fn new(role: MessageRole, content: Vec<ContentPart>) -> Self {
        Self {
            id: MessageId::new(),
            sender: None,
            role,
            content,
            turn_id: None,
            usage: None,
            model: None,
            provider: None,
            temperature: None,
            latency_ms: None,
            client_msg_id: None,
            metadata: serde_json::Value::Null,
        }
    }

    /// The stored form, once the store has chosen `seq` and `created_at`.
    pub fn into_message(self, conversation_id: ConversationId, seq: u64, created_at: Timestamp) -> Message {
        Message {
            id: self.id,
            conversation_id,
            seq,
            sender: self.sender,
            role: self.role,
            content: self.content,
            turn_id: self.turn_id,
            usage: self.usage,
            model: self.model,
            provider: self.provider,
            temperature: self.temperature,
            latency_ms: self.latency_ms,
            client_msg_id: self.client_msg_id,
            created_at,
            metadata: self.metadata,
        }
    }
}

/// A tool as offered to a model: its name, what it does, and the JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}
