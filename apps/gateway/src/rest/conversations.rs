//! `/v1/conversations`: create, list, read, change, archive, close, delete, fork, export, and
//! turn control.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use colloquy_core_model::{
    AccountId, ContentPart, ConversationId, ConversationKind, ConversationRequest, ConversationStatus, Message,
    MessageRole, Options, Participant, ParticipantId,
};
use colloquy_store::{ConversationCursor, ConversationFilter, ConversationUpdate, MessageCursor};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ConversationView, Errors, authorized};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, page_limit};
use crate::policy::Action;

/// `POST /v1/conversations`: the caller takes part as its owner.
#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "conversations",
    request_body(content = Option<ConversationRequest>, description = "Every field is optional; an empty body is fine"),
    responses((status = 201, description = "Created", body = ConversationView), Errors),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Option<ConversationRequest>>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let request = body.unwrap_or_default();
    for url in request.participants.iter().flatten().filter_map(|p| p.a2a_url.as_deref()) {
        crate::policy::may_call_remote_agent(&state.config, &caller, url)?;
    }
    let (conversation, participants) =
        state.engine.create_conversation_for(&caller.account, request, &state.default_agent).await?;
    Ok((StatusCode::CREATED, Json(ConversationView { conversation, participants })))
}

/// Query of `GET /v1/conversations`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this kind.
    kind: Option<ConversationKind>,
    /// Only this status.
    status: Option<ConversationStatus>,
    /// Only conversations with this tag.
    tag: Option<String>,
    /// Only conversations this account takes part in too.
    account: Option<AccountId>,
    /// Only conversations with an agent of this display name.
    agent: Option<String>,
    /// Only conversations whose title or summary contains this text.
    q: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u64>,
}

/// A page of conversations, newest activity first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    conversations: Vec<ConversationView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /v1/conversations`: the caller's conversations (an admin's: everyone's).
#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "conversations",
    params(ListQuery),
    responses((status = 200, description = "A page, newest activity first", body = ConversationPage), Errors),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ConversationPage>, ApiError> {
    let limit = page_limit(query.limit, 50, 200)?;
    let cursor: Option<ConversationCursor> = query.cursor.as_deref().map(str::parse).transpose()?;
    let mut accounts: Vec<AccountId> = query.account.into_iter().collect();
    if !caller.is_admin() {
        accounts.push(caller.account.id);
    }
    let filter = ConversationFilter {
        accounts,
        status: query.status,
        kind: query.kind,
        tag: query.tag,
        agent: query.agent,
        text: query.q,
        ..ConversationFilter::default()
    };
    let page = state.engine.list_conversations(filter, cursor, limit).await?;
    let ids: Vec<ConversationId> = page.items.iter().map(|c| c.id).collect();
    let mut by_conversation: HashMap<ConversationId, Vec<Participant>> = HashMap::new();
    for participant in state.engine.participants_of(&ids).await? {
        by_conversation.entry(participant.conversation_id).or_default().push(participant);
    }
    let conversations = page
        .items
        .into_iter()
        .map(|conversation| {
            let participants = by_conversation.remove(&conversation.id).unwrap_or_default();
            ConversationView { conversation, participants }
        })
        .collect();
    Ok(Json(ConversationPage { conversations, next_cursor: page.next.map(|c| c.to_string()) }))
}

/// `GET /v1/conversations/{id}`: with its participants, and `forked_from` for a fork.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 200, body = ConversationView), Errors),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<ConversationView>, ApiError> {
    let (_, participants) = authorized(&state, &caller, id, Action::Read).await?;
    let conversation = state.engine.conversation(id).await?;
    Ok(Json(ConversationView { conversation, participants }))
}

/// Query of `GET /v1/conversations/{id}/with-messages`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WithMessagesQuery {
    /// The newest this many messages (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A conversation with its participants and newest messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationWithMessages {
    #[serde(flatten)]
    view: ConversationView,
    /// Oldest first.
    messages: Vec<Message>,
    /// Older messages exist: page back with `GET .../messages?before_seq=`.
    has_more: bool,
}

/// `GET /v1/conversations/{id}/with-messages`: one request for a chat window.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/with-messages",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation"), WithMessagesQuery),
    responses((status = 200, body = ConversationWithMessages), Errors),
    security(("bearer" = []))
)]
pub async fn with_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<WithMessagesQuery>,
) -> Result<Json<ConversationWithMessages>, ApiError> {
    let limit = page_limit(query.limit, 100, 1000)?;
    let (_, participants) = authorized(&state, &caller, id, Action::Read).await?;
    let conversation = state.engine.conversation(id).await?;
    let page = state.engine.messages_page(id, MessageCursor::Before(u64::MAX), limit).await?;
    Ok(Json(ConversationWithMessages {
        view: ConversationView { conversation, participants },
        messages: page.items,
        has_more: page.next.is_some(),
    }))
}

/// Body of `PATCH /v1/conversations/{id}`: the fields to change.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConversation {
    /// A new title; `null` removes it.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>)]
    title: Option<Option<String>>,
    /// A new summary; `null` removes it.
    #[serde(default, deserialize_with = "crate::extract::present")]
    #[schema(value_type = Option<String>)]
    summary: Option<Option<String>>,
    /// New tags, replacing the old ones.
    tags: Option<Vec<String>>,
    /// New options, replacing the old ones (the next request sees them).
    options: Option<Options>,
}

/// `PATCH /v1/conversations/{id}` (owners): title, summary, tags, options.
#[utoipa::path(
    patch,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation")),
    request_body = UpdateConversation,
    responses((status = 200, body = ConversationView), Errors),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(body): ApiJson<UpdateConversation>,
) -> Result<Json<ConversationView>, ApiError> {
    let (_, participants) = authorized(&state, &caller, id, Action::Manage).await?;
    let update = ConversationUpdate {
        title: body.title,
        summary: body.summary,
        tags: body.tags,
        options: body.options,
        ..ConversationUpdate::default()
    };
    let conversation = state.engine.update_conversation(id, update).await?;
    Ok(Json(ConversationView { conversation, participants }))
}

async fn set_status(
    state: &AppState,
    caller: &Caller,
    id: ConversationId,
    status: ConversationStatus,
) -> Result<Json<ConversationView>, ApiError> {
    let (_, participants) = authorized(state, caller, id, Action::Manage).await?;
    let conversation = state.engine.set_status(id, status).await?;
    Ok(Json(ConversationView { conversation, participants }))
}

/// `POST /v1/conversations/{id}/archive` (owners): read-only, never swept.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/archive",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 200, body = ConversationView), Errors),
    security(("bearer" = []))
)]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<ConversationView>, ApiError> {
    set_status(&state, &caller, id, ConversationStatus::Archived).await
}

/// `POST /v1/conversations/{id}/unarchive` (owners): active again.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/unarchive",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 200, body = ConversationView), Errors),
    security(("bearer" = []))
)]
pub async fn unarchive(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<ConversationView>, ApiError> {
    set_status(&state, &caller, id, ConversationStatus::Active).await
}

/// `POST /v1/conversations/{id}/close` (owners): read-only for good (fork it to go on).
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/close",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 200, body = ConversationView), Errors),
    security(("bearer" = []))
)]
pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<ConversationView>, ApiError> {
    set_status(&state, &caller, id, ConversationStatus::Closed).await
}

/// `DELETE /v1/conversations/{id}` (owners): with everything in it.
#[utoipa::path(
    delete,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 204, description = "Deleted"), Errors),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<StatusCode, ApiError> {
    authorized(&state, &caller, id, Action::Manage).await?;
    state.engine.delete_conversation(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/conversations/{id}/fork`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Fork {
    /// Copy up to and including this seq (default: all of it).
    at_seq: Option<u64>,
}

/// `POST /v1/conversations/{id}/fork` (members): a new conversation with the same history up to
/// a seq; its `forked_from` names the source.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/fork",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation to copy")),
    request_body(content = Option<Fork>, description = "Where to fork; empty for all of it"),
    responses((status = 201, description = "The copy", body = ConversationView), Errors),
    security(("bearer" = []))
)]
pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(body): ApiJson<Option<Fork>>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    authorized(&state, &caller, id, Action::Post).await?;
    let at = match body.and_then(|b| b.at_seq) {
        Some(at) => at,
        None => state.engine.conversation(id).await?.last_seq,
    };
    let copy = state.engine.fork(id, at).await?;
    let conversation = state.engine.conversation(copy).await?;
    let participants = state.engine.participants(copy).await?;
    Ok((StatusCode::CREATED, Json(ConversationView { conversation, participants })))
}

/// Query of `GET /v1/conversations/{id}/export`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `json` (default) or `markdown`.
    #[param(inline)]
    format: Option<ExportFormat>,
}

/// An export's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// The conversation, participants and every message, as JSON.
    #[default]
    Json,
    /// A transcript to read.
    Markdown,
}

/// A whole conversation as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    #[serde(flatten)]
    view: ConversationView,
    messages: Vec<Message>,
}

/// `GET /v1/conversations/{id}/export?format=json|markdown`: the whole history.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/export",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "The conversation"), ExportQuery),
    responses(
        (status = 200, description = "The conversation", content(
            (Export = "application/json"),
            (String = "text/markdown"),
        )),
        Errors
    ),
    security(("bearer" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let (_, participants) = authorized(&state, &caller, id, Action::Read).await?;
    let conversation = state.engine.conversation(id).await?;
    let messages = state.engine.messages_after(id, 0, u64::MAX).await?;
    Ok(match query.format.unwrap_or_default() {
        ExportFormat::Json => {
            Json(Export { view: ConversationView { conversation, participants }, messages }).into_response()
        }
        ExportFormat::Markdown => {
            let text = markdown(&conversation.title, &participants, &messages);
            ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], text).into_response()
        }
    })
}

/// A transcript: each message under its sender's name, tool calls and results quoted.
fn markdown(title: &Option<String>, participants: &[Participant], messages: &[Message]) -> String {
    let name = |id: Option<ParticipantId>| {
        id.and_then(|id| participants.iter().find(|p| p.id == id)).map_or("system", |p| p.display_name.as_str())
    };
    let mut out = format!("# {}\n", title.as_deref().unwrap_or("Conversation"));
    for message in messages {
        let who = match message.role {
            MessageRole::Tool => "tool".to_owned(),
            _ => name(message.sender).to_owned(),
        };
        out.push_str(&format!("\n**{who}** ({}):\n\n", message.created_at.format("%Y-%m-%d %H:%M")));
        for part in &message.content {
            match part {
                ContentPart::Text { text } => out.push_str(&format!("{text}\n")),
                ContentPart::ToolCall { name, arguments, .. } => {
                    out.push_str(&format!("> calls `{name}` with `{arguments}`\n"));
                }
                ContentPart::ToolResult { name, content, is_error, .. } => {
                    let what = if *is_error { "failed" } else { "returned" };
                    out.push_str(&format!("> `{name}` {what}: `{content}`\n"));
                }
                ContentPart::Image { .. } => out.push_str("*(image)*\n"),
                ContentPart::File { name, .. } => out.push_str(&format!("*(file {name})*\n")),
                ContentPart::Custom { value } => out.push_str(&format!("```json\n{value}\n```\n")),
            }
        }
    }
    out
}

/// The answer to `POST .../cancel`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// Whether a turn was running.
    cancelled: bool,
}

/// `POST /v1/conversations/{id}/cancel` (members): stops the running turn.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/cancel",
    tag = "turns",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 200, body = Cancelled), Errors),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<Json<Cancelled>, ApiError> {
    authorized(&state, &caller, id, Action::Post).await?;
    Ok(Json(Cancelled { cancelled: state.cancel(id).await }))
}

/// `POST /v1/conversations/{id}/continue` (members): runs the agent on the history as it is
/// (after a stopped turn, or after an edit); its events follow on the conversation's streams.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/continue",
    tag = "turns",
    params(("id" = ConversationId, Path, description = "The conversation")),
    responses((status = 202, description = "The turn starts (or runs after the one in progress)"), Errors),
    security(("bearer" = []))
)]
pub async fn continue_turn(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
) -> Result<StatusCode, ApiError> {
    authorized(&state, &caller, id, Action::Post).await?;
    state.engine.continue_conversation(id).await?;
    Ok(StatusCode::ACCEPTED)
}
