//! `/v1/ws`: the upgrade (Origin, key, connection limits), then per connection a reader loop
//! that handles client frames and a writer task that owns the socket's sending half, joined by
//! `select!` as in axum's chat example, and one forwarding task per subscription.
//!
//! What a connection has not read is bounded in bytes ([`Outbound`]): replies never wait (so a
//! `cancel` always gets through), subscriptions wait for room, and a client that stays behind
//! is disconnected (1013) instead of growing memory or slowing anyone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use colloquy_core_model::{ConversationId, ParticipantId, ParticipantRole, TurnEvent};
use colloquy_engine::{PostMessage, QueuePolicy};
use futures::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::auth::{Caller, SUBPROTOCOL};
use crate::error::{ApiError, ErrorCode};
use crate::limits::{ConnectionPermits, FrameLimiter};
use crate::policy::{self, Action};
use crate::protocol::{Ack, ClientFrame, ServerFrame, parse};

/// Close codes (RFC 6455 §7.4.1).
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How long a closing connection's writer gets to send its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// `GET /v1/ws`: the WebSocket protocol of docs/protocol.md (key as a bearer header or the
/// `colloquy.key.<key>` subprotocol).
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "websocket",
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::error::ErrorBody),
        (status = 401, description = "No key, or a bad one", body = crate::error::ErrorBody),
        (status = 403, description = "A web page of an origin that is not allowed", body = crate::error::ErrorBody),
        (status = 503, description = "Too many connections, or stopping", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::bad_request(
                ErrorCode::NotAWebsocket,
                format!("{}: open /v1/ws with a WebSocket client", rejection.body_text()),
            )
            .into_response();
        }
    };
    match admit(&state, &headers).await {
        Ok((caller, permits)) => {
            let hard = state.config.limits.max_frame_hard_bytes;
            let offered = headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == SUBPROTOCOL);
            // Select `colloquy.v1` when offered; the key subprotocol is never echoed.
            let ws = if offered { ws.protocols([SUBPROTOCOL]) } else { ws };
            // Clients send small frames: a 4 KiB read buffer (tungstenite's default is 128 KiB)
            // keeps an idle connection small; a larger frame just takes more reads.
            ws.max_message_size(hard)
                .max_frame_size(hard)
                .read_buffer_size(4 * 1024)
                .on_upgrade(move |socket| connection(state, caller, permits, socket))
        }
        Err(error) => error.into_response(),
    }
}

/// Checks an upgrade: the server is not stopping, the page's Origin is allowed, the key is
/// good, and there is room for one more connection.
async fn admit(state: &AppState, headers: &HeaderMap) -> Result<(Caller, ConnectionPermits), ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "the server is shutting down: reconnect in a moment",
        ));
    }
    check_origin(state, headers)?;
    let caller = state.auth.authenticate(headers).await?;
    let permits = state.limits.connect(&caller)?;
    Ok((caller, permits))
}

/// Web pages may open connections only from the gateway's own origin, from loopback pages, or
/// from `allowed_origins`; clients that are not browsers send no Origin and are not affected.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let (scheme, rest) = origin.split_once("://").unwrap_or(("", ""));
    let origin_host = rest.split('/').next().unwrap_or_default();
    let hostname = origin_host
        .rsplit_once(':')
        .map_or(origin_host, |(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { origin_host });
    let web = matches!(scheme, "http" | "https");
    let same_origin = web && !host.is_empty() && origin_host.eq_ignore_ascii_case(host);
    let loopback = web && matches!(hostname, "localhost" | "127.0.0.1" | "[::1]");
    let listed = state.config.allowed_origins.iter().any(|allowed| allowed.trim_end_matches('/') == origin);
    if same_origin || loopback || listed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "WebSocket connections from pages at `{origin}` are not allowed: add it to allowed_origins in colloquy.toml"
        )))
    }
}

/// One item for the writer.
enum Outgoing {
    /// A frame (cheap to share: an event frame is the same bytes for every subscriber).
    Text(Utf8Bytes),
    /// The last frame.
    Close(u16, String),
}

/// What a connection has queued and not yet written, bounded in bytes.
#[derive(Clone)]
struct Outbound {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
    /// Wakes subscriptions waiting for room.
    room: Arc<Notify>,
    /// Bytes a connection may have queued.
    limit: usize,
    /// How long a subscription waits for room before the client is given up on.
    patience: Duration,
    /// Cancelled when the client is too far behind: the connection closes (1013).
    behind: CancellationToken,
}

impl Outbound {
    /// Queues a reply to the client's own frame. Never waits: a client's `cancel` must get its
    /// answer however far behind its events are. Replies are small and rate-limited with the
    /// frames they answer; past twice the limit the client is given up on.
    fn reply(&self, text: String) {
        let queued = self.queued.fetch_add(text.len(), Ordering::AcqRel) + text.len();
        if queued > self.limit.saturating_mul(2) {
            self.behind.cancel();
        }
        let _ = self.tx.send(Outgoing::Text(text.into()));
    }

    /// Queues an event, waiting while the connection is over its limit; gives up on the client
    /// (and returns `false`) if it stays behind for `patience`.
    async fn event(&self, text: Utf8Bytes) -> bool {
        let wait_for_room = async {
            while self.queued.load(Ordering::Acquire) > self.limit {
                let room = self.room.notified();
                if self.queued.load(Ordering::Acquire) <= self.limit {
                    break;
                }
                room.await;
            }
        };
        if tokio::time::timeout(self.patience, wait_for_room).await.is_err() {
            self.behind.cancel();
            return false;
        }
        self.queued.fetch_add(text.len(), Ordering::AcqRel);
        self.tx.send(Outgoing::Text(text)).is_ok()
    }

    fn close(&self, code: u16, reason: impl Into<String>) {
        let _ = self.tx.send(Outgoing::Close(code, reason.into()));
    }
}

async fn connection(state: AppState, caller: Caller, permits: ConnectionPermits, socket: WebSocket) {
    crate::telemetry::connections(1.0);
    let span = tracing::info_span!("connection", account = %caller.account.name, key = ?caller.key);
    tracing::Instrument::instrument(serve_connection(state, caller, socket), span).await;
    drop(permits);
    crate::telemetry::connections(-1.0);
}

async fn serve_connection(state: AppState, caller: Caller, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let limits = &state.config.limits;
    let outbound = Outbound {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        room: Arc::new(Notify::new()),
        limit: limits.outbound_queue_bytes,
        patience: Duration::from_millis(limits.slow_reader_timeout_ms),
        behind: CancellationToken::new(),
    };
    let (queued, room, behind) = (Arc::clone(&outbound.queued), Arc::clone(&outbound.room), outbound.behind.clone());
    let mut writer = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            match item {
                // A client given up on gets its close frame next, not what it did not read.
                Outgoing::Text(text) if behind.is_cancelled() => {
                    queued.fetch_sub(text.len(), Ordering::AcqRel);
                }
                Outgoing::Text(text) => {
                    let len = text.len();
                    let sent = sink.send(Message::Text(text)).await;
                    queued.fetch_sub(len, Ordering::AcqRel);
                    room.notify_waiters();
                    if sent.is_err() {
                        break;
                    }
                }
                Outgoing::Close(code, reason) => {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });

    let mut revocations = state.auth.revocations();
    let expiry = caller.expires_at.map(|at| (at - chrono::Utc::now()).to_std().unwrap_or_default());
    let expired = async move {
        match expiry {
            Some(left) => tokio::time::sleep(left).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let mut session = Session {
        frames: state.limits.frame_limiter(),
        state: state.clone(),
        caller,
        outbound: outbound.clone(),
        subscriptions: HashMap::new(),
    };
    // A finished JoinHandle must not be polled again.
    let mut writer_done = false;
    let closing = loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(close) = session.handle_text(text.as_str()).await {
                        break Some(close);
                    }
                }
                Some(Ok(Message::Binary(_))) => session.outbound.reply(error_frame(
                    None,
                    ApiError::bad_request(ErrorCode::BinaryNotSupported, "binary frames are not supported: send JSON text frames"),
                )),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(error)) => break read_failure(error, limits.max_frame_hard_bytes),
            },
            revoked = revocations.recv() => {
                if let Ok(key) = revoked && Some(key) == session.caller.key {
                    break Some((close::POLICY_VIOLATION, "the API key was revoked".to_owned()));
                }
            }
            () = &mut expired => break Some((close::POLICY_VIOLATION, "the API key expired".to_owned())),
            () = state.shutdown.cancelled() => {
                break Some((close::GOING_AWAY, "the server is shutting down: reconnect in a moment".to_owned()));
            }
            () = outbound.behind.cancelled() => {
                crate::telemetry::slow_reader_dropped();
                break Some((close::TRY_AGAIN_LATER, "this client did not read its events: read faster, then reconnect with after_seq".to_owned()));
            }
            _ = &mut writer => {
                writer_done = true;
                break None;
            }
        }
    };
    if let Some((code, reason)) = closing {
        tracing::debug!(code, %reason, "closing a websocket connection");
        outbound.close(code, reason);
    }
    drop(session);
    drop(outbound);
    // A client that does not read may never take the close frame: give it a moment, then drop.
    if !writer_done && tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// The close code for a read error, or `None` when the connection simply broke.
fn read_failure(error: axum::Error, hard_limit: usize) -> Option<(u16, String)> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((
            close::TOO_BIG,
            format!("a frame or message was larger than {hard_limit} bytes: send less per frame"),
        )),
        Some(tungstenite::Error::Utf8(_)) => Some((close::INVALID_DATA, "a text frame was not valid UTF-8".to_owned())),
        Some(tungstenite::Error::Protocol(violation)) => {
            Some((close::PROTOCOL_ERROR, format!("websocket protocol violation: {violation}")))
        }
        _ => {
            tracing::debug!(error = %inner, "websocket read failed; closing the connection");
            None
        }
    }
}

struct Session {
    state: AppState,
    caller: Caller,
    frames: FrameLimiter,
    outbound: Outbound,
    /// The forwarding task of each subscribed conversation, and the participant it keeps online.
    subscriptions: HashMap<ConversationId, (JoinHandle<()>, Option<ParticipantId>)>,
}

impl Session {
    /// Ends a subscription: its task is told to stop and its participant may go offline.
    /// Returns the task, which may still be queueing one last event until it has stopped.
    fn stop_subscription(&mut self, conversation: ConversationId) -> Option<JoinHandle<()>> {
        let (task, participant) = self.subscriptions.remove(&conversation)?;
        task.abort();
        crate::telemetry::subscriptions(-1.0);
        if let Some(participant) = participant {
            self.state.presence.leave(&self.state.engine, conversation, participant);
        }
        Some(task)
    }

    /// Ends a subscription and waits until its task has stopped, so nothing of it is queued
    /// after what the caller queues next (the unsubscribe's ack, a new subscription's replay).
    async fn end_subscription(&mut self, conversation: ConversationId) -> bool {
        match self.stop_subscription(conversation) {
            Some(task) => {
                // An aborted task ends at its next await; `Err(cancelled)` is the expected end.
                let _ = task.await;
                true
            }
            None => false,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let conversations: Vec<ConversationId> = self.subscriptions.keys().copied().collect();
        for conversation in conversations {
            self.stop_subscription(conversation);
        }
    }
}

fn encode(frame: &ServerFrame<'_>) -> String {
    // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
    serde_json::to_string(frame).unwrap_or_else(|_| {
        r#"{"type":"error","code":"internal","message":"encoding failed","retryable":false}"#.to_owned()
    })
}

fn error_frame(id: Option<String>, error: ApiError) -> String {
    encode(&ServerFrame::Error { id, error })
}

fn ack(ack: Ack) -> String {
    encode(&ServerFrame::Ack(ack))
}

impl Session {
    /// Handles one client frame; returns a close code and reason when the connection must end.
    async fn handle_text(&mut self, text: &str) -> Option<(u16, String)> {
        if self.caller.key.is_some_and(|key| self.state.auth.is_revoked(key)) {
            return Some((close::POLICY_VIOLATION, "the API key was revoked".to_owned()));
        }
        if let Err(error) = self.frames.check() {
            self.outbound.reply(error_frame(None, error));
            return None;
        }
        let limit = self.state.config.max_frame_bytes;
        if text.len() > limit {
            self.outbound.reply(error_frame(
                None,
                ApiError::bad_request(
                    ErrorCode::FrameTooLarge,
                    format!("the frame has {} bytes, more than the limit of {limit}: send less per frame", text.len()),
                ),
            ));
            return None;
        }
        let reply = match parse(text) {
            Ok(frame) => {
                let span = tracing::debug_span!("frame", kind = frame.kind(), id = ?frame.id());
                tracing::Instrument::instrument(self.handle(frame), span).await
            }
            Err((id, error)) => Some(error_frame(id, error)),
        };
        if let Some(reply) = reply {
            self.outbound.reply(reply);
        }
        None
    }

    async fn handle(&mut self, frame: ClientFrame) -> Option<String> {
        if self.state.shutdown.is_cancelled() {
            let error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ShuttingDown,
                "the server is shutting down: reconnect in a moment",
            );
            return Some(error_frame(frame.id(), error));
        }
        Some(match frame {
            ClientFrame::Ping { id } => encode(&ServerFrame::Pong { id }),
            ClientFrame::Subscribe { id, conversation_id, after_seq } => {
                // The ack goes out before the first event, so the client knows it is subscribed.
                match self.subscribe(id.clone(), conversation_id, after_seq).await {
                    Ok(()) => return None,
                    Err(error) => error_frame(id, error),
                }
            }
            ClientFrame::Unsubscribe { id, conversation_id } => match self.end_subscription(conversation_id).await {
                true => ack(Ack { id, conversation_id: Some(conversation_id), ..Ack::default() }),
                false => error_frame(
                    id,
                    ApiError::bad_request(
                        ErrorCode::NotSubscribed,
                        format!("this connection is not subscribed to {conversation_id}"),
                    ),
                ),
            },
            ClientFrame::Send { id, conversation_id, client_msg_id, content, sender, queue } => {
                match self.send(conversation_id, client_msg_id, content, sender, queue).await {
                    Ok(posted) => ack(Ack {
                        id,
                        conversation_id: Some(conversation_id),
                        seq: Some(posted.message.seq),
                        message_id: Some(posted.message.id),
                        duplicate: Some(posted.duplicate),
                        queued: Some(posted.queued),
                        cancelled: None,
                    }),
                    Err(error) => error_frame(id, error),
                }
            }
            ClientFrame::Approve { id, conversation_id, tool_call_id, decision, reason } => {
                match self.approve(conversation_id, &tool_call_id, decision, reason).await {
                    Ok(()) => ack(Ack { id, conversation_id: Some(conversation_id), ..Ack::default() }),
                    Err(error) => error_frame(id, error),
                }
            }
            ClientFrame::Typing { id, conversation_id } => match self.typing(conversation_id).await {
                Ok(()) => ack(Ack { id, conversation_id: Some(conversation_id), ..Ack::default() }),
                Err(error) => error_frame(id, error),
            },
            ClientFrame::Edit { id, conversation_id, message_id, content } => {
                match self.edit(conversation_id, message_id, content).await {
                    Ok(message) => ack(Ack {
                        id,
                        conversation_id: Some(conversation_id),
                        seq: Some(message.seq),
                        message_id: Some(message.id),
                        ..Ack::default()
                    }),
                    Err(error) => error_frame(id, error),
                }
            }
            ClientFrame::Cancel { id, conversation_id } => match self.authorize(conversation_id, Action::Post).await {
                Ok(_) => {
                    let cancelled = self.state.cancel(conversation_id).await;
                    ack(Ack {
                        id,
                        conversation_id: Some(conversation_id),
                        cancelled: Some(cancelled),
                        ..Ack::default()
                    })
                }
                Err(error) => error_frame(id, error),
            },
        })
    }

    async fn authorize(
        &self,
        conversation: ConversationId,
        action: Action,
    ) -> Result<(policy::Access, Vec<colloquy_core_model::Participant>), ApiError> {
        let participants = self.state.engine.participants(conversation).await?;
        // An empty list means no such conversation (every conversation has someone in it).
        if participants.is_empty() {
            self.state.engine.conversation(conversation).await?;
        }
        let access = policy::authorize(&self.caller, conversation, &participants, action)?;
        Ok((access, participants))
    }

    async fn send(
        &self,
        conversation: ConversationId,
        client_msg_id: Option<String>,
        content: crate::protocol::Content,
        sender: Option<ParticipantId>,
        queue: bool,
    ) -> Result<colloquy_engine::Posted, ApiError> {
        let (access, participants) = self.authorize(conversation, Action::Post).await?;
        let sender = policy::sender(&self.caller, &access, &participants, sender)?;
        let queue = if queue { QueuePolicy::Queue } else { QueuePolicy::Reject };
        let post = PostMessage { sender, content: content.into_parts(), client_msg_id, queue };
        Ok(self.state.engine.post_message(conversation, post).await?)
    }

    /// `approve`: an owner allows or denies a waiting tool call.
    async fn approve(
        &self,
        conversation: ConversationId,
        call: &colloquy_core_model::ToolCallId,
        decision: crate::protocol::Decision,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        self.authorize(conversation, Action::Manage).await?;
        self.state.answer_approval(conversation, call, decision.answer(reason)).await
    }

    /// `typing`: tells the others, live only.
    async fn typing(&self, conversation: ConversationId) -> Result<(), ApiError> {
        let (access, _) = self.authorize(conversation, Action::Post).await?;
        let Some(participant) = access.participant else {
            return Err(ApiError::forbidden("you take no part in this conversation, so nobody can see you type"));
        };
        let event = TurnEvent::ParticipantTyping { participant_id: participant.id };
        Ok(self.state.engine.publish_ephemeral(conversation, event)?)
    }

    /// `edit`: replaces the content of one of the caller's messages (an owner's or admin's: any).
    async fn edit(
        &self,
        conversation: ConversationId,
        message: colloquy_core_model::MessageId,
        content: crate::protocol::Content,
    ) -> Result<colloquy_core_model::Message, ApiError> {
        let (access, _) = self.authorize(conversation, Action::Post).await?;
        crate::rest::check_editable(&self.state, conversation, &access, message).await?;
        Ok(self.state.engine.update_message(conversation, message, content.into_parts()).await?)
    }

    async fn subscribe(
        &mut self,
        id: Option<String>,
        conversation: ConversationId,
        after_seq: u64,
    ) -> Result<(), ApiError> {
        let cap = self.state.config.limits.max_subscriptions_per_connection;
        if !self.subscriptions.contains_key(&conversation) && self.subscriptions.len() >= cap {
            return Err(ApiError::bad_request(
                ErrorCode::TooManySubscriptions,
                format!("this connection follows {cap} conversations already: unsubscribe from one first"),
            ));
        }
        let (access, _) = self.authorize(conversation, Action::Read).await?;
        let mut subscription = self.state.engine.subscribe(conversation, after_seq).await?;
        let outbound = self.outbound.clone();
        let me = access.participant.as_ref().map(|p| p.id);
        // Joined before the subscription it replaces leaves, so a re-subscribe does not look
        // like going offline and coming back.
        if let Some(me) = me {
            self.state.presence.join(&self.state.engine, conversation, me);
        }
        self.end_subscription(conversation).await;
        outbound.reply(ack(Ack { id, conversation_id: Some(conversation), ..Ack::default() }));
        let online = self.state.presence.online(conversation);
        outbound.reply(encode(&ServerFrame::Presence { conversation_id: conversation, online }));
        // Approval requests go to those who may answer them.
        let may_approve = access.admin || access.participant.as_ref().is_some_and(|p| p.role == ParticipantRole::Owner);
        let task = tokio::spawn(async move {
            loop {
                let delivery = match subscription.next_shared().await {
                    Ok(delivery) => delivery,
                    Err(error) => {
                        tracing::error!(%error, %conversation, "subscription failed to read the event log");
                        outbound.reply(error_frame(None, ApiError::from(error)));
                        break;
                    }
                };
                let envelope = delivery.envelope();
                match &envelope.event {
                    TurnEvent::ApprovalRequested { .. } if !may_approve => continue,
                    // Its own coming online: the presence frame after the ack said so.
                    TurnEvent::ParticipantPresence { participant_id, .. } if Some(*participant_id) == me => continue,
                    _ => {}
                }
                // Encoded once for every subscriber of a live event; always UTF-8 (JSON text).
                let frame = delivery.encoded(|envelope| {
                    encode(&ServerFrame::Event {
                        conversation_id: envelope.conversation_id,
                        seq: envelope.seq,
                        event: &envelope.event,
                    })
                });
                let Ok(frame) = Utf8Bytes::try_from(frame) else {
                    tracing::error!(%conversation, "an event frame was not UTF-8: the subscription ended");
                    break;
                };
                if !outbound.event(frame).await {
                    break;
                }
                // A participant taken out of the conversation stops receiving it at once.
                if let TurnEvent::ParticipantLeft { participant_id } = envelope.event
                    && Some(participant_id) == me
                {
                    outbound.reply(error_frame(
                        None,
                        ApiError::forbidden(format!(
                            "you were taken out of conversation {conversation}: this subscription ended"
                        )),
                    ));
                    break;
                }
            }
        });
        crate::telemetry::subscriptions(1.0);
        self.subscriptions.insert(conversation, (task, me));
        Ok(())
    }
}
