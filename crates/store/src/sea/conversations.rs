//! The `conversations` table: its SeaORM entity and the conversions to and from [`Conversation`].

use colloquy_core_model::{
    Conversation, ConversationId, ConversationKind, ConversationStatus, ForkPoint, Options, Timestamp, Totals,
};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

use super::{corrupt, from_db_count, stored_json};
use crate::{NewConversation, StoreError};

/// One row of `conversations`; counters are `i64` because neither backend has unsigned integers.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub title: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub summary: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub options: Json,
    /// Names of the tools the conversation offers its agents.
    #[sea_orm(column_type = "JsonBinary")]
    pub tools: Json,
    pub forked_from_conversation: Option<Uuid>,
    pub forked_from_seq: Option<i64>,
    pub created_at: DateTimeUtc,
    pub last_activity: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub last_seq: i64,
    pub total_messages: i64,
    pub total_input_tokens: i64,
    pub total_output_tokens: i64,
    pub total_cost_usd: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A new conversation and its row: no events yet, so `last_seq` and every total start at zero.
pub(super) fn new_row(new: NewConversation, now: Timestamp) -> Result<(Conversation, ActiveModel), StoreError> {
    let tags = stored_json(&new.tags, "conversations.tags")?;
    let options = stored_json(&new.options, "conversations.options")?;
    let row = ActiveModel {
        id: Set(new.id.as_uuid()),
        kind: Set(kind_name(new.kind).to_owned()),
        status: Set(status_name(ConversationStatus::Active).to_owned()),
        title: Set(new.title.clone()),
        summary: Set(None),
        tags: Set(tags),
        options: Set(options),
        tools: Set(serde_json::Value::Array(Vec::new())),
        forked_from_conversation: Set(None),
        forked_from_seq: Set(None),
        created_at: Set(now),
        last_activity: Set(now),
        expires_at: Set(None),
        last_seq: Set(0),
        total_messages: Set(0),
        total_input_tokens: Set(0),
        total_output_tokens: Set(0),
        total_cost_usd: Set(0.0),
    };
    let conversation = Conversation {
        id: new.id,
        kind: new.kind,
        status: ConversationStatus::Active,
        title: new.title,
        summary: None,
        tags: new.tags,
        options: new.options,
        created_at: now,
        last_activity: now,
        expires_at: None,
        forked_from: None,
        totals: Totals::default(),
        last_seq: 0,
    };
    Ok((conversation, row))
}

impl Model {
    /// The tool names.
    pub(super) fn tool_names(&self) -> Result<Vec<String>, StoreError> {
        serde_json::from_value(self.tools.clone()).map_err(|err| corrupt("conversations.tools", err))
    }

    /// The domain value; fails on values this version does not know.
    pub(super) fn into_domain(self) -> Result<Conversation, StoreError> {
        let tags: Vec<String> = serde_json::from_value(self.tags).map_err(|err| corrupt("conversations.tags", err))?;
        let options: Options =
            serde_json::from_value(self.options).map_err(|err| corrupt("conversations.options", err))?;
        let forked_from = match (self.forked_from_conversation, self.forked_from_seq) {
            (Some(conversation), Some(seq)) => Some(ForkPoint {
                conversation_id: ConversationId::from_uuid(conversation),
                seq: from_db_count(seq, "conversations.forked_from_seq")?,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Corrupt {
                    what: "conversations.forked_from_conversation",
                    detail: "fork conversation and fork seq must be both set or both null".to_owned(),
                });
            }
        };
        Ok(Conversation {
            id: ConversationId::from_uuid(self.id),
            kind: parse_kind(&self.kind)?,
            status: parse_status(&self.status)?,
            title: self.title,
            summary: self.summary,
            tags,
            options,
            created_at: self.created_at,
            last_activity: self.last_activity,
            expires_at: self.expires_at,
            forked_from,
            totals: Totals {
                messages: from_db_count(self.total_messages, "conversations.total_messages")?,
                input_tokens: from_db_count(self.total_input_tokens, "conversations.total_input_tokens")?,
                output_tokens: from_db_count(self.total_output_tokens, "conversations.total_output_tokens")?,
                cost_usd: self.total_cost_usd,
            },
            last_seq: from_db_count(self.last_seq, "conversations.last_seq")?,
        })
    }
}

/// The stored name of a kind (the same as its wire name).
pub(super) const fn kind_name(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::UserAgent => "user_agent",
        ConversationKind::AgentAgent => "agent_agent",
        ConversationKind::MultiParty => "multi_party",
    }
}

pub(super) fn parse_kind(name: &str) -> Result<ConversationKind, StoreError> {
    match name {
        "user_agent" => Ok(ConversationKind::UserAgent),
        "agent_agent" => Ok(ConversationKind::AgentAgent),
        "multi_party" => Ok(ConversationKind::MultiParty),
        other => Err(corrupt("conversations.kind", format!("unknown kind `{other}`"))),
    }
}

/// The stored name of a status (the same as its wire name).
pub(super) const fn status_name(status: ConversationStatus) -> &'static str {
    match status {
        ConversationStatus::Active => "active",
        ConversationStatus::Archived => "archived",
        ConversationStatus::Closed => "closed",
    }
}

pub(super) fn parse_status(name: &str) -> Result<ConversationStatus, StoreError> {
    match name {
        "active" => Ok(ConversationStatus::Active),
        "archived" => Ok(ConversationStatus::Archived),
        "closed" => Ok(ConversationStatus::Closed),
        other => Err(corrupt("conversations.status", format!("unknown status `{other}`"))),
    }
}
