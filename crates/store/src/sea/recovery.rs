//! What a crash may have left undone, read once at start: prompt turns left open (an
//! `agent_start` with no later `agent_end`) and prompts that wait for an answer.

use std::collections::HashMap;

use colloquy_core_model::ConversationId;
use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, QuerySelect};

use super::{events, from_db_count, messages};
use crate::StoreError;

/// The newest seq of each conversation's events of `kind`.
async fn newest_of_kind(db: &DatabaseConnection, kind: &str) -> Result<HashMap<Uuid, i64>, StoreError> {
    let rows: Vec<(Uuid, i64)> = events::Entity::find()
        .select_only()
        .column(events::Column::ConversationId)
        .column_as(events::Column::Seq.max(), "seq")
        .filter(events::Column::Kind.eq(kind))
        .group_by(events::Column::ConversationId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Each conversation whose newest `agent_start` has no `agent_end` after it, with that start's seq.
pub(super) async fn unfinished_turns(db: &DatabaseConnection) -> Result<Vec<(ConversationId, u64)>, StoreError> {
    let starts = newest_of_kind(db, "agent_start").await?;
    let ends = newest_of_kind(db, "agent_end").await?;
    let mut open = Vec::new();
    for (conversation, start) in starts {
        if ends.get(&conversation).is_none_or(|end| *end < start) {
            open.push((ConversationId::from_uuid(conversation), from_db_count(start, "events.seq")?));
        }
    }
    open.sort();
    Ok(open)
}

/// Conversations with queued messages, or whose newest `message_posted` is newer than their
/// newest `agent_start` (the process stopped between storing a prompt and starting its turn).
pub(super) async fn conversations_with_pending_prompts(
    db: &DatabaseConnection,
) -> Result<Vec<ConversationId>, StoreError> {
    let queued: Vec<Uuid> = messages::Entity::find()
        .select_only()
        .column(messages::Column::ConversationId)
        .filter(messages::Column::Queued.eq(true))
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    let posted = newest_of_kind(db, "message_posted").await?;
    let starts = newest_of_kind(db, "agent_start").await?;
    let mut pending: Vec<ConversationId> = posted
        .into_iter()
        .filter(|(conversation, posted)| starts.get(conversation).is_none_or(|start| start < posted))
        .map(|(conversation, _)| conversation)
        .chain(queued)
        .map(ConversationId::from_uuid)
        .collect();
    pending.sort();
    pending.dedup();
    Ok(pending)
}

/// The seq of the conversation's newest `agent_start`.
pub(super) async fn last_turn_start(
    db: &DatabaseConnection,
    conversation: ConversationId,
) -> Result<Option<u64>, StoreError> {
    let seq: Option<i64> = events::Entity::find()
        .select_only()
        .column(events::Column::Seq)
        .filter(events::Column::ConversationId.eq(conversation.as_uuid()))
        .filter(events::Column::Kind.eq("agent_start"))
        .order_by_desc(events::Column::Seq)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    seq.map(|seq| from_db_count(seq, "events.seq")).transpose()
}
