//! The runner table's entries: one per conversation with a runner, holding its queue of
//! prompts waiting for the turn boundary, its cancel token and its flags. The table itself is in
//! [`crate::inner::Inner`]; every change happens under its lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use colloquy_core_model::MessageId;
use colloquy_store::Lease;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// The state of one conversation's runner, kept in the engine's runner table while it exists.
/// Every change happens under that table's lock, so posting and stopping never race.
pub(crate) struct Runner {
    /// Tells this runner from a later one of the same conversation, so that a task that ends
    /// removes only its own entry.
    pub(crate) id: u64,
    /// Cancels the turn in progress.
    pub(crate) cancel: CancellationToken,
    /// Prompts waiting for the turn boundary, by the seq of their `message_queued`: admitted in
    /// this order.
    pub(crate) queue: BTreeMap<u64, MessageId>,
    /// Posts that were told to queue but are not stored yet. The runner waits for them before
    /// it admits or stops, so prompts are admitted in seq order and none is left behind.
    pub(crate) queue_writes: usize,
    /// Wakes the runner when a queued post has been stored.
    pub(crate) landed: Arc<Notify>,
    /// The next pass runs a turn even if nothing awaits an answer ([`crate::Engine::continue_conversation`]).
    pub(crate) force: bool,
    /// The engine is shutting down: stop after the current turn, leaving queued prompts stored
    /// for the next start.
    pub(crate) stopping: bool,
    /// Becomes `true` when the runner stops, for [`crate::Engine::wait_for_idle`].
    pub(crate) done: watch::Sender<bool>,
    /// In a cluster: the conversation's lease, taken before the runner's first write and
    /// renewed while it runs. Its token fences every write of the runner's turns.
    pub(crate) lease: Option<Lease>,
}

impl Runner {
    pub(crate) fn new(force: bool) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cancel: CancellationToken::new(),
            queue: BTreeMap::new(),
            queue_writes: 0,
            landed: Arc::new(Notify::new()),
            force,
            stopping: false,
            done: watch::Sender::new(false),
            lease: None,
        }
    }

    /// Puts a stored prompt in the queue (once, however often it is found).
    pub(crate) fn enqueue(&mut self, seq: u64, id: MessageId) {
        if self.queue.insert(seq, id).is_none() {
            crate::telemetry::queued_prompts(1.0);
        }
    }

    /// Prompts queued or being stored into the queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len() + self.queue_writes
    }

    /// Whether no prompt is queued or being stored into the queue.
    pub(crate) fn queue_is_empty(&self) -> bool {
        self.queue.is_empty() && self.queue_writes == 0
    }

    /// A post decided to queue: the runner will wait for it.
    pub(crate) fn queue_write_started(&mut self) {
        self.queue_writes += 1;
    }

    /// The post that [`Runner::queue_write_started`] is stored (`Some` with its seq and id) or
    /// failed or was a duplicate (`None`).
    pub(crate) fn queue_write_finished(&mut self, queued: Option<(u64, MessageId)>) {
        self.queue_writes = self.queue_writes.saturating_sub(1);
        if let Some((seq, id)) = queued {
            self.enqueue(seq, id);
        }
        self.landed.notify_one();
    }
}
