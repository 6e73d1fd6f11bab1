//! The bench's mock OpenAI-compatible provider, built for speed: hyper on its own runtime,
//! TCP_NODELAY, keep-alive, no logging. It speaks the wire format of tests/src/mock_openai.rs
//! (real `chat.completion.chunk` SSE events, `"usage": null` on each chunk and a usage chunk when
//! asked for) and answers every request like the bench turn: without a tool result yet, a
//! streamed `calculator` call whose arguments come in several pieces; with one, a streamed text
//! answer in a few deltas.
//!
//! It records its own service time per request (from having read the request to the moment it
//! hands over the last event), by the turn key in the prompt (`bench-turn-<hex>`), so that the
//! driver can subtract exactly the mock's time for each turn's two requests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// The model name the mock reports (and the gateway and the peer ask for).
pub const MODEL: &str = "gpt-4o-mini";

/// The prefix of every bench prompt; the key follows it.
pub const TURN_KEY_PREFIX: &str = "bench-turn-";

/// What the mock measured about itself.
#[derive(Default)]
pub struct MockStats {
    /// Service time (ns) and request count by turn key, taken by the driver after each turn.
    by_turn: Mutex<HashMap<String, (u64, u32)>>,
    /// Requests it could not make sense of (answered 400).
    bad_requests: AtomicU64,
}

impl MockStats {
    /// Takes the mock's time for the turn with this key: the sum over its requests and how many
    /// there were.
    pub fn take(&self, key: &str) -> Option<(Duration, u32)> {
        let entry = self.by_turn.lock().ok()?.remove(key)?;
        Some((Duration::from_nanos(entry.0), entry.1))
    }

    /// Requests refused as malformed so far.
    pub fn bad_requests(&self) -> u64 {
        self.bad_requests.load(Ordering::Relaxed)
    }

    fn record(&self, key: Option<&str>, elapsed: Duration) {
        let Some(key) = key else { return };
        if let Ok(mut map) = self.by_turn.lock() {
            let entry = map.entry(key.to_owned()).or_insert((0, 0));
            entry.0 += u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            entry.1 += 1;
        }
    }
}

/// What the handler shares.
struct Context {
    stats: Arc<MockStats>,
    /// Waited before answering each request (time to first byte), on top of the mock's own time.
    latency: Duration,
    /// Numbers the tool call ids, so that each is unique.
    calls: AtomicU64,
}

/// A running mock on `127.0.0.1`, on a runtime of its own so that the load generator's tasks
/// never delay its answers.
pub struct Mock {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its own measurements.
    pub stats: Arc<MockStats>,
    /// Keeps the server running; shut down (in the background) when the mock is dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Mock {
    /// Starts the mock with this extra latency per request.
    pub fn start(latency: Duration) -> anyhow::Result<Self> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("mock").enable_all().build()?;
        // Bound here (not with the runtime's `block_on`), so that it may start inside another
        // runtime too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(MockStats::default());
        let context = Arc::new(Context { stats: Arc::clone(&stats), latency, calls: AtomicU64::new(0) });
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| answer(request, Arc::clone(&context)));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, stats, runtime: Some(runtime) })
    }

    /// The API root, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The parts of a chat completions request the mock looks at.
#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: serde_json::Value,
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(request: Request<Incoming>, context: Arc<Context>) -> Result<Response<Body>, Infallible> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => {}
        (&Method::GET, "/v1/models") => {
            let list = format!(
                r#"{{"object":"list","data":[{{"id":"{MODEL}","object":"model","created":1700000000,"owned_by":"mock"}}]}}"#
            );
            return Ok(json(StatusCode::OK, list));
        }
        _ => {
            let body = r#"{"error":{"message":"no such route","type":"invalid_request_error"}}"#;
            return Ok(json(StatusCode::NOT_FOUND, body.to_owned()));
        }
    }
    let Ok(body) = request.into_body().collect().await.map(http_body_util::Collected::to_bytes) else {
        return Ok(bad_request(&context, "cannot read the body"));
    };
    // The service time starts once the request is in: how fast a client uploads its body is
    // the client's time, not the mock's.
    let start = Instant::now();
    let Ok(chat) = serde_json::from_slice::<ChatRequest>(&body) else {
        return Ok(bad_request(&context, "the body is not a chat completions request"));
    };
    let key = chat.messages.iter().rev().find(|m| m.role == "user").and_then(|m| turn_key(&m.content));
    let has_tool_result = chat.messages.last().is_some_and(|m| m.role == "tool");
    if !context.latency.is_zero() {
        tokio::time::sleep(context.latency).await;
    }
    let call = context.calls.fetch_add(1, Ordering::Relaxed);
    if !chat.stream {
        let body = if has_tool_result { whole_text() } else { whole_tool_call(call) };
        context.stats.record(key.as_deref(), start.elapsed());
        return Ok(json(StatusCode::OK, body));
    }
    let usage = chat.stream_options.is_some_and(|o| o.include_usage);
    let events = if has_tool_result { text_events(usage) } else { tool_call_events(call, usage) };
    let last = events.len() - 1;
    let stats = Arc::clone(&context.stats);
    // One body frame per event, as a real server flushes them; the service time ends when the
    // last one is handed over.
    let frames = futures::stream::iter(events.into_iter().enumerate()).map(move |(index, event)| {
        if index == last {
            stats.record(key.as_deref(), start.elapsed());
        }
        Ok::<_, Infallible>(Frame::data(event))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The key after [`TURN_KEY_PREFIX`] in a message's text (a string or content parts).
fn turn_key(content: &serde_json::Value) -> Option<String> {
    let find = |text: &str| {
        let at = text.find(TURN_KEY_PREFIX)? + TURN_KEY_PREFIX.len();
        let key: String = text[at..].chars().take_while(char::is_ascii_alphanumeric).collect();
        (!key.is_empty()).then_some(key)
    };
    match content {
        serde_json::Value::String(text) => find(text),
        serde_json::Value::Array(parts) => {
            parts.iter().filter_map(|part| part.get("text").and_then(serde_json::Value::as_str)).find_map(find)
        }
        _ => None,
    }
}

fn bad_request(context: &Context, message: &str) -> Response<Body> {
    context.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
    json(StatusCode::BAD_REQUEST, format!(r#"{{"error":{{"message":"{message}","type":"invalid_request_error"}}}}"#))
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The calculator call's arguments, `{"expression": "6 * 7"}`, in pieces (JSON-escaped).
const ARGUMENT_PIECES: [&str; 4] = [r#"{\"expr"#, r#"ession\": "#, r#"\"6 * "#, r#"7\"}"#];
/// The answer, in deltas.
const ANSWER_PIECES: [&str; 4] = ["6 * 7", " = ", "42", "."];

/// One `data:` event with a single choice: this delta (a JSON object) and finish reason (JSON).
fn chunk(delta: &str, finish_reason: &str, usage_field: bool) -> Bytes {
    let usage = if usage_field { r#","usage":null"# } else { "" };
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"{MODEL}\",\"system_fingerprint\":\"fp_mock\",\"choices\":[{{\"index\":0,\"delta\":{delta},\
         \"logprobs\":null,\"finish_reason\":{finish_reason}}}]{usage}}}\n\n"
    ))
}

fn usage_chunk(prompt: u64, completion: u64) -> Bytes {
    let total = prompt + completion;
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"{MODEL}\",\"system_fingerprint\":\"fp_mock\",\"choices\":[],\"usage\":{{\
         \"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{total},\
         \"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\
         \"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}}}\n\n"
    ))
}

fn tool_call_events(call: u64, usage: bool) -> Vec<Bytes> {
    let mut events = vec![chunk(r#"{"role":"assistant","content":null}"#, "null", usage)];
    let first = format!(
        r#"{{"tool_calls":[{{"index":0,"id":"call_{call}","type":"function","function":{{"name":"calculator","arguments":""}}}}]}}"#
    );
    events.push(chunk(&first, "null", usage));
    for piece in ARGUMENT_PIECES {
        let delta = format!(r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":"{piece}"}}}}]}}"#);
        events.push(chunk(&delta, "null", usage));
    }
    events.push(chunk("{}", r#""tool_calls""#, usage));
    if usage {
        events.push(usage_chunk(60, 12));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn text_events(usage: bool) -> Vec<Bytes> {
    let mut events = vec![chunk(r#"{"role":"assistant","content":"","refusal":null}"#, "null", usage)];
    for piece in ANSWER_PIECES {
        events.push(chunk(&format!(r#"{{"content":"{piece}"}}"#), "null", usage));
    }
    events.push(chunk("{}", r#""stop""#, usage));
    if usage {
        events.push(usage_chunk(90, 8));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn whole_tool_call(call: u64) -> String {
    format!(
        "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"{MODEL}\",\
         \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{{\
         \"id\":\"call_{call}\",\"type\":\"function\",\"function\":{{\"name\":\"calculator\",\
         \"arguments\":\"{{\\\"expression\\\": \\\"6 * 7\\\"}}\"}}}}]}},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}}],\
         \"usage\":{{\"prompt_tokens\":60,\"completion_tokens\":12,\"total_tokens\":72}}}}"
    )
}

fn whole_text() -> String {
    format!(
        "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"{MODEL}\",\
         \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"6 * 7 = 42.\"}},\
         \"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":90,\"completion_tokens\":8,\
         \"total_tokens\":98}}}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_json_and_the_arguments_join_up() {
        let mut arguments = String::new();
        for event in tool_call_events(1, true).iter().chain(text_events(true).iter()) {
            let text = std::str::from_utf8(event).unwrap_or_default();
            let data = text.strip_prefix("data: ").unwrap_or_default().trim_end();
            if data == "[DONE]" {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            assert_eq!(value["object"], "chat.completion.chunk", "{data}");
            if let Some(piece) = value["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str() {
                arguments.push_str(piece);
            }
        }
        let arguments: serde_json::Value = serde_json::from_str(&arguments).unwrap_or_default();
        assert_eq!(arguments, serde_json::json!({"expression": "6 * 7"}));
        let whole: serde_json::Value = serde_json::from_str(&whole_tool_call(1)).unwrap_or_default();
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
        let arguments = whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str();
        assert_eq!(arguments, Some(r#"{"expression": "6 * 7"}"#));
        let text: serde_json::Value = serde_json::from_str(&whole_text()).unwrap_or_default();
        assert_eq!(text["choices"][0]["message"]["content"], "6 * 7 = 42.");
    }

    #[test]
    fn the_key_is_found_in_strings_and_parts() {
        let key = turn_key(&serde_json::json!("bench-turn-abc123: what is 6 * 7?"));
        assert_eq!(key.as_deref(), Some("abc123"));
        let parts = serde_json::json!([{"type": "text", "text": "bench-turn-ff00: hi"}]);
        assert_eq!(turn_key(&parts).as_deref(), Some("ff00"));
    }
}
