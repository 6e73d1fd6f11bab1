//! A remote A2A agent (Agent2Agent protocol 1.0, JSON-RPC binding) as a provider: an agent
//! participant whose provider is one of these answers by sending the conversation's newest
//! message to the remote agent with `SendStreamingMessage` and streaming its reply (artifact
//! updates) back as text. One remote context per conversation: the first message goes without
//! a `contextId`, later ones with the one the remote agent gave. Dropping the stream before the
//! task ended (a cancelled turn) sends `CancelTask`. A failed, rejected or input-needing task is
//! an error with the remote agent's words, never a hang.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use colloquy_core_model::{ConversationId, MessageRole};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::http::{self, error_chain};
use crate::{FinishReason, LlmProvider, LlmRequest, ProviderError, ProviderEvent, ProviderStream};

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
    /// The JSON-RPC endpoint, read from the card at first use.
    endpoint: Arc<tokio::sync::OnceCell<String>>,
    /// The remote context of each conversation.
    contexts: Arc<Mutex<HashMap<ConversationId, String>>>,
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
        headers.insert("a2a-version", HeaderValue::from_static("1.0"));
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
            .build()
            .unwrap_or_default();
        let url = config.url.trim().trim_end_matches('/').to_owned();
        Self { name: config.name, url, client, endpoint: Arc::default(), contexts: Arc::default() }
    }
}

/// The JSON-RPC endpoint of the agent at `url`: its card's JSONRPC interface, or `url` itself
/// when it serves no card.
async fn endpoint(client: &reqwest::Client, url: &str) -> Result<String, ProviderError> {
    let card = client.get(format!("{url}/.well-known/agent-card.json")).send().await;
    let card = match card {
        Ok(response) if response.status().is_success() => response.json::<Value>().await.ok(),
        Ok(_) => None,
        Err(error) => return Err(ProviderError::Network { message: error_chain(&error) }),
    };
    let from_card = card.as_ref().and_then(|card| {
        card["supportedInterfaces"].as_array()?.iter().find(|i| {
            i["protocolBinding"] == "JSONRPC" && i["protocolVersion"].as_str().is_some_and(|v| v.starts_with('1'))
        })?["url"]
            .as_str()
            .map(str::to_owned)
    });
    Ok(from_card.unwrap_or_else(|| url.to_owned()))
}

/// The text of the request's newest user message (the engine puts other participants' names
/// in front in multi-party conversations).
fn newest_message(request: &LlmRequest) -> Option<String> {
    let message = request.messages.iter().rev().find(|m| m.role == MessageRole::User)?;
    let text: Vec<String> = message
        .content
        .iter()
        .filter_map(|part| match part {
            colloquy_core_model::ContentPart::Text { text } => Some(text.clone()),
            _ => None,
        })
        .collect();
    (!text.is_empty()).then(|| text.join("\n"))
}

/// Cancels the remote task when the stream is dropped before it ended.
struct CancelOnDrop {
    client: reqwest::Client,
    endpoint: String,
    task: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let request = self.client.post(&self.endpoint).json(&json!({
            "jsonrpc": "2.0", "id": "cancel", "method": "CancelTask", "params": { "id": task },
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
        let Some(text) = newest_message(&request) else {
            let message = "there is no message to send to the remote A2A agent".to_owned();
            return Box::pin(futures::stream::iter([Err(ProviderError::InvalidRequest { message })]));
        };
        let (client, url, cell) = (self.client.clone(), self.url.clone(), Arc::clone(&self.endpoint));
        let conversation = request.conversation;
        let context = conversation.and_then(|c| self.contexts().get(&c).cloned());
        let opened = async move {
            let endpoint = cell.get_or_try_init(|| endpoint(&client, &url)).await?.clone();
            let mut message = json!({
                "messageId": colloquy_core_model::MessageId::new().to_string(),
                "role": "ROLE_USER",
                "parts": [{ "text": text }],
            });
            if let Some(context) = context {
                message["contextId"] = json!(context);
            }
            let params = json!({ "message": message });
            let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": params });
            let response = client
                .post(&endpoint)
                .header("accept", "text/event-stream")
                .json(&body)
                .send()
                .await
                .map_err(|error| ProviderError::Network { message: error_chain(&error) })?;
            if !response.status().is_success() {
                return Err(http::refused(response).await);
            }
            Ok((response, CancelOnDrop { client, endpoint, task: None }))
        };
        let contexts = Arc::clone(&self.contexts);
        Box::pin(futures::stream::once(opened).flat_map(move |opened| match opened {
            Ok((response, guard)) => {
                let events = Box::pin(response.bytes_stream().eventsource());
                reply(events, guard, Arc::clone(&contexts), conversation).boxed()
            }
            Err(error) => futures::stream::iter([Err(error)]).boxed(),
        }))
    }
}

impl A2aAgent {
    fn contexts(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, String>> {
        self.contexts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Events = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<eventsource_stream::Event, eventsource_stream::EventStreamError<reqwest::Error>>,
            > + Send,
    >,
>;

/// What one SSE event of the remote agent means for the reply.
enum Step {
    Nothing,
    Text(String),
    /// The task ended: with this finish, or this error.
    End(Result<ProviderEvent, ProviderError>),
}

fn remote_error(message: String) -> ProviderError {
    ProviderError::Server { status: 502, message: format!("the remote A2A agent: {message}") }
}

/// Reads one SSE event (a JSON-RPC response whose result is a stream response).
fn step(
    data: &str,
    guard: &mut CancelOnDrop,
    contexts: &Mutex<HashMap<ConversationId, String>>,
    conversation: Option<ConversationId>,
) -> Step {
    let Ok(response) = serde_json::from_str::<Value>(data) else {
        return Step::End(Err(ProviderError::MalformedResponse { message: http::excerpt(data) }));
    };
    if let Some(error) = response.get("error") {
        let message = error["message"].as_str().unwrap_or("an error without a message").to_owned();
        return Step::End(Err(remote_error(format!("{message} (code {})", error["code"]))));
    }
    let result = &response["result"];
    let text_of =
        |parts: &Value| parts.as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect::<String>();
    if let Some(task) = result.get("task") {
        guard.task = task["id"].as_str().map(str::to_owned);
        if let (Some(conversation), Some(context)) = (conversation, task["contextId"].as_str()) {
            contexts.lock().unwrap_or_else(PoisonError::into_inner).insert(conversation, context.to_owned());
        }
        return Step::Nothing;
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
    contexts: Arc<Mutex<HashMap<ConversationId, String>>>,
    conversation: Option<ConversationId>,
) -> impl futures::Stream<Item = Result<ProviderEvent, ProviderError>> + Send {
    futures::stream::unfold(Some((events, guard, false)), move |state| {
        let contexts = Arc::clone(&contexts);
        async move {
            let (mut events, mut guard, mut ended) = state?;
            if ended {
                return None;
            }
            loop {
                let item = match events.next().await {
                    Some(Ok(event)) => match step(&event.data, &mut guard, &contexts, conversation) {
                        Step::Nothing => continue,
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
        }
    })
}
