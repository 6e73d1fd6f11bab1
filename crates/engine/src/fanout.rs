//! Live fan-out of a conversation's events, and subscriptions that replay the durable log first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use colloquy_core_model::{ConversationId, EventEnvelope};
use colloquy_store::{ConversationStore, StoreError};
use tokio::sync::broadcast;

/// Events buffered per conversation for slow subscribers; one that falls further behind
/// re-reads the durable log instead of growing memory.
const CHANNEL_CAPACITY: usize = 1024;
/// Durable events read from the store per page while a subscriber catches up.
const REPLAY_PAGE: u64 = 500;

/// One broadcast channel per conversation that has subscribers.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    channels: Mutex<HashMap<ConversationId, broadcast::Sender<Arc<EventEnvelope>>>>,
}

impl Hub {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, broadcast::Sender<Arc<EventEnvelope>>>> {
        // The map stays consistent even if a holder panicked: every update is a single call.
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends an event to the conversation's live subscribers, if it has any.
    pub(crate) fn publish(&self, envelope: EventEnvelope) {
        let mut channels = self.channels();
        let conversation = envelope.conversation_id;
        if let Some(sender) = channels.get(&conversation)
            && sender.send(Arc::new(envelope)).is_err()
        {
            channels.remove(&conversation);
        }
    }

    fn subscribe(&self, conversation: ConversationId) -> broadcast::Receiver<Arc<EventEnvelope>> {
        self.channels().entry(conversation).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).subscribe()
    }
}

/// A conversation's events from a given `seq` on: first the durable log, then live events,
/// with no gap and no duplicate among durable events (ephemeral deltas are live only).
pub struct Subscription {
    conversation: ConversationId,
    store: Arc<dyn ConversationStore>,
    live: broadcast::Receiver<Arc<EventEnvelope>>,
    last_seq: u64,
    backlog: VecDeque<EventEnvelope>,
    catching_up: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("conversation", &self.conversation)
            .field("last_seq", &self.last_seq)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        hub: &Hub,
        store: Arc<dyn ConversationStore>,
        conversation: ConversationId,
        after_seq: u64,
    ) -> Self {
        // Listen before reading the log, so nothing published meanwhile is missed.
        let live = hub.subscribe(conversation);
        Self { conversation, store, live, last_seq: after_seq, backlog: VecDeque::new(), catching_up: true }
    }

    /// The conversation it follows.
    pub fn conversation_id(&self) -> ConversationId {
        self.conversation
    }

    /// The seq of the last durable event handed out.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The next event. Waits for one when caught up; fails only if the store fails.
    pub async fn next(&mut self) -> Result<EventEnvelope, StoreError> {
        loop {
            if let Some(envelope) = self.backlog.pop_front() {
                self.last_seq = envelope.seq.unwrap_or(self.last_seq);
                return Ok(envelope);
            }
            if self.catching_up {
                let page = self.store.events_after(self.conversation, self.last_seq, REPLAY_PAGE).await?;
                self.catching_up = page.len() as u64 == REPLAY_PAGE;
                self.backlog.extend(page);
                continue;
            }
            match self.live.recv().await {
                Ok(envelope) => match envelope.seq {
                    None => return Ok(EventEnvelope::clone(&envelope)),
                    Some(seq) if seq <= self.last_seq => {}
                    Some(seq) if seq == self.last_seq + 1 => {
                        self.last_seq = seq;
                        return Ok(EventEnvelope::clone(&envelope));
                    }
                    // Writers publish after they commit, so two writers may publish out of seq
                    // order; the log has everything up to the seq we just saw.
                    Some(_) => self.catching_up = true,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                // The hub keeps the sender while the channel has receivers, so this means shutdown.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}
