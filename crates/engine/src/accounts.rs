//! Accounts and API keys, as the gateway manages them: thin calls through to the store, so
//! that nothing above the engine reaches into the store itself.

use colloquy_core_model::{Account, AccountId, Timestamp};
use colloquy_store::{ApiKey, ApiKeyId, NewAccount, NewApiKey};

use crate::{Engine, EngineError};

impl Engine {
    /// Creates an account; `account_exists` if the name is taken.
    pub async fn create_account(&self, account: NewAccount) -> Result<Account, EngineError> {
        Ok(self.inner().store.create_account(account).await?)
    }

    /// The account with this id.
    pub async fn account(&self, id: AccountId) -> Result<Account, EngineError> {
        Ok(self.inner().store.account(id).await?)
    }

    /// The account with this name, if any.
    pub async fn account_by_name(&self, name: &str) -> Result<Option<Account>, EngineError> {
        Ok(self.inner().store.account_by_name(name).await?)
    }

    /// Every account, oldest first.
    pub async fn accounts(&self) -> Result<Vec<Account>, EngineError> {
        Ok(self.inner().store.accounts().await?)
    }

    /// Stores a key (its hash) for an account.
    pub async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, EngineError> {
        Ok(self.inner().store.create_api_key(key).await?)
    }

    /// The key and account a secret authenticates at `now`, if any.
    pub async fn authenticate(&self, secret: &str, now: Timestamp) -> Result<Option<(ApiKey, Account)>, EngineError> {
        Ok(self.inner().store.authenticate_api_key(secret, now).await?)
    }

    /// Revokes a key: it is refused from its next request on.
    pub async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), EngineError> {
        Ok(self.inner().store.revoke_api_key(id).await?)
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, EngineError> {
        Ok(self.inner().store.api_keys().await?)
    }

    /// Keys revoked at or after `since`.
    pub async fn api_keys_revoked_since(&self, since: Timestamp) -> Result<Vec<(ApiKeyId, Timestamp)>, EngineError> {
        Ok(self.inner().store.api_keys_revoked_since(since).await?)
    }
}
