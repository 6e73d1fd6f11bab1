//! Colloquy's domain types: what a conversation, a participant, a message and a turn event are.
//!
//! This crate is pure data with serde: no IO, no async runtime, no database and no HTTP, so that
//! every other crate (and any program that only wants to read Colloquy's wire format) can use it.
//! Every enum serializes with `snake_case` names; tagged enums use a `type` field.

mod account;
mod conversation;
mod event;
mod ids;
pub mod limits;
mod message;
mod options;
mod participant;

pub use account::{Account, AccountKind};
pub use conversation::{
    Conversation, ConversationKind, ConversationRequest, ConversationStatus, ForkPoint, ParticipantRequest, Totals,
};
pub use event::{BudgetLimit, EventEnvelope, MessageDelta, StopReason, TurnError, TurnErrorKind, TurnEvent};
pub use ids::{AccountId, ConversationId, MessageId, ParseIdError, ParticipantId, ToolCallId, TurnId};
pub use message::{ContentPart, MediaSource, Message, MessageRole, NewMessage, ToolSpec, Usage};
pub use options::{Options, QueueMode, ResponderPolicy, ToolChoice};
pub use participant::{
    AgentSpec, Participant, ParticipantKind, ParticipantRole, WriteOnly, check_a2a_key, check_a2a_url,
    check_remote_agent,
};

/// Wall-clock timestamps are UTC everywhere in Colloquy.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
