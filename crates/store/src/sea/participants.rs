//! The `participants` table: its SeaORM entity and the conversions to and from [`Participant`].

use colloquy_core_model::{
    AgentSpec, ConversationId, Participant, ParticipantId, ParticipantKind, ParticipantRole, Timestamp,
};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

use super::{corrupt, stored_json};
use crate::{NewParticipant, StoreError};

/// One row of `participants`, keyed by conversation and participant (a participant id names a
/// party that may take part in many conversations); `join_order` orders a conversation's participants, since several
/// can join at the same instant.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "participants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub join_order: i64,
    pub kind: String,
    #[sea_orm(column_type = "Text")]
    pub display_name: String,
    pub role: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub agent: Option<Json>,
    pub joined_at: DateTimeUtc,
    pub left_at: Option<DateTimeUtc>,
    pub account_id: Option<Uuid>,
    #[sea_orm(column_type = "Text", nullable)]
    pub a2a_url: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub a2a_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The stored participant and its row, which joins as the `join_order`-th of its conversation.
pub(super) fn new_row(
    conversation_id: ConversationId,
    join_order: i64,
    new: NewParticipant,
    now: Timestamp,
) -> Result<(Participant, ActiveModel), StoreError> {
    let agent = new.agent.as_ref().map(|agent| stored_json(agent, "participants.agent")).transpose()?;
    let row = ActiveModel {
        id: Set(new.id.as_uuid()),
        conversation_id: Set(conversation_id.as_uuid()),
        join_order: Set(join_order),
        kind: Set(kind_name(new.kind).to_owned()),
        display_name: Set(new.display_name.clone()),
        role: Set(role_name(new.role).to_owned()),
        agent: Set(agent),
        joined_at: Set(now),
        left_at: Set(None),
        account_id: Set(new.account.map(|a| a.as_uuid())),
        a2a_url: Set(new.a2a_url.clone()),
        a2a_key: Set(new.a2a_key.as_ref().map(|key| key.expose().to_owned())),
    };
    let participant = Participant {
        id: new.id,
        conversation_id,
        kind: new.kind,
        display_name: new.display_name,
        role: new.role,
        agent: new.agent,
        account: new.account,
        a2a_url: new.a2a_url,
        joined_at: now,
        left_at: None,
    };
    Ok((participant, row))
}

impl Model {
    /// The domain value; fails on values this version does not know.
    pub(super) fn into_domain(self) -> Result<Participant, StoreError> {
        let agent: Option<AgentSpec> =
            self.agent.map(serde_json::from_value).transpose().map_err(|err| corrupt("participants.agent", err))?;
        Ok(Participant {
            id: ParticipantId::from_uuid(self.id),
            conversation_id: ConversationId::from_uuid(self.conversation_id),
            kind: parse_kind(&self.kind)?,
            display_name: self.display_name,
            role: parse_role(&self.role)?,
            agent,
            account: self.account_id.map(colloquy_core_model::AccountId::from_uuid),
            a2a_url: self.a2a_url,
            joined_at: self.joined_at,
            left_at: self.left_at,
        })
    }
}

const fn kind_name(kind: ParticipantKind) -> &'static str {
    match kind {
        ParticipantKind::User => "user",
        ParticipantKind::Agent => "agent",
        ParticipantKind::Service => "service",
    }
}

fn parse_kind(name: &str) -> Result<ParticipantKind, StoreError> {
    match name {
        "user" => Ok(ParticipantKind::User),
        "agent" => Ok(ParticipantKind::Agent),
        "service" => Ok(ParticipantKind::Service),
        other => Err(corrupt("participants.kind", format!("unknown kind `{other}`"))),
    }
}

const fn role_name(role: ParticipantRole) -> &'static str {
    match role {
        ParticipantRole::Owner => "owner",
        ParticipantRole::Member => "member",
        ParticipantRole::Observer => "observer",
    }
}

fn parse_role(name: &str) -> Result<ParticipantRole, StoreError> {
    match name {
        "owner" => Ok(ParticipantRole::Owner),
        "member" => Ok(ParticipantRole::Member),
        "observer" => Ok(ParticipantRole::Observer),
        other => Err(corrupt("participants.role", format!("unknown role `{other}`"))),
    }
}

/// [`crate::ConversationStore::add_participant`] inside the caller's write transaction, after it
/// took the event's seq (which checked that the conversation exists): adds the row, or brings
/// back a participant that left, and returns the stored participant.
pub(super) async fn add(
    txn: &sea_orm::DatabaseTransaction,
    conversation: ConversationId,
    new: NewParticipant,
    now: Timestamp,
) -> Result<Participant, StoreError> {
    use sea_orm::{IntoActiveModel, QueryOrder, QuerySelect};

    let existing = Entity::find_by_id((conversation.as_uuid(), new.id.as_uuid())).one(txn).await?;
    match existing {
        Some(row) if row.left_at.is_none() => {
            Err(StoreError::ParticipantAlreadyPresent { conversation, participant: new.id })
        }
        Some(row) => {
            // Coming back keeps the first join's place in the order.
            let join_order = row.join_order;
            let (participant, mut fresh) = new_row(conversation, join_order, new, now)?;
            let mut active = row.into_active_model();
            active.kind = fresh.kind.take().map_or(sea_orm::ActiveValue::NotSet, Set);
            active.display_name = fresh.display_name.take().map_or(sea_orm::ActiveValue::NotSet, Set);
            active.role = fresh.role.take().map_or(sea_orm::ActiveValue::NotSet, Set);
            active.agent = fresh.agent.take().map_or(sea_orm::ActiveValue::NotSet, Set);
            active.account_id = fresh.account_id.take().map_or(sea_orm::ActiveValue::NotSet, Set);
            active.joined_at = Set(now);
            active.left_at = Set(None);
            active.update(txn).await?;
            Ok(participant)
        }
        None => {
            let last: Option<i64> = Entity::find()
                .select_only()
                .column(Column::JoinOrder)
                .filter(Column::ConversationId.eq(conversation.as_uuid()))
                .order_by_desc(Column::JoinOrder)
                .limit(1)
                .into_tuple()
                .one(txn)
                .await?;
            let join_order = last.map_or(0, |last| last + 1);
            let (participant, row) = new_row(conversation, join_order, new, now)?;
            Entity::insert(row).exec_without_returning(txn).await?;
            Ok(participant)
        }
    }
}

/// [`crate::ConversationStore::remove_participant`] inside the caller's write transaction.
pub(super) async fn remove(
    txn: &sea_orm::DatabaseTransaction,
    conversation: ConversationId,
    participant: ParticipantId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let result = Entity::update_many()
        .col_expr(Column::LeftAt, Expr::value(Some(now)))
        .filter(Column::ConversationId.eq(conversation.as_uuid()))
        .filter(Column::Id.eq(participant.as_uuid()))
        .filter(Column::LeftAt.is_null())
        .exec(txn)
        .await?;
    if result.rows_affected == 0 {
        return Err(StoreError::ParticipantNotFound { conversation, participant });
    }
    Ok(())
}

/// [`crate::ConversationStore::update_participant_role`] inside the caller's write transaction.
pub(super) async fn set_role(
    txn: &sea_orm::DatabaseTransaction,
    conversation: ConversationId,
    participant: ParticipantId,
    role: ParticipantRole,
) -> Result<Participant, StoreError> {
    use sea_orm::IntoActiveModel;

    let row = Entity::find_by_id((conversation.as_uuid(), participant.as_uuid()))
        .one(txn)
        .await?
        .filter(|row| row.left_at.is_none())
        .ok_or(StoreError::ParticipantNotFound { conversation, participant })?;
    let mut active = row.into_active_model();
    active.role = Set(role_name(role).to_owned());
    active.update(txn).await?.into_domain()
}
