//! REST endpoints under `/v1`: thin handlers that authenticate ([`Caller`]), authorize with
//! [`policy`], call one engine function and map the result. Every route is declared with its
//! OpenAPI description (utoipa), so `/openapi.json` always lists exactly what is served.

mod accounts;
mod conversations;
mod discovery;
mod events;
mod messages;
mod participants;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquy_core_model::{Conversation, ConversationId, MessageId, Participant, ParticipantRole};
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::policy::{self, Access, Action};

/// The errors any authenticated route may answer with; each operation lists them.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "only its OpenAPI description is used")]
pub enum Errors {
    /// The request is malformed or breaks a limit; `error.code` says how.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No API key, or one that is unknown, revoked or expired.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The caller's role does not allow it.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such conversation (or one the caller may not see), message, participant or account.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// It conflicts with the state (busy, archived, taken name).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is too large.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not JSON.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Too many requests or queued prompts: retry after `retry_after_ms`.
    #[response(status = 429)]
    TooMany(ErrorBody),
    /// The server failed; retry later.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The database does not answer, the conversation is quarantined, or the server is stopping.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// A conversation with its participants.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    #[serde(flatten)]
    conversation: Conversation,
    participants: Vec<Participant>,
}

/// Loads the participants and authorizes `action` ([`policy::authorize`]).
pub(crate) async fn authorized(
    state: &AppState,
    caller: &Caller,
    id: ConversationId,
    action: Action,
) -> Result<(Access, Vec<Participant>), ApiError> {
    let participants = state.engine.participants(id).await?;
    // Every conversation has someone in it: an empty list means there is no such conversation.
    if participants.is_empty() {
        state.engine.conversation(id).await?;
    }
    let access = policy::authorize(caller, id, &participants, action)?;
    Ok((access, participants))
}

/// An edit of `message` is the caller's own message, or the caller owns the conversation (or is
/// an admin).
pub(crate) async fn check_editable(
    state: &AppState,
    conversation: ConversationId,
    access: &Access,
    message: MessageId,
) -> Result<(), ApiError> {
    let owner = access.admin || access.participant.as_ref().is_some_and(|p| p.role == ParticipantRole::Owner);
    if owner {
        return Ok(());
    }
    let mine = access.participant.as_ref().map(|p| p.id);
    let found = state.engine.message(conversation, message).await?;
    if found.sender.is_some() && found.sender == mine {
        Ok(())
    } else {
        Err(ApiError::forbidden("only its sender or the conversation's owner may change a message"))
    }
}

/// Every route, with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(crate::ws::upgrade))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::create_account, accounts::list_accounts))
        .routes(routes!(accounts::create_key))
        .routes(routes!(accounts::list_keys))
        .routes(routes!(accounts::revoke_key))
        .routes(routes!(conversations::create, conversations::list))
        .routes(routes!(conversations::get, conversations::update, conversations::delete))
        .routes(routes!(conversations::with_messages))
        .routes(routes!(conversations::archive))
        .routes(routes!(conversations::unarchive))
        .routes(routes!(conversations::close))
        .routes(routes!(conversations::fork))
        .routes(routes!(conversations::export))
        .routes(routes!(conversations::cancel))
        .routes(routes!(conversations::continue_turn))
        .routes(routes!(messages::list, messages::send))
        .routes(routes!(messages::edit, messages::remove))
        .routes(routes!(messages::history))
        .routes(routes!(events::events))
        .routes(routes!(participants::list, participants::add))
        .routes(routes!(participants::update, participants::remove))
        .routes(routes!(participants::update_agent))
        .routes(routes!(participants::approvals))
        .routes(routes!(participants::answer_approval))
        .routes(routes!(discovery::search))
        .routes(routes!(discovery::tools))
        .routes(routes!(discovery::providers))
}

/// `GET /healthz`: the process serves.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "`ok`", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// What `/readyz` says.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (some conversations quarantined, everything else served) or
    /// `unavailable`.
    status: &'static str,
    /// Conversations whose stored data cannot be read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantined: Option<Vec<QuarantinedView>>,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ApiError>,
    /// In a cluster: this node and its link to the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterView>,
}

/// A cluster node's view of the cluster. Without NATS the node still serves its clients (live
/// events of other nodes then come from the log, `gap_check_ms` late), so it stays ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    node_id: String,
    /// `connected` or `disconnected`.
    nats: &'static str,
}

/// A quarantined conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantinedView {
    conversation_id: ConversationId,
    reason: String,
}

/// `GET /readyz`: 200 while the database answers and its schema is current (`degraded` when
/// some conversations are quarantined), 503 otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready, or degraded", body = Readiness),
        (status = 503, description = "The database does not answer or its schema is behind", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let cluster = state.cluster_status().map(|(node_id, connected)| ClusterView {
        node_id,
        nats: if connected { "connected" } else { "disconnected" },
    });
    match state.engine.ready().await {
        Ok(quarantined) => {
            let nats_down = cluster.as_ref().is_some_and(|c| c.nats == "disconnected");
            let status = if quarantined.is_empty() && !nats_down { "ready" } else { "degraded" };
            let quarantined = quarantined
                .into_iter()
                .map(|q| QuarantinedView { conversation_id: q.conversation, reason: q.reason })
                .collect();
            Json(Readiness { status, quarantined: Some(quarantined), error: None, cluster }).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "not ready");
            let error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::DatabaseUnavailable,
                format!(
                    "not ready: {error}; check that the database runs, database_url points at it and `colloquy migrate` ran"
                ),
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness { status: "unavailable", quarantined: None, error: Some(error), cluster }),
            )
                .into_response()
        }
    }
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::NotFound, "there is no such endpoint: see /openapi.json or docs/protocol.md")
}

/// Known paths with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method: see /openapi.json or docs/protocol.md",
    )
}
