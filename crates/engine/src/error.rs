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
    /// An agent names a provider that is not configured.
    #[error("there is no provider `{provider}`: use one of {}", known.join(", "))]
    UnknownProvider {
        /// The name asked for.
        provider: String,
        /// The configured ones.
        known: Vec<String>,
    },
    /// An agent names a model its provider does not serve.
    #[error("provider `{provider}` does not serve model `{model}`: use one of {}", known.join(", "))]
    UnknownModel {
        /// The provider.
        provider: String,
        /// The model asked for.
        model: String,
        /// Some it does serve.
        known: Vec<String>,
    },
    /// No tool call with this id waits for approval in the conversation.
    #[error(
        "no tool call `{call}` of conversation {conversation} waits for approval (never asked, answered, timed out or cancelled): list the pending approvals"
    )]
    ApprovalNotPending {
        /// The conversation.
        conversation: ConversationId,
        /// The call named.
        call: String,
    },
    /// A tool name that is not registered.
    #[error("there is no tool named `{0}`: use one of the registered tools")]
    UnknownTool(String),
    /// An edit of history that would break it (e.g. a tool call without its result).
    #[error("{0}")]
    InvalidEdit(String),
    /// The message had nothing in it.
    #[error("a message needs at least one content part, e.g. {{\"type\": \"text\", \"text\": \"hello\"}}")]
    EmptyMessage,
    /// One of the message's parts says nothing (blank text, `null` or `{{}}` custom value).
    #[error("content part {part} ({kind}) is empty: remove it or put something in it")]
    EmptyPart {
        /// Its index in the content.
        part: usize,
        /// Its `type`.
        kind: &'static str,
    },
    /// A part only an agent's turn may produce (a tool call or a tool result).
    #[error(
        "content part {part} is a `{kind}`: only an agent's turn makes tool calls and results; send text, image, file or custom parts"
    )]
    ForbiddenPart {
        /// Its index in the content.
        part: usize,
        /// Its `type`.
        kind: &'static str,
    },
    /// Content that breaks a limit (the message says which).
    #[error("{0}")]
    InvalidContent(String),
    /// A `client_msg_id` that cannot serve as an idempotency key.
    #[error("{0}")]
    InvalidClientMsgId(String),
    /// A conversation that could not be created as asked (the message says why).
    #[error("{0}")]
    InvalidConversation(String),
    /// The conversation's stored data cannot be read back; it is not served until repaired.
    #[error(
        "conversation {conversation} is unavailable: its stored data cannot be read back ({reason}); an operator must repair or delete it (see /readyz)"
    )]
    Unavailable {
        /// The conversation.
        conversation: ConversationId,
        /// What failed.
        reason: String,
    },
    /// Too many prompts already wait behind the running turn.
    #[error(
        "conversation {conversation} already has {limit} prompts waiting for the running turn: wait for agent_end before sending more"
    )]
    QueueFull {
        /// The conversation.
        conversation: ConversationId,
        /// How many may wait.
        limit: usize,
    },
    /// A turn is running and the caller asked not to queue.
    #[error("conversation {0} is busy answering: wait for agent_end, cancel the turn, or send with queueing allowed")]
    Busy(ConversationId),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}
