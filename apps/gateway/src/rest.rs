//! REST endpoints under `/v1`: thin handlers that authenticate, authorize with [`policy`],
//! call one engine function and map the result.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquy_core_model::{
    Account, AccountId, AccountKind, AgentSpec, Conversation, ConversationId, ConversationKind, Message, Options,
    Participant, ParticipantId, ParticipantKind, ParticipantRole, Timestamp,
};
use colloquy_store::{ApiKey, ApiKeyId, NewAccount, NewApiKey, NewConversation, NewParticipant};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, new_secret};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::policy::{self, Action};

/// Body of `POST /v1/conversations`; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreateConversation {
    kind: ConversationKind,
    title: Option<String>,
    tags: Vec<String>,
    options: Options,
    /// The answering agent; the configured default agent when absent.
    agent: Option<AgentSpec>,
    /// The caller's display name in it (default: its account's).
    user_name: Option<String>,
    /// The agent's display name (default `assistant`).
    agent_name: Option<String>,
    /// Everyone taking part, for agent-agent and multi-party conversations; replaces the default
    /// pair of the caller and one agent (and `agent`, `user_name`, `agent_name`).
    participants: Option<Vec<ParticipantSpec>>,
}

/// One participant of a new conversation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSpec {
    kind: ParticipantKind,
    display_name: String,
    #[serde(default)]
    role: ParticipantRole,
    /// For agents; the configured default agent when absent.
    agent: Option<AgentSpec>,
    /// The account of the person or service it stands for. The first user or service without
    /// one is the caller; agents belong to the caller.
    account_id: Option<AccountId>,
}

/// A conversation with its participants.
#[derive(Debug, Serialize)]
pub struct ConversationView {
    #[serde(flatten)]
    conversation: Conversation,
    participants: Vec<Participant>,
}

/// The participant kind an account posts as.
fn kind_of(account: &Account) -> ParticipantKind {
    match account.kind {
        AccountKind::Service => ParticipantKind::Service,
        AccountKind::User | AccountKind::Admin => ParticipantKind::User,
    }
}

pub async fn create_conversation(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Option<CreateConversation>>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let body = body.unwrap_or_default();
    let me = caller.account.id;
    let agent_spec = |spec: Option<AgentSpec>| spec.unwrap_or_else(|| state.default_agent.clone());
    let mut participants: Vec<NewParticipant> = match body.participants {
        Some(list) => {
            let mut caller_placed = false;
            let mut out = Vec::with_capacity(list.len() + 1);
            for (index, p) in list.into_iter().enumerate() {
                let account = match (p.kind, p.account_id) {
                    (ParticipantKind::Agent, _) => Some(me),
                    (_, Some(account)) => {
                        if account != me {
                            state.engine.account(account).await.map_err(|_| {
                                ApiError::bad_request(
                                    ErrorCode::InvalidConversation,
                                    format!("participant {index}: there is no account {account}"),
                                )
                            })?;
                        }
                        Some(account)
                    }
                    (_, None) if !caller_placed => Some(me),
                    (kind, None) => {
                        return Err(ApiError::bad_request(
                            ErrorCode::InvalidConversation,
                            format!(
                                "participant {index} ({kind:?}) has no account_id: only the first user or service may \
                                 leave it out (that one is you); bind the others to their accounts"
                            ),
                        ));
                    }
                };
                caller_placed |= p.kind != ParticipantKind::Agent && account == Some(me);
                let agent = (p.kind == ParticipantKind::Agent).then(|| agent_spec(p.agent));
                out.push(NewParticipant {
                    id: ParticipantId::new(),
                    kind: p.kind,
                    display_name: p.display_name,
                    role: p.role,
                    agent,
                    account,
                });
            }
            if !caller_placed && !caller.is_admin() {
                // Whoever creates a conversation takes part in it.
                out.insert(
                    0,
                    NewParticipant {
                        id: ParticipantId::new(),
                        kind: kind_of(&caller.account),
                        display_name: caller.account.display_name.clone(),
                        role: ParticipantRole::Owner,
                        agent: None,
                        account: Some(me),
                    },
                );
            }
            out
        }
        None => vec![
            NewParticipant {
                id: ParticipantId::new(),
                kind: kind_of(&caller.account),
                display_name: body.user_name.unwrap_or_else(|| caller.account.display_name.clone()),
                role: ParticipantRole::Owner,
                agent: None,
                account: Some(me),
            },
            NewParticipant {
                id: ParticipantId::new(),
                kind: ParticipantKind::Agent,
                display_name: body.agent_name.unwrap_or_else(|| "assistant".to_owned()),
                role: ParticipantRole::Member,
                agent: Some(agent_spec(body.agent)),
                account: Some(me),
            },
        ],
    };
    // The creator owns it.
    for p in &mut participants {
        if p.kind != ParticipantKind::Agent && p.account == Some(me) {
            p.role = ParticipantRole::Owner;
        }
    }
    let new = NewConversation {
        id: ConversationId::new(),
        kind: body.kind,
        title: body.title,
        tags: body.tags,
        options: body.options,
        participants,
    };
    let (conversation, participants) = state.engine.create_conversation(new).await?;
    Ok((StatusCode::CREATED, Json(ConversationView { conversation, participants })))
}

/// Loads the participants and authorizes `action`.
async fn authorized(
    state: &AppState,
    caller: &Caller,
    id: ConversationId,
    action: Action,
) -> Result<(policy::Access, Vec<Participant>), ApiError> {
    let participants = state.engine.participants(id).await?;
    if participants.is_empty() {
        state.engine.conversation(id).await?;
    }
    let access = policy::authorize(caller, id, &participants, action)?;
    Ok((access, participants))
}

pub async fn get_conversation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<ConversationView>, ApiError> {
    let (_, participants) = authorized(&state, &caller, id, Action::Read).await?;
    let conversation = state.engine.conversation(id).await?;
    Ok(Json(ConversationView { conversation, participants }))
}

/// Query of `GET /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagesQuery {
    /// Messages with a larger seq.
    after_seq: u64,
    /// At most this many (1..=1000).
    limit: u64,
}

impl Default for MessagesQuery {
    fn default() -> Self {
        Self { after_seq: 0, limit: 100 }
    }
}

/// A page of messages; `next_after_seq` continues it.
#[derive(Debug, Serialize)]
pub struct MessagesPage {
    messages: Vec<Message>,
    next_after_seq: Option<u64>,
}

pub async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessagesPage>, ApiError> {
    if !(1..=1000).contains(&query.limit) {
        return Err(ApiError::bad_request(ErrorCode::InvalidQuery, "limit must be between 1 and 1000"));
    }
    authorized(&state, &caller, id, Action::Read).await?;
    let messages = state.engine.messages_after(id, query.after_seq, query.limit).await?;
    let next_after_seq = (messages.len() as u64 == query.limit).then(|| messages.last().map(|m| m.seq)).flatten();
    Ok(Json(MessagesPage { messages, next_after_seq }))
}

/// `DELETE /v1/conversations/{id}/participants/{participant}`: an owner (or admin) takes a
/// participant out; a participant may also leave by removing itself.
pub async fn remove_participant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, participant)): ApiPath<(ConversationId, ParticipantId)>,
) -> Result<StatusCode, ApiError> {
    let (access, _) = authorized(&state, &caller, id, Action::Read).await?;
    let leaving_myself = access.participant.as_ref().is_some_and(|p| p.id == participant);
    if !leaving_myself {
        authorized(&state, &caller, id, Action::Manage).await?;
    }
    state.engine.remove_participant(id, participant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`: the caller's account.
pub async fn me(caller: Caller) -> Json<Account> {
    Json(caller.account)
}

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    name: String,
    kind: AccountKind,
    display_name: Option<String>,
}

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

pub async fn list_accounts(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Account>>, ApiError> {
    policy::require_admin(&caller)?;
    Ok(Json(state.engine.accounts().await?))
}

/// Body of `POST /v1/accounts/{id}/keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreateKey {
    label: Option<String>,
    /// When the key stops working (RFC 3339); never, when absent.
    expires_at: Option<Timestamp>,
}

/// A new key: its secret is in this answer and nowhere else, ever.
#[derive(Debug, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    key: ApiKey,
    secret: String,
}

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
    Ok((StatusCode::CREATED, Json(CreatedKey { key, secret })))
}

pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<ApiKey>>, ApiError> {
    policy::require_admin(&caller)?;
    Ok(Json(state.engine.api_keys().await?))
}

/// `DELETE /v1/keys/{id}`: revokes a key; its connections close at once.
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

/// `GET /readyz`: 200 while the database answers, `"status": "degraded"` when some
/// conversations are quarantined (their stored data cannot be read back; everything else is
/// served), 503 when the database does not answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine.ready().await {
        Ok(quarantined) => {
            let status = if quarantined.is_empty() { "ready" } else { "degraded" };
            let quarantined: Vec<serde_json::Value> = quarantined
                .into_iter()
                .map(|q| serde_json::json!({ "conversation_id": q.conversation, "reason": q.reason }))
                .collect();
            Json(serde_json::json!({ "status": status, "quarantined": quarantined })).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "not ready: the database does not answer");
            let error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DatabaseUnavailable,
                "the database does not answer: check that it runs and that database_url points at it",
            );
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "unavailable", "error": error })))
                .into_response()
        }
    }
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::NotFound, "there is no such endpoint: see docs/protocol.md for the routes")
}

/// Known paths with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method: see docs/protocol.md for the routes",
    )
}
