//! Editing history after the fact (the library's `update_message` / `remove_message`): the row
//! changes and the event that says so go in one transaction.

use colloquy_core_model::{ContentPart, ConversationId, EventEnvelope, Message, MessageId, Timestamp, TurnEvent};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{DatabaseTransaction, QueryFilter};

use super::{conversations, events, messages, next_seq, to_db_count};
use crate::StoreError;

async fn find(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    message: MessageId,
) -> Result<messages::Model, StoreError> {
    messages::Entity::find_by_id(message.as_uuid())
        .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
        .one(txn)
        .await?
        .ok_or(StoreError::MessageNotFound { conversation, message })
}

/// Replaces a message's content. The row is written anew (same id and seq) so that every
/// derived column (search text, token size) and the search index follow.
pub(super) async fn update_message(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    id: MessageId,
    content: Vec<ContentPart>,
    now: Timestamp,
) -> Result<(Message, EventEnvelope), StoreError> {
    let row = find(txn, conversation, id).await?;
    let queued = row.queued;
    let mut message = row.into_domain()?;
    message.content = content;
    messages::Entity::delete_by_id(id.as_uuid()).exec(txn).await?;
    messages::Entity::insert(messages::new_row(&message, queued)?).exec_without_returning(txn).await?;
    let (seq, _) = next_seq(txn, conversation, now, 1, None).await?;
    let event = TurnEvent::MessageUpdated { message: message.clone() };
    events::Entity::insert(events::new_row(conversation, seq, &event, now)?).exec_without_returning(txn).await?;
    Ok((message, EventEnvelope { conversation_id: conversation, seq: Some(seq), event }))
}

/// Deletes messages, lowers the totals by what they counted, and records one event each.
pub(super) async fn remove_messages(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    ids: &[MessageId],
    now: Timestamp,
) -> Result<Vec<EventEnvelope>, StoreError> {
    // The events that refer to these messages get their copy back first, so the log still
    // reads whole once the rows are gone.
    let referring = events::Entity::find()
        .filter(events::Column::ConversationId.eq(conversation.as_uuid()))
        .filter(events::Column::MessageId.is_in(ids.iter().map(MessageId::as_uuid)))
        .all(txn)
        .await?;
    let created: Vec<Timestamp> = referring.iter().map(|row| row.created_at).collect();
    for (envelope, created_at) in events::into_domains(txn, referring).await?.into_iter().zip(created) {
        let seq = envelope.seq.unwrap_or_default();
        events::new_row_whole(conversation, seq, &envelope.event, created_at)?.update(txn).await?;
    }
    let (mut input, mut output, mut cost) = (0u64, 0u64, 0.0f64);
    for id in ids {
        let message = find(txn, conversation, *id).await?.into_domain()?;
        let usage = message.usage.unwrap_or_default();
        (input, output, cost) =
            (input + usage.input_tokens, output + usage.output_tokens, cost + usage.cost_usd.unwrap_or(0.0));
        messages::Entity::delete_by_id(id.as_uuid()).exec(txn).await?;
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    {
        use conversations::Column;
        let mut update = Query::update();
        update
            .table(conversations::Entity)
            .value(Column::TotalMessages, Expr::col(Column::TotalMessages).sub(to_db_count(ids.len() as u64)))
            .value(Column::TotalInputTokens, Expr::col(Column::TotalInputTokens).sub(to_db_count(input)))
            .value(Column::TotalOutputTokens, Expr::col(Column::TotalOutputTokens).sub(to_db_count(output)))
            .value(Column::TotalCostUsd, Expr::col(Column::TotalCostUsd).sub(cost))
            .and_where(Expr::col(Column::Id).eq(conversation.as_uuid()));
        txn.execute(&update).await?;
    }
    let (last, _) = next_seq(txn, conversation, now, ids.len() as u64, None).await?;
    let first = last + 1 - ids.len() as u64;
    let mut envelopes = Vec::with_capacity(ids.len());
    for (seq, id) in (first..=last).zip(ids) {
        let event = TurnEvent::MessageRemoved { message_id: *id };
        events::Entity::insert(events::new_row(conversation, seq, &event, now)?).exec_without_returning(txn).await?;
        envelopes.push(EventEnvelope { conversation_id: conversation, seq: Some(seq), event });
    }
    Ok(envelopes)
}
