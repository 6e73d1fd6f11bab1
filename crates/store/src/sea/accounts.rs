//! The `accounts` table and the account side of `api_keys`: creating, finding and listing
//! accounts, and authenticating a key to its account.

use colloquy_core_model::{Account, AccountId, AccountKind, Timestamp};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, QueryOrder};

use super::{api_keys, corrupt, is_unique_violation, now};
use crate::{ApiKey, ApiKeyId, NewAccount, StoreError};

/// One row of `accounts`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    #[sea_orm(column_type = "Text")]
    pub display_name: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    fn into_domain(self) -> Result<Account, StoreError> {
        let kind = match self.kind.as_str() {
            "user" => AccountKind::User,
            "service" => AccountKind::Service,
            "admin" => AccountKind::Admin,
            other => return Err(corrupt("accounts.kind", format!("unknown kind `{other}`"))),
        };
        Ok(Account {
            id: AccountId::from_uuid(self.id),
            name: self.name,
            kind,
            display_name: self.display_name,
            created_at: self.created_at,
        })
    }
}

/// [`crate::ConversationStore::create_account`], in `txn`.
pub(super) async fn create(txn: &sea_orm::DatabaseTransaction, new: NewAccount) -> Result<Account, StoreError> {
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_whitespace) {
        return Err(StoreError::InvalidAccountName(new.name));
    }
    let row = ActiveModel {
        id: Set(new.id.as_uuid()),
        name: Set(name.clone()),
        kind: Set(new.kind.as_str().to_owned()),
        display_name: Set(new.display_name.clone()),
        created_at: Set(now()),
    };
    match Entity::insert(row).exec_without_returning(txn).await {
        Err(err) if is_unique_violation(&err) => Err(StoreError::AccountExists(name)),
        Err(err) => Err(err.into()),
        Ok(_) => Ok(Entity::find_by_id(new.id.as_uuid())
            .one(txn)
            .await?
            .ok_or(StoreError::AccountNotFound(new.id.to_string()))?
            .into_domain()?),
    }
}

/// The account with this id.
pub(super) async fn by_id(db: &DatabaseConnection, id: AccountId) -> Result<Account, StoreError> {
    Entity::find_by_id(id.as_uuid()).one(db).await?.ok_or(StoreError::AccountNotFound(id.to_string()))?.into_domain()
}

/// The account with this name, if there is one.
pub(super) async fn by_name(db: &DatabaseConnection, name: &str) -> Result<Option<Account>, StoreError> {
    Entity::find().filter(Column::Name.eq(name.trim())).one(db).await?.map(Model::into_domain).transpose()
}

/// Every account, oldest first.
pub(super) async fn all(db: &DatabaseConnection) -> Result<Vec<Account>, StoreError> {
    Entity::find().order_by_asc(Column::Id).all(db).await?.into_iter().map(Model::into_domain).collect()
}

/// The key whose secret is `secret`, with its account, if it authenticates now.
pub(super) async fn authenticate(
    db: &DatabaseConnection,
    secret: &str,
    at: Timestamp,
) -> Result<Option<(ApiKey, Account)>, StoreError> {
    let Some(row) =
        api_keys::Entity::find().filter(api_keys::Column::KeyHash.eq(api_keys::hash_secret(secret))).one(db).await?
    else {
        return Ok(None);
    };
    let key = row.into_domain();
    let Some(account) = key.account.filter(|_| key.is_valid_at(at)) else { return Ok(None) };
    match Entity::find_by_id(account.as_uuid()).one(db).await? {
        Some(row) => Ok(Some((key, row.into_domain()?))),
        None => Ok(None),
    }
}

/// Keys revoked at or after `since`, with when.
pub(super) async fn revoked_since(
    db: &DatabaseConnection,
    since: Timestamp,
) -> Result<Vec<(ApiKeyId, Timestamp)>, StoreError> {
    Ok(api_keys::Entity::find()
        .filter(api_keys::Column::RevokedAt.gte(since))
        .all(db)
        .await?
        .into_iter()
        .filter_map(|row| row.revoked_at.map(|at| (ApiKeyId(row.id), at)))
        .collect())
}
