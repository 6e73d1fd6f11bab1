//! `/v1/ws`: one reader loop that handles client frames, one writer task that owns the socket's
//! sending half, and one forwarding task per subscription.

use std::collections::HashMap;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use colloquy_core_model::ConversationId;
use colloquy_engine::{PostMessage, QueuePolicy};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::AppState;
use crate::error::ApiError;
use crate::protocol::{Ack, ClientFrame, ServerFrame, parse};

/// Frames queued for one connection's writer. A subscription whose client reads slowly waits
/// here (and, if it falls far behind, re-reads the log), so memory per connection is bounded.
const OUTBOUND_QUEUE: usize = 256;
/// Frames above the configured limit but below this are answered with `frame_too_large`;
/// above it the connection is closed (1009), so one frame cannot take unbounded memory.
const HARD_FRAME_LIMIT: usize = 16 * 1024 * 1024;

pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let limit = HARD_FRAME_LIMIT.max(state.config.max_frame_bytes);
    ws.max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| connection(state, socket))
}

async fn connection(state: AppState, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbound, mut queue) = mpsc::channel::<String>(OUTBOUND_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(text) = queue.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut session = Session { state, outbound, subscriptions: HashMap::new() };
    while let Some(message) = stream.next().await {
        let reply = match message {
            Ok(Message::Text(text)) => session.handle_text(text.as_str()).await,
            Ok(Message::Binary(_)) => Some(error_frame(
                None,
                ApiError::bad_request("binary_not_supported", "binary frames are not supported: send JSON text frames"),
            )),
            Ok(Message::Close(_)) => break,
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            Err(error) => {
                tracing::debug!(%error, "websocket read failed; closing the connection");
                break;
            }
        };
        if let Some(reply) = reply
            && session.outbound.send(reply).await.is_err()
        {
            break;
        }
    }
    for (_, task) in session.subscriptions.drain() {
        task.abort();
    }
    drop(session);
    let _ = writer.await;
}

struct Session {
    state: AppState,
    outbound: mpsc::Sender<String>,
    /// The forwarding task of each subscribed conversation.
    subscriptions: HashMap<ConversationId, JoinHandle<()>>,
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
    /// Handles one client frame; returns the reply frame.
    async fn handle_text(&mut self, text: &str) -> Option<String> {
        let limit = self.state.config.max_frame_bytes;
        if text.len() > limit {
            return Some(error_frame(
                None,
                ApiError::bad_request(
                    "frame_too_large",
                    format!("the frame has {} bytes, more than the limit of {limit}: send less per frame", text.len()),
                ),
            ));
        }
        let frame = match parse(text) {
            Ok(frame) => frame,
            Err((id, error)) => return Some(error_frame(id, error)),
        };
        Some(match frame {
            ClientFrame::Ping { id } => encode(&ServerFrame::Pong { id }),
            ClientFrame::Subscribe { id, conversation_id, after_seq } => {
                // The ack goes out before the first event, so the client knows it is subscribed.
                match self.subscribe(id.clone(), conversation_id, after_seq).await {
                    Ok(()) => return None,
                    Err(error) => error_frame(id, error),
                }
            }
            ClientFrame::Unsubscribe { id, conversation_id } => match self.subscriptions.remove(&conversation_id) {
                Some(task) => {
                    task.abort();
                    ack(Ack { id, conversation_id: Some(conversation_id), ..Ack::default() })
                }
                None => error_frame(
                    id,
                    ApiError::bad_request(
                        "not_subscribed",
                        format!("this connection is not subscribed to {conversation_id}"),
                    ),
                ),
            },
            ClientFrame::Send { id, conversation_id, client_msg_id, content, sender, queue } => {
                let queue = if queue { QueuePolicy::Queue } else { QueuePolicy::Reject };
                let post = PostMessage { sender, content: content.into_parts(), client_msg_id, queue };
                match self.state.engine.post_message(conversation_id, post).await {
                    Ok(posted) => ack(Ack {
                        id,
                        conversation_id: Some(conversation_id),
                        seq: Some(posted.message.seq),
                        message_id: Some(posted.message.id),
                        duplicate: Some(posted.duplicate),
                        queued: Some(posted.queued),
                        cancelled: None,
                    }),
                    Err(error) => error_frame(id, error.into()),
                }
            }
            ClientFrame::Cancel { id, conversation_id } => {
                match self.state.engine.store().conversation(conversation_id).await {
                    Ok(_) => {
                        let cancelled = self.state.engine.cancel(conversation_id);
                        ack(Ack {
                            id,
                            conversation_id: Some(conversation_id),
                            cancelled: Some(cancelled),
                            ..Ack::default()
                        })
                    }
                    Err(error) => error_frame(id, error.into()),
                }
            }
        })
    }

    async fn subscribe(
        &mut self,
        id: Option<String>,
        conversation: ConversationId,
        after_seq: u64,
    ) -> Result<(), ApiError> {
        let mut subscription = self.state.engine.subscribe(conversation, after_seq).await?;
        let outbound = self.outbound.clone();
        if let Some(previous) = self.subscriptions.remove(&conversation) {
            previous.abort();
        }
        // If the writer is gone the connection is closing; the task below then ends at once.
        let _ = outbound.send(ack(Ack { id, conversation_id: Some(conversation), ..Ack::default() })).await;
        let task = tokio::spawn(async move {
            loop {
                let frame = match subscription.next().await {
                    Ok(envelope) => encode(&ServerFrame::Event {
                        conversation_id: envelope.conversation_id,
                        seq: envelope.seq,
                        event: &envelope.event,
                    }),
                    Err(error) => {
                        tracing::error!(%error, %conversation, "subscription failed to read the event log");
                        let error = ApiError::from(error);
                        let _ = outbound.send(error_frame(None, error)).await;
                        break;
                    }
                };
                if outbound.send(frame).await.is_err() {
                    break;
                }
            }
        });
        // A second subscribe to the same conversation replaced the first above.
        self.subscriptions.insert(conversation, task);
        Ok(())
    }
}
