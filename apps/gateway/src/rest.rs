//! REST endpoints under `/v1`: thin handlers over the store and the engine.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquy_core_model::{
    AgentSpec, Conversation, ConversationId, ConversationKind, Message, Options, Participant, ParticipantId,
    ParticipantKind, ParticipantRole,
};
use colloquy_store::{NewConversation, NewParticipant};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::body::ApiJson;
use crate::error::ApiError;

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
    /// The human's display name (default `user`).
    user_name: Option<String>,
    /// The agent's display name (default `assistant`).
    agent_name: Option<String>,
    /// Everyone taking part, for agent-agent and multi-party conversations; replaces the default
    /// pair of one user and one agent (and `agent`, `user_name`, `agent_name`).
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
}

/// A conversation with its participants.
#[derive(Debug, Serialize)]
pub struct ConversationView {
    #[serde(flatten)]
    conversation: Conversation,
    participants: Vec<Participant>,
}

pub async fn create_conversation(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Option<CreateConversation>>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let body = body.unwrap_or_default();
    let participants = match body.participants {
        Some(list) => list
            .into_iter()
            .map(|p| {
                let agent =
                    (p.kind == ParticipantKind::Agent).then(|| p.agent.unwrap_or_else(|| state.default_agent.clone()));
                NewParticipant {
                    id: ParticipantId::new(),
                    kind: p.kind,
                    display_name: p.display_name,
                    role: p.role,
                    agent,
                }
            })
            .collect(),
        None => vec![
            NewParticipant {
                id: ParticipantId::new(),
                kind: ParticipantKind::User,
                display_name: body.user_name.unwrap_or_else(|| "user".to_owned()),
                role: ParticipantRole::Owner,
                agent: None,
            },
            NewParticipant {
                id: ParticipantId::new(),
                kind: ParticipantKind::Agent,
                display_name: body.agent_name.unwrap_or_else(|| "assistant".to_owned()),
                role: ParticipantRole::Member,
                agent: Some(body.agent.unwrap_or_else(|| state.default_agent.clone())),
            },
        ],
    };
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

pub async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<ConversationId>,
) -> Result<Json<ConversationView>, ApiError> {
    let conversation = state.engine.store().conversation(id).await?;
    let participants = state.engine.store().participants(id).await?;
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
    Path(id): Path<ConversationId>,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<MessagesPage>, ApiError> {
    if !(1..=1000).contains(&query.limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit must be between 1 and 1000"));
    }
    // Fail with not-found rather than an empty page for an unknown conversation.
    state.engine.store().conversation(id).await?;
    let messages = state.engine.store().messages_after(id, query.after_seq, query.limit).await?;
    let next_after_seq = (messages.len() as u64 == query.limit).then(|| messages.last().map(|m| m.seq)).flatten();
    Ok(Json(MessagesPage { messages, next_after_seq }))
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
                "database_unavailable",
                "the database does not answer: check that it runs and that database_url points at it",
            );
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "unavailable", "error": error })))
                .into_response()
        }
    }
}
