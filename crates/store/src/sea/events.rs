//! The `events` table, the durable event log: its SeaORM entity and the conversions to and from
//! [`EventEnvelope`]. The payload is the event's own JSON, except that an event recording a
//! message (`message_posted`, `message_queued`, `message_end`, `tool_execution_end`) leaves the
//! message out and names it in `message_id`: its content is stored once, in `messages`, and put
//! back when the log is read (as the message is now: an edit shows in the replayed event too,
//! followed by its `message_updated`). Removing a message first puts its copy back into the
//! events that refer to it, so the log always reads back whole.

use std::collections::HashMap;

use colloquy_core_model::{ConversationId, EventEnvelope, Message, Timestamp, TurnEvent};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

use super::{corrupt, from_db_count, messages, stored_json, to_db_count};
use crate::StoreError;

/// Messages read per query while the log is read back.
const READ_CHUNK: usize = 500;

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
    /// The message the event records, left out of `payload` (NULL: the payload is whole).
    pub message_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The row that records `event` as the conversation's `seq`-th; the message it records (stored
/// in `messages` by the same transaction) is referred to, not copied.
pub(super) fn new_row(
    conversation_id: ConversationId,
    seq: u64,
    event: &TurnEvent,
    now: Timestamp,
) -> Result<ActiveModel, StoreError> {
    let mut payload = stored_json(event, "events.payload")?;
    let message_id = event.recorded_message().map(|message| message.id.as_uuid());
    if message_id.is_some()
        && let Json::Object(fields) = &mut payload
    {
        fields.remove("message");
    }
    Ok(row(conversation_id, seq, event, payload, now, message_id))
}

/// The row that records `event` with its whole payload, message included (for a message that is
/// not in `messages`).
pub(super) fn new_row_whole(
    conversation_id: ConversationId,
    seq: u64,
    event: &TurnEvent,
    now: Timestamp,
) -> Result<ActiveModel, StoreError> {
    let payload = stored_json(event, "events.payload")?;
    Ok(row(conversation_id, seq, event, payload, now, None))
}

fn row(
    conversation_id: ConversationId,
    seq: u64,
    event: &TurnEvent,
    payload: Json,
    now: Timestamp,
    message_id: Option<Uuid>,
) -> ActiveModel {
    ActiveModel {
        conversation_id: Set(conversation_id.as_uuid()),
        seq: Set(to_db_count(seq)),
        kind: Set(event.kind().to_owned()),
        payload: Set(payload),
        created_at: Set(now),
        message_id: Set(message_id),
    }
}

/// Reads rows back as events, putting in the messages they refer to (one query per
/// [`READ_CHUNK`] of them).
pub(super) async fn into_domains<C: ConnectionTrait>(
    db: &C,
    rows: Vec<Model>,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().filter_map(|row| row.message_id).collect();
    let mut recorded: HashMap<Uuid, Message> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(READ_CHUNK) {
        for row in messages::Entity::find().filter(messages::Column::Id.is_in(chunk.iter().copied())).all(db).await? {
            recorded.insert(row.id, row.into_domain()?);
        }
    }
    rows.into_iter().map(|row| row.into_domain_with(&recorded)).collect()
}

impl Model {
    /// The domain value, with the message it refers to taken from `recorded` (its seq is the
    /// event's: a queued message's event keeps the seq it had while queued). Fails when the
    /// payload is not an event this version knows, or its message is missing.
    fn into_domain_with(mut self, recorded: &HashMap<Uuid, Message>) -> Result<EventEnvelope, StoreError> {
        let seq = from_db_count(self.seq, "events.seq")?;
        if let Some(id) = self.message_id {
            let mut message = recorded
                .get(&id)
                .cloned()
                .ok_or_else(|| corrupt("events.message_id", format!("message {id} of event {seq} is missing")))?;
            message.seq = seq;
            let message = serde_json::to_value(message).map_err(|err| corrupt("messages", err))?;
            match &mut self.payload {
                Json::Object(payload) => {
                    payload.insert("message".to_owned(), message);
                }
                _ => return Err(corrupt("events.payload", "not an object")),
            }
        }
        let event: TurnEvent = serde_json::from_value(self.payload).map_err(|err| corrupt("events.payload", err))?;
        Ok(EventEnvelope { conversation_id: ConversationId::from_uuid(self.conversation_id), seq: Some(seq), event })
    }
}
