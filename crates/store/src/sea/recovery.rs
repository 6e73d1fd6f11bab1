//! Finding prompt turns that a crash left open: an `agent_start` with no later `agent_end`.

use std::collections::HashMap;

use colloquy_core_model::ConversationId;
use sea_orm::QuerySelect;
use sea_orm::entity::prelude::*;

use super::{events, from_db_count};
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
