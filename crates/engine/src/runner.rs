//! A conversation's runner: the one task that runs its turns one after another, and the queue of
//! prompts that wait for the turn boundary.
//!
//! A prompt posted while no runner exists joins the history at once (`message_posted`) and
//! starts one. A prompt posted while a runner exists is stored as `message_queued` (so its ack
//! is final) and joins the history only at the next turn boundary, when the runner admits it
//! (`message_posted`, with a new seq): one per boundary for `one_at_a_time`, all waiting for
//! `all`. So the history in seq order is exactly the order the models saw, and every request
//! ends with the prompt it answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use colloquy_core_model::{ConversationId, MessageId, QueueMode};
use colloquy_store::StoreError;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::Inner;
use crate::turn;

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
    queue: BTreeMap<u64, MessageId>,
    /// Posts that were told to queue but are not stored yet. The runner waits for them before
    /// it admits or stops, so prompts are admitted in seq order and none is left behind.
    queue_writes: usize,
    /// Wakes the runner when a queued post has been stored.
    landed: Arc<Notify>,
    /// The next pass runs a turn even if nothing awaits an answer ([`crate::Engine::continue_conversation`]).
    pub(crate) force: bool,
    /// The engine is shutting down: stop after the current turn, leaving queued prompts stored
    /// for the next start.
    pub(crate) stopping: bool,
    /// Becomes `true` when the runner stops, for [`crate::Engine::wait_for_idle`].
    pub(crate) done: watch::Sender<bool>,
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
        }
    }

    /// Puts a stored prompt in the queue (once, however often it is found).
    fn enqueue(&mut self, seq: u64, id: MessageId) {
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

/// How a runner begins.
pub(crate) enum Start {
    /// Answer whatever awaits an answer.
    Fresh,
    /// First close or resume the turn a crash left open at this `agent_start` seq.
    Recover(u64),
}

/// Spawns the runner task of a conversation whose [`Runner`] (with this `id`) was just put in
/// the table.
pub(crate) fn spawn(inner: Arc<Inner>, conversation: ConversationId, id: u64, start: Start) {
    tokio::spawn(async move {
        // However the task ends (a panic included), the conversation is not left busy for good.
        let _leave = Leave { inner: Arc::clone(&inner), conversation, id };
        if let Err(error) = run(&inner, conversation, start).await {
            inner.store_failed(conversation, &error);
        }
    });
}

/// Takes the runner out of the table when its task ends.
struct Leave {
    inner: Arc<Inner>,
    conversation: ConversationId,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.inner.stop_runner(self.conversation, self.id);
    }
}

async fn run(inner: &Inner, conversation: ConversationId, start: Start) -> Result<(), StoreError> {
    if let Start::Recover(start_seq) = start {
        turn::recover(inner, conversation, start_seq, true).await?;
    }
    // Prompts a crash or a failed admission left queued in the store come first.
    for message in inner.store.queued_messages(conversation).await? {
        inner.with_runner(conversation, |runner| runner.enqueue(message.seq, message.id));
    }
    let mut answered_through = None;
    loop {
        let (force, cancel) = inner
            .with_runner(conversation, |runner| {
                if runner.cancel.is_cancelled() {
                    runner.cancel = CancellationToken::new();
                }
                (std::mem::take(&mut runner.force), runner.cancel.clone())
            })
            .unwrap_or_default();
        let answered = turn::run(inner, conversation, answered_through, force, cancel).await?;
        answered_through = answered.or(answered_through);
        if inner.with_runner(conversation, |runner| runner.stopping).unwrap_or(true) {
            return Ok(());
        }
        let admitted = admit(inner, conversation).await?;
        // Something was answered (its reply may call for another answer) or admitted: look again.
        if answered.is_some() || admitted {
            continue;
        }
        if inner.finish_if_idle(conversation) {
            return Ok(());
        }
    }
}

/// At a turn boundary: waits for queued posts still being stored, then admits the next queued
/// prompt (or all of them, for `queue_mode: all`) into the history. Returns whether it admitted
/// any.
async fn admit(inner: &Inner, conversation: ConversationId) -> Result<bool, StoreError> {
    let waiting = loop {
        let step = inner.with_runner(conversation, |runner| {
            if runner.queue_writes > 0 { Err(Arc::clone(&runner.landed)) } else { Ok(!runner.queue.is_empty()) }
        });
        match step {
            Some(Err(landed)) => landed.notified().await,
            Some(Ok(waiting)) => break waiting,
            None => break false,
        }
    };
    if !waiting {
        return Ok(false);
    }
    let mode = inner.store.conversation(conversation).await?.options.queue_mode;
    let batch: Vec<MessageId> = inner
        .with_runner(conversation, |runner| match mode {
            QueueMode::OneAtATime => runner.queue.pop_first().map(|(_, id)| id).into_iter().collect(),
            QueueMode::All => std::mem::take(&mut runner.queue).into_values().collect(),
        })
        .unwrap_or_default();
    crate::telemetry::queued_prompts(-(batch.len() as f64));
    for envelope in inner.store.admit_messages(conversation, &batch).await? {
        inner.publish(envelope);
    }
    Ok(!batch.is_empty())
}
