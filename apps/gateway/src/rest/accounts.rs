//! `/v1/me`, and for admins `/v1/accounts` and `/v1/keys`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use colloquy_core_model::{Account, AccountId, AccountKind, Timestamp};
use colloquy_store::{ApiKey, ApiKeyId, NewAccount, NewApiKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Errors;
use crate::AppState;
use crate::auth::{Caller, new_secret};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::policy;

/// `GET /v1/me`: the caller's account.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", responses((status = 200, body = Account), Errors), security(("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<Account> {
    Json(caller.account)
}

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// A unique handle, 1 to 64 characters without spaces.
    name: String,
    kind: AccountKind,
    /// Shown to others (default: the name).
    display_name: Option<String>,
}

/// `POST /v1/accounts` (admins).
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    request_body = CreateAccount,
    responses((status = 201, body = Account), Errors),
    security(("bearer" = []))
)]
pub async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateAccount>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    policy::require_admin(&caller)?;
    let display_name = body.display_name.unwrap_or_else(|| body.name.clone());
    let account = NewAccount { id: AccountId::new(), name: body.name, kind: body.kind, display_name };
    Ok((StatusCode::CREATED, Json(state.engine.create_account(account).await?)))
}

/// `GET /v1/accounts` (admins): every account, oldest first.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", responses((status = 200, body = Vec<Account>), Errors), security(("bearer" = [])))]
pub async fn list_accounts(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Account>>, ApiError> {
    policy::require_admin(&caller)?;
    Ok(Json(state.engine.accounts().await?))
}

/// Body of `POST /v1/accounts/{id}/keys`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for.
    label: Option<String>,
    /// When the key stops working; never, when absent.
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
}

/// A stored key (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    #[schema(value_type = String, format = Uuid)]
    id: ApiKeyId,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    /// The account it authenticates.
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<AccountId>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<Timestamp>,
}

impl From<ApiKey> for KeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            label: key.label,
            account: key.account,
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A new key: its secret is in this answer and nowhere else, ever.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    key: KeyView,
    /// `ck_...`: show it to its owner once; the server keeps only its hash.
    secret: String,
}

/// `POST /v1/accounts/{id}/keys` (admins): a new key for the account.
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/keys",
    tag = "accounts",
    params(("id" = AccountId, Path, description = "The account")),
    request_body(content = Option<CreateKey>, description = "Optional label and expiry"),
    responses((status = 201, body = CreatedKey), Errors),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(account): ApiPath<AccountId>,
    ApiJson(body): ApiJson<Option<CreateKey>>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    policy::require_admin(&caller)?;
    let body = body.unwrap_or_default();
    let secret = new_secret().map_err(|error| ApiError::internal(&error))?;
    let new = NewApiKey {
        id: ApiKeyId::new(),
        secret: secret.clone(),
        label: body.label,
        account,
        expires_at: body.expires_at,
    };
    let key = state.engine.create_api_key(new).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { key: key.into(), secret })))
}

/// `GET /v1/keys` (admins): every key, revoked ones included.
#[utoipa::path(get, path = "/v1/keys", tag = "accounts", responses((status = 200, body = Vec<KeyView>), Errors), security(("bearer" = [])))]
pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<KeyView>>, ApiError> {
    policy::require_admin(&caller)?;
    Ok(Json(state.engine.api_keys().await?.into_iter().map(KeyView::from).collect()))
}

/// `DELETE /v1/keys/{id}` (admins): revokes a key; its connections close at once.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "accounts",
    params(("id" = String, Path, format = Uuid, description = "The key")),
    responses((status = 204, description = "Revoked"), Errors),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<StatusCode, ApiError> {
    policy::require_admin(&caller)?;
    state.engine.revoke_api_key(id).await?;
    state.auth.revoked(id);
    Ok(StatusCode::NO_CONTENT)
}
