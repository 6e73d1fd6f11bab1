//! The `events` table, the durable event log: its SeaORM entity and the conversions to and from
//! [`EventEnvelope`]. The payload is the event's own JSON, so the log replays exactly what was sent.

use colloquy_core_model::{ConversationId, EventEnvelope, Timestamp, TurnEvent};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

use super::{corrupt, from_db_count, stored_json, to_db_count};
use crate::StoreError;

/// One row of `events`; `kind` repeats the payload's `type` so the log can be filtered in SQL.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub kind: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The row that records `event` as the conversation's `seq`-th.
pub(super) fn new_row(
    conversation_id: ConversationId,
    seq: u64,
    event: &TurnEvent,
    now: Timestamp,
) -> Result<ActiveModel, StoreError> {
    let payload = stored_json(event, "events.payload")?;
    Ok(ActiveModel {
        conversation_id: Set(conversation_id.as_uuid()),
        seq: Set(to_db_count(seq)),
        kind: Set(event.kind().to_owned()),
        payload: Set(payload),
        created_at: Set(now),
    })
}

impl Model {
    /// The domain value; fails when the payload is not an event this version knows.
    pub(super) fn into_domain(self) -> Result<EventEnvelope, StoreError> {
        let event: TurnEvent = serde_json::from_value(self.payload).map_err(|err| corrupt("events.payload", err))?;
        Ok(EventEnvelope {
            conversation_id: ConversationId::from_uuid(self.conversation_id),
            seq: Some(from_db_count(self.seq, "events.seq")?),
            event,
        })
    }
}
