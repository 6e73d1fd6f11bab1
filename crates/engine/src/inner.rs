//! The state every part of the engine shares: the store, providers, tools, the fan-out hub,
//! the runner table and the quarantine. Below the runner and the turn loop, above nothing of the
//! engine's own but its leaves (`table`, `fanout`, `context`), so that modules depend one way.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use colloquy_core_model::{ConversationId, EventEnvelope, Participant, ParticipantId, TurnEvent};
use colloquy_llm_providers::LlmProvider;
use colloquy_store::{ConversationStore, FencingToken, StoreError};
use colloquy_tools::ToolExecutor;

use crate::EngineError;
use crate::context::MessageTransformer;
use crate::fanout::Hub;
use crate::table::Runner;

/// The provider name on the replies of remote A2A agent participants.
pub(crate) const REMOTE_A2A_PROVIDER: &str = "a2a";

/// Providers by the name agents use for them (`AgentSpec::provider`).
pub type ProviderRegistry = HashMap<String, Arc<dyn LlmProvider>>;

/// How an engine shares its store with the other nodes of a cluster
/// ([`crate::Engine::join_cluster`]).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's name: the holder of the leases it takes. Unique in the cluster.
    pub node_id: String,
    /// How long a lease lasts unless renewed: how long a dead node's conversations wait before
    /// another node takes them over. Renewed every third of it while a conversation is busy.
    pub lease_ttl: Duration,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ConversationStore>,
    pub(crate) providers: ProviderRegistry,
    pub(crate) tools: ToolExecutor,
    /// Shapes every request's messages (the context window by default).
    pub(crate) transformer: Arc<dyn MessageTransformer>,
    pub(crate) hub: Hub,
    /// One runner per conversation with a turn in progress: turns of one conversation never
    /// overlap.
    pub(crate) runners: Mutex<HashMap<ConversationId, Runner>>,
    /// Conversations whose stored data cannot be read back, with why: they are refused instead
    /// of failing over and over, and listed for the operator.
    pub(crate) quarantined: Mutex<HashMap<ConversationId, String>>,
    /// How many prompts may wait behind a running turn per conversation.
    pub(crate) max_queued: AtomicUsize,
    /// [`crate::Engine::set_provider_idle_timeout`], in milliseconds.
    pub(crate) provider_idle_ms: std::sync::atomic::AtomicU64,
    /// The models each provider said it serves, asked at first need.
    pub(crate) models: crate::conversations::ModelCache,
    /// Set when the engine joins a cluster: runners hold the conversation's lease and fence
    /// every append with it.
    pub(crate) cluster: OnceLock<ClusterOptions>,
    /// What the runners of now idle conversations knew.
    pub(crate) idle: crate::state::IdleStates,
    /// The providers of service participants that are remote A2A agents, made at first need.
    pub(crate) remote_agents: RemoteAgents,
}

/// How many remote A2A agents' providers are kept (each holds an HTTP connection pool).
const REMOTE_AGENTS_KEPT: usize = 256;

/// The providers of remote A2A agent participants, by conversation and participant.
pub(crate) struct RemoteAgents(Mutex<hashlink::LruCache<(ConversationId, ParticipantId), Arc<dyn LlmProvider>>>);

impl Default for RemoteAgents {
    fn default() -> Self {
        Self(Mutex::new(hashlink::LruCache::new(REMOTE_AGENTS_KEPT)))
    }
}

impl Inner {
    /// The provider that answers for `participant`, a service that is a remote A2A agent: made
    /// at first need with the key the store keeps for it, then kept.
    pub(crate) async fn remote_agent(&self, participant: &Participant) -> Result<Arc<dyn LlmProvider>, StoreError> {
        let key = (participant.conversation_id, participant.id);
        if let Some(provider) = self.remote_agents.0.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(Arc::clone(provider));
        }
        let api_key = self.store.a2a_key(participant.conversation_id, participant.id).await?;
        let config = colloquy_llm_providers::A2aConfig {
            name: REMOTE_A2A_PROVIDER.to_owned(),
            url: participant.a2a_url.clone().unwrap_or_default(),
            api_key,
        };
        let provider: Arc<dyn LlmProvider> =
            Arc::new(colloquy_llm_providers::Counted::new(colloquy_llm_providers::A2aAgent::new(config)));
        self.remote_agents.0.lock().unwrap_or_else(PoisonError::into_inner).insert(key, Arc::clone(&provider));
        Ok(provider)
    }

    /// Stores a batch of a turn's events in one commit, then publishes them in seq order.
    pub(crate) async fn record(
        &self,
        conversation: ConversationId,
        entries: Vec<colloquy_store::Append>,
        sync: bool,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let started = std::time::Instant::now();
        let options = colloquy_store::AppendOptions { fence: self.fence(conversation), sync };
        let envelopes = self.store.append_batch(conversation, entries, options).await?;
        crate::telemetry::store_append(started.elapsed());
        for envelope in &envelopes {
            self.hub.publish_copy(envelope);
        }
        Ok(envelopes)
    }

    /// The token of the lease the conversation's runner holds, if it holds one: every write of
    /// its turns carries it, so a runner that lost its lease can write nothing more.
    pub(crate) fn fence(&self, conversation: ConversationId) -> Option<FencingToken> {
        // Outside a cluster nothing holds leases: no need to look at the runner table.
        self.cluster.get()?;
        self.with_runner(conversation, |runner| runner.lease.as_ref().map(|lease| lease.token)).flatten()
    }

    /// Publishes an event the store has already recorded.
    pub(crate) fn publish(&self, envelope: EventEnvelope) {
        self.hub.publish(envelope);
    }

    /// Publishes an ephemeral event (not stored, no seq); not when the conversation's runner
    /// holds a lease that has expired (it may have lost it: its deltas would be another turn's).
    pub(crate) fn emit_ephemeral(&self, conversation: ConversationId, event: TurnEvent) {
        debug_assert!(!event.is_durable());
        let expired = |runner: &mut Runner| runner.lease.as_ref().is_some_and(|l| l.expires_at <= chrono::Utc::now());
        if self.cluster.get().is_some() && self.with_runner(conversation, expired).unwrap_or(false) {
            return;
        }
        self.hub.publish(EventEnvelope { conversation_id: conversation, seq: None, event });
    }

    pub(crate) fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Runner>> {
        // Every update of the map is a single insert, remove or field write.
        self.runners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The models `provider` serves, asked once and remembered; `refresh` asks again (for a
    /// model the remembered list lacks, in case the server has gained it since).
    pub(crate) async fn models(
        &self,
        name: &str,
        provider: &Arc<dyn LlmProvider>,
        refresh: bool,
    ) -> Option<Vec<String>> {
        let mut cache = self.models.lock().await;
        if let Some(known) = cache.get(name).filter(|_| !refresh) {
            return known.clone();
        }
        let listed = provider.models().await;
        cache.insert(name.to_owned(), listed.clone());
        listed
    }

    /// Runs `change` on the conversation's runner, if it has one, under the table's lock.
    pub(crate) fn with_runner<T>(
        &self,
        conversation: ConversationId,
        change: impl FnOnce(&mut Runner) -> T,
    ) -> Option<T> {
        self.runners().get_mut(&conversation).map(change)
    }

    /// Removes the runner if it has nothing left to do (no queued prompt, none being stored, no
    /// `continue` asked for); returns whether it did. Posts see the removal under the same lock,
    /// so none can slip into a queue that nobody will read.
    pub(crate) fn finish_if_idle(&self, conversation: ConversationId) -> bool {
        let mut runners = self.runners();
        let idle = runners.get(&conversation).is_none_or(|runner| runner.queue_is_empty() && !runner.force);
        if idle && let Some(runner) = runners.remove(&conversation) {
            runner.done.send_replace(true);
        }
        idle
    }

    /// Removes runner `id` whatever it still holds (its task is ending), unless it is gone
    /// already. Queued prompts stay stored; the next runner of the conversation, or recovery at
    /// the next start, admits them.
    pub(crate) fn stop_runner(&self, conversation: ConversationId, id: u64) {
        let mut runners = self.runners();
        if runners.get(&conversation).is_some_and(|runner| runner.id == id)
            && let Some(runner) = runners.remove(&conversation)
        {
            runner.done.send_replace(true);
        }
    }

    /// Logs a store failure of a conversation's runner; quarantines the conversation when its
    /// stored data cannot be read back.
    pub(crate) fn store_failed(&self, conversation: ConversationId, error: &StoreError) {
        if matches!(error, StoreError::StaleLease(_)) {
            tracing::warn!(%conversation, "the conversation's runner stopped: another node holds its lease now");
        } else if error.is_unreadable() {
            tracing::error!(%conversation, %error, "conversation quarantined: its stored data cannot be read back; \
                repair or delete it, then restart (listed at /readyz)");
            self.quarantine().insert(conversation, error.to_string());
        } else {
            tracing::error!(%conversation, %error, "the conversation's runner stopped on a store failure; the next \
                message or restart picks its queued prompts up again");
        }
    }

    pub(crate) fn quarantine(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, String>> {
        self.quarantined.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses a conversation that is quarantined.
    pub(crate) fn check_available(&self, conversation: ConversationId) -> Result<(), EngineError> {
        match self.quarantine().get(&conversation) {
            Some(reason) => Err(EngineError::Unavailable { conversation, reason: reason.clone() }),
            None => Ok(()),
        }
    }
}
