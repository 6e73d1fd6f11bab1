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

/// A secret a request carries in, such as a remote agent's key: read from JSON, never written
/// back out (it is skipped when serialized), hidden from `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct WriteOnly(String);

impl WriteOnly {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WriteOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Checks a remote A2A agent's URL (`a2a_url`): an `http` or `https` URL, of at most 2,048
/// bytes; the error says what is wrong with it.
pub fn check_a2a_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        _ if url.len() > 2048 => Err(format!("a2a_url is {} bytes long; at most 2048 are allowed", url.len())),
        Some(rest) if !rest.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control()) => Ok(()),
        _ => Err(format!("a2a_url `{url}` is not an http:// or https:// URL: give the remote agent's base URL")),
    }
}

/// Checks a remote A2A agent's key (`a2a_key`): at most 4,096 bytes, printable.
pub fn check_a2a_key(key: &WriteOnly) -> Result<(), String> {
    let key = key.expose();
    if key.len() > 4096 {
        return Err(format!("a2a_key is {} bytes long; at most 4096 are allowed", key.len()));
    }
    if key.trim().is_empty() || key.chars().any(char::is_control) {
        return Err("a2a_key is empty or holds control characters: give the key as the remote agent issued it".into());
    }
    Ok(())
}

/// Checks the remote-agent fields of a participant to be: only a service may have an
/// `a2a_url`, a key needs a URL, and both must be well formed. The error says what is wrong.
pub fn check_remote_agent(kind: ParticipantKind, url: Option<&str>, key: Option<&WriteOnly>) -> Result<(), String> {
    match (url, key) {
        (Some(_), _) if kind != ParticipantKind::Service => Err(format!(
            "a participant of kind {kind:?} cannot have an a2a_url: only a service can be a remote A2A agent"
        )),
        (Some(url), key) => check_a2a_url(url).and_then(|()| key.map_or(Ok(()), check_a2a_key)),
        (None, Some(_)) => Err("an a2a_key without an a2a_url: give the remote agent's URL the key is for".into()),
        (None, None) => Ok(()),
    }
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
    /// For a `service` that is a remote A2A agent: its base URL (where its agent card is) or
    /// its JSON-RPC URL. When the responder policy picks it, Colloquy sends it the message to
    /// answer and streams its reply in as this participant's message (docs/a2a.md). Its key,
    /// if it has one, is kept by the store and never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_url: Option<String>,
    /// When it joined.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub joined_at: Timestamp,
    /// When it left, if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub left_at: Option<Timestamp>,
}
