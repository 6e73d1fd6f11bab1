//! A local server that speaks OpenAI's chat completions wire format, so that tests run the real
//! HTTP client against it: `POST /v1/chat/completions` answered with the scripted replies in
//! order, streamed as `text/event-stream` exactly as OpenAI streams `chat.completion.chunk`s;
//! optionally `GET /v1/models`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::server::{Server, Shared, lock};

/// What the server answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum MockReply {
    /// A `200 text/event-stream` of these chunk objects, each in its own `data:` event, then
    /// `data: [DONE]`.
    Chunks(Vec<serde_json::Value>),
    /// A plain answer, for errors: this status, these extra headers and this JSON body.
    Status {
        /// The HTTP status.
        status: u16,
        /// Extra headers, such as `Retry-After`.
        headers: Vec<(String, String)>,
        /// The JSON body.
        body: serde_json::Value,
    },
    /// A `200 text/event-stream` with exactly this body, for malformed or cut streams.
    RawSse(String),
    /// A `200 text/event-stream` of these chunks that then stays open without another byte: a
    /// server that hangs mid-answer (for cancellation and crash tests).
    Stall(Vec<serde_json::Value>),
    /// The inner reply, once the test calls [`MockOpenAi::release`]: holds a turn running for
    /// as long as the test needs, without sleeps. The request is recorded on arrival.
    Held(Box<MockReply>),
}

impl MockReply {
    /// `count` replies: a streamed calculator call (`call_<i>`, arguments split across chunks)
    /// and its streamed answer, in turn; every call id is its own.
    pub fn tool_rounds(count: usize) -> Vec<Self> {
        (0..count)
            .map(|i| {
                if i % 2 == 0 {
                    let id = format!("call_{i}");
                    let arguments: &[&str] = &["{\"expression\":", " \"6*7\"}"];
                    Self::Chunks(chunks::tool_calls("gpt-test", &[(&id, "calculator", arguments)], None))
                } else {
                    Self::Chunks(chunks::text("gpt-test", &["forty", "-two"], None))
                }
            })
            .collect()
    }
}

/// What the handler shares with the test.
#[derive(Debug)]
struct Script {
    /// Replies not yet given, in order.
    replies: VecDeque<MockReply>,
    /// Every request body received, in order (a body that is not JSON is kept as a string).
    requests: Vec<serde_json::Value>,
    /// One permit per [`MockOpenAi::release`], taken by each [`MockReply::Held`].
    releases: Arc<Semaphore>,
}

type SharedScript = Shared<Script>;

/// A running mock server on `127.0.0.1`; it shuts down when dropped.
#[derive(Debug)]
pub struct MockOpenAi {
    server: Server<Script>,
}

impl MockOpenAi {
    /// Starts a server on a free port that answers each request with the next of `replies`; once
    /// they are used up it answers 500 with a JSON error saying so.
    pub async fn start(replies: Vec<MockReply>) -> anyhow::Result<Self> {
        Self::serving(replies, None).await
    }

    /// Like [`MockOpenAi::start`], and also lists `models` at `GET /v1/models` (as OpenAI,
    /// Ollama, vLLM and llama.cpp do), so that clients can check model names.
    pub async fn start_with_models(replies: Vec<MockReply>, models: &[&str]) -> anyhow::Result<Self> {
        Self::serving(replies, Some(models.iter().map(|m| (*m).to_owned()).collect())).await
    }

    async fn serving(replies: Vec<MockReply>, models: Option<Vec<String>>) -> anyhow::Result<Self> {
        let script = Script { replies: replies.into(), requests: Vec::new(), releases: Arc::new(Semaphore::new(0)) };
        let mut routes = vec![("/v1/chat/completions", post(chat_completions))];
        if let Some(models) = models {
            let list = serde_json::json!({
                "object": "list",
                "data": models
                    .iter()
                    .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock" }))
                    .collect::<Vec<_>>(),
            });
            routes.push(("/v1/models", get(move || async move { json_response(StatusCode::OK, &list) })));
        }
        Ok(Self { server: Server::start(script, routes).await? })
    }

    /// The API root to configure a client with, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr)
    }

    /// Lets one [`MockReply::Held`] reply go (the next to arrive, if none is waiting yet).
    pub fn release(&self) {
        self.server.lock().releases.add_permits(1);
    }

    /// The request bodies received so far, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.server.lock().requests.clone()
    }
}

async fn chat_completions(State(script): State<SharedScript>, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let (mut reply, number, releases) = {
        let mut script = lock(&script);
        script.requests.push(body);
        (script.replies.pop_front(), script.requests.len(), Arc::clone(&script.releases))
    };
    while let Some(MockReply::Held(inner)) = reply {
        if let Ok(permit) = releases.acquire().await {
            permit.forget();
        }
        reply = Some(*inner);
    }
    match reply {
        Some(MockReply::Chunks(chunks)) => {
            // One body frame per event, as a real server flushes them.
            let events: Vec<Result<String, Infallible>> = chunks
                .iter()
                .map(|chunk| Ok(format!("data: {chunk}\n\n")))
                .chain([Ok("data: [DONE]\n\n".to_owned())])
                .collect();
            event_stream(Body::from_stream(futures::stream::iter(events)))
        }
        Some(MockReply::RawSse(text)) => event_stream(Body::from(text)),
        Some(MockReply::Stall(chunks)) => {
            let events: Vec<Result<String, Infallible>> =
                chunks.iter().map(|chunk| Ok(format!("data: {chunk}\n\n"))).collect();
            event_stream(Body::from_stream(futures::stream::iter(events).chain(futures::stream::pending())))
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
        Some(MockReply::Held(_)) | None => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({
                "error": {
                    "message": format!("the mock OpenAI server has no reply left for request {number}"),
                    "type": "server_error",
                    "param": null,
                    "code": null
                }
            }),
        ),
    }
}

fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Builders for realistic `chat.completion.chunk` objects, as OpenAI streams them.
pub mod chunks {
    use serde_json::{Value, json};

    /// The id every chunk of a mock reply shares.
    pub const COMPLETION_ID: &str = "chatcmpl-mock0001";

    /// One chunk with a single choice: this delta and finish reason. `with_usage_field` adds the
    /// `"usage": null` OpenAI puts on every chunk when `include_usage` is on.
    pub fn delta(model: &str, delta: Value, finish_reason: Option<&str>, with_usage_field: bool) -> Value {
        let mut chunk = json!({
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
        });
        if with_usage_field {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The last chunk when `include_usage` is on: no choices, the request's token counts.
    pub fn usage(model: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
        json!({
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0
                }
            }
        })
    }

    /// A text answer: a role chunk, one chunk per piece, a `stop` chunk and, given `usage`
    /// `(prompt, completion)`, the usage chunk.
    pub fn text(model: &str, pieces: &[&str], usage: Option<(u64, u64)>) -> Vec<Value> {
        let with_usage = usage.is_some();
        let mut chunks =
            vec![delta(model, json!({"role": "assistant", "content": "", "refusal": null}), None, with_usage)];
        chunks.extend(pieces.iter().map(|piece| delta(model, json!({"content": piece}), None, with_usage)));
        chunks.push(delta(model, json!({}), Some("stop"), with_usage));
        chunks.extend(usage.map(|(prompt, completion)| self::usage(model, prompt, completion)));
        chunks
    }

    /// A reply that calls tools `(id, name, argument pieces)`, one call after another: the first
    /// chunk of each call has its index, id, type and name, later ones only the index and more
    /// arguments. Then a `tool_calls` chunk and, given `usage`, the usage chunk.
    pub fn tool_calls(model: &str, calls: &[(&str, &str, &[&str])], usage: Option<(u64, u64)>) -> Vec<Value> {
        let with_usage = usage.is_some();
        let mut chunks = vec![delta(model, json!({"role": "assistant", "content": null}), None, with_usage)];
        for (index, (id, name, pieces)) in calls.iter().enumerate() {
            chunks.push(delta(
                model,
                json!({"tool_calls": [{
                    "index": index,
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""}
                }]}),
                None,
                with_usage,
            ));
            chunks.extend(pieces.iter().map(|piece| {
                delta(
                    model,
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    None,
                    with_usage,
                )
            }));
        }
        chunks.push(delta(model, json!({}), Some("tool_calls"), with_usage));
        chunks.extend(usage.map(|(prompt, completion)| self::usage(model, prompt, completion)));
        chunks
    }
}
