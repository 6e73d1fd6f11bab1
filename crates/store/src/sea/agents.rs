//! Changing how an agent participant answers: its provider, model, system prompt and tools.

use colloquy_core_model::{AgentSpec, ConversationId, Participant, ParticipantId, ParticipantKind};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveModelTrait, IntoActiveModel};

use super::{participants, stored_json};
use crate::StoreError;

/// Replaces the spec of `participant`, which must be an agent of `conversation`.
pub(super) async fn update_agent(
    db: &impl ConnectionTrait,
    conversation: ConversationId,
    participant: ParticipantId,
    spec: &AgentSpec,
) -> Result<Participant, StoreError> {
    let row = participants::Entity::find_by_id((conversation.as_uuid(), participant.as_uuid()))
        .one(db)
        .await?
        .ok_or(StoreError::ParticipantNotFound { conversation, participant })?;
    let current = row.clone().into_domain()?;
    if current.kind != ParticipantKind::Agent {
        return Err(StoreError::NotAnAgent(participant));
    }
    let mut active = row.into_active_model();
    active.agent = Set(Some(stored_json(spec, "participants.agent")?));
    active.update(db).await?.into_domain()
}

/// Writes the `participant_updated` event for `participant` under the next seq, in `txn`.
pub(super) async fn record_update(
    txn: &sea_orm::DatabaseTransaction,
    participant: Participant,
) -> Result<(Participant, colloquy_core_model::EventEnvelope), StoreError> {
    let conversation = participant.conversation_id;
    let now = super::now();
    let (seq, _) = super::next_seq(txn, conversation, now, 1, None).await?;
    let event = colloquy_core_model::TurnEvent::ParticipantUpdated { participant: participant.clone() };
    super::events::Entity::insert(super::events::new_row(conversation, seq, &event, now)?)
        .exec_without_returning(txn)
        .await?;
    Ok((participant, colloquy_core_model::EventEnvelope { conversation_id: conversation, seq: Some(seq), event }))
}
