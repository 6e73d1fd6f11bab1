//! The store's errors: what the caller asked for that cannot be, and what broke inside.

use colloquy_core_model::ConversationId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller named a conversation that does not exist.
    #[error("conversation {0} does not exist: create it first, or check the id")]
    ConversationNotFound(ConversationId),
    /// The conversation is archived or closed and takes no more messages.
    #[error("conversation {0} is not active (archived or closed): it takes no new messages")]
    ConversationNotActive(ConversationId),
    /// The database URL is not one Colloquy can use.
    #[error("unsupported database url `{0}`: use sqlite://PATH?mode=rwc, sqlite::memory: or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// A stored row does not decode into the domain type: the database was changed by hand or by
    /// a newer version.
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt {
        /// Which row or column.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl StoreError {
    /// Whether the caller's request was at fault (as opposed to the database).
    pub const fn is_caller_error(&self) -> bool {
        matches!(self, Self::ConversationNotFound(_) | Self::ConversationNotActive(_) | Self::UnsupportedUrl(_))
    }
}
