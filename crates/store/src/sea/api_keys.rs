//! The `api_keys` table: its SeaORM entity, the conversions to and from [`ApiKey`], and hashing.

use colloquy_core_model::{AccountId, Timestamp};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sha2::{Digest, Sha256};

use crate::{ApiKey, ApiKeyId, NewApiKey, StoreError};

/// One row of `api_keys`: the secret itself is never stored, only its SHA-256 in hex.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub key_hash: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub label: Option<String>,
    /// From before accounts: unused, kept so old rows stay readable.
    pub participant_id: Option<Uuid>,
    /// From before accounts: unused (an admin is an account of kind `admin`).
    pub admin: bool,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub account_id: Option<Uuid>,
    pub expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The stored hash of a secret. Keys are long random strings, so a fast hash is enough: there is
/// nothing to brute-force that is cheaper than guessing the key itself.
pub(super) fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The stored key and its row.
pub(super) fn new_row(key: NewApiKey, now: Timestamp) -> Result<(ApiKey, ActiveModel), StoreError> {
    if key.secret.chars().count() < NewApiKey::MIN_SECRET_LEN {
        return Err(StoreError::WeakApiKey { min: NewApiKey::MIN_SECRET_LEN });
    }
    let row = ActiveModel {
        id: Set(key.id.0),
        key_hash: Set(hash_secret(&key.secret)),
        label: Set(key.label.clone()),
        participant_id: Set(None),
        admin: Set(false),
        created_at: Set(now),
        revoked_at: Set(None),
        account_id: Set(Some(key.account.as_uuid())),
        expires_at: Set(key.expires_at),
    };
    let stored = ApiKey {
        id: key.id,
        label: key.label,
        account: Some(key.account),
        created_at: now,
        expires_at: key.expires_at,
        revoked_at: None,
    };
    Ok((stored, row))
}

impl Model {
    /// The domain value.
    pub(super) fn into_domain(self) -> ApiKey {
        ApiKey {
            id: ApiKeyId(self.id),
            label: self.label,
            account: self.account_id.map(AccountId::from_uuid),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        }
    }
}
