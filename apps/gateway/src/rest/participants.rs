//! `/v1/conversations/{id}/participants`: who takes part and how (roles, agents' specs), and
//! the tool calls that wait for an owner's approval.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use colloquy_core_model::{
    AccountId, AgentSpec, ConversationId, Participant, ParticipantId, ParticipantKind, ParticipantRole, ToolCallId,
};
use colloquy_store::NewParticipant;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Errors, authorized};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiPath};
use crate::policy::Action;
use crate::protocol::Decision;

/// `GET /v1/conversations/{id}/participants`: everyone, in join order (those who left too).
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/participants",
    tag = "participants",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 200, body = Vec<Participant>), Errors),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<Vec<Participant>>, ApiError> {
    let (_, participants) = authorized(&state, &caller, id, Action::Read).await?;
    Ok(Json(participants))
}

/// Body of `POST .../participants`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddParticipant {
    kind: ParticipantKind,
    display_name: String,
    #[serde(default)]
    role: ParticipantRole,
    /// A user's or service's account (required for them, but for a remote A2A agent); agents
    /// belong to the caller.
    account_id: Option<AccountId>,
    /// An agent's provider, model, prompt and tools (required for agents).
    agent: Option<AgentSpec>,
    /// For a service that is a remote A2A agent: its URL (docs/a2a.md). Admins may give any;
    /// others those the operator allows (`a2a_allowed_urls`).
    a2a_url: Option<String>,
    /// The bearer key sent to that agent, if it needs one. Never shown again.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<String>)]
    a2a_key: Option<colloquy_core_model::WriteOnly>,
}

/// `POST /v1/conversations/{id}/participants` (owners): a person or service by account, or an
/// agent with its spec (`participant_joined`).
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/participants",
    tag = "participants",
    params(("id" = ConversationId, Path, description = "The conversation")),
    request_body = AddParticipant,
    responses((status = 201, body = Participant), Errors),
    security(("bearer" = []))
)]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(body): ApiJson<AddParticipant>,
) -> Result<(StatusCode, Json<Participant>), ApiError> {
    authorized(&state, &caller, id, Action::Manage).await?;
    colloquy_core_model::check_remote_agent(body.kind, body.a2a_url.as_deref(), body.a2a_key.as_ref())
        .map_err(|error| ApiError::bad_request(ErrorCode::InvalidBody, error))?;
    if let Some(url) = &body.a2a_url {
        crate::policy::may_call_remote_agent(&state.config, &caller, url)?;
    }
    let account = match (body.kind, body.account_id) {
        (ParticipantKind::Agent, _) => Some(caller.account.id),
        (_, None) if body.a2a_url.is_some() => None,
        (_, Some(account)) => {
            state.engine.account(account).await?;
            Some(account)
        }
        (kind, None) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!("a participant of kind {kind:?} needs the account_id of the person or service it stands for"),
            ));
        }
    };
    let new = NewParticipant {
        id: ParticipantId::new(),
        kind: body.kind,
        display_name: body.display_name,
        role: body.role,
        agent: body.agent,
        account,
        a2a_url: body.a2a_url,
        a2a_key: body.a2a_key,
    };
    Ok((StatusCode::CREATED, Json(state.engine.add_participant(id, new).await?)))
}

/// Body of `PATCH .../participants/{participant}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateParticipant {
    /// The new role.
    role: ParticipantRole,
}

/// `PATCH /v1/conversations/{id}/participants/{participant}` (owners): a new role
/// (`participant_updated`).
#[utoipa::path(
    patch,
    path = "/v1/conversations/{id}/participants/{participant}",
    tag = "participants",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("participant" = ParticipantId, Path, description = "The participant")
    ),
    request_body = UpdateParticipant,
    responses((status = 200, body = Participant), Errors),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, participant)): ApiPath<(ConversationId, ParticipantId)>,
    ApiJson(body): ApiJson<UpdateParticipant>,
) -> Result<Json<Participant>, ApiError> {
    authorized(&state, &caller, id, Action::Manage).await?;
    Ok(Json(state.engine.set_participant_role(id, participant, body.role).await?))
}

/// `DELETE /v1/conversations/{id}/participants/{participant}`: an owner (or admin) takes a
/// participant out; a participant may also leave by removing itself. Its subscriptions end.
#[utoipa::path(
    delete,
    path = "/v1/conversations/{id}/participants/{participant}",
    tag = "participants",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("participant" = ParticipantId, Path, description = "The participant")
    ),
    responses((status = 204, description = "Gone"), Errors),
    security(("bearer" = []))
)]
pub async fn remove(
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

/// Body of `PATCH .../participants/{participant}/agent`: the fields of the spec to change.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateAgent {
    provider: Option<String>,
    model: Option<String>,
    /// A new system prompt; `null` removes it.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>)]
    system_prompt: Option<Option<String>>,
    tools: Option<Vec<String>>,
}

/// `PATCH /v1/conversations/{id}/participants/{participant}/agent` (owners): changes how an
/// agent answers, from its next request on; an unknown provider, model or tool is refused at
/// once (`participant_updated`).
#[utoipa::path(
    patch,
    path = "/v1/conversations/{id}/participants/{participant}/agent",
    tag = "participants",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("participant" = ParticipantId, Path, description = "The agent")
    ),
    request_body = UpdateAgent,
    responses((status = 200, body = Participant), Errors),
    security(("bearer" = []))
)]
pub async fn update_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, participant)): ApiPath<(ConversationId, ParticipantId)>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<Participant>, ApiError> {
    let (_, participants) = authorized(&state, &caller, id, Action::Manage).await?;
    let current = participants.iter().find(|p| p.id == participant && p.left_at.is_none()).ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::ParticipantNotFound,
            format!("participant {participant} is not part of conversation {id}: check the id"),
        )
    })?;
    let Some(mut spec) = current.agent.clone() else {
        return Err(ApiError::bad_request(
            ErrorCode::NotAnAgent,
            format!("participant {participant} is not an agent: only agents have a provider, model, prompt and tools"),
        ));
    };
    if let Some(provider) = body.provider {
        spec.provider = provider;
    }
    if let Some(model) = body.model {
        spec.model = model;
    }
    if let Some(prompt) = body.system_prompt {
        spec.system_prompt = prompt;
    }
    if let Some(tools) = body.tools {
        spec.tools = tools;
    }
    Ok(Json(state.engine.update_agent(id, participant, spec).await?))
}

/// A tool call waiting for approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingApprovalView {
    tool_call_id: ToolCallId,
    tool_name: String,
    /// The agent that made it.
    agent: ParticipantId,
    #[schema(value_type = Object)]
    arguments: serde_json::Value,
}

/// `GET /v1/conversations/{id}/approvals` (owners): the tool calls waiting for an answer.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/approvals",
    tag = "approvals",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 200, body = Vec<PendingApprovalView>), Errors),
    security(("bearer" = []))
)]
pub async fn approvals(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<Vec<PendingApprovalView>>, ApiError> {
    authorized(&state, &caller, id, Action::Manage).await?;
    let pending = state
        .engine
        .pending_approvals(id)
        .into_iter()
        .map(|p| PendingApprovalView {
            tool_call_id: p.call_id,
            tool_name: p.tool,
            agent: p.caller,
            arguments: p.arguments,
        })
        .collect();
    Ok(Json(pending))
}

/// Body of `POST .../approvals/{tool_call_id}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecision {
    decision: Decision,
    /// For a denial: what the model is told.
    reason: Option<String>,
}

/// `POST /v1/conversations/{id}/approvals/{tool_call_id}` (owners): allows or denies a waiting
/// tool call; it runs, or its result says `denied: <reason>`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/approvals/{tool_call_id}",
    tag = "approvals",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("tool_call_id" = String, Path, description = "The waiting call")
    ),
    request_body = ApprovalDecision,
    responses((status = 204, description = "Answered"), Errors),
    security(("bearer" = []))
)]
pub async fn answer_approval(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, call)): ApiPath<(ConversationId, String)>,
    ApiJson(body): ApiJson<ApprovalDecision>,
) -> Result<StatusCode, ApiError> {
    authorized(&state, &caller, id, Action::Manage).await?;
    state.answer_approval(id, &ToolCallId::from(call), body.decision.answer(body.reason)).await?;
    Ok(StatusCode::NO_CONTENT)
}
