//! What callers ask the store for beyond single rows: conversation changes, filters, cursors and
//! pages, and a history cut to a token budget.

use std::fmt;
use std::str::FromStr;

use colloquy_core_model::{
    AccountId, ConversationKind, ConversationStatus, Message, Options, ParticipantId, Timestamp,
};

use crate::StoreError;

/// Fields of a conversation to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationUpdate {
    /// A new title, or `Some(None)` to remove it.
    pub title: Option<Option<String>>,
    /// A new summary, or `Some(None)` to remove it.
    pub summary: Option<Option<String>>,
    /// New tags, replacing the old ones.
    pub tags: Option<Vec<String>>,
    /// New options, replacing the old ones.
    pub options: Option<Options>,
    /// New tool names, replacing the old ones.
    pub tools: Option<Vec<String>>,
    /// A new deadline for the sweeper, or `Some(None)` for none.
    pub expires_at: Option<Option<Timestamp>>,
    /// A new status.
    pub status: Option<ConversationStatus>,
}

impl ConversationUpdate {
    /// An update of the status alone.
    pub fn status(status: ConversationStatus) -> Self {
        Self { status: Some(status), ..Self::default() }
    }
}

/// Which conversations [`crate::ConversationStore::list_conversations`] returns; every field
/// that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationFilter {
    /// Only conversations this party takes part in (and has not left).
    pub participant: Option<ParticipantId>,
    /// Only conversations each of these accounts takes part in (through an active participant).
    pub accounts: Vec<AccountId>,
    /// Only conversations with this status.
    pub status: Option<ConversationStatus>,
    /// Only conversations of this kind.
    pub kind: Option<ConversationKind>,
    /// Only conversations with this tag.
    pub tag: Option<String>,
    /// Only conversations with an active agent of this display name (any case).
    pub agent: Option<String>,
    /// Only conversations whose title or summary contains this text (any case).
    pub text: Option<String>,
}

/// Where the next page of conversations starts (they come newest activity first). Opaque: it
/// prints as a short string for URLs and parses back with [`str::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConversationCursor {
    /// The last listed conversation's `last_activity`.
    pub(crate) last_activity: Timestamp,
    /// And its id, for ties.
    pub(crate) id: uuid::Uuid,
}

impl fmt::Display for ConversationCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.last_activity.timestamp_micros(), self.id.simple())
    }
}

impl FromStr for ConversationCursor {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || StoreError::InvalidCursor(text.to_owned());
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        let last_activity =
            micros.parse::<i64>().ok().and_then(chrono::DateTime::from_timestamp_micros).ok_or_else(invalid)?;
        let id = uuid::Uuid::try_parse(id).map_err(|_| invalid())?;
        Ok(Self { last_activity, id })
    }
}

/// Where a page of messages starts, by seq (exclusive): `After(0)` is the start of the history,
/// `Before(u64::MAX)` its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageCursor {
    /// Messages with a greater seq, going forwards.
    After(u64),
    /// Messages with a smaller seq, going backwards.
    Before(u64),
}

/// One page of a longer list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Where the following page starts; `None` on the last page.
    pub next: Option<C>,
}

/// The tail of a conversation that fits a token budget.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// Their stored token sizes, added up.
    pub tokens: u64,
    /// Whether older messages were left out.
    pub truncated: bool,
}
