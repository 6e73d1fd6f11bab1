//! What a conversation's runner knows of its conversation: the record, participants and history
//! loaded once when the runner starts, kept current from the events it writes itself, and
//! re-read only to fill a gap (another writer's event, e.g. a participant added over REST).
//!
//! A runner ends when its conversation goes idle; what it knew is kept in [`IdleStates`] for a
//! while, so the next prompt's runner reads one row to check it is current (and the events
//! since, if any) instead of the record, participants and history again.

use std::sync::{Mutex, PoisonError};

use colloquy_core_model::{Conversation, ConversationId, EventEnvelope, Message, Participant, TurnEvent};
use colloquy_store::{ConversationStore, StoreError};
use hashlink::LruCache;

/// Messages read to plan and run turns; the context window decides how many are sent.
pub(crate) const HISTORY_LIMIT: u64 = 10_000;

/// Events read to fill a gap; a larger gap reloads everything.
const GAP_LIMIT: u64 = 1_000;

/// Idle conversations whose state is kept, the most recently used ones.
const IDLE_STATES: usize = 128;

/// A state with a longer history is not kept (it would hold too much memory while idle).
const IDLE_HISTORY: usize = 1_000;

/// A conversation as of its event `seq` [`Loaded::seq`].
pub(crate) struct Loaded {
    /// The record; its `last_seq` is the newest event applied. Of the totals only the cost (for
    /// the budget) is kept current between reloads.
    pub(crate) conversation: Conversation,
    pub(crate) participants: Vec<Participant>,
    /// The newest [`HISTORY_LIMIT`] messages of the history, oldest first.
    pub(crate) history: Vec<Message>,
    /// The seq of the newest `agent_start`.
    pub(crate) last_turn_start: Option<u64>,
    /// An event could not be applied (a gap, or a change this cache does not follow): reload.
    stale: bool,
}

impl Loaded {
    /// Reads the conversation from the store.
    pub(crate) async fn load(store: &dyn ConversationStore, id: ConversationId) -> Result<Self, StoreError> {
        let conversation = store.conversation(id).await?;
        let participants = store.participants(id).await?;
        let after = conversation.last_seq.saturating_sub(HISTORY_LIMIT);
        let history = store.messages_after(id, after, HISTORY_LIMIT).await?;
        let last_turn_start = store.last_turn_start(id).await?;
        Ok(Self { conversation, participants, history, last_turn_start, stale: false })
    }

    /// `kept` (what an earlier runner knew, if anything) brought up to date, or the conversation
    /// read afresh. The record is read again in any case (its options and totals are current
    /// then); if the store has events `kept` lacks, they are applied, or everything is reloaded.
    pub(crate) async fn resume(
        store: &dyn ConversationStore,
        id: ConversationId,
        kept: Option<Self>,
    ) -> Result<Self, StoreError> {
        let Some(mut loaded) = kept else { return Self::load(store, id).await };
        let current = store.conversation(id).await?;
        loaded.refresh(store, id, current.last_seq).await?;
        if loaded.stale || loaded.seq() != current.last_seq {
            return Self::load(store, id).await;
        }
        loaded.conversation = current;
        Ok(loaded)
    }

    /// The newest event it reflects.
    pub(crate) fn seq(&self) -> u64 {
        self.conversation.last_seq
    }

    /// Takes in an event just written. Events it already has are skipped; one after a gap, or
    /// one that changes what it does not follow (edits, participants, options), marks it stale.
    pub(crate) fn apply(&mut self, envelope: &EventEnvelope) {
        let Some(seq) = envelope.seq else { return };
        if self.stale || seq <= self.seq() {
            return;
        }
        if seq != self.seq() + 1 {
            self.stale = true;
            return;
        }
        self.conversation.last_seq = seq;
        match &envelope.event {
            TurnEvent::MessagePosted { message }
            | TurnEvent::MessageEnd { message, .. }
            | TurnEvent::ToolExecutionEnd { message, .. } => {
                if let Some(usage) = &message.usage {
                    self.conversation.totals.cost_usd += usage.cost_usd.unwrap_or(0.0);
                }
                self.history.push(message.clone());
                if self.history.len() > HISTORY_LIMIT as usize {
                    self.history.remove(0);
                }
            }
            TurnEvent::AgentStart { .. } => self.last_turn_start = Some(seq),
            TurnEvent::MessageQueued { .. }
            | TurnEvent::TurnStart { .. }
            | TurnEvent::MessageStart { .. }
            | TurnEvent::ToolExecutionStart { .. }
            | TurnEvent::ApprovalRequested { .. }
            | TurnEvent::TurnEnd { .. }
            | TurnEvent::AgentEnd { .. } => {}
            _ => self.stale = true,
        }
    }

    /// Brings it up to `published` (the newest seq published for the conversation): reads the
    /// events it lacks, or everything again when it is stale or far behind.
    pub(crate) async fn refresh(
        &mut self,
        store: &dyn ConversationStore,
        id: ConversationId,
        published: u64,
    ) -> Result<(), StoreError> {
        if !self.stale && published > self.seq() {
            if published - self.seq() > GAP_LIMIT {
                self.stale = true;
            } else {
                for envelope in store.events_after(id, self.seq(), GAP_LIMIT).await? {
                    self.apply(&envelope);
                }
            }
        }
        if self.stale {
            *self = Self::load(store, id).await?;
        }
        Ok(())
    }
}

/// The [`Loaded`] states of conversations that went idle, so that the next runner need not read
/// them again (see [`Loaded::resume`]): at most [`IDLE_STATES`], the least recently used go first.
pub(crate) struct IdleStates(Mutex<LruCache<ConversationId, Loaded>>);

impl Default for IdleStates {
    fn default() -> Self {
        Self(Mutex::new(LruCache::new(IDLE_STATES)))
    }
}

impl IdleStates {
    /// Keeps what a runner that is ending knew, unless it is stale or too large.
    pub(crate) fn keep(&self, loaded: Loaded) {
        if !loaded.stale && loaded.history.len() <= IDLE_HISTORY {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(loaded.conversation.id, loaded);
        }
    }

    /// What the last runner of `conversation` knew, if it is kept.
    pub(crate) fn take(&self, conversation: ConversationId) -> Option<Loaded> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&conversation)
    }
}
