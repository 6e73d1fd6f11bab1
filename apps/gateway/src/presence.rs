//! Who is connected to which conversation: a participant is online while at least one of its
//! connections (WebSocket subscriptions, SSE streams) follows the conversation.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use colloquy_core_model::{ConversationId, ParticipantId, TurnEvent};
use colloquy_engine::Engine;

/// Connections per participant per conversation.
#[derive(Debug, Default)]
pub struct Presence {
    followers: Mutex<HashMap<ConversationId, HashMap<ParticipantId, usize>>>,
}

impl Presence {
    fn followers(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, HashMap<ParticipantId, usize>>> {
        // Every update is one counter change.
        self.followers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more connection of `participant` follows the conversation; tells the others when
    /// it comes online.
    pub fn join(&self, engine: &Engine, conversation: ConversationId, participant: ParticipantId) {
        let came_online = {
            let mut followers = self.followers();
            let count = followers.entry(conversation).or_default().entry(participant).or_insert(0);
            *count += 1;
            *count == 1
        };
        if came_online {
            let _ = engine.publish_ephemeral(
                conversation,
                TurnEvent::ParticipantPresence { participant_id: participant, online: true },
            );
        }
    }

    /// One connection of `participant` stopped following; tells the others when it goes offline.
    pub fn leave(&self, engine: &Engine, conversation: ConversationId, participant: ParticipantId) {
        let went_offline = {
            let mut followers = self.followers();
            let Some(counts) = followers.get_mut(&conversation) else { return };
            let gone = match counts.get_mut(&participant) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    counts.remove(&participant);
                    true
                }
                None => false,
            };
            if counts.is_empty() {
                followers.remove(&conversation);
            }
            gone
        };
        if went_offline {
            let _ = engine.publish_ephemeral(
                conversation,
                TurnEvent::ParticipantPresence { participant_id: participant, online: false },
            );
        }
    }

    /// Who is online in the conversation now.
    pub fn online(&self, conversation: ConversationId) -> Vec<ParticipantId> {
        let mut online: Vec<ParticipantId> =
            self.followers().get(&conversation).map(|counts| counts.keys().copied().collect()).unwrap_or_default();
        online.sort();
        online
    }
}
