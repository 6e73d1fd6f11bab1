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

/// What a caller asks for when creating a conversation (`POST /v1/conversations`, or
/// `Engine::create_conversation_for`); every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct ConversationRequest {
    /// Who answers whom.
    pub kind: ConversationKind,
    /// A title, for lists.
    pub title: Option<String>,
    /// Labels to filter by.
    pub tags: Vec<String>,
    /// Limits and policies of its turns.
    pub options: Options,
    /// The answering agent; the configured default agent when absent.
    pub agent: Option<crate::AgentSpec>,
    /// The caller's display name in it (default: its account's).
    pub user_name: Option<String>,
    /// The agent's display name (default `assistant`).
    pub agent_name: Option<String>,
    /// Everyone taking part, for agent-agent and multi-party conversations; replaces the default
    /// pair of the caller and one agent (and `agent`, `user_name`, `agent_name`).
    pub participants: Option<Vec<ParticipantRequest>>,
}

/// One participant of a [`ConversationRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ParticipantRequest {
    /// User, agent or service.
    pub kind: crate::ParticipantKind,
    /// The name others see.
    pub display_name: String,
    /// What it may do (default `member`; the creator is always an owner).
    #[serde(default)]
    pub role: crate::ParticipantRole,
    /// For agents; the configured default agent when absent.
    pub agent: Option<crate::AgentSpec>,
    /// The account of the person or service it stands for. The first user or service without
    /// one is the caller; agents belong to the caller. A service that is a remote A2A agent
    /// needs none.
    pub account_id: Option<crate::AccountId>,
    /// For a service: the remote A2A agent it is ([`crate::Participant::a2a_url`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_url: Option<String>,
    /// The bearer key to send that agent, if it needs one; never shown again.
    #[serde(default, skip_serializing)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub a2a_key: Option<crate::WriteOnly>,
}
