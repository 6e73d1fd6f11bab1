//! `/v1/conversations/{id}/messages`: the history page by page in either direction, sending
//! (idempotent, optionally waiting for the answer), editing and removing between turns, and the
//! history that fits a token budget.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use colloquy_core_model::{ConversationId, Message, MessageId, MessageRole, ParticipantId, StopReason, TurnEvent};
use colloquy_engine::{PostMessage, QueuePolicy};
use colloquy_store::MessageCursor;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Errors, authorized, check_editable};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery, page_limit};
use crate::policy::{self, Action};
use crate::protocol::{Content, ContentSchema};

/// Query of `GET .../messages`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Messages with a greater seq (forwards; the default, from the start).
    after_seq: Option<u64>,
    /// Messages with a smaller seq (backwards, e.g. from the newest: a large number).
    before_seq: Option<u64>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A page of messages, oldest first within the page.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesPage {
    messages: Vec<Message>,
    /// Going forwards: pass as `after_seq` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after_seq: Option<u64>,
    /// Going backwards: pass as `before_seq` for the next (older) page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before_seq: Option<u64>,
}

/// `GET /v1/conversations/{id}/messages`: the history, in seq order (the order the models saw).
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "The conversation"), ListQuery),
    responses((status = 200, body = MessagesPage), Errors),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<MessagesPage>, ApiError> {
    let limit = page_limit(query.limit, 100, 1000)?;
    let cursor = match (query.after_seq, query.before_seq) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(ErrorCode::InvalidQuery, "give after_seq or before_seq, not both"));
        }
        (_, Some(before)) => MessageCursor::Before(before),
        (after, None) => MessageCursor::After(after.unwrap_or(0)),
    };
    authorized(&state, &caller, id, Action::Read).await?;
    let page = state.engine.messages_page(id, cursor, limit).await?;
    let (next_after_seq, next_before_seq) = match page.next {
        Some(MessageCursor::After(seq)) => (Some(seq), None),
        Some(MessageCursor::Before(seq)) => (None, Some(seq)),
        None => (None, None),
    };
    Ok(Json(MessagesPage { messages: page.items, next_after_seq, next_before_seq }))
}

/// At most this many messages in a `wait` reply (a turn's requests are bounded well below it).
const MAX_REPLY_MESSAGES: u64 = 1000;

/// Body of `POST .../messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// A string, or content parts (text, image, file, custom).
    #[schema(value_type = ContentSchema)]
    content: Content,
    /// The idempotency key (or send an `Idempotency-Key` header): a retry is stored once.
    client_msg_id: Option<String>,
    /// Post as another participant the caller owns (a service or agent of its account).
    sender: Option<ParticipantId>,
    /// `false`: refuse (`409 busy`) instead of queueing while an agent answers.
    #[serde(default = "yes")]
    queue: bool,
}

const fn yes() -> bool {
    true
}

/// Query of `POST .../messages`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// Answer only when the turn it starts has ended, with the reply.
    wait: Option<bool>,
    /// How long `wait` waits at most, in milliseconds (default 120000, at most 600000).
    timeout_ms: Option<u64>,
}

/// The answer to a send: the same as the WebSocket `ack`, and with `wait` the reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    conversation_id: ConversationId,
    /// The seq of the event that stored it (`message_queued` while it waits for the turn).
    seq: u64,
    message_id: MessageId,
    /// The key was used before: nothing new happened.
    duplicate: bool,
    /// It waits for the running turn to end.
    queued: bool,
    /// With `wait`: the messages the agents added after it, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<Vec<Message>>,
    /// With `wait`: why the turn that answered it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    stop: Option<StopReason>,
}

/// `POST /v1/conversations/{id}/messages`: posts a message (idempotent by `client_msg_id` or
/// `Idempotency-Key`). `202` with the ack; with `?wait=true`, `200` with the agent's reply once
/// the turn has ended (`504 timeout` if it takes longer than `timeout_ms`; it goes on).
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    tag = "messages",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("Idempotency-Key" = Option<String>, Header, description = "Used as client_msg_id when the body has none"),
        SendQuery
    ),
    request_body = SendMessage,
    responses(
        (status = 202, description = "Stored; the answer follows on the conversation's streams", body = Sent),
        (status = 200, description = "With wait=true: the turn ended", body = Sent),
        (status = 504, description = "With wait=true: the turn took longer than timeout_ms", body = crate::error::ErrorBody),
        Errors
    ),
    security(("bearer" = []))
)]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<SendQuery>,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(120_000).min(600_000));
    let (access, participants) = authorized(&state, &caller, id, Action::Post).await?;
    let sender = policy::sender(&caller, &access, &participants, body.sender)?;
    let key =
        body.client_msg_id.or_else(|| headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned));
    let queue = if body.queue { QueuePolicy::Queue } else { QueuePolicy::Reject };
    let post = PostMessage { sender, content: body.content.into_parts(), client_msg_id: key, queue };
    let wait = query.wait.unwrap_or(false);
    // A waiting request holds a connection's place, as a WebSocket does (taken before posting,
    // so that a refusal posts nothing).
    let _permits = if wait { Some(state.limits.connect(&caller)?) } else { None };
    let posted = state.engine.post_message(id, post).await?;
    let mut sent = Sent {
        conversation_id: id,
        seq: posted.message.seq,
        message_id: posted.message.id,
        duplicate: posted.duplicate,
        queued: posted.queued,
        reply: None,
        stop: None,
    };
    if !wait {
        return Ok((StatusCode::ACCEPTED, Json(sent)));
    }
    if tokio::time::timeout(timeout, state.engine.wait_for_idle(id)).await.is_err() {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Timeout,
            "the turn is still running: follow the conversation's events, or wait longer with timeout_ms",
        ));
    }
    // The message joined the history (with a new seq, if it was queued); the reply follows it.
    let admitted = state.engine.message(id, posted.message.id).await?;
    let mut reply = state.engine.messages_after(id, admitted.seq, MAX_REPLY_MESSAGES).await?;
    reply.retain(|m| m.role != MessageRole::User);
    let events = state.engine.events_after(id, admitted.seq, u64::MAX).await?;
    sent.stop = events.into_iter().find_map(|e| match e.event {
        TurnEvent::AgentEnd { stop, .. } => Some(stop),
        _ => None,
    });
    sent.reply = Some(reply);
    Ok((StatusCode::OK, Json(sent)))
}

/// Body of `PATCH .../messages/{message_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    /// The new content (an assistant message must keep exactly its tool calls).
    #[schema(value_type = ContentSchema)]
    content: Content,
}

/// `PATCH /v1/conversations/{id}/messages/{message_id}`: replaces a message's content between
/// turns (`message_updated`); its sender or an owner.
#[utoipa::path(
    patch,
    path = "/v1/conversations/{id}/messages/{message_id}",
    tag = "messages",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("message_id" = MessageId, Path, description = "The message")
    ),
    request_body = EditMessage,
    responses((status = 200, description = "The message as it now is", body = Message), Errors),
    security(("bearer" = []))
)]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, message)): ApiPath<(ConversationId, MessageId)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> Result<Json<Message>, ApiError> {
    let (access, _) = authorized(&state, &caller, id, Action::Post).await?;
    check_editable(&state, id, &access, message).await?;
    Ok(Json(state.engine.update_message(id, message, body.content.into_parts()).await?))
}

/// `DELETE /v1/conversations/{id}/messages/{message_id}`: takes a message out of the history
/// between turns (`message_removed`; an assistant message takes its tool results along).
#[utoipa::path(
    delete,
    path = "/v1/conversations/{id}/messages/{message_id}",
    tag = "messages",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("message_id" = MessageId, Path, description = "The message")
    ),
    responses((status = 204, description = "Removed"), Errors),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, message)): ApiPath<(ConversationId, MessageId)>,
) -> Result<StatusCode, ApiError> {
    let (access, _) = authorized(&state, &caller, id, Action::Post).await?;
    check_editable(&state, id, &access, message).await?;
    state.engine.remove_message(id, message).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET .../history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The token budget.
    max_tokens: u64,
}

/// The newest history within a token budget.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// Oldest first.
    messages: Vec<Message>,
    /// Their stored sizes, added up.
    tokens: u64,
    /// Older messages were left out.
    truncated: bool,
}

/// `GET /v1/conversations/{id}/history?max_tokens=`: the newest messages that fit.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/history",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "The conversation"), HistoryQuery),
    responses((status = 200, body = HistoryView), Errors),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryView>, ApiError> {
    authorized(&state, &caller, id, Action::Read).await?;
    let history = state.engine.history_within(id, query.max_tokens).await?;
    Ok(Json(HistoryView { messages: history.messages, tokens: history.tokens, truncated: history.truncated }))
}
