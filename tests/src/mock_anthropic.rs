//! A local server that speaks Anthropic's Messages API wire format, so that tests run the real
//! HTTP client against it: `POST /v1/messages` answered with the scripted replies in order,
//! streamed as `text/event-stream` exactly as Anthropic streams them (`event: message_start`,
//! `content_block_start`, `content_block_delta`, `content_block_stop`, `message_delta`,
//! `message_stop`, with `ping`s and `error` events).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use futures::StreamExt;

use crate::server::{Server, Shared, lock};

/// What the server answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum MockReply {
    /// A `200 text/event-stream` of these event objects, each sent as `event: <its type>` and
    /// `data: <the object>`.
    Events(Vec<serde_json::Value>),
    /// A plain answer, for errors: this status, these extra headers and this JSON body.
    Status {
        /// The HTTP status.
        status: u16,
        /// Extra headers, such as `retry-after`.
        headers: Vec<(String, String)>,
        /// The JSON body ([`events::error_body`] builds Anthropic's).
        body: serde_json::Value,
    },
    /// A `200 text/event-stream` with exactly this body, for malformed or cut streams.
    RawSse(String),
    /// A `200 text/event-stream` of these events that then stays open without another byte.
    Stall(Vec<serde_json::Value>),
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    /// Header names (lowercase) and values.
    headers: BTreeMap<String, String>,
    /// The JSON body (a body that is not JSON is kept as a string).
    body: serde_json::Value,
}

/// What the handler shares with the test.
#[derive(Debug, Default)]
struct Script {
    /// Replies not yet given, in order.
    replies: VecDeque<MockReply>,
    /// Every request received, in order.
    requests: Vec<Received>,
}

type SharedScript = Shared<Script>;

/// A running mock server on `127.0.0.1`; it shuts down when dropped.
#[derive(Debug)]
pub struct MockAnthropic {
    server: Server<Script>,
}

impl MockAnthropic {
    /// Starts a server on a free port that answers each request with the next of `replies`; once
    /// they are used up it answers 500 with an `api_error` saying so.
    pub async fn start(replies: Vec<MockReply>) -> anyhow::Result<Self> {
        let script = Script { replies: replies.into(), requests: Vec::new() };
        Ok(Self { server: Server::start(script, vec![("/v1/messages", post(messages))]).await? })
    }

    /// The API root to configure a client with, `http://127.0.0.1:PORT` (`/v1/messages` is
    /// appended by the client, as for `https://api.anthropic.com`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The request bodies received so far, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.server.lock().requests.iter().map(|request| request.body.clone()).collect()
    }

    /// The value of header `name` (any case) on each request received so far, in order.
    pub fn header(&self, name: &str) -> Vec<Option<String>> {
        let name = name.to_ascii_lowercase();
        self.server.lock().requests.iter().map(|request| request.headers.get(&name).cloned()).collect()
    }
}

async fn messages(State(script): State<SharedScript>, headers: HeaderMap, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let headers = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let (reply, number) = {
        let mut script = lock(&script);
        script.requests.push(Received { headers, body });
        (script.replies.pop_front(), script.requests.len())
    };
    match reply {
        Some(MockReply::Events(events)) => {
            // One body frame per event, as a real server flushes them.
            let frames: Vec<Result<String, Infallible>> = events.iter().map(|event| Ok(frame(event))).collect();
            event_stream(Body::from_stream(futures::stream::iter(frames)))
        }
        Some(MockReply::RawSse(text)) => event_stream(Body::from(text)),
        Some(MockReply::Stall(events)) => {
            let frames: Vec<Result<String, Infallible>> = events.iter().map(|event| Ok(frame(event))).collect();
            event_stream(Body::from_stream(futures::stream::iter(frames).chain(futures::stream::pending())))
        }
        Some(MockReply::Status { status, headers, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = json_response(status, &body);
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        None => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &events::error_body(
                "api_error",
                &format!("the mock Anthropic server has no reply left for request {number}"),
            ),
        ),
    }
}

/// One server-sent event, named by the object's `type` as Anthropic names them.
pub fn frame(event: &serde_json::Value) -> String {
    let name = event.get("type").and_then(serde_json::Value::as_str).unwrap_or("message");
    format!("event: {name}\ndata: {event}\n\n")
}

fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("request-id", HeaderValue::from_static("req_mock0001"));
    response
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Builders for realistic Messages API stream events, as Anthropic sends them.
pub mod events {
    use serde_json::{Value, json};

    /// The id of every mock message.
    pub const MESSAGE_ID: &str = "msg_mock0001";

    /// The first event: the message shell and the prompt's usage.
    pub fn message_start(model: &str, input_tokens: u64) -> Value {
        message_start_with_cache(model, input_tokens, 0, 0)
    }

    /// The first event, with prompt-cache token counts.
    pub fn message_start_with_cache(model: &str, input_tokens: u64, cache_write: u64, cache_read: u64) -> Value {
        json!({
            "type": "message_start",
            "message": {
                "id": MESSAGE_ID,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": cache_write,
                    "cache_read_input_tokens": cache_read,
                    "output_tokens": 1,
                    "service_tier": "standard"
                }
            }
        })
    }

    /// `{"type": "ping"}`, which Anthropic sends anywhere in a stream.
    pub fn ping() -> Value {
        json!({"type": "ping"})
    }

    /// The start of a text block.
    pub fn text_start(index: u32) -> Value {
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
    }

    /// More text of block `index`.
    pub fn text_delta(index: u32, text: &str) -> Value {
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
    }

    /// The start of a `tool_use` block; its input comes as [`input_json_delta`]s.
    pub fn tool_use_start(index: u32, id: &str, name: &str) -> Value {
        json!({
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}
        })
    }

    /// More of the JSON input of `tool_use` block `index`.
    pub fn input_json_delta(index: u32, partial_json: &str) -> Value {
        json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial_json}
        })
    }

    /// The end of block `index`.
    pub fn block_stop(index: u32) -> Value {
        json!({"type": "content_block_stop", "index": index})
    }

    /// The stop reason and the output token count.
    pub fn message_delta(stop_reason: &str, output_tokens: u64) -> Value {
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}
        })
    }

    /// The last event.
    pub fn message_stop() -> Value {
        json!({"type": "message_stop"})
    }

    /// An `error` event, as sent when the server fails mid-stream (`overloaded_error`, ...).
    pub fn error(kind: &str, message: &str) -> Value {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    }

    /// The JSON body of an error answer.
    pub fn error_body(kind: &str, message: &str) -> Value {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock0001"})
    }

    /// A text answer: one text block streamed in `pieces` (with a ping after its start), ending
    /// `end_turn`, with `(input, output)` tokens.
    pub fn text(model: &str, pieces: &[&str], usage: (u64, u64)) -> Vec<Value> {
        let mut events = vec![message_start(model, usage.0), text_start(0), ping()];
        events.extend(pieces.iter().map(|piece| text_delta(0, piece)));
        events.extend([block_stop(0), message_delta("end_turn", usage.1), message_stop()]);
        events
    }

    /// A reply with an optional text block, then one `tool_use` block per call
    /// `(id, name, input pieces)`, ending `tool_use`, with `(input, output)` tokens.
    pub fn tool_uses(
        model: &str,
        text: Option<&str>,
        calls: &[(&str, &str, &[&str])],
        usage: (u64, u64),
    ) -> Vec<Value> {
        let mut events = vec![message_start(model, usage.0)];
        let mut index = 0;
        if let Some(text) = text {
            events.extend([text_start(0), text_delta(0, text), block_stop(0)]);
            index = 1;
        }
        for (id, name, pieces) in calls {
            events.push(tool_use_start(index, id, name));
            events.extend(pieces.iter().map(|piece| input_json_delta(index, piece)));
            events.push(block_stop(index));
            index += 1;
        }
        events.extend([message_delta("tool_use", usage.1), message_stop()]);
        events
    }
}
