//! The engine's public handle: post messages, subscribe, cancel, wait for idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use colloquy_core_model::{
    ContentPart, ConversationId, EventEnvelope, Message, MessageRole, NewMessage, ParticipantId, ParticipantKind,
    TurnEvent,
};
use colloquy_llm_providers::LlmProvider;
use colloquy_store::{ConversationStore, MessageEvent, StoreError};
use colloquy_tools::ToolExecutor;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::context::{ContextWindow, MessageTransformer};
use crate::fanout::{Hub, Subscription};
use crate::{EngineError, turn};

/// Providers by the name agents use for them (`AgentSpec::provider`).
pub type ProviderRegistry = HashMap<String, Arc<dyn LlmProvider>>;

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
    /// The stored message (the earlier one for a duplicate).
    pub message: Message,
    /// Whether the same `client_msg_id` was already stored; nothing new happened.
    pub duplicate: bool,
}

/// The turn loop of one conversation, while it runs.
struct Runner {
    /// Cancels the turn in progress.
    cancel: CancellationToken,
    /// A message arrived during the turn, so another turn follows it.
    pending: bool,
    /// The next turn runs even if no message awaits an answer ([`Engine::continue_conversation`]).
    force: bool,
    /// Becomes `true` when the runner stops, for [`Engine::wait_for_idle`].
    done: watch::Sender<bool>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ConversationStore>,
    pub(crate) providers: ProviderRegistry,
    pub(crate) tools: ToolExecutor,
    /// Shapes every request's messages (the context window by default).
    pub(crate) transformer: Arc<dyn MessageTransformer>,
    hub: Hub,
    /// One runner per conversation with a turn in progress: turns of one conversation never
    /// overlap.
    runners: Mutex<HashMap<ConversationId, Runner>>,
}

impl Inner {
    /// Stores a durable event, then publishes it.
    pub(crate) async fn emit(&self, conversation: ConversationId, event: TurnEvent) -> Result<u64, StoreError> {
        let envelope = self.store.append_event(conversation, event).await?;
        let seq = envelope.seq.unwrap_or_default();
        self.hub.publish(envelope);
        Ok(seq)
    }

    /// Stores a message with the event that records it, then publishes the event.
    pub(crate) async fn emit_message(
        &self,
        conversation: ConversationId,
        message: NewMessage,
        event: MessageEvent,
    ) -> Result<Message, StoreError> {
        let appended = self.store.append_message(conversation, message, event).await?;
        if let Some(envelope) = appended.event {
            self.hub.publish(envelope);
        }
        Ok(appended.message)
    }

    /// Publishes an event the store has already recorded.
    pub(crate) fn publish(&self, envelope: EventEnvelope) {
        self.hub.publish(envelope);
    }

    /// Publishes an ephemeral event (not stored, no seq).
    pub(crate) fn emit_ephemeral(&self, conversation: ConversationId, event: TurnEvent) {
        debug_assert!(!event.is_durable());
        self.hub.publish(EventEnvelope { conversation_id: conversation, seq: None, event });
    }

    fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Runner>> {
        // Every update of the map is a single insert, remove or field write.
        self.runners.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    /// An engine over this store, these providers and these tools.
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
        let inner = Inner { store, providers, tools, transformer, hub: Hub::default(), runners: Mutex::default() };
        Self { inner: Arc::new(inner) }
    }

    /// Closes or resumes every turn that a crash left open (see DESIGN §3), then answers any
    /// prompt that was waiting. Call it once at start, before serving clients; returns how many
    /// turns it recovered.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        let open = self.inner.store.unfinished_turns().await?;
        for (conversation, start_seq) in &open {
            turn::recover(&self.inner, *conversation, *start_seq, true).await?;
            self.schedule(*conversation, false);
        }
        Ok(open.len())
    }

    pub(crate) fn inner(&self) -> &Inner {
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

    /// Posts a message from a user or service, stores it (`message_posted`), and starts the
    /// conversation's agent answering it, or queues it if a turn is already running. A retried
    /// post with the same `client_msg_id` returns the stored message and starts nothing.
    pub async fn post_message(&self, conversation: ConversationId, post: PostMessage) -> Result<Posted, EngineError> {
        if post.content.is_empty() {
            return Err(EngineError::EmptyMessage);
        }
        // Fails with not-found for an unknown conversation (its participant list would be empty).
        self.inner.store.conversation(conversation).await?;
        let participants = self.inner.store.participants(conversation).await?;
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
        if post.queue == QueuePolicy::Reject && self.is_busy(conversation) {
            return Err(EngineError::Busy(conversation));
        }
        let mut message = NewMessage::new(MessageRole::User, post.content);
        message.sender = Some(sender.id);
        message.client_msg_id = post.client_msg_id;
        let appended = self.inner.store.append_message(conversation, message, MessageEvent::Posted).await?;
        if let Some(envelope) = appended.event {
            self.inner.hub.publish(envelope);
        }
        if !appended.duplicate && sender.kind != ParticipantKind::Agent {
            self.schedule(conversation, false);
        }
        Ok(Posted { message: appended.message, duplicate: appended.duplicate })
    }

    /// Follows a conversation's events after `after_seq` (0 for all): the stored ones first,
    /// then live ones.
    pub async fn subscribe(&self, conversation: ConversationId, after_seq: u64) -> Result<Subscription, EngineError> {
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
        self.inner.store.conversation(conversation).await?;
        self.schedule(conversation, true);
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

    /// Starts a runner for the conversation, or tells the running one to go again afterwards.
    fn schedule(&self, conversation: ConversationId, force: bool) {
        let mut runners = self.inner.runners();
        if let Some(runner) = runners.get_mut(&conversation) {
            runner.pending = true;
            runner.force |= force;
            return;
        }
        let cancel = CancellationToken::new();
        let runner = Runner { cancel: cancel.clone(), pending: false, force, done: watch::Sender::new(false) };
        runners.insert(conversation, runner);
        drop(runners);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut cancel = cancel;
            let mut answered_through = None;
            loop {
                // After a turn, look again: prompts queued one at a time wait for their own turn.
                let force =
                    inner.runners().get_mut(&conversation).is_some_and(|runner| std::mem::take(&mut runner.force));
                let answered = turn::run(&inner, conversation, answered_through, force, cancel.clone()).await;
                let mut runners = inner.runners();
                let Some(runner) = runners.get_mut(&conversation) else { break };
                if answered.is_some() || runner.pending {
                    answered_through = answered.or(answered_through);
                    runner.pending = false;
                    if runner.cancel.is_cancelled() {
                        runner.cancel = CancellationToken::new();
                    }
                    cancel = runner.cancel.clone();
                } else if let Some(runner) = runners.remove(&conversation) {
                    runner.done.send_replace(true);
                    break;
                }
            }
        });
    }
}
