//! Participants: the humans, agents and services taking part in a conversation.

use serde::{Deserialize, Serialize};

use crate::{AccountId, ConversationId, ParticipantId, Timestamp};

/// What kind of party a participant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    /// A human, typically behind a chat client.
    User,
    /// An LLM agent that Colloquy runs.
    Agent,
    /// An outside program that posts its own messages.
    Service,
}

/// What a participant may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    /// Created the conversation; may change it.
    Owner,
    /// May read and post.
    #[default]
    Member,
    /// May read only.
    Observer,
}

/// How an agent participant answers: which provider and model, with what prompt and tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSpec {
    /// Name of a configured provider (e.g. `openai`, `ollama`, `scripted`).
    pub provider: String,
    /// The model to ask.
    pub model: String,
    /// Instructions sent first in every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Names of the registered tools this agent may call.
    #[serde(default)]
    pub tools: Vec<String>,
}

/// One party in one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Participant {
    /// The participant's id.
    pub id: ParticipantId,
    /// The conversation it takes part in.
    pub conversation_id: ConversationId,
    /// Human, agent or service.
    pub kind: ParticipantKind,
    /// Shown to the others, and used for @mentions.
    pub display_name: String,
    /// What it may do.
    pub role: ParticipantRole,
    /// How it answers, for agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// The account it belongs to: the person or service behind a user or service participant,
    /// the account that added an agent. One account is one identity in many conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    /// When it joined.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub joined_at: Timestamp,
    /// When it left, if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub left_at: Option<Timestamp>,
}
