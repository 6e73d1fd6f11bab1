//! The engine's errors at its public edge.

use colloquy_core_model::{ConversationId, ParticipantId};
use colloquy_store::StoreError;

/// Why an engine call failed. A failing *turn* is not an error of the call that started it: it
/// ends with `agent_end` and a stop reason instead.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The sender does not take part in the conversation.
    #[error("participant {participant} is not part of conversation {conversation}: join it first")]
    NotAParticipant {
        /// The conversation.
        conversation: ConversationId,
        /// The would-be sender.
        participant: ParticipantId,
    },
    /// The conversation has no participant who could have sent this.
    #[error("conversation {0} has no user or service participant to send as: name a sender")]
    NoSender(ConversationId),
    /// The conversation has no agent to answer.
    #[error("conversation {0} has no agent participant: add one with an agent spec")]
    NoAgent(ConversationId),
    /// A tool name that is not registered.
    #[error("there is no tool named `{0}`: use one of the registered tools")]
    UnknownTool(String),
    /// An edit of history that would break it (e.g. a tool call without its result).
    #[error("{0}")]
    InvalidEdit(String),
    /// The message had nothing in it.
    #[error("a message needs at least one content part, e.g. {{\"type\": \"text\", \"text\": \"hello\"}}")]
    EmptyMessage,
    /// A turn is running and the caller asked not to queue.
    #[error("conversation {0} is busy answering: wait for agent_end, cancel the turn, or send with queueing allowed")]
    Busy(ConversationId),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}
