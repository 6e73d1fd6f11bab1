//! Which events of a conversation belong to the turn that answers one message: the message's
//! admission (`message_posted`), then the first `agent_start` after it, then that turn's events
//! up to its `agent_end`. For protocols whose unit is "the answer to this message" (an A2A
//! task, an ACP prompt).

use colloquy_core_model::{MessageId, TurnEvent, TurnId};

/// Follows one message's answer through the conversation's events, in seq order.
#[derive(Debug, Clone)]
pub struct AnswerTo {
    message: MessageId,
    admitted: bool,
    turn: Option<TurnId>,
}

impl AnswerTo {
    pub fn new(message: MessageId) -> Self {
        Self { message, admitted: false, turn: None }
    }

    /// Takes in the next event; returns whether it is one of the answering turn's (its
    /// `agent_start` included).
    pub fn takes(&mut self, event: &TurnEvent) -> bool {
        match event {
            TurnEvent::MessagePosted { message } if message.id == self.message => {
                self.admitted = true;
                false
            }
            TurnEvent::AgentStart { turn_id, .. } if self.admitted && self.turn.is_none() => {
                self.turn = Some(*turn_id);
                true
            }
            _ => self.turn.is_some_and(|turn| event_turn(event) == Some(turn)),
        }
    }
}

/// The turn an event is part of, if it is part of one.
fn event_turn(event: &TurnEvent) -> Option<TurnId> {
    match event {
        TurnEvent::AgentStart { turn_id, .. }
        | TurnEvent::AgentEnd { turn_id, .. }
        | TurnEvent::TurnStart { turn_id, .. }
        | TurnEvent::TurnEnd { turn_id, .. }
        | TurnEvent::MessageStart { turn_id, .. }
        | TurnEvent::MessageUpdate { turn_id, .. }
        | TurnEvent::MessageEnd { turn_id, .. }
        | TurnEvent::ToolExecutionStart { turn_id, .. }
        | TurnEvent::ToolExecutionUpdate { turn_id, .. }
        | TurnEvent::ToolExecutionEnd { turn_id, .. }
        | TurnEvent::ApprovalRequested { turn_id, .. } => Some(*turn_id),
        _ => None,
    }
}
