//! One node of a cluster (docs/cluster.md). Postgres is the truth: each conversation's turns
//! run on the node that holds its lease, and every write of those turns is fenced by the
//! lease's token (the engine does this). NATS carries what is live between nodes: every event
//! a node publishes (token deltas included) goes to `<prefix>.events.<conversation>` for the
//! other nodes' subscribers, and a cancel or an approval answer that reaches a node without the
//! turn is asked of the others (`<prefix>.cancel.<conversation>`,
//! `<prefix>.approve.<conversation>`, request and reply). Prompts are not forwarded: a node
//! stores them queued and the lease's holder admits them at its next turn boundary, so one that
//! arrives while NATS is down is not lost. NATS is at-most-once: what it loses each node reads
//! back from the log by seq (`gap_check_ms`), which is also how clients are served while NATS is
//! down. Nodes that died leave leases that expire; the others then adopt their conversations.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use colloquy_core_model::{ConversationId, EventEnvelope, ToolCallId};
use colloquy_engine::{ClusterOptions, Engine, Relay};
use colloquy_tools::ApprovalAnswer;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;

/// Events waiting for NATS; when it cannot keep up, further ones are dropped and the other
/// nodes read them from the log.
const RELAY_QUEUE: usize = 8192;
/// How long a forwarded cancel or approval answer waits for the node that runs the turn.
const FORWARD_WAIT: Duration = Duration::from_secs(2);
/// How long a node waits at start for NATS before it serves without it.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// This node's link to the others.
#[derive(Debug)]
pub struct Cluster {
    client: Client,
    prefix: String,
    node_id: String,
}

/// An approval answer on its way to the node whose turn waits for it.
#[derive(Debug, Serialize, Deserialize)]
struct ForwardedApproval {
    call: String,
    allow: bool,
    reason: Option<String>,
}

/// Queues each event for the publisher task, serialized once.
struct NatsRelay {
    prefix: String,
    queue: mpsc::Sender<(String, Bytes)>,
}

impl Relay for NatsRelay {
    fn relay(&self, envelope: &EventEnvelope) {
        let Ok(payload) = serde_json::to_vec(envelope) else { return };
        let subject = format!("{}.events.{}", self.prefix, envelope.conversation_id);
        if self.queue.try_send((subject, Bytes::from(payload))).is_err() {
            metrics::counter!("colloquy_cluster_relay_dropped_total").increment(1);
        }
    }
}

impl Cluster {
    /// Connects to NATS (in the background: a node starts and serves from the database while
    /// NATS is down), makes `engine` a node of the cluster and starts the tasks that carry
    /// events, cancels and approvals between nodes, fill gaps from the log and adopt what dead
    /// nodes left. Call it before the engine's recovery. The tasks end with `shutdown`.
    pub async fn join(
        config: &ClusterConfig,
        engine: &Engine,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let client = ConnectOptions::new()
            .name(format!("colloquy node {}", config.node_id))
            // A node's own events went to its own clients already.
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(2_000)))
            .connect(config.nats_url.as_str())
            .await?;
        // Give a reachable server a moment, so that a node normally starts connected.
        let _ = tokio::time::timeout(CONNECT_WAIT, async {
            while client.connection_state() != async_nats::connection::State::Connected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let cluster = Arc::new(Self { client, prefix: config.subject_prefix.clone(), node_id: config.node_id.clone() });
        let (queue, outgoing) = mpsc::channel(RELAY_QUEUE);
        let relay = Arc::new(NatsRelay { prefix: cluster.prefix.clone(), queue });
        let options =
            ClusterOptions { node_id: config.node_id.clone(), lease_ttl: Duration::from_millis(config.lease_ttl_ms) };
        if !engine.join_cluster(options, relay) {
            anyhow::bail!("this engine is in a cluster already");
        }
        let events = cluster.client.subscribe(format!("{}.events.*", cluster.prefix)).await?;
        let cancels = cluster.client.subscribe(format!("{}.cancel.*", cluster.prefix)).await?;
        let approvals = cluster.client.subscribe(format!("{}.approve.*", cluster.prefix)).await?;
        let tasks: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = vec![
            Box::pin(publish(cluster.client.clone(), outgoing)),
            Box::pin(receive_events(engine.clone(), events)),
            Box::pin(answer_cancels(engine.clone(), cluster.client.clone(), cancels)),
            Box::pin(answer_approvals(engine.clone(), cluster.client.clone(), approvals)),
            Box::pin(fill_gaps(engine.clone(), Arc::clone(&cluster), Duration::from_millis(config.gap_check_ms))),
            Box::pin(adopt_orphans(engine.clone(), Duration::from_millis(config.lease_ttl_ms / 2))),
        ];
        for task in tasks {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = task => {}
                    () = shutdown.cancelled() => {}
                }
            });
        }
        Ok(cluster)
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether NATS is connected now.
    pub fn nats_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Asks the other nodes to cancel the conversation's running turn; `true` when the node
    /// that runs it answered that it did.
    pub async fn cancel(&self, conversation: ConversationId) -> bool {
        let subject = format!("{}.cancel.{conversation}", self.prefix);
        matches!(tokio::time::timeout(FORWARD_WAIT, self.client.request(subject, Bytes::new())).await, Ok(Ok(_)))
    }

    /// Hands an approval answer to the node whose turn waits for it; `true` when it took it.
    pub async fn answer_approval(
        &self,
        conversation: ConversationId,
        call: &ToolCallId,
        answer: &ApprovalAnswer,
    ) -> bool {
        let (allow, reason) = match answer {
            ApprovalAnswer::Allow => (true, None),
            ApprovalAnswer::Deny(reason) => (false, Some(reason.clone())),
        };
        let Ok(payload) = serde_json::to_vec(&ForwardedApproval { call: call.to_string(), allow, reason }) else {
            return false;
        };
        let subject = format!("{}.approve.{conversation}", self.prefix);
        matches!(tokio::time::timeout(FORWARD_WAIT, self.client.request(subject, payload.into())).await, Ok(Ok(_)))
    }
}

/// The conversation a `<prefix>.<kind>.<conversation>` subject names.
fn subject_conversation(subject: &str) -> Option<ConversationId> {
    subject.rsplit('.').next()?.parse().ok()
}

async fn publish(client: Client, mut outgoing: mpsc::Receiver<(String, Bytes)>) {
    while let Some((subject, payload)) = outgoing.recv().await {
        // Fails only when the client is closed; while NATS is away the client buffers.
        if let Err(error) = client.publish(subject, payload).await {
            tracing::debug!(%error, "could not publish an event to NATS");
        }
    }
}

async fn receive_events(engine: Engine, mut events: async_nats::Subscriber) {
    while let Some(message) = events.next().await {
        match serde_json::from_slice::<EventEnvelope>(&message.payload) {
            Ok(envelope) => engine.deliver_remote(envelope),
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "ignored an event from NATS that does not parse")
            }
        }
    }
}

async fn answer_cancels(engine: Engine, client: Client, mut cancels: async_nats::Subscriber) {
    while let Some(message) = cancels.next().await {
        // Only the node that runs the turn answers; the asker times out when none does.
        if let (Some(conversation), Some(reply)) = (subject_conversation(&message.subject), message.reply)
            && engine.cancel(conversation)
        {
            let _ = client.publish(reply, Bytes::from_static(b"cancelled")).await;
        }
    }
}

async fn answer_approvals(engine: Engine, client: Client, mut approvals: async_nats::Subscriber) {
    while let Some(message) = approvals.next().await {
        let (Some(conversation), Some(reply)) = (subject_conversation(&message.subject), message.reply) else {
            continue;
        };
        let Ok(forwarded) = serde_json::from_slice::<ForwardedApproval>(&message.payload) else { continue };
        let answer = if forwarded.allow {
            ApprovalAnswer::Allow
        } else {
            ApprovalAnswer::Deny(forwarded.reason.unwrap_or_default())
        };
        if engine.answer_approval(conversation, &ToolCallId::from(forwarded.call), answer).is_ok() {
            let _ = client.publish(reply, Bytes::from_static(b"ok")).await;
        }
    }
}

async fn fill_gaps(engine: Engine, cluster: Arc<Cluster>, every: Duration) {
    loop {
        let connected = cluster.nats_connected();
        metrics::gauge!("colloquy_cluster_nats_connected").set(if connected { 1.0 } else { 0.0 });
        // Without NATS the log is the only way events of other nodes arrive: look more often.
        tokio::time::sleep(if connected { every } else { (every / 4).max(Duration::from_millis(50)) }).await;
        let filled = engine.fill_gaps().await;
        if filled > 0 {
            metrics::counter!("colloquy_cluster_gap_events_total").increment(filled as u64);
        }
    }
}

async fn adopt_orphans(engine: Engine, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = engine.adopt_orphans().await {
            tracing::warn!(%error, "could not look for conversations that stopped nodes left");
        }
    }
}
