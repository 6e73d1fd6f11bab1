//! Live fan-out of a conversation's events, and subscriptions that replay the durable log first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use colloquy_core_model::{ConversationId, EventEnvelope};
use colloquy_store::{ConversationStore, StoreError};
use tokio::sync::broadcast;

/// Events buffered per conversation for slow subscribers; one that falls further behind
/// re-reads the durable log instead of growing memory.
const CHANNEL_CAPACITY: usize = 1024;
/// Durable events read from the store per page while a subscriber catches up.
const REPLAY_PAGE: u64 = 500;

/// Carries the events this node publishes to the other nodes of a cluster (over NATS in the
/// gateway). It must not block: it queues, and may drop under overload, since the other nodes
/// fill gaps from the durable log by seq.
pub trait Relay: Send + Sync {
    /// Sends one event (durable or ephemeral) on its way to the other nodes.
    fn relay(&self, envelope: &EventEnvelope);
}

/// An event as a subscription hands it out. A live event is one value shared by every
/// subscriber of the conversation, with room for one encoding of it they share too: a server
/// that writes the same bytes to each of a thousand subscribers encodes the event once instead
/// of copying and encoding it a thousand times.
#[derive(Debug)]
pub struct Delivery {
    envelope: EventEnvelope,
    encoded: OnceLock<Bytes>,
}

impl Delivery {
    fn new(envelope: EventEnvelope) -> Self {
        Self { envelope, encoded: OnceLock::new() }
    }

    /// The event.
    pub fn envelope(&self) -> &EventEnvelope {
        &self.envelope
    }

    /// The event encoded by `encode`, which only the first caller runs; every later caller
    /// gets the same bytes. So all callers must mean the same encoding (the gateway: its
    /// WebSocket `event` frame).
    pub fn encoded(&self, encode: impl FnOnce(&EventEnvelope) -> String) -> Bytes {
        self.encoded.get_or_init(|| Bytes::from(encode(&self.envelope))).clone()
    }

    /// The event itself, copied only if others still share it.
    pub fn into_envelope(self: Arc<Self>) -> EventEnvelope {
        Arc::try_unwrap(self).map_or_else(|shared| shared.envelope.clone(), |delivery| delivery.envelope)
    }
}

/// A conversation's live channel, with the newest durable seq that went through it.
#[derive(Debug)]
struct Channel {
    sender: broadcast::Sender<Arc<Delivery>>,
    newest: u64,
}

/// The live channels by conversation.
type Channels = Arc<Mutex<HashMap<ConversationId, Channel>>>;

fn lock(channels: &Channels) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Channel>> {
    // The map stays consistent even if a holder panicked: every update is a single call.
    channels.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One broadcast channel per conversation that has subscribers: made by the first, dropped
/// with the last (an idle conversation nobody follows holds no channel, whose ring buffer would
/// keep its last events).
#[derive(Default)]
pub(crate) struct Hub {
    channels: Channels,
    /// Set when the engine joins a cluster: what this node publishes also goes to the others.
    relay: OnceLock<Arc<dyn Relay>>,
    /// The newest durable seq published per conversation with a runner, so that a runner knows
    /// without a read whether someone else wrote (see `state.rs`).
    /// Keyed by conversation: the tracking runner's id and the seq.
    seqs: Mutex<HashMap<ConversationId, (u64, u64)>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("relayed", &self.relay.get().is_some()).finish_non_exhaustive()
    }
}

impl Hub {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Channel>> {
        lock(&self.channels)
    }

    fn seqs(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, (u64, u64)>> {
        self.seqs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking the newest durable seq published for the conversation (its runner is about
    /// to load it).
    pub(crate) fn track_seq(&self, conversation: ConversationId, runner: u64) {
        self.seqs().insert(conversation, (runner, 0));
    }

    /// The newest durable seq published for the conversation since [`Hub::track_seq`] (0 if
    /// none).
    pub(crate) fn last_seq(&self, conversation: ConversationId) -> u64 {
        self.seqs().get(&conversation).map_or(0, |(_, seq)| *seq)
    }

    /// Stops tracking the conversation's seq for `runner` (it ended; the next one loads afresh),
    /// unless a newer runner tracks it already.
    pub(crate) fn forget_seq(&self, conversation: ConversationId, runner: u64) {
        let mut seqs = self.seqs();
        if seqs.get(&conversation).is_some_and(|(id, _)| *id == runner) {
            seqs.remove(&conversation);
        }
    }

    /// Sends what this node publishes to the other nodes too (once, when joining a cluster).
    pub(crate) fn set_relay(&self, relay: Arc<dyn Relay>) -> bool {
        self.relay.set(relay).is_ok()
    }

    /// Sends an event to the conversation's live subscribers, if it has any (and to the other
    /// nodes, in a cluster).
    pub(crate) fn publish(&self, envelope: EventEnvelope) {
        if let Some(relay) = self.relay.get() {
            relay.relay(&envelope);
        }
        self.deliver(envelope.conversation_id, envelope.seq, || Arc::new(Delivery::new(envelope)));
    }

    /// [`Hub::publish`] for an event the caller keeps: copied only if somebody listens.
    pub(crate) fn publish_copy(&self, envelope: &EventEnvelope) {
        if let Some(relay) = self.relay.get() {
            relay.relay(envelope);
        }
        self.deliver(envelope.conversation_id, envelope.seq, || Arc::new(Delivery::new(envelope.clone())));
    }

    /// Hands an event another node published (or that a gap check read from the log) to this
    /// node's subscribers; it is not relayed again.
    pub(crate) fn publish_remote(&self, envelope: EventEnvelope) {
        self.deliver(envelope.conversation_id, envelope.seq, || Arc::new(Delivery::new(envelope)));
    }

    /// The conversations this node's clients follow, with the newest durable seq each channel
    /// has carried.
    pub(crate) fn followed(&self) -> Vec<(ConversationId, u64)> {
        self.channels().iter().map(|(conversation, channel)| (*conversation, channel.newest)).collect()
    }

    /// Notes a durable `seq` for the conversation's runner, then hands the event (made only when
    /// someone listens) to the live subscribers.
    fn deliver(&self, conversation: ConversationId, seq: Option<u64>, event: impl FnOnce() -> Arc<Delivery>) {
        if let Some(seq) = seq
            && let Some((_, newest)) = self.seqs().get_mut(&conversation)
        {
            *newest = (*newest).max(seq);
        }
        let mut channels = self.channels();
        if let Some(channel) = channels.get_mut(&conversation) {
            channel.newest = channel.newest.max(seq.unwrap_or(0));
            if channel.sender.send(event()).is_err() {
                channels.remove(&conversation);
            }
        }
    }

    /// A receiver of the conversation's live events; `from_seq` is where its reader starts, so
    /// that a gap check does not look further back than anyone needs.
    fn subscribe(&self, conversation: ConversationId, from_seq: u64) -> broadcast::Receiver<Arc<Delivery>> {
        let mut channels = self.channels();
        let channel = channels
            .entry(conversation)
            .or_insert_with(|| Channel { sender: broadcast::channel(CHANNEL_CAPACITY).0, newest: from_seq });
        channel.sender.subscribe()
    }
}

/// A conversation's events from a given `seq` on: first the durable log, then live events,
/// with no gap and no duplicate among durable events (ephemeral deltas are live only), in the
/// order they were published: the log is read only for what was not received live, so it never
/// overtakes a live event (a token delta) that came before.
pub struct Subscription {
    conversation: ConversationId,
    store: Arc<dyn ConversationStore>,
    /// The hub's channels, to drop the conversation's with its last subscriber.
    channels: Channels,
    live: broadcast::Receiver<Arc<Delivery>>,
    last_seq: u64,
    /// Read from the log, to hand out before anything live.
    backlog: VecDeque<EventEnvelope>,
    /// Received live, to hand out after the backlog.
    pending: VecDeque<Arc<Delivery>>,
    catching_up: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Under the map's lock, so that a subscriber arriving now gets a live channel: this
        // receiver still counts, so 1 means it was the last.
        let mut channels = lock(&self.channels);
        if channels.get(&self.conversation).is_some_and(|channel| channel.sender.receiver_count() <= 1) {
            channels.remove(&self.conversation);
        }
    }
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
        let live = hub.subscribe(conversation, after_seq);
        let channels = Arc::clone(&hub.channels);
        Self {
            conversation,
            store,
            channels,
            live,
            last_seq: after_seq,
            backlog: VecDeque::new(),
            pending: VecDeque::new(),
            catching_up: true,
        }
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
        self.next_shared().await.map(Delivery::into_envelope)
    }

    /// [`Subscription::next`] as the hub shares it between subscribers (see [`Delivery`]).
    pub async fn next_shared(&mut self) -> Result<Arc<Delivery>, StoreError> {
        loop {
            if let Some(envelope) = self.backlog.pop_front() {
                self.last_seq = envelope.seq.unwrap_or(self.last_seq);
                return Ok(Arc::new(Delivery::new(envelope)));
            }
            if self.catching_up {
                self.catch_up().await?;
                continue;
            }
            let delivery = match self.pending.pop_front() {
                Some(delivery) => delivery,
                None => match self.live.recv().await {
                    Ok(delivery) => delivery,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.catching_up = true;
                        continue;
                    }
                    // The hub keeps the sender while the channel has receivers, so this means shutdown.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                },
            };
            match delivery.envelope.seq {
                None => return Ok(delivery),
                Some(seq) if seq <= self.last_seq => {}
                Some(seq) if seq == self.last_seq + 1 => {
                    self.last_seq = seq;
                    return Ok(delivery);
                }
                // Writers publish after they commit, so two writers may publish out of seq
                // order: the log has what is missing. Only the gap is read, and this event goes
                // out right after it, so what came after it live keeps its place.
                Some(seq) => {
                    let missing = seq - self.last_seq - 1;
                    let page = self.store.events_after(self.conversation, self.last_seq, missing).await?;
                    if page.last().and_then(|e| e.seq) != Some(seq - 1) {
                        // Not all there (it should be): read the log through.
                        self.catching_up = true;
                    }
                    self.backlog.extend(page);
                    self.pending.push_front(delivery);
                }
            }
        }
    }

    /// Reads the log after `last_seq`, but only up to what has come live meanwhile (taken into
    /// `pending`): the rest comes in the order it was published.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        loop {
            match self.live.try_recv() {
                Ok(delivery) => self.pending.push_back(delivery),
                // Lost ones are durable ones the log has, or deltas that are gone anyway.
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => break,
            }
        }
        let first_live = self.pending.iter().filter_map(|d| d.envelope.seq).find(|seq| *seq > self.last_seq);
        let limit = first_live.map_or(REPLAY_PAGE, |first| (first - self.last_seq - 1).min(REPLAY_PAGE));
        let page = if limit == 0 {
            Vec::new()
        } else {
            self.store.events_after(self.conversation, self.last_seq, limit).await?
        };
        // A full page may have more behind it.
        self.catching_up = limit == REPLAY_PAGE && page.len() as u64 == REPLAY_PAGE;
        self.backlog.extend(page);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use colloquy_store::{SeaStore, StoreOptions};

    use super::*;

    #[tokio::test]
    async fn a_conversations_channel_lives_as_long_as_its_subscribers() -> Result<(), StoreError> {
        let hub = Hub::default();
        let store: Arc<dyn ConversationStore> =
            Arc::new(SeaStore::connect("sqlite::memory:", StoreOptions::default()).await?);
        let (one, other) = (ConversationId::new(), ConversationId::new());
        let first = Subscription::new(&hub, Arc::clone(&store), one, 0);
        let second = Subscription::new(&hub, Arc::clone(&store), one, 0);
        let elsewhere = Subscription::new(&hub, Arc::clone(&store), other, 0);
        assert_eq!(hub.channels().len(), 2);
        drop(first);
        assert!(hub.channels().contains_key(&one), "one subscriber is left");
        drop(second);
        assert!(!hub.channels().contains_key(&one), "gone with its last subscriber");
        assert!(hub.channels().contains_key(&other));
        drop(elsewhere);
        assert!(hub.channels().is_empty());
        Ok(())
    }

    /// Events committed and published (durable ones, then a token delta, then more durable ones)
    /// before the subscriber first reads: it gets them in the order they were published, the
    /// delta before the durable events that came after it, though the log already has those.
    #[tokio::test]
    async fn the_log_never_overtakes_a_delta_that_came_live_before_it() -> Result<(), StoreError> {
        use colloquy_core_model::{ConversationKind, MessageDelta, MessageId, Options, TurnEvent, TurnId};
        use colloquy_store::{Append, AppendOptions, NewConversation};

        let hub = Hub::default();
        let store: Arc<dyn ConversationStore> =
            Arc::new(SeaStore::connect("sqlite::memory:", StoreOptions::default()).await?);
        let id = ConversationId::new();
        let new = NewConversation {
            id,
            kind: ConversationKind::UserAgent,
            title: None,
            tags: Vec::new(),
            options: Options::default(),
            participants: Vec::new(),
        };
        store.create_conversation(new).await?;
        let mut subscription = Subscription::new(&hub, Arc::clone(&store), id, 0);
        let turn_id = TurnId::new();
        let message_id = MessageId::new();
        let record = async |event: TurnEvent| -> Result<(), StoreError> {
            for envelope in store.append_batch(id, vec![Append::Event(event)], AppendOptions::default()).await? {
                hub.publish_copy(&envelope);
            }
            Ok(())
        };
        record(TurnEvent::TurnStart { turn_id, request: 1 }).await?;
        let delta = MessageDelta::Text { text: "tok".to_owned() };
        hub.publish(EventEnvelope {
            conversation_id: id,
            seq: None,
            event: TurnEvent::MessageUpdate { turn_id, message_id, delta },
        });
        record(TurnEvent::TurnEnd { turn_id, request: 1 }).await?;
        let mut kinds = Vec::new();
        for _ in 0..3 {
            kinds.push(subscription.next().await?.event.kind());
        }
        assert_eq!(kinds, ["turn_start", "message_update", "turn_end"]);
        Ok(())
    }
}
