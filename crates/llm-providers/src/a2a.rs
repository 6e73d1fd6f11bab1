//! A remote A2A agent (Agent2Agent protocol, JSON-RPC binding, 1.0 or 0.3: whichever its card
//! offers, 1.0 first) as a provider: the participant it answers for sends the conversation's
//! newest message to the remote agent with `SendStreamingMessage` (0.3: `message/stream`) and
//! streams its reply (artifact updates) back as text. One remote context per conversation and
//! participant: the first message goes without a `contextId`, later ones with the one the
//! remote agent gave, which is stored with each reply ([`ProviderEvent::State`]) and so survives
//! restarts. Dropping the stream before the task ended (a cancelled turn) sends `CancelTask`
//! (0.3: `tasks/cancel`). A failed, rejected or input-needing task is an error with the remote
//! agent's words, never a hang.

pub mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use colloquy_core_model::MessageRole;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::http::{self, error_chain};
use crate::{FinishReason, LlmProvider, LlmRequest, ProviderError, ProviderEvent, ProviderStream};
use wire::{Method, Version};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a remote A2A agent is.
#[derive(Clone)]
pub struct A2aConfig {
    /// The provider's name in configuration and on stored replies.
    pub name: String,
    /// The agent's base URL (its card is at `<url>/.well-known/agent-card.json`) or its JSON-RPC
    /// endpoint itself.
    pub url: String,
    /// Sent as `Authorization: Bearer`.
    pub api_key: Option<SecretString>,
}

impl fmt::Debug for A2aConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("A2aConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A remote A2A agent.
pub struct A2aAgent {
    name: String,
    url: String,
    client: reqwest::Client,
    /// The JSON-RPC endpoint and the version it speaks, read from the card at first use.
    endpoint: Arc<tokio::sync::OnceCell<(String, Version)>>,
}

impl fmt::Debug for A2aAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("A2aAgent").field("name", &self.name).field("url", &self.url).finish_non_exhaustive()
    }
}

impl A2aAgent {
    /// A provider for the agent `config` names. Nothing is sent until the first request.
    pub fn new(config: A2aConfig) -> Self {
        let mut headers = HeaderMap::new();
        if let Some(key) = config.api_key.as_ref().map(|key| key.expose_secret().trim()).filter(|key| !key.is_empty())
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {key}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Only where it was told to go (`a2a_allowed_urls` vets that URL, not a redirect's);
            // a JSON-RPC endpoint has no reason to redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let url = config.url.trim().trim_end_matches('/').to_owned();
        Self { name: config.name, url, client, endpoint: Arc::default() }
    }
}

/// The JSON-RPC endpoint of the agent at `url` and its version: its card's 1.0 JSONRPC
/// interface, else its 0.3 one (a 0.3 card names it in `url`, `preferredTransport` and
/// `additionalInterfaces`); `url` itself, as 1.0, when it serves no card.
async fn endpoint(client: &reqwest::Client, url: &str) -> Result<(String, Version), ProviderError> {
    let card = client.get(format!("{url}/.well-known/agent-card.json")).send().await;
    let card = match card {
        Ok(response) if response.status().is_success() => response.json::<Value>().await.ok(),
        Ok(_) => None,
        Err(error) => return Err(ProviderError::Network { message: error_chain(&error) }),
    };
    let Some(card) = card else { return Ok((url.to_owned(), Version::V1)) };
    let version_of = |v: &Value| {
        let v = v.as_str().unwrap_or("0.3");
        if v.starts_with("0.") { Version::V03 } else { Version::V1 }
    };
    // 1.0 cards list interfaces; 0.3 cards give a main one and more.
    let mut offered: Vec<(String, Version)> = Vec::new();
    for interface in card["supportedInterfaces"].as_array().into_iter().flatten() {
        if interface["protocolBinding"] == "JSONRPC"
            && let Some(url) = interface["url"].as_str()
        {
            offered.push((url.to_owned(), version_of(&interface["protocolVersion"])));
        }
    }
    let legacy = version_of(&card["protocolVersion"]);
    if card["preferredTransport"].as_str().is_none_or(|t| t == "JSONRPC")
        && let Some(url) = card["url"].as_str()
    {
        offered.push((url.to_owned(), legacy));
    }
    for interface in card["additionalInterfaces"].as_array().into_iter().flatten() {
        if interface["transport"] == "JSONRPC"
            && let Some(url) = interface["url"].as_str()
        {
            offered.push((url.to_owned(), legacy));
        }
    }
    let best = offered.iter().find(|(_, v)| *v == Version::V1).or_else(|| offered.first()).cloned();
    Ok(best.unwrap_or_else(|| (url.to_owned(), Version::V1)))
}

/// The parts of the request's newest user message as A2A 1.0 parts: its text (the engine puts
/// other participants' names in front in multi-party conversations), images and files.
fn newest_message(request: &LlmRequest) -> Option<Vec<Value>> {
    let message = request.messages.iter().rev().find(|m| m.role == MessageRole::User)?;
    let parts = wire::parts_of(&message.content);
    (!parts.is_empty()).then_some(parts)
}

/// A JSON-RPC request to `endpoint`, saying which version it is in (`A2A-Version`).
fn rpc(client: &reqwest::Client, endpoint: &str, version: Version) -> reqwest::RequestBuilder {
    let version = match version {
        Version::V1 => "1.0",
        Version::V03 => "0.3",
    };
    client.post(endpoint).header("a2a-version", version)
}

/// Cancels the remote task when the stream is dropped before it ended.
struct CancelOnDrop {
    client: reqwest::Client,
    endpoint: String,
    version: Version,
    task: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let request = rpc(&self.client, &self.endpoint, self.version).json(&json!({
            "jsonrpc": "2.0", "id": "cancel", "method": Method::Cancel.name(self.version), "params": { "id": task },
        }));
        runtime.spawn(async move {
            if let Err(error) = request.send().await {
                tracing::warn!(%error, "could not cancel the remote A2A task");
            }
        });
    }
}

impl LlmProvider for A2aAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        let Some(parts) = newest_message(&request) else {
            let message = "there is no message to send to the remote A2A agent".to_owned();
            return Box::pin(futures::stream::iter([Err(ProviderError::InvalidRequest { message })]));
        };
        let (client, url, cell) = (self.client.clone(), self.url.clone(), Arc::clone(&self.endpoint));
        let context = request.provider_state.as_ref().and_then(|state| state["contextId"].as_str()).map(str::to_owned);
        let opened = async move {
            let (endpoint, version) = cell.get_or_try_init(|| endpoint(&client, &url)).await?.clone();
            let mut message = json!({
                "messageId": colloquy_core_model::MessageId::new().to_string(),
                "role": "ROLE_USER",
                "parts": parts,
            });
            if let Some(context) = context {
                message["contextId"] = json!(context);
            }
            let mut params = json!({ "message": message });
            let request = rpc(&client, &endpoint, version).header("accept", "text/event-stream");
            if version == Version::V03 {
                wire::message_params_to_v03(&mut params);
            }
            let body = json!({ "jsonrpc": "2.0", "id": 1, "method": Method::Stream.name(version), "params": params });
            let response = request
                .json(&body)
                .send()
                .await
                .map_err(|error| ProviderError::Network { message: error_chain(&error) })?;
            if !response.status().is_success() {
                return Err(http::refused(response).await);
            }
            Ok((response, CancelOnDrop { client, endpoint, version, task: None }))
        };
        Box::pin(futures::stream::once(opened).flat_map(move |opened| match opened {
            Ok((response, guard)) => {
                let body = response.bytes_stream().map(|chunk| chunk.map_err(ReadError::Http));
                reply(Box::pin(limited(body, MAX_STREAM_BYTES).eventsource()), guard).boxed()
            }
            Err(error) => futures::stream::iter([Err(error)]).boxed(),
        }))
    }
}

/// The most a remote agent may send for one reply, SSE framing included: a stream that never
/// ends its lines or its task cannot make the gateway hold more than this.
const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;

/// Why a remote agent's stream could not be read.
#[derive(Debug)]
enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(error) => write!(f, "{}", error_chain(error)),
            Self::TooLarge => write!(f, "it sent more than {} MiB for one reply", MAX_STREAM_BYTES >> 20),
        }
    }
}

/// The response body, ending with [`ReadError::TooLarge`] past `limit` bytes.
fn limited(
    body: impl futures::Stream<Item = Result<bytes::Bytes, ReadError>> + Send + 'static,
    limit: usize,
) -> impl futures::Stream<Item = Result<bytes::Bytes, ReadError>> + Send + 'static {
    let mut total = 0usize;
    let mut over = false;
    body.map(move |chunk| {
        let chunk = chunk?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            over = true;
        }
        if over { Err(ReadError::TooLarge) } else { Ok(chunk) }
    })
    .scan(false, |ended, item| {
        // After the first error, nothing more: the reply ends there.
        if *ended {
            return futures::future::ready(None);
        }
        *ended = item.is_err();
        futures::future::ready(Some(item))
    })
}

type Events = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = Result<eventsource_stream::Event, eventsource_stream::EventStreamError<ReadError>>>
            + Send,
    >,
>;

/// What one SSE event of the remote agent means for the reply.
enum Step {
    Nothing,
    /// The remote context, to keep for the next message.
    Context(String),
    Text(String),
    /// The task ended: with this finish, or this error.
    End(Result<ProviderEvent, ProviderError>),
}

fn remote_error(message: String) -> ProviderError {
    ProviderError::Server { status: 502, message: format!("the remote A2A agent: {message}") }
}

/// Reads one SSE event (a JSON-RPC response whose result is a stream response).
fn step(data: &str, guard: &mut CancelOnDrop) -> Step {
    let Ok(response) = serde_json::from_str::<Value>(data) else {
        return Step::End(Err(ProviderError::MalformedResponse { message: http::excerpt(data) }));
    };
    if let Some(error) = response.get("error") {
        let message = error["message"].as_str().unwrap_or("an error without a message").to_owned();
        return Step::End(Err(remote_error(format!("{message} (code {})", error["code"]))));
    }
    let result = match guard.version {
        Version::V03 => wire::from_v03(response["result"].clone()),
        Version::V1 => response["result"].clone(),
    };
    let text_of =
        |parts: &Value| parts.as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect::<String>();
    if let Some(task) = result.get("task") {
        guard.task = task["id"].as_str().map(str::to_owned);
        return task["contextId"].as_str().map_or(Step::Nothing, |context| Step::Context(context.to_owned()));
    }
    if let Some(update) = result.get("artifactUpdate") {
        return Step::Text(text_of(&update["artifact"]["parts"]));
    }
    if let Some(message) = result.get("message") {
        guard.task = None;
        return Step::Text(text_of(&message["parts"]));
    }
    let Some(status) = result.get("statusUpdate").map(|u| &u["status"]) else { return Step::Nothing };
    let said = text_of(&status["message"]["parts"]);
    let state = status["state"].as_str().unwrap_or_default();
    match state {
        "TASK_STATE_COMPLETED" => {
            guard.task = None;
            Step::End(Ok(ProviderEvent::Finish(FinishReason::Stop)))
        }
        "TASK_STATE_CANCELED" => {
            guard.task = None;
            Step::End(Ok(ProviderEvent::Finish(FinishReason::Other("canceled by the remote agent".to_owned()))))
        }
        "TASK_STATE_FAILED" | "TASK_STATE_REJECTED" => {
            guard.task = None;
            let said = if said.is_empty() { state.to_owned() } else { said };
            Step::End(Err(remote_error(said)))
        }
        // Colloquy cannot give it what it asks for: the task is cancelled (the guard).
        "TASK_STATE_INPUT_REQUIRED" | "TASK_STATE_AUTH_REQUIRED" => Step::End(Err(ProviderError::InvalidRequest {
            message: format!("the remote A2A agent asks for {state}, which a conversation cannot give: {said}"),
        })),
        _ => Step::Nothing,
    }
}

/// The reply's events, from the remote agent's SSE stream, ending at the task's end.
fn reply(
    events: Events,
    guard: CancelOnDrop,
) -> impl futures::Stream<Item = Result<ProviderEvent, ProviderError>> + Send {
    futures::stream::unfold(Some((events, guard, false)), move |state| async move {
        let (mut events, mut guard, mut ended) = state?;
        if ended {
            return None;
        }
        loop {
            let item = match events.next().await {
                Some(Ok(event)) => match step(&event.data, &mut guard) {
                    Step::Nothing => continue,
                    Step::Context(context) => Ok(ProviderEvent::State(json!({ "contextId": context }))),
                    Step::Text(text) if text.is_empty() => continue,
                    Step::Text(text) => Ok(ProviderEvent::TextDelta(text)),
                    Step::End(end) => {
                        ended = true;
                        end
                    }
                },
                Some(Err(error)) => {
                    ended = true;
                    Err(ProviderError::Network { message: format!("the remote A2A agent's stream broke: {error}") })
                }
                None => {
                    ended = true;
                    Err(remote_error("it closed its stream before the task ended".to_owned()))
                }
            };
            return Some((item, Some((events, guard, ended))));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use colloquy_core_model::{ContentPart, MessageRole};
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{A2aAgent, A2aConfig, ReadError, limited};
    use crate::{LlmProvider, LlmRequest, RequestMessage};

    /// Answers every request on `listener` with `response`; counts the requests.
    fn serve(listener: tokio::net::TcpListener, response: String, count: std::sync::Arc<AtomicUsize>) {
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut buffer = vec![0; 64 * 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() -> Result<(), Box<dyn std::error::Error>> {
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let target = format!("http://{}/internal", elsewhere.local_addr()?);
        let reached = std::sync::Arc::new(AtomicUsize::new(0));
        serve(elsewhere, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_owned(), std::sync::Arc::clone(&reached));
        let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", agent.local_addr()?);
        let redirect = format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n");
        serve(agent, redirect, std::sync::Arc::default());

        let provider = A2aAgent::new(A2aConfig { name: "remote".to_owned(), url, api_key: None });
        let message = RequestMessage { role: MessageRole::User, content: vec![ContentPart::text("hi")] };
        let request = LlmRequest { model: "a2a".to_owned(), messages: vec![message], ..LlmRequest::default() };
        let replies: Vec<_> = provider.stream(request).collect().await;
        assert!(replies.first().is_some_and(Result::is_err), "a redirect is an error: {replies:?}");
        assert_eq!(reached.load(Ordering::SeqCst), 0, "the redirect's target was never asked");
        Ok(())
    }

    #[tokio::test]
    async fn a_stream_past_its_limit_ends_with_an_error() {
        let chunks = (0..10).map(|_| Ok::<_, ReadError>(bytes::Bytes::from_static(b"0123456789")));
        let read: Vec<_> = limited(futures::stream::iter(chunks), 35).collect().await;
        assert_eq!(read.len(), 4, "three chunks, then the error, then nothing");
        assert!(read[..3].iter().all(Result::is_ok));
        assert!(matches!(read[3], Err(ReadError::TooLarge)));
        assert_eq!(ReadError::TooLarge.to_string(), "it sent more than 16 MiB for one reply");
    }
}
