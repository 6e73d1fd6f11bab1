//! The store's errors: what the caller asked for that cannot be, and what broke inside.

use colloquy_core_model::{ConversationId, ConversationStatus, ParticipantId, Timestamp};

use crate::ApiKeyId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller named a conversation that does not exist.
    #[error("conversation {0} does not exist: create it first, or check the id")]
    ConversationNotFound(ConversationId),
    /// The conversation is archived or closed and takes no more messages.
    #[error("conversation {0} is not active (archived or closed): it takes no new messages")]
    ConversationNotActive(ConversationId),
    /// The caller named a participant that is not in the conversation.
    #[error("participant {participant} is not part of conversation {conversation}: check the id")]
    ParticipantNotFound {
        /// The conversation.
        conversation: ConversationId,
        /// The missing participant.
        participant: colloquy_core_model::ParticipantId,
    },
    /// The caller named a message that is not in the conversation.
    #[error("message {message} is not part of conversation {conversation}: check the id")]
    MessageNotFound {
        /// The conversation.
        conversation: ConversationId,
        /// The missing message.
        message: colloquy_core_model::MessageId,
    },
    /// Only agents have a spec to change.
    #[error("participant {0} is not an agent: only agents have a provider, model, prompt and tools")]
    NotAnAgent(colloquy_core_model::ParticipantId),
    /// The participant is already in the conversation.
    #[error("participant {participant} is already in conversation {conversation}: remove it first to add it again")]
    ParticipantAlreadyPresent {
        /// The conversation.
        conversation: ConversationId,
        /// The participant.
        participant: ParticipantId,
    },
    /// The conversation cannot go from one status to the other (a closed one stays closed).
    #[error(
        "conversation {conversation} cannot go from {from:?} to {to:?}: a closed conversation stays closed (fork it to go on)"
    )]
    InvalidStatusChange {
        /// The conversation.
        conversation: ConversationId,
        /// Its status.
        from: ConversationStatus,
        /// The status asked for.
        to: ConversationStatus,
    },
    /// A fork point beyond the end of the source conversation.
    #[error("conversation {conversation} has no seq {seq} (its last is {last_seq}): fork at a seq it has")]
    SeqOutOfRange {
        /// The source conversation.
        conversation: ConversationId,
        /// The seq asked for.
        seq: u64,
        /// The conversation's newest seq.
        last_seq: u64,
    },
    /// A page cursor this store did not make.
    #[error("invalid cursor `{0}`: pass back the `next` cursor of the previous page unchanged")]
    InvalidCursor(String),
    /// Another holder has the conversation's lease.
    #[error(
        "conversation {conversation} is leased to `{holder}` until {expires_at}: wait for it to expire or be released"
    )]
    LeaseHeld {
        /// The conversation.
        conversation: ConversationId,
        /// Who holds it.
        holder: String,
        /// When it runs out unless renewed.
        expires_at: Timestamp,
    },
    /// The fencing token is not the conversation's current lease: another node took it over.
    #[error("the lease on conversation {0} was lost to another holder: stop writing and acquire it again")]
    StaleLease(ConversationId),
    /// No API key has this id.
    #[error("api key {0} does not exist: list the keys for valid ids")]
    ApiKeyNotFound(ApiKeyId),
    /// An account name that is taken.
    #[error("there is already an account named `{0}`: choose another name")]
    AccountExists(String),
    /// No account has this id or name.
    #[error("account {0} does not exist: list the accounts for valid ids and names")]
    AccountNotFound(String),
    /// An account name that cannot be a handle.
    #[error("invalid account name `{0}`: use 1 to 64 characters without spaces")]
    InvalidAccountName(String),
    /// A new API key's secret is too short to be safe.
    #[error("api key secret is too short: use at least {min} random characters")]
    WeakApiKey {
        /// The shortest secret accepted.
        min: usize,
    },
    /// A JSON value nests too deeply to be stored and read back.
    #[error("{what} nests {depth} levels deep, more than the {limit} the store keeps: send flatter JSON")]
    TooDeep {
        /// Which column.
        what: &'static str,
        /// How deep the value nests.
        depth: usize,
        /// The deepest the store accepts.
        limit: usize,
    },
    /// The database's schema is older than this version: migrations are pending.
    #[error("the database schema is {pending} migration(s) behind this version: run `colloquy migrate` (or restart)")]
    SchemaBehind {
        /// How many migrations have not run.
        pending: usize,
    },
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
    /// Whether stored data could not be read back: a row that does not decode (changed by hand,
    /// written by a newer version, or too deeply nested for the JSON reader). Trying again will
    /// not help; the conversation needs an operator's attention.
    pub fn is_unreadable(&self) -> bool {
        match self {
            Self::Corrupt { .. } => true,
            Self::Database(sea_orm::DbErr::Json(_) | sea_orm::DbErr::Type(_)) => true,
            Self::Database(sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(error))) => {
                matches!(error.as_ref(), sea_orm::sqlx::Error::ColumnDecode { .. } | sea_orm::sqlx::Error::Decode(_))
            }
            _ => false,
        }
    }

    /// Whether the caller's request was at fault (as opposed to the database).
    pub const fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Self::ConversationNotFound(_)
                | Self::ConversationNotActive(_)
                | Self::ParticipantNotFound { .. }
                | Self::MessageNotFound { .. }
                | Self::NotAnAgent(_)
                | Self::ParticipantAlreadyPresent { .. }
                | Self::InvalidStatusChange { .. }
                | Self::SeqOutOfRange { .. }
                | Self::InvalidCursor(_)
                | Self::LeaseHeld { .. }
                | Self::StaleLease(_)
                | Self::ApiKeyNotFound(_)
                | Self::WeakApiKey { .. }
                | Self::AccountExists(_)
                | Self::AccountNotFound(_)
                | Self::InvalidAccountName(_)
                | Self::TooDeep { .. }
                | Self::UnsupportedUrl(_)
        )
    }
}
