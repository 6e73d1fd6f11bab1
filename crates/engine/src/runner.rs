//! A conversation's runner: the one task that runs its turns one after another, and the queue of
//! prompts that wait for the turn boundary.
//!
//! A prompt posted while no runner exists joins the history at once (`message_posted`) and
//! starts one. A prompt posted while a runner exists is stored as `message_queued` (so its ack
//! is final) and joins the history only at the next turn boundary, when the runner admits it
//! (`message_posted`, with a new seq): one per boundary for `one_at_a_time`, all waiting for
//! `all`. So the history in seq order is exactly the order the models saw, and every request
//! ends with the prompt it answers.

use std::sync::Arc;

use colloquy_core_model::{ConversationId, MessageId, QueueMode};
use colloquy_store::StoreError;
use tokio_util::sync::CancellationToken;

use crate::inner::Inner;
use crate::lease::{self, Hold};
use crate::state::Loaded;
use crate::table::Runner;
use crate::turn;

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
        let leave = Leave { inner: Arc::clone(&inner), conversation, id };
        let hold = match lease::take(&inner, conversation, id).await {
            // The holder answers what is stored, this node's queued posts included.
            Ok(Hold::Elsewhere) => return,
            Ok(hold) => hold,
            Err(error) => return inner.store_failed(conversation, &error),
        };
        if let Err(error) = run(&inner, conversation, id, start).await {
            inner.store_failed(conversation, &error);
        }
        // Out of the table first, so that a post from now on starts a runner of its own.
        drop(leave);
        if lease::release(&inner, conversation, hold).await {
            pick_up_after_release(&inner, conversation).await;
        }
    });
}

/// Starts a runner for the conversation unless it has one: answers what awaits an answer, or
/// stops at once. Returns whether it started one.
pub(crate) fn start_if_idle(inner: &Arc<Inner>, conversation: ConversationId, start: Start) -> bool {
    let mut runners = inner.runners();
    if runners.contains_key(&conversation) {
        return false;
    }
    let runner = Runner::new(false);
    let id = runner.id;
    runners.insert(conversation, runner);
    drop(runners);
    spawn(Arc::clone(inner), conversation, id, start);
    true
}

/// After giving a lease up: a prompt another node stored while this one held the lease (that
/// node found the lease taken and left the prompt to the holder) is answered now. Together with
/// the holder reading the store's queue at every turn boundary, no stored prompt waits for good.
async fn pick_up_after_release(inner: &Arc<Inner>, conversation: ConversationId) {
    match inner.store.queued_messages(conversation).await {
        Ok(queued) if !queued.is_empty() => {
            start_if_idle(inner, conversation, Start::Fresh);
        }
        Ok(_) => {}
        Err(error) => inner.store_failed(conversation, &error),
    }
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
        self.inner.hub.forget_seq(self.conversation, self.id);
    }
}

async fn run(inner: &Inner, conversation: ConversationId, id: u64, start: Start) -> Result<(), StoreError> {
    let open_turn = match start {
        // In a cluster, another node may have died in a turn since this runner was asked for:
        // the newest turn is looked at whatever the start (recovery leaves an ended one alone).
        _ if inner.cluster.get().is_some() => inner.store.last_turn_start(conversation).await?,
        Start::Recover(start_seq) => Some(start_seq),
        Start::Fresh => None,
    };
    if let Some(start_seq) = open_turn {
        turn::recover(inner, conversation, start_seq, true).await?;
    }
    // What the last runner knew, if it ended cleanly: it left nothing queued in the store. (In
    // a cluster other nodes queue prompts in the store: nothing is kept there.)
    let single_node = inner.cluster.get().is_none();
    let kept = if open_turn.is_none() && single_node { inner.idle.take(conversation) } else { None };
    if kept.is_none() {
        // Prompts a crash or a failed admission left queued in the store come first.
        for message in inner.store.queued_messages(conversation).await? {
            inner.with_runner(conversation, |runner| runner.enqueue(message.seq, message.id));
        }
    }
    // Loaded once; kept current by the turns, re-read only when someone else wrote.
    inner.hub.track_seq(conversation, id);
    let mut loaded = Loaded::resume(inner.store.as_ref(), conversation, kept).await?;
    let mut answered_through = None;
    loop {
        loaded.refresh(inner.store.as_ref(), conversation, inner.hub.last_seq(conversation)).await?;
        let (force, cancel) = inner
            .with_runner(conversation, |runner| {
                if runner.cancel.is_cancelled() {
                    runner.cancel = CancellationToken::new();
                }
                (std::mem::take(&mut runner.force), runner.cancel.clone())
            })
            .unwrap_or_default();
        let answered = turn::run(inner, &mut loaded, answered_through, force, cancel).await;
        answered_through = answered.or(answered_through);
        if inner.with_runner(conversation, |runner| runner.stopping).unwrap_or(true) {
            return Ok(());
        }
        let admitted = admit(inner, &mut loaded).await?;
        // Something was answered (its reply may call for another answer) or admitted: look again.
        if answered.is_some() || admitted {
            continue;
        }
        if inner.finish_if_idle(conversation) {
            if single_node {
                inner.idle.keep(loaded);
            }
            return Ok(());
        }
    }
}

/// At a turn boundary: waits for queued posts still being stored, then admits the next queued
/// prompt (or all of them, for `queue_mode: all`) into the history. Returns whether it admitted
/// any.
async fn admit(inner: &Inner, loaded: &mut Loaded) -> Result<bool, StoreError> {
    let conversation = loaded.conversation.id;
    // In a cluster, other nodes store prompts for this holder to admit.
    if inner.cluster.get().is_some() {
        for message in inner.store.queued_messages(conversation).await? {
            inner.with_runner(conversation, |runner| runner.enqueue(message.seq, message.id));
        }
    }
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
    loaded.refresh(inner.store.as_ref(), conversation, inner.hub.last_seq(conversation)).await?;
    let mode = loaded.conversation.options.queue_mode;
    let batch: Vec<MessageId> = inner
        .with_runner(conversation, |runner| match mode {
            QueueMode::OneAtATime => runner.queue.pop_first().map(|(_, id)| id).into_iter().collect(),
            QueueMode::All => std::mem::take(&mut runner.queue).into_values().collect(),
        })
        .unwrap_or_default();
    crate::telemetry::queued_prompts(-(batch.len() as f64));
    for envelope in inner.store.admit_messages(conversation, &batch, inner.fence(conversation)).await? {
        loaded.apply(&envelope);
        inner.publish(envelope);
    }
    Ok(!batch.is_empty())
}
