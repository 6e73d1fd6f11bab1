//! The approval hook consulted before each call, and the waiting room where calls that need a
//! human's (or a service's) answer wait for it.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use colloquy_core_model::{ConversationId, ParticipantId, ToolCallId};
use tokio::sync::oneshot;

use crate::{ToolCallRequest, ToolContext};

/// What the hook says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Run it.
    Allow,
    /// Refuse it; the model is told `denied: <reason>`.
    Deny(String),
    /// Wait for an answer from outside, given through [`Approvals::answer`].
    Ask,
}

/// An answer from outside to a call waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalAnswer {
    /// Run it.
    Allow,
    /// Refuse it; the model is told `denied: <reason>`.
    Deny(String),
}

/// Decides, before each call runs, whether it may. Install one with
/// [`crate::ToolExecutor::with_approval`]; without one every call is allowed.
#[async_trait]
pub trait ApprovalHook: Send + Sync + 'static {
    /// Looks at a call whose arguments are valid and whose caller is authorized.
    async fn review(&self, call: &ToolCallRequest, ctx: &ToolContext) -> Approval;
}

/// A call waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// The agent that made it.
    pub caller: ParticipantId,
    /// The provider's id for the call.
    pub call_id: ToolCallId,
    /// The tool it would run.
    pub tool: String,
    /// Its arguments.
    pub arguments: serde_json::Value,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Nothing is waiting under that id (never asked, already answered, timed out or cancelled).
    #[error(
        "no call `{call_id}` in conversation {conversation_id} is waiting for approval: list the pending approvals to see which are"
    )]
    NotPending {
        /// The conversation named.
        conversation_id: ConversationId,
        /// The call named.
        call_id: ToolCallId,
    },
}

/// The calls waiting for approval, shared by every conversation the executor serves. Clones
/// share the same waiting room.
#[derive(Debug, Clone, Default)]
pub struct Approvals {
    /// In the order asked; a handful at most, so a list is enough.
    waiting: Arc<Mutex<Vec<Waiting>>>,
}

#[derive(Debug)]
struct Waiting {
    request: PendingApproval,
    answer: oneshot::Sender<ApprovalAnswer>,
}

impl Approvals {
    /// The calls waiting now, oldest first.
    pub fn pending(&self) -> Vec<PendingApproval> {
        self.lock().iter().map(|waiting| waiting.request.clone()).collect()
    }

    /// Answers a waiting call; it then runs or is denied.
    pub fn answer(
        &self,
        conversation_id: ConversationId,
        call_id: &ToolCallId,
        answer: ApprovalAnswer,
    ) -> Result<(), ApprovalError> {
        let mut waiting = self.lock();
        let position = waiting
            .iter()
            .position(|w| w.request.conversation_id == conversation_id && &w.request.call_id == call_id)
            .ok_or_else(|| ApprovalError::NotPending { conversation_id, call_id: call_id.clone() })?;
        let entry = waiting.remove(position);
        // The call stopped waiting (timed out or cancelled) in the meantime: nothing to answer.
        entry.answer.send(answer).map_err(|_| ApprovalError::NotPending { conversation_id, call_id: call_id.clone() })
    }

    /// Puts a call in the waiting room; `None` if a call with the same id already waits there.
    pub(crate) fn ask(&self, request: PendingApproval) -> Option<Ticket> {
        let mut waiting = self.lock();
        let taken = waiting
            .iter()
            .any(|w| w.request.conversation_id == request.conversation_id && w.request.call_id == request.call_id);
        if taken {
            return None;
        }
        let (answer, receiver) = oneshot::channel();
        let key = (request.conversation_id, request.call_id.clone());
        waiting.push(Waiting { request, answer });
        Some(Ticket { approvals: self.clone(), key, receiver })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // Every update is one push or remove, so a poisoned list is still sound.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A call's place in the waiting room; leaving (dropped after an answer, a timeout or
/// cancellation) takes the call off the list.
#[derive(Debug)]
pub(crate) struct Ticket {
    approvals: Approvals,
    key: (ConversationId, ToolCallId),
    receiver: oneshot::Receiver<ApprovalAnswer>,
}

impl Ticket {
    /// Waits for the answer; `None` if the waiting room dropped the request.
    pub(crate) async fn answer(&mut self) -> Option<ApprovalAnswer> {
        (&mut self.receiver).await.ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let (conversation_id, call_id) = &self.key;
        self.approvals
            .lock()
            .retain(|w| !(w.request.conversation_id == *conversation_id && w.request.call_id == *call_id));
    }
}
