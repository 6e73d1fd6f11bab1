//! The `leases` table: one row per conversation that was ever leased. The token only grows, so a
//! released or expired lease's token never becomes valid again.

use colloquy_core_model::{ConversationId, Timestamp};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseTransaction, QuerySelect};

use super::{from_db_count, to_db_count};
use crate::{FencingToken, Lease, StoreError};

/// One row of `leases`; `holder` is null once the lease is released.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "leases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: Uuid,
    #[sea_orm(column_type = "Text", nullable)]
    pub holder: Option<String>,
    pub token: i64,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Refuses the transaction's writes unless `fence` is the conversation's current lease. On
/// Postgres the row is read `FOR SHARE`, so a concurrent acquire waits for this transaction
/// (and this one for it): a lease cannot change hands between the check and the commit. SQLite
/// has one writer at a time, which gives the same.
pub(super) async fn check_fence(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    fence: FencingToken,
) -> Result<(), StoreError> {
    let row = Entity::find_by_id(conversation.as_uuid()).lock_shared().one(txn).await?;
    match row {
        Some(row) if row.holder.is_some() && row.token == to_db_count(fence.0) => Ok(()),
        _ => Err(StoreError::StaleLease(conversation)),
    }
}

/// Takes the lease for `holder` unless someone else holds one that has not expired.
pub(super) async fn acquire(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    holder: &str,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<Lease, StoreError> {
    let current = Entity::find_by_id(conversation.as_uuid()).lock_exclusive().one(txn).await?;
    let token = match &current {
        Some(row) => {
            if let Some(other) = &row.holder
                && other != holder
                && row.expires_at > now
            {
                return Err(StoreError::LeaseHeld { conversation, holder: other.clone(), expires_at: row.expires_at });
            }
            from_db_count(row.token, "leases.token")? + 1
        }
        None => 1,
    };
    let row = ActiveModel {
        conversation_id: Set(conversation.as_uuid()),
        holder: Set(Some(holder.to_owned())),
        token: Set(to_db_count(token)),
        expires_at: Set(expires_at),
    };
    if current.is_some() {
        row.update(txn).await?;
    } else {
        Entity::insert(row).exec_without_returning(txn).await?;
    }
    Ok(Lease { conversation_id: conversation, holder: holder.to_owned(), token: FencingToken(token), expires_at })
}

/// Sets the expiry (and, for a release, clears the holder) of `lease` if it is still current.
pub(super) async fn update_current(
    txn: &DatabaseTransaction,
    lease: &Lease,
    expires_at: Timestamp,
    release: bool,
) -> Result<(), StoreError> {
    let mut update = Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(expires_at))
        .filter(Column::ConversationId.eq(lease.conversation_id.as_uuid()))
        .filter(Column::Token.eq(to_db_count(lease.token.0)))
        .filter(Column::Holder.eq(lease.holder.as_str()));
    if release {
        update = update.col_expr(Column::Holder, Expr::value(Option::<String>::None));
    }
    if update.exec(txn).await?.rows_affected == 0 {
        return Err(StoreError::StaleLease(lease.conversation_id));
    }
    Ok(())
}
