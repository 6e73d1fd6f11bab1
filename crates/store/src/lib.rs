//! Colloquy's conversation store: the durable truth of conversations, participants, messages and
//! the per-conversation event log.
//!
//! [`ConversationStore`] is the API every other crate uses; [`SeaStore`] implements it once with
//! SeaORM for SQLite (the embedded default, WAL, one writer) and Postgres, chosen by the URL.
//!
//! Architecture invariant: every durable event of a conversation gets the next `seq` of that
//! conversation, gap-free and strictly increasing, in the same transaction as the rows it
//! describes. A message's `seq` is the `seq` of the event that recorded it.

mod error;
mod sea;

use async_trait::async_trait;
use colloquy_core_model::{
    AgentSpec, Conversation, ConversationId, ConversationKind, EventEnvelope, Message, NewMessage, Options,
    Participant, ParticipantId, ParticipantKind, ParticipantRole, ToolCallId, TurnEvent, TurnId,
};

pub use error::StoreError;
pub use sea::{Durability, SeaStore, StoreOptions};

/// A conversation to create, with its first participants.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Chosen by the caller.
    pub id: ConversationId,
    /// Who answers whom.
    pub kind: ConversationKind,
    /// Optional title.
    pub title: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// How turns run.
    pub options: Options,
    /// The first participants (no `participant_joined` events are written for them).
    pub participants: Vec<NewParticipant>,
}

/// A participant to add.
#[derive(Debug, Clone)]
pub struct NewParticipant {
    /// Chosen by the caller.
    pub id: ParticipantId,
    /// Human, agent or service.
    pub kind: ParticipantKind,
    /// Shown to others.
    pub display_name: String,
    /// What it may do.
    pub role: ParticipantRole,
    /// How it answers, for agents.
    pub agent: Option<AgentSpec>,
}

/// Which event records an appended message; the store builds it around the stored message.
#[derive(Debug, Clone)]
pub enum MessageEvent {
    /// `message_posted`: a participant posted it.
    Posted,
    /// `message_end`: an agent's streamed message is complete.
    End {
        /// The prompt turn.
        turn_id: TurnId,
    },
    /// `tool_execution_end`: the message holds one tool call's result.
    ToolExecutionEnd {
        /// The prompt turn.
        turn_id: TurnId,
        /// The call it answers.
        tool_call_id: ToolCallId,
        /// The tool.
        tool_name: String,
        /// Whether the call failed.
        is_error: bool,
    },
}

impl MessageEvent {
    /// The event, once the message is stored.
    pub fn into_event(self, message: Message) -> TurnEvent {
        match self {
            Self::Posted => TurnEvent::MessagePosted { message },
            Self::End { turn_id } => TurnEvent::MessageEnd { turn_id, message },
            Self::ToolExecutionEnd { turn_id, tool_call_id, tool_name, is_error } => {
                TurnEvent::ToolExecutionEnd { turn_id, tool_call_id, tool_name, is_error, message }
            }
        }
    }
}

/// The outcome of [`ConversationStore::append_message`].
#[derive(Debug, Clone)]
pub struct AppendedMessage {
    /// The stored message (the earlier one, for a duplicate).
    pub message: Message,
    /// The event that recorded it; `None` for a duplicate, which writes nothing.
    pub event: Option<EventEnvelope>,
    /// Whether a message with the same `client_msg_id` was already stored.
    pub duplicate: bool,
}

/// The durable record of conversations. One implementation per process, shared by `Arc`.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Creates a conversation and its first participants in one transaction.
    async fn create_conversation(&self, new: NewConversation) -> Result<(Conversation, Vec<Participant>), StoreError>;

    /// Reads a conversation; [`StoreError::ConversationNotFound`] if there is none.
    async fn conversation(&self, id: ConversationId) -> Result<Conversation, StoreError>;

    /// Lists a conversation's participants, in the order they joined.
    async fn participants(&self, id: ConversationId) -> Result<Vec<Participant>, StoreError>;

    /// Appends a message and the event that records it under the next `seq`, and updates the
    /// conversation's totals, all in one transaction. With a `client_msg_id` that is already
    /// stored for this conversation, writes nothing and returns the stored message as a duplicate.
    async fn append_message(
        &self,
        conversation: ConversationId,
        message: NewMessage,
        event: MessageEvent,
    ) -> Result<AppendedMessage, StoreError>;

    /// Appends a durable event that records no message (e.g. `turn_start`) under the next `seq`.
    async fn append_event(&self, conversation: ConversationId, event: TurnEvent) -> Result<EventEnvelope, StoreError>;

    /// Messages with `seq > after_seq`, oldest first, at most `limit`.
    async fn messages_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError>;

    /// Prompt turns a crash left open: each conversation whose newest `agent_start` has no
    /// `agent_end` after it, with that `agent_start`'s seq. Read once at start, for recovery.
    async fn unfinished_turns(&self) -> Result<Vec<(ConversationId, u64)>, StoreError>;

    /// Durable events with `seq > after_seq`, in seq order, at most `limit`.
    async fn events_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError>;
}
