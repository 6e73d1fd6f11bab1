//! API keys: bearer secrets bound to a participant or to an operator. The store keeps only a
//! SHA-256 hash of each secret, so a copy of the database does not let anyone in.

use std::fmt;

use colloquy_core_model::{ParticipantId, Timestamp};

/// An API key's id (not its secret): safe to log and to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiKeyId(pub uuid::Uuid);

impl ApiKeyId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for ApiKeyId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A key to store. The caller makes the secret (long and random) and hands it to its owner once.
#[derive(Clone)]
pub struct NewApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The bearer secret; at least [`NewApiKey::MIN_SECRET_LEN`] characters.
    pub secret: String,
    /// What it is for, for operators.
    pub label: Option<String>,
    /// The participant it acts as; `None` for an operator key.
    pub participant: Option<ParticipantId>,
    /// Whether it may manage every conversation and key.
    pub admin: bool,
}

impl NewApiKey {
    /// Secrets shorter than this are refused: a bearer key must not be guessable.
    pub const MIN_SECRET_LEN: usize = 24;
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("label", &self.label)
            .field("participant", &self.participant)
            .field("admin", &self.admin)
            .finish()
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// What it is for.
    pub label: Option<String>,
    /// The participant it acts as; `None` for an operator key.
    pub participant: Option<ParticipantId>,
    /// Whether it may manage every conversation and key.
    pub admin: bool,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}
