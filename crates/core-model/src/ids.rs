//! Identifier newtypes, so that a message id can never be passed where a conversation id is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id string that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind}: expected a UUID such as 0190b6a2-7c1e-7d4a-9f3e-2b1c0d9e8f7a")]
pub struct ParseIdError {
    kind: &'static str,
    input: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID, e.g. one read back from storage.
            pub const fn from_uuid(uuid: uuid::Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| ParseIdError { kind: $kind, input: s.to_owned() })
            }
        }
    };
}

uuid_id!(
    /// Identifies a conversation.
    ConversationId,
    "conversation id"
);
uuid_id!(
    /// Identifies a message within the whole system.
    MessageId,
    "message id"
);
uuid_id!(
    /// Identifies a participant (user, agent or service) of one conversation.
    ParticipantId,
    "participant id"
);
uuid_id!(
    /// Identifies one prompt turn: from `agent_start` to `agent_end`.
    TurnId,
    "turn id"
);
uuid_id!(
    /// Identifies an account: a person, a service or an operator across conversations.
    AccountId,
    "account id"
);

/// Identifies one tool call.
///
/// Unlike the other ids this wraps a string: the provider mints it (`call_...`, `toolu_...`) and
/// must see it back verbatim with the result. When a provider omits it, Colloquy mints
/// `call_<uuidv7>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
#[serde(transparent)]
pub struct ToolCallId(String);

impl ToolCallId {
    /// A fresh id for a tool call whose provider gave none.
    pub fn generate() -> Self {
        Self(format!("call_{}", uuid::Uuid::now_v7().simple()))
    }

    /// The id as the provider sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ToolCallId {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for ToolCallId {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Display for ToolCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
