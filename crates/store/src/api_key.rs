//! API keys and the accounts they authenticate. The store keeps only a SHA-256 hash of each
//! secret, so a copy of the database does not let anyone in.

use std::fmt;

use colloquy_core_model::{AccountId, AccountKind, Timestamp};

/// An API key's id (not its secret): safe to log and to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
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

impl std::str::FromStr for ApiKeyId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// An account to create.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Chosen by the caller.
    pub id: AccountId,
    /// A unique handle.
    pub name: String,
    /// User, service or admin.
    pub kind: AccountKind,
    /// Shown to others.
    pub display_name: String,
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
    /// The account it authenticates.
    pub account: AccountId,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
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
            .field("account", &self.account)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The account it authenticates; `None` for a key from before accounts, which authenticates
    /// no one.
    pub account: Option<AccountId>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// Whether it authenticates at `now`: bound to an account, not revoked, not expired.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.account.is_some() && self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}
