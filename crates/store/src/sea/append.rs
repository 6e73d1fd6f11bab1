//! Appending: a batch of messages (with the events that record them) or of a turn's events,
//! under the conversation's next seqs, inside the group commit's transaction
//! ([`super::commit`]), optionally fenced by a lease.

use std::collections::HashMap;

use colloquy_core_model::{
    ConversationId, ConversationStatus, EventEnvelope, Message, MessageId, NewMessage, TurnEvent,
};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use super::{SeaStore, TotalsDelta, events, is_unique_violation, leases, messages, next_seq, now};
use crate::{Append, AppendedMessage, FencingToken, MessageEvent, StoreError};

/// Rows per multi-row INSERT: well under SQLite's limit of bound values per statement.
pub(super) const INSERT_CHUNK: usize = 500;

/// What became of one entry of a batch before any row is written.
enum Slot {
    /// Stored earlier: the stored message, and whether it is still queued.
    Stored(Box<Message>, bool),
    /// Repeats the key of the batch's entry at this index.
    SameAs(usize),
    /// New: its index among the new messages.
    New(usize),
}

/// How often an append is tried again after losing a race on `client_msg_id` to another
/// connection: the retry finds the other writer's message and reports a duplicate.
const RACE_RETRIES: usize = 3;

impl SeaStore {
    /// [`crate::ConversationStore::append_messages`], through the group commit.
    pub(super) async fn write_messages(
        &self,
        conversation: ConversationId,
        batch: Vec<(NewMessage, MessageEvent)>,
        fence: Option<FencingToken>,
    ) -> Result<Vec<AppendedMessage>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.committer.messages(conversation, batch.clone(), fence).await {
                Err(StoreError::Database(err)) if attempt < RACE_RETRIES && is_unique_violation(&err) => {}
                outcome => return outcome,
            }
        }
    }
}

/// Writes a batch of messages inside `txn` (see [`crate::ConversationStore::append_messages`]).
pub(super) async fn messages_in(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    batch: Vec<(NewMessage, MessageEvent)>,
    fence: Option<FencingToken>,
) -> Result<Vec<AppendedMessage>, StoreError> {
    if let Some(fence) = fence {
        leases::check_fence(txn, conversation, fence).await?;
    }

    let keys: Vec<&str> = batch.iter().filter_map(|(message, _)| message.client_msg_id.as_deref()).collect();
    let mut stored_by_key: HashMap<String, (Message, bool)> = HashMap::new();
    for chunk in keys.chunks(INSERT_CHUNK) {
        let rows = messages::Entity::find()
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::ClientMsgId.is_in(chunk.iter().copied()))
            .all(txn)
            .await?;
        for row in rows {
            let queued = row.queued;
            let message = row.into_domain()?;
            if let Some(key) = message.client_msg_id.clone() {
                stored_by_key.insert(key, (message, queued));
            }
        }
    }

    let mut slots = Vec::with_capacity(batch.len());
    let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
    let mut new_count = 0;
    let mut totals = TotalsDelta::default();
    for (index, (message, _)) in batch.iter().enumerate() {
        let key = message.client_msg_id.as_deref();
        let slot = match key {
            Some(key) if stored_by_key.contains_key(key) => {
                let (message, queued) = stored_by_key.get(key).cloned().ok_or(StoreError::Corrupt {
                    what: "messages.client_msg_id",
                    detail: "a stored key vanished".to_owned(),
                })?;
                Slot::Stored(Box::new(message), queued)
            }
            Some(key) if first_in_batch.contains_key(key) => {
                Slot::SameAs(first_in_batch.get(key).copied().unwrap_or(index))
            }
            _ => {
                if let Some(key) = key {
                    first_in_batch.insert(key, index);
                }
                totals.add(message.usage.as_ref());
                new_count += 1;
                Slot::New(new_count - 1)
            }
        };
        slots.push(slot);
    }
    if new_count == 0 {
        // Every entry was stored before: write nothing, not even `last_activity`.
        return Ok(slots
            .into_iter()
            .filter_map(|slot| match slot {
                Slot::Stored(message, queued) => {
                    Some(AppendedMessage { message: *message, event: None, duplicate: true, queued })
                }
                Slot::SameAs(_) | Slot::New(_) => None,
            })
            .collect());
    }

    let now = now();
    let first_seq = take_seqs(txn, conversation, now, new_count, &totals).await?;

    let mut message_rows = Vec::with_capacity(new_count);
    let mut event_rows = Vec::with_capacity(new_count);
    let mut outcomes: Vec<AppendedMessage> = Vec::with_capacity(slots.len());
    for ((message, event), slot) in batch.into_iter().zip(slots) {
        let outcome = match slot {
            Slot::Stored(stored, queued) => AppendedMessage { message: *stored, event: None, duplicate: true, queued },
            Slot::SameAs(first) => {
                let (stored, queued) =
                    outcomes.get(first).map(|o| (o.message.clone(), o.queued)).ok_or(StoreError::Corrupt {
                        what: "messages.client_msg_id",
                        detail: "a repeated key has no first entry".to_owned(),
                    })?;
                AppendedMessage { message: stored, event: None, duplicate: true, queued }
            }
            Slot::New(offset) => {
                let seq = first_seq + offset as u64;
                let queued = matches!(event, MessageEvent::Queued);
                let stored = message.into_message(conversation, seq, now);
                let event = event.into_event(stored.clone());
                message_rows.push(messages::new_row(&stored, queued)?);
                event_rows.push(events::new_row(conversation, seq, &event, now)?);
                AppendedMessage {
                    message: stored,
                    event: Some(EventEnvelope { conversation_id: conversation, seq: Some(seq), event }),
                    duplicate: false,
                    queued,
                }
            }
        };
        outcomes.push(outcome);
    }
    insert_chunked::<messages::Entity, _>(txn, message_rows).await?;
    insert_chunked::<events::Entity, _>(txn, event_rows).await?;
    Ok(outcomes)
}

/// Writes a batch of a turn's events, each message with the event that records it, inside `txn`
/// (see [`crate::ConversationStore::append_batch`]).
pub(super) async fn entries_in(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    entries: Vec<Append>,
    fence: Option<FencingToken>,
) -> Result<Vec<EventEnvelope>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(fence) = fence {
        leases::check_fence(txn, conversation, fence).await?;
    }
    let mut totals = TotalsDelta::default();
    for entry in &entries {
        match entry {
            Append::Message(message, _) => {
                if message.client_msg_id.is_some() {
                    return Err(StoreError::Corrupt {
                        what: "append_batch",
                        detail: "a message with a client_msg_id must be appended with append_messages".to_owned(),
                    });
                }
                totals.add(message.usage.as_ref());
            }
            Append::Event(event) => {
                debug_assert!(event.is_durable(), "{} is ephemeral and must not be stored", event.kind());
            }
        }
    }
    let now = now();
    // As for a bare event appended alone, only messages need an active conversation: the end
    // of a turn is still recorded when the conversation was archived meanwhile.
    let first_seq = if totals.messages > 0 {
        take_seqs(txn, conversation, now, entries.len(), &totals).await?
    } else {
        let (last_seq, _status) = next_seq(txn, conversation, now, entries.len() as u64, None).await?;
        last_seq + 1 - entries.len() as u64
    };
    let mut message_rows = Vec::new();
    let mut event_rows = Vec::with_capacity(entries.len());
    let mut envelopes = Vec::with_capacity(entries.len());
    for (seq, entry) in (first_seq..).zip(entries) {
        let event = match entry {
            Append::Message(message, event) => {
                let queued = matches!(event, MessageEvent::Queued);
                let stored = message.into_message(conversation, seq, now);
                message_rows.push(messages::new_row(&stored, queued)?);
                event.into_event(stored)
            }
            Append::Event(event) => event,
        };
        event_rows.push(events::new_row(conversation, seq, &event, now)?);
        envelopes.push(EventEnvelope { conversation_id: conversation, seq: Some(seq), event });
    }
    insert_chunked::<messages::Entity, _>(txn, message_rows).await?;
    insert_chunked::<events::Entity, _>(txn, event_rows).await?;
    Ok(envelopes)
}

/// Takes `count` seqs for messages (and their events) of an active conversation, moving its
/// totals by `totals`; returns the first.
async fn take_seqs(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    now: colloquy_core_model::Timestamp,
    count: usize,
    totals: &TotalsDelta,
) -> Result<u64, StoreError> {
    let (last_seq, status) = next_seq(txn, conversation, now, count as u64, Some(totals)).await?;
    if status != ConversationStatus::Active {
        return Err(StoreError::ConversationNotActive(conversation));
    }
    Ok(last_seq + 1 - count as u64)
}

impl SeaStore {
    /// [`crate::ConversationStore::admit_messages`].
    pub(super) async fn admit(
        &self,
        conversation: ConversationId,
        ids: &[MessageId],
        fence: Option<FencingToken>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (_writer, txn) = self.begin_write().await?;
        let outcome = match fence {
            Some(fence) => match leases::check_fence(&txn, conversation, fence).await {
                Ok(()) => admit_in(&txn, conversation, ids).await,
                Err(error) => Err(error),
            },
            None => admit_in(&txn, conversation, ids).await,
        };
        super::commit_or_abort(txn, outcome).await
    }
}

/// Gives each queued message the next seq and writes its `message_posted`, inside `txn`.
async fn admit_in(
    txn: &sea_orm::DatabaseTransaction,
    conversation: ConversationId,
    ids: &[MessageId],
) -> Result<Vec<EventEnvelope>, StoreError> {
    let now = now();
    let (last_seq, _status) = next_seq(txn, conversation, now, ids.len() as u64, None).await?;
    let first_seq = last_seq + 1 - ids.len() as u64;
    let mut envelopes = Vec::with_capacity(ids.len());
    for (seq, id) in (first_seq..).zip(ids) {
        let row = messages::Entity::find_by_id(id.as_uuid())
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::Queued.eq(true))
            .one(txn)
            .await?
            .ok_or(StoreError::MessageNotFound { conversation, message: *id })?;
        let mut row: messages::ActiveModel = row.into();
        row.seq = Set(super::to_db_count(seq));
        row.queued = Set(false);
        let message = row.update(txn).await?.into_domain()?;
        let event = TurnEvent::MessagePosted { message };
        events::Entity::insert(events::new_row(conversation, seq, &event, now)?).exec_without_returning(txn).await?;
        envelopes.push(EventEnvelope { conversation_id: conversation, seq: Some(seq), event });
    }
    Ok(envelopes)
}

/// Inserts `rows` in statements of at most [`INSERT_CHUNK`] rows.
pub(super) async fn insert_chunked<E, A>(txn: &sea_orm::DatabaseTransaction, rows: Vec<A>) -> Result<(), StoreError>
where
    E: EntityTrait,
    A: sea_orm::ActiveModelTrait<Entity = E> + Send,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(INSERT_CHUNK).collect();
        E::insert_many(chunk).exec_without_returning(txn).await?;
    }
    Ok(())
}
