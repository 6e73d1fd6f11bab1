//! A conversation's life after creation: changing it, forking it, and deleting it (by hand or
//! by the TTL sweeper).

use std::collections::HashMap;
use std::time::Duration;

use colloquy_core_model::{
    Conversation, ConversationId, ConversationStatus, EventEnvelope, MessageId, Timestamp, TurnEvent,
};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::{Map, Value};

use super::append::insert_chunked;
use super::{conversations, events, messages, next_seq, participants, stored_json, to_db_count};
use crate::{ConversationUpdate, StoreError};

/// Conversations deleted per sweeper transaction, so a large sweep never holds the writer long.
const SWEEP_CHUNK: u64 = 200;

/// Whether a conversation may go from `from` to `to`: a closed one stays closed.
const fn status_change_allowed(from: ConversationStatus, to: ConversationStatus) -> bool {
    !matches!((from, to), (ConversationStatus::Closed, ConversationStatus::Active | ConversationStatus::Archived))
}

/// [`crate::ConversationStore::update_conversation`], inside the caller's write transaction.
pub(super) async fn update_conversation(
    txn: &DatabaseTransaction,
    id: ConversationId,
    update: ConversationUpdate,
    now: Timestamp,
) -> Result<Option<EventEnvelope>, StoreError> {
    let row =
        conversations::Entity::find_by_id(id.as_uuid()).one(txn).await?.ok_or(StoreError::ConversationNotFound(id))?;
    let current = row.clone().into_domain()?;
    let current_tools = row.tool_names()?;
    let mut changes = Map::new();
    let mut active = row.into_active_model();

    if let Some(title) = update.title
        && title != current.title
    {
        changes.insert("title".to_owned(), stored_json(&title, "conversations.title")?);
        active.title = Set(title);
    }
    if let Some(summary) = update.summary
        && summary != current.summary
    {
        changes.insert("summary".to_owned(), stored_json(&summary, "conversations.summary")?);
        active.summary = Set(summary);
    }
    if let Some(tags) = update.tags
        && tags != current.tags
    {
        let json = stored_json(&tags, "conversations.tags")?;
        changes.insert("tags".to_owned(), json.clone());
        active.tags = Set(json);
    }
    if let Some(options) = update.options
        && options != current.options
    {
        let json = stored_json(&options, "conversations.options")?;
        changes.insert("options".to_owned(), json.clone());
        active.options = Set(json);
    }
    if let Some(tools) = update.tools
        && tools != current_tools
    {
        let json = stored_json(&tools, "conversations.tools")?;
        changes.insert("tools".to_owned(), json.clone());
        active.tools = Set(json);
    }
    if let Some(expires_at) = update.expires_at
        && expires_at != current.expires_at
    {
        changes.insert("expires_at".to_owned(), stored_json(&expires_at, "conversations.expires_at")?);
        active.expires_at = Set(expires_at);
    }
    if let Some(status) = update.status
        && status != current.status
    {
        if !status_change_allowed(current.status, status) {
            return Err(StoreError::InvalidStatusChange { conversation: id, from: current.status, to: status });
        }
        changes.insert("status".to_owned(), stored_json(&status, "conversations.status")?);
        active.status = Set(conversations::status_name(status).to_owned());
    }
    if changes.is_empty() {
        return Ok(None);
    }

    active.update(txn).await?;
    // After the row update, so that `last_seq` and `last_activity` are the ones `next_seq` sets.
    let (seq, _status) = next_seq(txn, id, now, 1, None).await?;
    let event = TurnEvent::ConversationUpdated { changes: Value::Object(changes) };
    events::Entity::insert(events::new_row(id, seq, &event, now)?).exec_without_returning(txn).await?;
    Ok(Some(EventEnvelope { conversation_id: id, seq: Some(seq), event }))
}

/// [`crate::ConversationStore::fork_conversation`], inside the caller's write transaction.
pub(super) async fn fork_conversation(
    txn: &DatabaseTransaction,
    source: ConversationId,
    at_seq: u64,
    new_id: ConversationId,
    now: Timestamp,
) -> Result<Conversation, StoreError> {
    let source_row = conversations::Entity::find_by_id(source.as_uuid())
        .one(txn)
        .await?
        .ok_or(StoreError::ConversationNotFound(source))?;
    let original = source_row.clone().into_domain()?;
    if at_seq > original.last_seq {
        return Err(StoreError::SeqOutOfRange { conversation: source, seq: at_seq, last_seq: original.last_seq });
    }
    let at = to_db_count(at_seq);

    // Messages get new ids (ids are global); events that carry a message carry the copy.
    let mut copies = HashMap::new();
    let mut message_rows = Vec::new();
    let mut totals = super::TotalsDelta::default();
    let source_messages = messages::Entity::find()
        .filter(messages::Column::ConversationId.eq(source.as_uuid()))
        .filter(messages::Column::Seq.lte(at))
        // A prompt still waiting for its turn boundary at the fork point is not history yet.
        .filter(messages::Column::Queued.eq(false))
        .order_by_asc(messages::Column::Seq)
        .all(txn)
        .await?;
    for row in source_messages {
        let message = row.into_domain()?;
        let old_id = message.id;
        let copy = colloquy_core_model::Message { id: MessageId::new(), conversation_id: new_id, ..message };
        totals.add(copy.usage.as_ref());
        message_rows.push(messages::new_row(&copy, false)?);
        copies.insert(old_id, copy);
    }

    let mut event_rows = Vec::new();
    let source_events = events::Entity::find()
        .filter(events::Column::ConversationId.eq(source.as_uuid()))
        .filter(events::Column::Seq.lte(at))
        .order_by_asc(events::Column::Seq)
        .all(txn)
        .await?;
    let created: Vec<Timestamp> = source_events.iter().map(|row| row.created_at).collect();
    for (envelope, created_at) in events::into_domains(txn, source_events).await?.into_iter().zip(created) {
        let seq = envelope.seq.unwrap_or_default();
        // A message copied into the fork is referred to; one that is not (a prompt still queued
        // at the fork point) stays whole in its event.
        let copied = envelope.event.recorded_message().is_some_and(|message| copies.contains_key(&message.id));
        let event = rewrite_event(envelope.event, new_id, &copies);
        let row = if copied {
            events::new_row(new_id, seq, &event, created_at)?
        } else {
            events::new_row_whole(new_id, seq, &event, created_at)?
        };
        event_rows.push(row);
    }

    let participant_rows: Vec<participants::ActiveModel> = participants::Entity::find()
        .filter(participants::Column::ConversationId.eq(source.as_uuid()))
        .all(txn)
        .await?
        .into_iter()
        .map(|row| {
            let mut row = row.into_active_model();
            row.conversation_id = Set(new_id.as_uuid());
            row.reset_all()
        })
        .collect();

    let mut fork = source_row.into_active_model();
    fork.id = Set(new_id.as_uuid());
    fork.status = Set(conversations::status_name(ConversationStatus::Active).to_owned());
    fork.forked_from_conversation = Set(Some(source.as_uuid()));
    fork.forked_from_seq = Set(Some(at));
    fork.created_at = Set(now);
    fork.last_activity = Set(now);
    fork.expires_at = Set(None);
    fork.last_seq = Set(at);
    fork.total_messages = Set(to_db_count(totals.messages));
    fork.total_input_tokens = Set(to_db_count(totals.input_tokens));
    fork.total_output_tokens = Set(to_db_count(totals.output_tokens));
    fork.total_cost_usd = Set(totals.cost_usd);
    conversations::Entity::insert(fork.reset_all()).exec_without_returning(txn).await?;
    insert_chunked::<participants::Entity, _>(txn, participant_rows).await?;
    insert_chunked::<messages::Entity, _>(txn, message_rows).await?;
    insert_chunked::<events::Entity, _>(txn, event_rows).await?;

    conversations::Entity::find_by_id(new_id.as_uuid())
        .one(txn)
        .await?
        .ok_or(StoreError::ConversationNotFound(new_id))?
        .into_domain()
}

/// A source event as the fork records it: the copied message instead of the original.
fn rewrite_event(
    event: TurnEvent,
    fork: ConversationId,
    copies: &HashMap<MessageId, colloquy_core_model::Message>,
) -> TurnEvent {
    let copy_of = |message: colloquy_core_model::Message| {
        copies.get(&message.id).cloned().unwrap_or(colloquy_core_model::Message { conversation_id: fork, ..message })
    };
    match event {
        TurnEvent::MessagePosted { message } => TurnEvent::MessagePosted { message: copy_of(message) },
        TurnEvent::MessageQueued { message } => TurnEvent::MessageQueued { message: copy_of(message) },
        TurnEvent::MessageEnd { turn_id, message } => TurnEvent::MessageEnd { turn_id, message: copy_of(message) },
        TurnEvent::ToolExecutionEnd { turn_id, tool_call_id, tool_name, is_error, message } => {
            TurnEvent::ToolExecutionEnd { turn_id, tool_call_id, tool_name, is_error, message: copy_of(message) }
        }
        TurnEvent::ParticipantJoined { mut participant } => {
            participant.conversation_id = fork;
            TurnEvent::ParticipantJoined { participant }
        }
        other => other,
    }
}

/// The ids of up to [`SWEEP_CHUNK`] conversations the sweeper should delete.
async fn expired_ids(
    db: &DatabaseConnection,
    now: Timestamp,
    inactivity: Duration,
) -> Result<Vec<sea_orm::prelude::Uuid>, StoreError> {
    let idle_since = chrono::Duration::from_std(inactivity)
        .ok()
        .and_then(|inactivity| now.checked_sub_signed(inactivity))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    Ok(conversations::Entity::find()
        .select_only()
        .column(conversations::Column::Id)
        .filter(conversations::Column::Status.ne(conversations::status_name(ConversationStatus::Archived)))
        .filter(
            Expr::col(conversations::Column::LastActivity)
                .lte(idle_since)
                .or(Expr::col(conversations::Column::ExpiresAt).lte(now)),
        )
        .order_by_asc(conversations::Column::Id)
        .limit(SWEEP_CHUNK)
        .into_tuple()
        .all(db)
        .await?)
}

impl super::SeaStore {
    /// [`crate::ConversationStore::sweep_expired`]: deletes in chunks, each in its own
    /// transaction that checks the conditions again (an append may have come in meanwhile).
    pub(super) async fn sweep(&self, now: Timestamp, inactivity: Duration) -> Result<Vec<ConversationId>, StoreError> {
        let mut swept = Vec::new();
        loop {
            let candidates = expired_ids(&self.db, now, inactivity).await?;
            if candidates.is_empty() {
                return Ok(swept);
            }
            let (_writer, txn) = self.begin_write().await?;
            let mut deleted = Vec::new();
            for id in candidates {
                let still_expired = conversations::Entity::find_by_id(id).one(&txn).await?.is_some_and(|row| {
                    row.status != conversations::status_name(ConversationStatus::Archived)
                        && (chrono::Duration::from_std(inactivity)
                            .ok()
                            .and_then(|d| now.checked_sub_signed(d))
                            .is_none_or(|idle_since| row.last_activity <= idle_since)
                            || row.expires_at.is_some_and(|at| at <= now))
                });
                if still_expired {
                    conversations::Entity::delete_by_id(id).exec(&txn).await?;
                    deleted.push(ConversationId::from_uuid(id));
                }
            }
            txn.commit().await?;
            if deleted.is_empty() {
                // Every candidate changed under us; the next call will see them as they are now.
                return Ok(swept);
            }
            swept.extend(deleted);
        }
    }
}
