//! Several engines on one store (one per gateway node): the node that runs a conversation's
//! turns holds its lease (`lease.rs`), and the events each node publishes reach the others
//! through a [`Relay`] (NATS in the gateway). What a relay loses, [`Engine::fill_gaps`] reads
//! back from the durable log by seq; what a dead node left, [`Engine::adopt_orphans`] takes over
//! once its leases have expired.

use std::sync::Arc;

use colloquy_core_model::EventEnvelope;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::fanout::Relay;
use crate::inner::ClusterOptions;
use crate::runner::{self, Start};

/// How far back a gap check reads at most; a subscriber further behind reads the log itself.
const GAP_TAIL: u64 = 200;

impl Engine {
    /// Makes this engine one node of a cluster: its runners take the conversation's lease before
    /// they write and fence every write with it, a prompt for a conversation whose turn may run
    /// on another node is stored queued for the lease's holder, and everything this node
    /// publishes also goes to `relay`. Call it once, before [`Engine::recover`]; returns `false`
    /// (and changes nothing) when the engine is in a cluster already.
    pub fn join_cluster(&self, options: ClusterOptions, relay: Arc<dyn Relay>) -> bool {
        if self.inner().cluster.set(options).is_err() {
            return false;
        }
        self.inner().hub.set_relay(relay)
    }

    /// Hands an event another node published to this node's subscribers (durable events are
    /// put in seq order by each subscription, which reads the log to fill any gap).
    pub fn deliver_remote(&self, envelope: EventEnvelope) {
        self.inner().hub.publish_remote(envelope);
    }

    /// For every conversation this node's clients follow and another node writes: reads the
    /// durable events the relay did not bring (a message lost, or the relay down) and hands
    /// them on. Returns how many it handed on.
    pub async fn fill_gaps(&self) -> usize {
        let inner = self.inner();
        let mut delivered = 0;
        for (conversation, newest) in inner.hub.followed() {
            if inner.fence(conversation).is_some() {
                // This node writes it: everything went through its hub.
                continue;
            }
            let Ok(record) = inner.store.conversation(conversation).await else { continue };
            if record.last_seq <= newest {
                continue;
            }
            let from = newest.max(record.last_seq.saturating_sub(GAP_TAIL));
            match inner.store.events_after(conversation, from, GAP_TAIL).await {
                Ok(events) => {
                    delivered += events.len();
                    events.into_iter().for_each(|envelope| inner.hub.publish_remote(envelope));
                }
                Err(error) => tracing::warn!(%conversation, %error, "could not read the log to fill a gap"),
            }
        }
        delivered
    }

    /// Takes over what nodes that stopped left: every conversation with an open turn or a prompt
    /// not yet answered gets a runner here unless it has one, and that runner goes on only if
    /// it gets the lease (a live node holds it otherwise, or the dead node's has not expired).
    /// Then it recovers the open turn as a restart would. Returns how many runners it started.
    pub async fn adopt_orphans(&self) -> Result<usize, EngineError> {
        let inner = self.inner();
        let open = inner.store.unfinished_turns().await?;
        let pending = inner.store.conversations_with_pending_prompts().await?;
        let mut started = 0;
        for conversation in open.into_iter().map(|(conversation, _)| conversation).chain(pending) {
            if inner.check_available(conversation).is_ok()
                && runner::start_if_idle(self.shared(), conversation, Start::Fresh)
            {
                started += 1;
            }
        }
        Ok(started)
    }
}
