//! What a conversation's runner knows of its conversation: the record, participants and history
//! loaded once when the runner starts, kept current from the events it writes itself, and
//! re-read only to fill a gap (another writer's event, e.g. a participant added over REST).
//!
//! A runner ends when its conversation goes idle; what it knew is kept in [`IdleStates`] for a
//! while, so the next prompt's runner reads one row to check it is current (and the events
//! since, if any) instead of the record, participants and history again.

use std::sync::{Mutex, PoisonError};

use colloquy_core_model::{
    ContentPart, Conversation, ConversationId, EventEnvelope, MediaSource, Message, Participant, TurnEvent,
};
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

/// The kept states together weigh at most this (see [`weight`]): long histories of large
/// messages (tool output, inline images) cannot make idle conversations hold much memory.
const IDLE_BYTES: usize = 16 << 20;

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
/// them again (see [`Loaded::resume`]): at most [`IDLE_STATES`] weighing [`IDLE_BYTES`] together,
/// the least recently used go first.
pub(crate) struct IdleStates(Mutex<Kept>);

struct Kept {
    states: LruCache<ConversationId, (Loaded, usize)>,
    /// The weights of `states`, summed.
    bytes: usize,
}

impl Default for IdleStates {
    fn default() -> Self {
        Self(Mutex::new(Kept { states: LruCache::new(IDLE_STATES), bytes: 0 }))
    }
}

impl IdleStates {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps what a runner that is ending knew, unless it is stale or too large.
    pub(crate) fn keep(&self, loaded: Loaded) {
        if loaded.stale || loaded.history.len() > IDLE_HISTORY {
            return;
        }
        let weight: usize = loaded.history.iter().map(weight).sum();
        if weight > IDLE_BYTES / 8 {
            return;
        }
        let mut kept = self.kept();
        let Kept { states, bytes } = &mut *kept;
        if let Some((_, replaced)) = states.remove(&loaded.conversation.id) {
            *bytes -= replaced;
        }
        // At capacity the cache drops its least recently used entry itself: take it out first.
        while states.len() >= IDLE_STATES || *bytes + weight > IDLE_BYTES {
            let Some((_, (_, dropped))) = states.remove_lru() else { break };
            *bytes -= dropped;
        }
        *bytes += weight;
        states.insert(loaded.conversation.id, (loaded, weight));
    }

    /// What the last runner of `conversation` knew, if it is kept.
    pub(crate) fn take(&self, conversation: ConversationId) -> Option<Loaded> {
        let mut kept = self.kept();
        let (loaded, weight) = kept.states.remove(&conversation)?;
        kept.bytes -= weight;
        Some(loaded)
    }
}

/// About how many bytes a message holds: its content's text and data, plus a fixed part.
fn weight(message: &Message) -> usize {
    let part = |part: &ContentPart| match part {
        ContentPart::Text { text } => text.len(),
        ContentPart::Image { source } | ContentPart::File { source, .. } => match source {
            MediaSource::Base64 { data, .. } => data.len(),
            MediaSource::Url { url } => url.len(),
        },
        ContentPart::ToolCall { name, arguments, .. } => name.len() + arguments.to_string().len(),
        ContentPart::ToolResult { content, name, .. } => name.len() + content.len(),
        other => serde_json::to_string(other).map_or(256, |json| json.len()),
    };
    256 + message.content.iter().map(part).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use colloquy_core_model::{MessageRole, NewMessage};

    use super::*;

    fn state(history: Vec<Message>) -> Loaded {
        let now = chrono::Utc::now();
        let conversation = Conversation {
            id: ConversationId::new(),
            kind: colloquy_core_model::ConversationKind::UserAgent,
            status: colloquy_core_model::ConversationStatus::Active,
            title: None,
            summary: None,
            tags: Vec::new(),
            options: colloquy_core_model::Options::default(),
            created_at: now,
            last_activity: now,
            expires_at: None,
            forked_from: None,
            totals: colloquy_core_model::Totals::default(),
            last_seq: 0,
        };
        Loaded { conversation, participants: Vec::new(), history, last_turn_start: None, stale: false }
    }

    fn message(text: &str) -> Message {
        NewMessage::new(MessageRole::User, vec![ContentPart::text(text)]).into_message(
            ConversationId::new(),
            1,
            chrono::Utc::now(),
        )
    }

    #[test]
    fn kept_states_stay_within_their_count_and_weight() {
        let idle = IdleStates::default();
        let ids: Vec<ConversationId> = (0..IDLE_STATES + 10)
            .map(|_| {
                let loaded = state(vec![message("hello")]);
                let id = loaded.conversation.id;
                idle.keep(loaded);
                id
            })
            .collect();
        assert_eq!(idle.kept().states.len(), IDLE_STATES);
        assert!(idle.take(ids[0]).is_none(), "the least recently kept went first");
        assert!(idle.take(ids[ids.len() - 1]).is_some());

        // Large histories: at most IDLE_BYTES together, and one too heavy is not kept at all.
        let big = "x".repeat(IDLE_BYTES / 8 / 4);
        for _ in 0..20 {
            idle.keep(state(vec![message(&big), message(&big), message(&big)]));
        }
        let kept = idle.kept();
        assert!(kept.bytes <= IDLE_BYTES, "{} bytes kept", kept.bytes);
        assert_eq!(kept.bytes, kept.states.iter().map(|(_, (_, w))| w).sum::<usize>());
        drop(kept);
        let heavy = state(vec![message(&big), message(&big), message(&big), message(&big), message(&big)]);
        let heavy_id = heavy.conversation.id;
        idle.keep(heavy);
        assert!(idle.take(heavy_id).is_none());
    }
}
