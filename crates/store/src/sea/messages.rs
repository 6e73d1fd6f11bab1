//! The `messages` table: its SeaORM entity and the conversions to and from [`Message`].

use colloquy_core_model::{ContentPart, ConversationId, Message, MessageId, MessageRole, ParticipantId, TurnId, Usage};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

use super::{corrupt, from_db_count, stored_json, to_db_count};
use crate::StoreError;

/// One row of `messages`. The usage columns are all null when the message has no usage, and
/// `metadata` is null when the message's metadata is JSON `null`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub sender: Option<Uuid>,
    pub role: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub content: Json,
    pub turn_id: Option<Uuid>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cache_read_tokens: Option<i64>,
    pub cache_write_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// The usage was counted locally because the provider reported none.
    pub usage_estimated: bool,
    /// Input plus output tokens, when the message has usage.
    pub total_tokens: Option<i64>,
    /// The message's own size in tokens, for history within a token budget.
    pub content_tokens: i64,
    /// The text parts, for full-text search; null when there are none.
    #[sea_orm(column_type = "Text", nullable)]
    pub search_text: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// The sampling temperature of a reply, when one was set.
    pub temperature: Option<f64>,
    pub latency_ms: Option<i64>,
    pub client_msg_id: Option<String>,
    pub created_at: DateTimeUtc,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    /// Posted while a turn ran and not yet part of the history: its `seq` is that of its
    /// `message_queued` event until the turn boundary gives it the seq of its `message_posted`.
    pub queued: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The row that stores `message`, in the history or (`queued`) waiting for the turn boundary.
pub(super) fn new_row(message: &Message, queued: bool) -> Result<ActiveModel, StoreError> {
    let content = stored_json(&message.content, "messages.content")?;
    let content_json = content.to_string();
    let metadata = stored_json(&message.metadata, "messages.metadata")?;
    let usage = message.usage.as_ref();
    // A reply's own size is what the model wrote; anything else is estimated at four bytes of
    // JSON per token, which errs on the large side for text.
    let content_tokens = match usage {
        Some(usage) if message.role == MessageRole::Assistant && usage.output_tokens > 0 => usage.output_tokens,
        _ => u64::try_from(content_json.len().div_ceil(4)).unwrap_or(u64::MAX),
    };
    let texts: Vec<&str> = message
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } if !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
        .collect();
    Ok(ActiveModel {
        id: Set(message.id.as_uuid()),
        conversation_id: Set(message.conversation_id.as_uuid()),
        seq: Set(to_db_count(message.seq)),
        sender: Set(message.sender.map(|id| id.as_uuid())),
        role: Set(message.role.as_str().to_owned()),
        content: Set(content),
        turn_id: Set(message.turn_id.map(|id| id.as_uuid())),
        input_tokens: Set(usage.map(|u| to_db_count(u.input_tokens))),
        output_tokens: Set(usage.map(|u| to_db_count(u.output_tokens))),
        cache_read_tokens: Set(usage.map(|u| to_db_count(u.cache_read_tokens))),
        cache_write_tokens: Set(usage.map(|u| to_db_count(u.cache_write_tokens))),
        cost_usd: Set(usage.and_then(|u| u.cost_usd)),
        usage_estimated: Set(usage.is_some_and(|u| u.estimated)),
        total_tokens: Set(usage.map(|u| to_db_count(u.total_tokens()))),
        content_tokens: Set(to_db_count(content_tokens)),
        search_text: Set((!texts.is_empty()).then(|| texts.join(" "))),
        model: Set(message.model.clone()),
        provider: Set(message.provider.clone()),
        temperature: Set(message.temperature.map(f64::from)),
        latency_ms: Set(message.latency_ms.map(to_db_count)),
        client_msg_id: Set(message.client_msg_id.clone()),
        created_at: Set(message.created_at),
        metadata: Set((!metadata.is_null()).then_some(metadata)),
        queued: Set(queued),
    })
}

impl Model {
    /// The domain value; fails on values this version does not know.
    pub(super) fn into_domain(self) -> Result<Message, StoreError> {
        let content: Vec<ContentPart> =
            serde_json::from_value(self.content).map_err(|err| corrupt("messages.content", err))?;
        let usage = match self.input_tokens {
            None => None,
            Some(input_tokens) => Some(Usage {
                input_tokens: from_db_count(input_tokens, "messages.input_tokens")?,
                output_tokens: from_db_count(self.output_tokens.unwrap_or(0), "messages.output_tokens")?,
                cache_read_tokens: from_db_count(self.cache_read_tokens.unwrap_or(0), "messages.cache_read_tokens")?,
                cache_write_tokens: from_db_count(self.cache_write_tokens.unwrap_or(0), "messages.cache_write_tokens")?,
                cost_usd: self.cost_usd,
                estimated: self.usage_estimated,
            }),
        };
        Ok(Message {
            id: MessageId::from_uuid(self.id),
            conversation_id: ConversationId::from_uuid(self.conversation_id),
            seq: from_db_count(self.seq, "messages.seq")?,
            sender: self.sender.map(ParticipantId::from_uuid),
            role: parse_role(&self.role)?,
            content,
            turn_id: self.turn_id.map(TurnId::from_uuid),
            usage,
            model: self.model,
            provider: self.provider,
            // Stored from an f32, so the narrowing gives back exactly the value written.
            temperature: self.temperature.map(|t| t as f32),
            latency_ms: self.latency_ms.map(|ms| from_db_count(ms, "messages.latency_ms")).transpose()?,
            client_msg_id: self.client_msg_id,
            created_at: self.created_at,
            metadata: self.metadata.unwrap_or(serde_json::Value::Null),
        })
    }
}

fn parse_role(name: &str) -> Result<MessageRole, StoreError> {
    match name {
        "system" => Ok(MessageRole::System),
        "user" => Ok(MessageRole::User),
        "assistant" => Ok(MessageRole::Assistant),
        "tool" => Ok(MessageRole::Tool),
        "custom" => Ok(MessageRole::Custom),
        other => Err(corrupt("messages.role", format!("unknown role `{other}`"))),
    }
}
