//! Accounts: stable identities across conversations, which API keys authenticate and
//! participants are bound to.

use serde::{Deserialize, Serialize};

use crate::{AccountId, Timestamp};

/// What an account is, and so what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A person, behind a chat client.
    User,
    /// An outside program that posts as its own participants.
    Service,
    /// An operator: may do everything, in every conversation.
    Admin,
}

impl AccountKind {
    /// The participant kind an account of this kind takes part as.
    pub const fn participant_kind(self) -> crate::ParticipantKind {
        match self {
            Self::Service => crate::ParticipantKind::Service,
            Self::User | Self::Admin => crate::ParticipantKind::User,
        }
    }

    /// The stable lowercase name used in storage and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Service => "service",
            Self::Admin => "admin",
        }
    }
}

/// A stable identity across conversations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    /// The account's id.
    pub id: AccountId,
    /// A unique handle, for operators (`colloquy keys create --account NAME`).
    pub name: String,
    /// User, service or admin.
    pub kind: AccountKind,
    /// Shown to others (the default display name of its participants).
    pub display_name: String,
    /// When it was created.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}
