//! The live event stream of a conversation, and why a turn stopped.
//!
//! Names follow the seeds (`agent_start` ... `agent_end`). A *prompt turn* runs from
//! `agent_start` to `agent_end` and answers one prompt; inside it, each LLM request and the tool
//! calls it asks for run from `turn_start` to `turn_end` (numbered by `request`, from 1).

use serde::{Deserialize, Serialize};

use crate::{ConversationId, Message, MessageId, MessageRole, Participant, ParticipantId, ToolCallId, TurnId, Usage};

/// Which budget a turn ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BudgetLimit {
    /// `Options::cost_limit`.
    Cost,
    /// `Options::context_limit`.
    Context,
}

/// What broke when a turn stops with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TurnErrorKind {
    /// The LLM provider failed or is not configured.
    Provider,
    /// The tool runtime failed (not a tool's own failure, which is a tool result).
    ToolRuntime,
    /// The conversation store failed.
    Store,
    /// The process stopped mid-turn; the turn was closed when it started again.
    Interrupted,
}

/// Why a turn stopped with `error`, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnError {
    /// What broke.
    pub kind: TurnErrorKind,
    /// What happened and what to do.
    pub message: String,
}

/// Why a prompt turn ended: the Agent Client Protocol's stop reasons plus budgets and errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "stop_reason", rename_all = "snake_case")]
pub enum StopReason {
    /// The model answered without asking for tools.
    EndTurn,
    /// The provider stopped at its output token limit.
    MaxTokens,
    /// The turn used `Options::max_turn_requests` LLM requests.
    MaxTurnRequests,
    /// The model or the provider refused.
    Refusal,
    /// Someone cancelled the turn.
    Cancelled,
    /// A cost or context budget would be exceeded by another request.
    BudgetExceeded {
        /// Which budget.
        limit: BudgetLimit,
    },
    /// Something failed; see the error.
    Error {
        /// What failed.
        error: TurnError,
    },
}

/// A piece of a message that is still streaming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageDelta {
    /// More text.
    Text {
        /// The new text.
        text: String,
    },
    /// More of a tool call: `id` and `name` come once, `arguments` in pieces.
    ToolCall {
        /// The call's position in the response.
        index: u32,
        /// The call's id, on its first piece.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<ToolCallId>,
        /// The tool's name, on its first piece.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// More of the JSON arguments text.
        arguments: String,
    },
}

/// Something that happened in a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnEvent {
    /// An agent started answering.
    AgentStart {
        /// The prompt turn.
        turn_id: TurnId,
        /// The answering agent.
        agent: ParticipantId,
    },
    /// An LLM request (and the tool calls it asks for) started.
    TurnStart {
        /// The prompt turn.
        turn_id: TurnId,
        /// 1 for the first request of the prompt turn, then 2, ...
        request: u32,
    },
    /// A message started streaming.
    MessageStart {
        /// The prompt turn.
        turn_id: TurnId,
        /// The message's id (the same in `message_end`).
        message_id: MessageId,
        /// Its role.
        role: MessageRole,
    },
    /// More of a streaming message (ephemeral: has no seq and is not replayed).
    MessageUpdate {
        /// The prompt turn.
        turn_id: TurnId,
        /// The message.
        message_id: MessageId,
        /// What was added.
        delta: MessageDelta,
    },
    /// A message is complete and stored.
    MessageEnd {
        /// The prompt turn.
        turn_id: TurnId,
        /// The stored message.
        message: Message,
    },
    /// A tool call started.
    ToolExecutionStart {
        /// The prompt turn.
        turn_id: TurnId,
        /// The call.
        tool_call_id: ToolCallId,
        /// The tool.
        tool_name: String,
        /// Its arguments.
        arguments: serde_json::Value,
    },
    /// A tool call waits for a conversation owner to allow or deny it (the `approve` frame, or
    /// `POST .../approvals/{tool_call_id}`); unanswered, it is denied after the conversation's
    /// `approval_timeout_ms`.
    ApprovalRequested {
        /// The prompt turn.
        turn_id: TurnId,
        /// The call.
        tool_call_id: ToolCallId,
        /// The tool.
        tool_name: String,
        /// Its arguments.
        arguments: serde_json::Value,
    },
    /// A running tool reported progress (ephemeral).
    ToolExecutionUpdate {
        /// The prompt turn.
        turn_id: TurnId,
        /// The call.
        tool_call_id: ToolCallId,
        /// What the tool reported.
        progress: serde_json::Value,
    },
    /// A tool call finished; `message` is the stored tool-result message.
    ToolExecutionEnd {
        /// The prompt turn.
        turn_id: TurnId,
        /// The call.
        tool_call_id: ToolCallId,
        /// The tool.
        tool_name: String,
        /// Whether it failed.
        is_error: bool,
        /// The stored tool-result message.
        message: Message,
    },
    /// An LLM request and its tool calls are done.
    TurnEnd {
        /// The prompt turn.
        turn_id: TurnId,
        /// Which request.
        request: u32,
    },
    /// The agent finished answering.
    AgentEnd {
        /// The prompt turn.
        turn_id: TurnId,
        /// Why it stopped.
        #[serde(flatten)]
        stop: StopReason,
        /// Tokens and cost over all its LLM requests.
        usage: Usage,
    },
    /// Someone posted a message and it joined the history: at once when no turn was running,
    /// otherwise at the turn boundary after the turn that was running when it arrived (it was
    /// `message_queued` until then). Its `seq` is this event's: history in seq order is the
    /// order the models see.
    MessagePosted {
        /// The stored message.
        message: Message,
    },
    /// Someone posted a message while a turn was running: it is stored (the sender's ack is
    /// final) and waits for the turn boundary, where `message_posted` brings it into the history
    /// with a new seq. Queued messages are not part of the history until then.
    MessageQueued {
        /// The stored message, with the seq of this event.
        message: Message,
    },
    /// A stored message's content was edited (library `update_message`).
    MessageUpdated {
        /// The message as it now is (same id and seq).
        message: Message,
    },
    /// A stored message was taken out of the history (library `remove_message`).
    MessageRemoved {
        /// The message that is gone.
        message_id: MessageId,
    },
    /// A participant joined.
    ParticipantJoined {
        /// Who.
        participant: Participant,
    },
    /// A participant's role or agent spec changed.
    ParticipantUpdated {
        /// The participant as it now is.
        participant: Participant,
    },
    /// A participant is typing (ephemeral).
    ParticipantTyping {
        /// Who.
        participant_id: ParticipantId,
    },
    /// A participant connected to or disconnected from the conversation (ephemeral): online
    /// while at least one of its connections follows the conversation.
    ParticipantPresence {
        /// Who.
        participant_id: ParticipantId,
        /// Whether it is connected now.
        online: bool,
    },
    /// A participant left.
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
    },
    /// The conversation's title, options or status changed.
    ConversationUpdated {
        /// The fields that changed, as JSON.
        changes: serde_json::Value,
    },
}

impl TurnEvent {
    /// The message the event records (`message_posted`, `message_queued`, `message_end`,
    /// `tool_execution_end`), if it is one of those.
    pub const fn recorded_message(&self) -> Option<&Message> {
        match self {
            Self::MessagePosted { message }
            | Self::MessageQueued { message }
            | Self::MessageEnd { message, .. }
            | Self::ToolExecutionEnd { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Whether the event is kept in the event log (and so has a seq). Streaming deltas, tool
    /// progress, typing and presence are live-only: a client that reconnects gets the finished
    /// message instead.
    pub const fn is_durable(&self) -> bool {
        !matches!(
            self,
            Self::MessageUpdate { .. }
                | Self::ToolExecutionUpdate { .. }
                | Self::ParticipantTyping { .. }
                | Self::ParticipantPresence { .. }
        )
    }

    /// The event's `type` name, for logs and storage.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::AgentStart { .. } => "agent_start",
            Self::TurnStart { .. } => "turn_start",
            Self::MessageStart { .. } => "message_start",
            Self::MessageUpdate { .. } => "message_update",
            Self::MessageEnd { .. } => "message_end",
            Self::ToolExecutionStart { .. } => "tool_execution_start",
            Self::ToolExecutionUpdate { .. } => "tool_execution_update",
            Self::ApprovalRequested { .. } => "approval_requested",
            Self::ParticipantTyping { .. } => "participant_typing",
            Self::ParticipantPresence { .. } => "participant_presence",
            Self::ToolExecutionEnd { .. } => "tool_execution_end",
            Self::TurnEnd { .. } => "turn_end",
            Self::AgentEnd { .. } => "agent_end",
            Self::MessagePosted { .. } => "message_posted",
            Self::MessageQueued { .. } => "message_queued",
            Self::MessageUpdated { .. } => "message_updated",
            Self::MessageRemoved { .. } => "message_removed",
            Self::ParticipantJoined { .. } => "participant_joined",
            Self::ParticipantUpdated { .. } => "participant_updated",
            Self::ParticipantLeft { .. } => "participant_left",
            Self::ConversationUpdated { .. } => "conversation_updated",
        }
    }
}

/// An event with its place in the conversation: `seq` is set for durable events only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventEnvelope {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Position in the durable event log; absent for ephemeral events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The event.
    pub event: TurnEvent,
}
