//! Conversations: the unit of history, participants and options.

use serde::{Deserialize, Serialize};

use crate::{ConversationId, Options, Timestamp};

/// Who talks to whom, which decides who answers a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Humans and one agent that answers every human message.
    #[default]
    UserAgent,
    /// Two agents taking turns.
    AgentAgent,
    /// Any number of humans, agents and services.
    MultiParty,
}

/// Where a conversation is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Open for messages.
    #[default]
    Active,
    /// Kept, read-only, never swept.
    Archived,
    /// Finished; read-only.
    Closed,
}

/// Where a forked conversation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForkPoint {
    /// The original conversation.
    pub conversation_id: ConversationId,
    /// The last event of the original that the fork copied.
    pub seq: u64,
}

/// Running totals over a conversation's messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Totals {
    /// Stored messages.
    pub messages: u64,
    /// Prompt tokens over all LLM requests.
    pub input_tokens: u64,
    /// Completion tokens over all LLM requests.
    pub output_tokens: u64,
    /// USD over all LLM requests with a known price.
    pub cost_usd: f64,
}

/// A conversation's record (its messages and events are read separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    /// The conversation's id.
    pub id: ConversationId,
    /// Who answers whom.
    pub kind: ConversationKind,
    /// Active, archived or closed.
    pub status: ConversationStatus,
    /// A short human title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A summary of what was said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Free labels for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How turns run.
    #[serde(default)]
    pub options: Options,
    /// When it was created.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When anything last happened in it.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_activity: Timestamp,
    /// When the sweeper may remove it, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Timestamp>,
    /// Set on forks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkPoint>,
    /// Totals over its messages.
    #[serde(default)]
    pub totals: Totals,
    /// The seq of its newest durable event (0 when it has none).
    pub last_seq: u64,
}
