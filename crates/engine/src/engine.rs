//! The engine's public handle: post messages, subscribe, cancel, wait for idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colloquy_core_model::limits::{MAX_JSON_DEPTH, MAX_PARTICIPANTS, json_depth};
use colloquy_core_model::{
    AgentSpec, ContentPart, Conversation, ConversationId, ConversationKind, Message, MessageRole, NewMessage,
    Participant, ParticipantId, ParticipantKind, ParticipantRole, TurnEvent,
};
use colloquy_store::{AppendedMessage, ConversationStore, MessageEvent, NewConversation, NewParticipant, StoreError};
use colloquy_tools::ToolExecutor;

use crate::context::{ContextWindow, MessageTransformer};
use crate::fanout::{Hub, Subscription};
use crate::inner::{Inner, ProviderRegistry};
use crate::runner::{self, Start};
use crate::table::Runner;
use crate::{EngineError, turn};

/// What to do with a prompt that arrives while a turn runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueuePolicy {
    /// Store it and answer it at the next turn boundary (`Options::queue_mode` decides whether
    /// queued prompts get a turn each or one turn together).
    #[default]
    Queue,
    /// Refuse it with [`EngineError::Busy`] and store nothing.
    Reject,
}

/// A message to post.
#[derive(Debug, Clone)]
pub struct PostMessage {
    /// Who posts it; `None` means the conversation's first user (or service) participant.
    pub sender: Option<ParticipantId>,
    /// What it says.
    pub content: Vec<ContentPart>,
    /// The sender's idempotency key.
    pub client_msg_id: Option<String>,
    /// What to do if a turn is running.
    pub queue: QueuePolicy,
}

impl PostMessage {
    /// A text message from the conversation's first user, queued if a turn runs.
    pub fn text(text: impl Into<String>) -> Self {
        Self { sender: None, content: vec![ContentPart::text(text)], client_msg_id: None, queue: QueuePolicy::Queue }
    }
}

/// The outcome of [`Engine::post_message`].
#[derive(Debug, Clone)]
pub struct Posted {
    /// The stored message (the earlier one for a duplicate). Its `seq` is that of the event that
    /// stored it: `message_posted`, or `message_queued` while it waits for the turn boundary.
    pub message: Message,
    /// Whether the same `client_msg_id` was already stored; nothing new happened.
    pub duplicate: bool,
    /// Whether it waits for the running turn to end before it joins the history.
    pub queued: bool,
}

/// A conversation the engine stopped serving because its stored data cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The conversation.
    pub conversation: ConversationId,
    /// What failed, for the operator.
    pub reason: String,
}

/// Runs conversations. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("providers", &self.inner.providers.keys().collect::<Vec<_>>()).finish()
    }
}

impl Engine {
    /// Default for [`Engine::set_max_queued_prompts`].
    pub const DEFAULT_MAX_QUEUED_PROMPTS: usize = 100;

    /// How many prompts may wait behind a running turn in one conversation; more are refused
    /// with [`EngineError::QueueFull`], so a flood of sends cannot buy a flood of model requests.
    pub fn set_max_queued_prompts(&self, limit: usize) {
        self.inner.max_queued.store(limit.max(1), Ordering::Relaxed);
    }

    /// Default for [`Engine::set_provider_idle_timeout`]: five minutes.
    pub const DEFAULT_PROVIDER_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

    /// How long a reply's stream may go without an event (a token, a tool call's piece, a remote
    /// agent's update) before the turn gives up on it and ends with a provider error: a model
    /// server or remote agent that stops sending mid-reply cannot hold a turn forever.
    pub fn set_provider_idle_timeout(&self, limit: Duration) {
        let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
        self.inner.provider_idle_ms.store(millis, Ordering::Relaxed);
    }

    /// A conversation.
    pub async fn conversation(&self, id: ConversationId) -> Result<Conversation, EngineError> {
        Ok(self.inner.store.conversation(id).await?)
    }

    /// Messages of the history with `seq > after_seq`, oldest first, at most `limit`.
    pub async fn messages_after(
        &self,
        id: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Message>, EngineError> {
        Ok(self.inner.store.messages_after(id, after_seq, limit).await?)
    }

    /// A conversation's participants, in join order (those who left included).
    pub async fn participants(&self, id: ConversationId) -> Result<Vec<Participant>, EngineError> {
        Ok(self.inner.store.participants(id).await?)
    }

    /// The participants of several conversations, fetched together; each conversation's in
    /// join order.
    pub async fn participants_of(&self, ids: &[ConversationId]) -> Result<Vec<Participant>, EngineError> {
        Ok(self.inner.store.participants_of(ids).await?)
    }

    /// Publishes a live-only event (typing, presence) to the conversation's subscribers;
    /// nothing is stored. Durable events are refused: they come from the engine's own work.
    pub fn publish_ephemeral(&self, conversation: ConversationId, event: TurnEvent) -> Result<(), EngineError> {
        if event.is_durable() {
            return Err(EngineError::InvalidContent(format!(
                "`{}` events are stored by the engine itself",
                event.kind()
            )));
        }
        self.inner.emit_ephemeral(conversation, event);
        Ok(())
    }

    /// Tool calls of the conversation waiting for approval, oldest first.
    pub fn pending_approvals(&self, conversation: ConversationId) -> Vec<colloquy_tools::PendingApproval> {
        self.inner.tools.approvals().pending().into_iter().filter(|p| p.conversation_id == conversation).collect()
    }

    /// Answers a tool call waiting for approval: it runs, or is denied with the reason.
    pub fn answer_approval(
        &self,
        conversation: ConversationId,
        call: &colloquy_core_model::ToolCallId,
        answer: colloquy_tools::ApprovalAnswer,
    ) -> Result<(), EngineError> {
        self.inner
            .tools
            .approvals()
            .answer(conversation, call, answer)
            .map_err(|_| EngineError::ApprovalNotPending { conversation, call: call.to_string() })
    }

    /// Takes a participant out of a conversation (`participant_left`): it stops receiving its
    /// events and may not post; its messages stay.
    pub async fn remove_participant(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
    ) -> Result<(), EngineError> {
        let event = self.inner.store.remove_participant(conversation, participant).await?;
        self.inner.publish(event);
        Ok(())
    }

    /// Lets running turns finish for up to `grace`, then cancels the rest (each ends with
    /// `cancelled`, every tool call with a result) and waits for them: for a clean stop.
    /// Returns how many turns had to be cancelled.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let busy: Vec<ConversationId> = self.inner.runners().keys().copied().collect();
        // No new turn starts: prompts still queued stay stored for the next start.
        for conversation in &busy {
            self.inner.with_runner(*conversation, |runner| runner.stopping = true);
        }
        let all_idle = futures::future::join_all(busy.iter().map(|id| self.wait_for_idle(*id)));
        if tokio::time::timeout(grace, all_idle).await.is_ok() {
            return 0;
        }
        let running: Vec<ConversationId> = self.inner.runners().keys().copied().collect();
        for conversation in &running {
            self.inner.with_runner(*conversation, |runner| runner.cancel.cancel());
        }
        futures::future::join_all(running.iter().map(|id| self.wait_for_idle(*id))).await;
        running.len()
    }

    /// Deletes expired conversations in the background, as `policy` says, until the process
    /// stops.
    pub fn spawn_sweeper(&self, policy: colloquy_store::SweepPolicy) -> tokio::task::JoinHandle<()> {
        colloquy_store::spawn_sweeper(Arc::clone(&self.inner.store), policy)
    }

    /// Closes the store (after [`Engine::shutdown`]): every write is on disk and the files are
    /// tidy.
    pub async fn close(&self) -> Result<(), EngineError> {
        Ok(self.inner.store.close().await?)
    }
    pub fn new(store: Arc<dyn ConversationStore>, providers: ProviderRegistry, tools: ToolExecutor) -> Self {
        Self::with_transformer(store, providers, tools, Arc::new(ContextWindow))
    }

    /// An engine whose requests are shaped by `transformer` instead of the default
    /// [`ContextWindow`].
    pub fn with_transformer(
        store: Arc<dyn ConversationStore>,
        providers: ProviderRegistry,
        tools: ToolExecutor,
        transformer: Arc<dyn MessageTransformer>,
    ) -> Self {
        let inner = Inner {
            store,
            providers,
            tools,
            transformer,
            hub: Hub::default(),
            runners: Mutex::default(),
            quarantined: Mutex::default(),
            max_queued: AtomicUsize::new(Self::DEFAULT_MAX_QUEUED_PROMPTS),
            provider_idle_ms: std::sync::atomic::AtomicU64::new(Self::DEFAULT_PROVIDER_IDLE_TIMEOUT.as_secs() * 1000),
            models: crate::conversations::ModelCache::default(),
            cluster: std::sync::OnceLock::new(),
            idle: crate::state::IdleStates::default(),
            remote_agents: crate::inner::RemoteAgents::default(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Picks up what a stop left undone (DESIGN §3): closes or resumes every turn a crash left
    /// open, then answers every prompt that was stored but not answered, queued ones included,
    /// each exactly once. Call it once at start, before serving clients; the work runs in the
    /// background, one runner per conversation (posts to those conversations queue behind it).
    /// A conversation whose stored data cannot be read back is quarantined (see
    /// [`Engine::quarantined`]) and every other one is served. Returns how many open turns it
    /// found.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let open = self.inner.store.unfinished_turns().await?;
        let pending = self.inner.store.conversations_with_pending_prompts().await?;
        let starts = open
            .iter()
            .map(|(conversation, start_seq)| (*conversation, Start::Recover(*start_seq)))
            .chain(pending.into_iter().map(|conversation| (conversation, Start::Fresh)));
        for (conversation, start) in starts {
            if self.inner.check_available(conversation).is_err() || self.is_busy(conversation) {
                continue;
            }
            // Read what recovery will read now, before serving, so that a conversation that
            // cannot be read back is quarantined at start (and listed at once), not later.
            match self.readable_for_recovery(conversation, &start).await {
                Err(error) if error.is_unreadable() => {
                    self.inner.store_failed(conversation, &error);
                    continue;
                }
                other => other?,
            }
            runner::start_if_idle(&self.inner, conversation, start);
        }
        Ok(open.len())
    }

    /// Reads everything a runner starting with `start` reads first.
    async fn readable_for_recovery(&self, conversation: ConversationId, start: &Start) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let record = store.conversation(conversation).await?;
        store.participants(conversation).await?;
        let limit = crate::state::HISTORY_LIMIT;
        store.messages_after(conversation, record.last_seq.saturating_sub(limit), limit).await?;
        store.queued_messages(conversation).await?;
        if let Start::Recover(start_seq) = start {
            store.events_after(conversation, start_seq.saturating_sub(1), limit).await?;
        }
        Ok(())
    }

    /// Whether the engine can serve: the store answers. Returns the quarantined conversations,
    /// which are not served while everything else is.
    pub async fn ready(&self) -> Result<Vec<Quarantined>, EngineError> {
        self.inner.store.ping().await?;
        Ok(self.quarantined())
    }

    /// Conversations that are not served because their stored data cannot be read back, with
    /// the reason; an operator must repair or delete them.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        let mut list: Vec<Quarantined> = self
            .inner
            .quarantine()
            .iter()
            .map(|(conversation, reason)| Quarantined { conversation: *conversation, reason: reason.clone() })
            .collect();
        list.sort_by_key(|q| q.conversation);
        list
    }

    /// Creates a conversation with its first participants, after checking that it can work: at
    /// most [`MAX_PARTICIPANTS`] participants with non-blank names, someone who can post (a user
    /// or service that is not an observer), an agent for the kinds that need one (two for
    /// `agent_agent`, unless a service talks to the agent), agents on configured providers,
    /// models and tools ([`Engine::check_agent`]), and
    /// `options.context` no deeper than [`MAX_JSON_DEPTH`]. Nothing is stored when a check fails.
    pub async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<(Conversation, Vec<Participant>), EngineError> {
        let invalid = |message: String| Err(EngineError::InvalidConversation(message));
        let count = new.participants.len();
        if count > MAX_PARTICIPANTS {
            return invalid(format!(
                "{count} participants is more than the limit of {MAX_PARTICIPANTS} per conversation: create it with \
                 fewer and add the rest later"
            ));
        }
        if let Some(index) = new.participants.iter().position(|p| p.display_name.trim().is_empty()) {
            return invalid(format!("participant {index} has no display_name: give everyone a name to be shown by"));
        }
        let can_post = |p: &&NewParticipant| p.kind != ParticipantKind::Agent && p.role != ParticipantRole::Observer;
        if !new.participants.iter().any(|p| can_post(&p)) {
            return invalid(
                "nobody in this conversation could post: add a participant of kind `user` or `service` that is \
                 not an observer"
                    .to_owned(),
            );
        }
        let agents = new.participants.iter().filter(|p| p.kind == ParticipantKind::Agent).count();
        let services = new.participants.iter().filter(|p| p.kind == ParticipantKind::Service).count();
        let needed = match new.kind {
            ConversationKind::UserAgent => 1,
            ConversationKind::AgentAgent => 2_usize.saturating_sub(services.min(1)),
            ConversationKind::MultiParty => 0,
        };
        if agents < needed {
            return invalid(format!(
                "a `{}` conversation needs at least {needed} agent participant(s), this one has {agents}: add \
                 participants of kind `agent`",
                serde_json::to_value(new.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            ));
        }
        if let Some(index) = new.participants.iter().position(|p| p.kind == ParticipantKind::Agent && p.agent.is_none())
        {
            return invalid(format!(
                "participant {index} is an agent without an agent spec: give it provider and model"
            ));
        }
        // Each distinct spec once: hundreds of agents usually share a few.
        let mut checked: Vec<&AgentSpec> = Vec::new();
        for spec in new.participants.iter().filter_map(|p| p.agent.as_ref()) {
            if !checked.contains(&spec) {
                self.check_agent(spec).await?;
                checked.push(spec);
            }
        }
        let depth = json_depth(&new.options.context);
        if depth > MAX_JSON_DEPTH {
            return invalid(format!(
                "options.context nests {depth} levels deep, more than the limit of {MAX_JSON_DEPTH}: send flatter JSON"
            ));
        }
        Ok(self.inner.store.create_conversation(new).await?)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// What runners it starts share.
    pub(crate) fn shared(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The store it records into.
    pub fn store(&self) -> &Arc<dyn ConversationStore> {
        &self.inner.store
    }

    /// The tools it can run.
    pub fn tools(&self) -> &ToolExecutor {
        &self.inner.tools
    }

    /// Posts a message from a user or service and stores it. With no turn running it joins the
    /// history at once (`message_posted`) and the conversation's agent starts answering it; while
    /// a turn runs it is queued (`message_queued`, or refused with [`EngineError::Busy`] under
    /// [`QueuePolicy::Reject`]) and joins the history at the turn boundary. Either way it is
    /// stored when this returns. A retried post with the same `client_msg_id` returns the stored
    /// message and starts nothing.
    pub async fn post_message(&self, conversation: ConversationId, post: PostMessage) -> Result<Posted, EngineError> {
        crate::post::check(&post.content, post.client_msg_id.as_deref())?;
        self.inner.check_available(conversation)?;
        let participants = self.inner.store.participants(conversation).await?;
        if participants.is_empty() {
            // Every conversation has someone in it: this fails with not-found for an unknown one.
            self.inner.store.conversation(conversation).await?;
        }
        let sender = match post.sender {
            Some(id) => participants
                .iter()
                .find(|p| p.id == id && p.left_at.is_none())
                .ok_or(EngineError::NotAParticipant { conversation, participant: id })?,
            None => participants
                .iter()
                .find(|p| p.kind != ParticipantKind::Agent && p.left_at.is_none())
                .ok_or(EngineError::NoSender(conversation))?,
        };
        let mut message = NewMessage::new(MessageRole::User, post.content);
        message.sender = Some(sender.id);
        message.client_msg_id = post.client_msg_id;

        // Decide under the runner table's lock, so exactly one post starts a runner and every
        // other one queues behind it (or is refused).
        let started = {
            let mut runners = self.inner.runners();
            match runners.get_mut(&conversation) {
                Some(_) if post.queue == QueuePolicy::Reject => return Err(EngineError::Busy(conversation)),
                Some(runner) if runner.queued() >= self.inner.max_queued.load(Ordering::Relaxed) => {
                    let limit = self.inner.max_queued.load(Ordering::Relaxed);
                    return Err(EngineError::QueueFull { conversation, limit });
                }
                Some(runner) => {
                    runner.queue_write_started();
                    None
                }
                None => {
                    let runner = Runner::new(false);
                    let id = runner.id;
                    runners.insert(conversation, runner);
                    Some(id)
                }
            }
        };
        let Some(id) = started else {
            let appended = self.inner.store.append_message(conversation, message, MessageEvent::Queued).await;
            let landed = appended.as_ref().ok().filter(|a| !a.duplicate).map(|a| (a.message.seq, a.message.id));
            self.inner.with_runner(conversation, |runner| runner.queue_write_finished(landed));
            return self.posted(appended?);
        };
        // In a cluster another node may be running a turn here: the prompt is stored queued, and
        // whoever holds the lease (this runner, once it has taken it) admits it.
        let event = if self.inner.cluster.get().is_some() { MessageEvent::Queued } else { MessageEvent::Posted };
        let appended = self.inner.store.append_message(conversation, message, event).await;
        // Start the runner whatever happened: it answers what awaits an answer, or stops.
        runner::spawn(Arc::clone(&self.inner), conversation, id, Start::Fresh);
        self.posted(appended?)
    }

    fn posted(&self, appended: AppendedMessage) -> Result<Posted, EngineError> {
        if let Some(envelope) = appended.event {
            self.inner.hub.publish(envelope);
        }
        Ok(Posted { message: appended.message, duplicate: appended.duplicate, queued: appended.queued })
    }

    /// Follows a conversation's events after `after_seq` (0 for all): the stored ones first,
    /// then live ones.
    pub async fn subscribe(&self, conversation: ConversationId, after_seq: u64) -> Result<Subscription, EngineError> {
        self.inner.check_available(conversation)?;
        // Fail now, not on the first read, when the conversation does not exist.
        self.inner.store.conversation(conversation).await?;
        Ok(Subscription::new(&self.inner.hub, Arc::clone(&self.inner.store), conversation, after_seq))
    }

    /// Cancels the conversation's running turn, if any; returns whether one was running. The turn
    /// ends with `cancelled`, and every tool call it made gets a result. Prompts that arrived
    /// during the turn are still answered, by the next turn.
    pub fn cancel(&self, conversation: ConversationId) -> bool {
        match self.inner.runners().get(&conversation) {
            Some(runner) => {
                runner.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Runs the conversation's (first) agent on the history as it is, without a new message:
    /// after a failed or stopped turn, or after messages were appended without a turn.
    pub async fn continue_conversation(&self, conversation: ConversationId) -> Result<(), EngineError> {
        self.inner.check_available(conversation)?;
        self.inner.store.conversation(conversation).await?;
        let mut runners = self.inner.runners();
        if let Some(runner) = runners.get_mut(&conversation) {
            runner.force = true;
            return Ok(());
        }
        let runner = Runner::new(true);
        let id = runner.id;
        runners.insert(conversation, runner);
        drop(runners);
        runner::spawn(Arc::clone(&self.inner), conversation, id, Start::Fresh);
        Ok(())
    }

    /// Copies the conversation up to and including `at_seq` into a new one. A turn that was
    /// running at `at_seq` is closed in the copy (`error: interrupted`, with a result for each
    /// unanswered tool call), so the fork's history is valid; the original is unchanged.
    pub async fn fork(&self, conversation: ConversationId, at_seq: u64) -> Result<ConversationId, EngineError> {
        let fork = self.inner.store.fork_conversation(conversation, at_seq, ConversationId::new()).await?;
        let log = self.inner.store.events_after(fork.id, 0, u64::MAX).await?;
        let open_turn = log.iter().rev().find_map(|e| match e.event {
            TurnEvent::AgentStart { .. } => Some(e.seq),
            TurnEvent::AgentEnd { .. } => Some(None),
            _ => None,
        });
        if let Some(Some(start_seq)) = open_turn {
            turn::recover(&self.inner, fork.id, start_seq, false).await?;
        }
        Ok(fork.id)
    }

    /// Whether a turn is running (or queued) in the conversation.
    pub fn is_busy(&self, conversation: ConversationId) -> bool {
        self.inner.runners().contains_key(&conversation)
    }

    /// Waits until the conversation has no turn running or queued.
    pub async fn wait_for_idle(&self, conversation: ConversationId) {
        let done = self.inner.runners().get(&conversation).map(|runner| runner.done.subscribe());
        if let Some(mut done) = done {
            // An error means the runner is gone, which is idle too.
            let _ = done.wait_for(|finished| *finished).await;
        }
    }
}
