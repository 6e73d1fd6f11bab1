//! A turn's writes: the durable events of one step of a turn are gathered and written together
//! (one batch, one commit shared with every other conversation's appends waiting at the same
//! time), then published, in seq order. Nothing is published before it is stored.

use colloquy_core_model::{ConversationId, EventEnvelope, NewMessage, TurnEvent};
use colloquy_store::{Append, MessageEvent, StoreError};

use crate::inner::Inner;

/// The events of the step under way, not yet written.
pub(crate) struct Recorder {
    conversation: ConversationId,
    pending: Vec<Append>,
}

impl Recorder {
    pub(crate) fn new(conversation: ConversationId) -> Self {
        Self { conversation, pending: Vec::with_capacity(8) }
    }

    /// Adds a durable event that records no message to the step.
    pub(crate) fn push(&mut self, event: TurnEvent) {
        self.pending.push(Append::Event(event));
    }

    /// Adds a message, with the event that records it, to the step.
    pub(crate) fn push_message(&mut self, message: NewMessage, event: MessageEvent) {
        self.pending.push(Append::Message(message, event));
    }

    /// Writes the step's events in one batch and publishes them; with `sync`, the commit is on
    /// disk before this returns (it acknowledges something: a turn's end, a tool about to act).
    /// On failure the step's events are dropped: none of them was stored or published.
    pub(crate) async fn flush(&mut self, inner: &Inner, sync: bool) -> Result<Vec<EventEnvelope>, StoreError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let entries = std::mem::take(&mut self.pending);
        inner.record(self.conversation, entries, sync).await
    }
}
