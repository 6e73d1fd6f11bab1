//! `/v1/conversations/{id}/events`: the durable event log after a seq as JSON pages, or, with
//! `Accept: text/event-stream`, the live stream as Server-Sent Events that resumes from
//! `Last-Event-ID`: for clients that cannot hold a WebSocket.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use colloquy_core_model::{ConversationId, EventEnvelope, ParticipantRole, TurnEvent};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Errors, authorized};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiPath, ApiQuery, page_limit};
use crate::policy::Action;

/// Query of `GET .../events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events with a greater seq (default 0: from the start). A `Last-Event-ID` header wins.
    after_seq: Option<u64>,
    /// JSON pages: at most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A page of the event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    /// In seq order.
    events: Vec<EventEnvelope>,
    /// Pass as `after_seq` for the next page; absent when this was the end of the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after_seq: Option<u64>,
}

/// `GET /v1/conversations/{id}/events`: JSON pages of the durable log, or with
/// `Accept: text/event-stream` the live stream: every event after the seq (from `Last-Event-ID`
/// or `after_seq`) then live ones, each as an SSE event whose `id` is its seq (ephemeral ones
/// have none), `event` its type and `data` the same frame the WebSocket sends.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/events",
    tag = "events",
    params(
        ("id" = ConversationId, Path, description = "The conversation"),
        ("Last-Event-ID" = Option<String>, Header, description = "SSE: resume after this seq"),
        EventsQuery
    ),
    responses(
        (status = 200, description = "A page (JSON), or the live stream (SSE)", content(
            (EventsPage = "application/json"),
            (String = "text/event-stream"),
        )),
        Errors
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let (access, _) = authorized(&state, &caller, id, Action::Read).await?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim);
    let after = match last_event_id {
        Some(id) => id.parse::<u64>().map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidQuery, "Last-Event-ID must be the seq of an event this stream sent")
        })?,
        None => query.after_seq.unwrap_or(0),
    };
    if !wants_stream {
        let limit = page_limit(query.limit, 100, 1000)?;
        let events = state.engine.events_after(id, after, limit).await?;
        let next_after_seq = (events.len() as u64 == limit).then(|| events.last().and_then(|e| e.seq)).flatten();
        return Ok(Json(EventsPage { events, next_after_seq }).into_response());
    }
    // A stream holds a connection's place, as a WebSocket does.
    let permits = state.limits.connect(&caller)?;
    let mut subscription = state.engine.subscribe(id, after).await?;
    let me = access.participant.as_ref().map(|p| p.id);
    let may_approve = access.admin || access.participant.as_ref().is_some_and(|p| p.role == ParticipantRole::Owner);
    if let Some(me) = me {
        state.presence.join(&state.engine, id, me);
    }
    // One task follows the conversation and feeds the response; it ends (and so does the
    // stream) when the participant is taken out, its key is revoked, the server stops or the
    // client goes away.
    let (events, received) = tokio::sync::mpsc::channel::<EventEnvelope>(64);
    let follower = Follower { state: state.clone(), conversation: id, me, _permits: permits };
    let mut revocations = state.auth.revocations();
    let shutdown = state.shutdown.clone();
    let key = caller.key;
    tokio::spawn(async move {
        let _follower = follower;
        loop {
            let envelope = tokio::select! {
                next = subscription.next() => match next {
                    Ok(envelope) => envelope,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
                // The client went away.
                () = events.closed() => break,
                revoked = revocations.recv() => match revoked {
                    Ok(revoked) if key == Some(revoked) => break,
                    _ => continue,
                },
            };
            match &envelope.event {
                TurnEvent::ApprovalRequested { .. } if !may_approve => continue,
                // Its own coming online: the `presence` event at the start said so.
                TurnEvent::ParticipantPresence { participant_id, .. } if Some(*participant_id) == me => continue,
                _ => {}
            }
            let left =
                matches!(envelope.event, TurnEvent::ParticipantLeft { participant_id } if Some(participant_id) == me);
            if events.send(envelope).await.is_err() || left {
                break;
            }
        }
    });
    // First who is online (as the WebSocket's `presence` frame after a subscription's ack).
    let online = crate::protocol::ServerFrame::Presence { conversation_id: id, online: state.presence.online(id) };
    let presence = Event::default().event("presence").data(serde_json::to_string(&online).unwrap_or_default());
    let stream = tokio_stream::wrappers::ReceiverStream::new(received).map(|envelope| {
        let frame = serde_json::json!({
            "type": "event",
            "conversation_id": envelope.conversation_id,
            "seq": envelope.seq,
            "event": envelope.event,
        });
        let mut event = Event::default().event(envelope.event.kind()).data(frame.to_string());
        if let Some(seq) = envelope.seq {
            event = event.id(seq.to_string());
        }
        Ok::<_, Infallible>(event)
    });
    let stream = futures::stream::once(async { Ok(presence) }).chain(stream);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// What an SSE stream keeps online, and whom it belongs to.
struct Follower {
    state: AppState,
    conversation: ConversationId,
    me: Option<colloquy_core_model::ParticipantId>,
    _permits: crate::limits::ConnectionPermits,
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(me) = self.me {
            self.state.presence.leave(&self.state.engine, self.conversation, me);
        }
    }
}
