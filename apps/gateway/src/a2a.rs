//! The A2A server (Agent2Agent protocol, JSON-RPC binding; docs/a2a.md): each agent the gateway
//! serves as an A2A agent. The default agent's card is at `/.well-known/agent-card.json` and its
//! JSON-RPC endpoint at `POST /a2a/v1`; each named agent (`[agents.NAME]`) has its card at
//! `/a2a/agents/NAME/.well-known/agent-card.json` and its endpoint at `POST /a2a/agents/NAME`.
//! Every endpoint speaks 1.0 and 0.3, told apart by the method's name (as the protocol's own SDK
//! does), and takes the gateway's bearer keys.
//!
//! An A2A `contextId` is a conversation (a message without one starts a new `user_agent`
//! conversation of the caller's with that agent), and a task is the prompt turn that answers one
//! message: its id is `<conversation>:<message>`, and its state is read from the conversation's
//! event log, so a task survives restarts and is the same on every node of a cluster.
//!
//! Methods (1.0 / 0.3): `SendMessage` / `message/send` (waits for the turn unless
//! `configuration.returnImmediately` / `blocking: false`), `SendStreamingMessage` /
//! `message/stream` and `SubscribeToTask` / `tasks/resubscribe` (SSE: the task, then status and
//! artifact updates, token deltas included, until the turn ends), `GetTask` / `tasks/get`,
//! `CancelTask` / `tasks/cancel`. A message with the `taskId` of a task that waits for a tool's
//! approval (`input-required`) answers it: `approve` or `deny` as text, or a data part
//! `{"decision": "approve" | "deny", "reason": ...}`.

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use colloquy_core_model::limits::{MAX_JSON_DEPTH, json_depth};
use colloquy_core_model::{AgentSpec, MediaSource, ParticipantKind};
use colloquy_core_model::{
    ContentPart, ConversationId, ConversationRequest, EventEnvelope, Message, MessageDelta, MessageId, MessageRole,
    StopReason, TurnEvent,
};
use colloquy_engine::{PostMessage, QueuePolicy, Subscription};
use colloquy_llm_providers::a2a_wire::{self as wire, Method, Version};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::answer::AnswerTo;
use crate::auth::Caller;
use crate::limits::ConnectionPermits;
use crate::policy::{self, Action};
use crate::rest::authorized;
use crate::{ApiError, AppState};

/// The protocol versions this server speaks, newest first.
const PROTOCOL_VERSIONS: [&str; 2] = ["1.0", "0.3"];
/// How long `SendMessage` waits for its turn.
const TURN_WAIT: Duration = Duration::from_secs(600);
/// How long `CancelTask` waits for the turn to end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// Events of the log read to tell a task's state.
const TASK_EVENTS: u64 = 5_000;

/// The A2A routes, for the authorization test's table ([`crate::routes`]).
pub const ROUTES: [(&str, &str); 4] = [
    ("GET", "/.well-known/agent-card.json"),
    ("POST", "/a2a/v1"),
    ("GET", "/a2a/agents/{name}/.well-known/agent-card.json"),
    ("POST", "/a2a/agents/{name}"),
];

/// The A2A routes: public cards, authenticated JSON-RPC endpoints.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(ROUTES[0].1, get(default_card))
        .route(ROUTES[1].1, post(default_rpc))
        .route(ROUTES[2].1, get(named_card))
        .route(ROUTES[3].1, post(named_rpc))
}

/// Whether `name` may name an agent: it is part of the agent's URL.
pub fn is_agent_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An agent the gateway serves over A2A: the default one (`name` `None`) or a named one.
#[derive(Debug, Clone)]
struct Served {
    name: Option<String>,
    spec: AgentSpec,
}

impl Served {
    fn default_agent(state: &AppState) -> Self {
        Self { name: None, spec: state.default_agent.clone() }
    }

    /// The named agent, or a 404 that says which agents there are.
    fn named(state: &AppState, name: &str) -> Result<Self, ApiError> {
        match state.agents.get(name) {
            Some(spec) => Ok(Self { name: Some(name.to_owned()), spec: spec.clone() }),
            None => Err(ApiError::not_found(
                crate::ErrorCode::NotFound,
                format!(
                    "there is no agent `{name}` here: the agents are {}",
                    state.agents.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// Where its JSON-RPC endpoint is, under the gateway's root.
    fn path(&self) -> String {
        self.name.as_ref().map_or_else(|| ROUTES[1].1.to_owned(), |name| format!("/a2a/agents/{name}"))
    }
}

/// `GET /.well-known/agent-card.json`: the default agent's card.
async fn default_card(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let served = Served::default_agent(&state);
    card(&state, &headers, &served)
}

/// `GET /a2a/agents/{name}/.well-known/agent-card.json`: a named agent's card.
async fn named_card(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    match Served::named(&state, &name) {
        Ok(served) => card(&state, &headers, &served),
        Err(error) => error.into_response(),
    }
}

/// An agent's card, in 1.0 form with the fields a 0.3 client reads (`url`, `protocolVersion`,
/// `preferredTransport`, `security`) beside it; both versions are served at one endpoint.
fn card(state: &AppState, headers: &HeaderMap, served: &Served) -> Response {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
    let agent = &served.spec;
    let url = format!("{scheme}://{host}{}", served.path());
    let tools = if agent.tools.is_empty() { "none".to_owned() } else { agent.tools.join(", ") };
    let configured = served.name.as_ref().and_then(|name| state.config.agents.get(name)).unwrap_or(&state.config.agent);
    let description = configured.description.clone().unwrap_or_else(|| {
        format!(
            "A Colloquy conversation agent ({} on {}); tools: {tools}. Each contextId is a stored conversation.",
            agent.model, agent.provider
        )
    });
    let interfaces: Vec<Value> = PROTOCOL_VERSIONS
        .iter()
        .map(|version| json!({ "url": url, "protocolBinding": "JSONRPC", "protocolVersion": version }))
        .collect();
    let mut card = json!({
        "name": served.name.as_deref().unwrap_or("Colloquy"),
        "description": description,
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": interfaces,
        "url": url,
        "protocolVersion": "0.3.0",
        "preferredTransport": "JSONRPC",
        "capabilities": { "streaming": true, "pushNotifications": false },
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{
            "id": "chat",
            "name": "Chat",
            "description": "Answers in a multi-turn conversation, calling its tools as needed.",
            "tags": ["chat", "tools"],
        }],
    });
    if state.auth_is_on() {
        // One scheme object both versions read: 1.0's `httpAuthSecurityScheme`, 0.3's `type`.
        card["securitySchemes"] = json!({ "bearer": {
            "httpAuthSecurityScheme": { "scheme": "Bearer" },
            "type": "http",
            "scheme": "bearer",
        } });
        card["securityRequirements"] = json!([{ "schemes": { "bearer": { "list": [] } } }]);
        card["security"] = json!([{ "bearer": [] }]);
    }
    axum::Json(card).into_response()
}

/// A JSON-RPC error: `code` per A2A (-32001 task not found, -32002 not cancelable, ...).
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(-32602, message)
    }

    fn task_not_found(id: &str) -> Self {
        Self::new(-32001, format!("there is no task {id} that you may see"))
    }
}

impl From<ApiError> for RpcError {
    fn from(error: ApiError) -> Self {
        // The gateway's own code and message: what was wrong and what to do.
        let code =
            serde_json::to_value(error.code).ok().and_then(|c| c.as_str().map(str::to_owned)).unwrap_or_default();
        Self::new(-32603, format!("{code}: {}", error.message))
    }
}

fn reply(id: &Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": { "code": error.code, "message": error.message } }),
    }
}

/// `POST /a2a/v1`: one JSON-RPC request to the default agent.
async fn default_rpc(State(state): State<AppState>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    let served = Served::default_agent(&state);
    rpc(A2a { state, caller, served }, &headers, &body).await
}

/// `POST /a2a/agents/{name}`: one JSON-RPC request to a named agent.
async fn named_rpc(
    State(state): State<AppState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match Served::named(&state, &name) {
        Ok(served) => rpc(A2a { state, caller, served }, &headers, &body).await,
        Err(error) => error.into_response(),
    }
}

/// One JSON-RPC request, in either version: the method's name tells which, and the answer is in
/// the same version.
async fn rpc(a2a: A2a, headers: &HeaderMap, body: &[u8]) -> Response {
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            return axum::Json(reply(&Value::Null, Err(RpcError::new(-32700, error.to_string())))).into_response();
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    if json_depth(&request) > MAX_JSON_DEPTH {
        let error = RpcError::new(-32600, format!("the request nests deeper than {MAX_JSON_DEPTH} levels"));
        return axum::Json(reply(&id, Err(error))).into_response();
    }
    if let Some(version) = headers.get("a2a-version").and_then(|v| v.to_str().ok())
        && !(version.starts_with("1.") || version == "1" || version.starts_with("0.3"))
    {
        let served = PROTOCOL_VERSIONS.join(" or ");
        let error = RpcError::new(-32009, format!("A2A version {version} is not served here: use {served}"));
        return axum::Json(reply(&id, Err(error))).into_response();
    }
    let name = request.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    let Some((method, version)) = Method::parse(&name) else {
        let error = if name.is_empty() {
            RpcError::new(-32600, "a JSON-RPC request needs a `method`")
        } else {
            RpcError::new(-32601, format!("`{name}` is not a method this agent serves"))
        };
        return axum::Json(reply(&id, Err(error))).into_response();
    };
    let mut params = request.get("params").cloned().unwrap_or(Value::Null);
    if version == Version::V03 && matches!(method, Method::Send | Method::Stream) {
        wire::message_params_from_v03(&mut params);
    }
    let result = match method {
        Method::Send => a2a.send(params).await,
        Method::Get => a2a.get_task(params).await,
        Method::Cancel => a2a.cancel_task(params).await,
        Method::Stream => match a2a.send_streaming(params).await {
            Ok(stream) => return sse(id, version, stream),
            Err(error) => Err(error),
        },
        Method::Subscribe => match a2a.subscribe_to_task(params).await {
            Ok(stream) => return sse(id, version, stream),
            Err(error) => Err(error),
        },
    };
    let result = match version {
        Version::V1 => result,
        // 0.3 answers `message/send` and `tasks/*` with the task itself.
        Version::V03 => result.map(wire::to_v03),
    };
    axum::Json(reply(&id, result)).into_response()
}

/// The SSE response of a stream: each event is a JSON-RPC response with the request's id; the
/// response ends with the task (so the client's stream ends).
fn sse(id: Value, version: Version, stream: impl Stream<Item = Value> + Send + 'static) -> Response {
    use futures::StreamExt;
    let events = stream.map(move |result| {
        let result = if version == Version::V03 { wire::to_v03(result) } else { result };
        Ok::<_, std::convert::Infallible>(Event::default().data(reply(&id, Ok(result)).to_string()))
    });
    Sse::new(events).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct A2aMessage {
    message_id: String,
    context_id: Option<String>,
    task_id: Option<String>,
    #[serde(default)]
    parts: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendConfiguration {
    #[serde(default)]
    return_immediately: bool,
}

#[derive(Debug, Deserialize)]
struct SendParams {
    message: A2aMessage,
    #[serde(default)]
    configuration: Option<SendConfiguration>,
}

#[derive(Debug, Deserialize)]
struct TaskParams {
    id: String,
}

fn parse<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params).map_err(|error| RpcError::invalid(format!("invalid params: {error}")))
}

/// A message's A2A (1.0) parts as content: text; files by `url` or inline `raw` bytes (images
/// as images); `data` as its JSON, which a model reads as text.
fn content_of(parts: Vec<Value>) -> Result<Vec<ContentPart>, RpcError> {
    if parts.is_empty() {
        return Err(RpcError::invalid("the message has no parts: send at least one {\"text\": ...} part"));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            if let Some(text) = part["text"].as_str() {
                return Ok(ContentPart::text(text));
            }
            if let Some(data) = part.get("data") {
                let json = serde_json::to_string_pretty(data).unwrap_or_default();
                return Ok(ContentPart::text(format!("```json\n{json}\n```")));
            }
            let media = part["mediaType"].as_str().unwrap_or("application/octet-stream").to_owned();
            let source = match (part["url"].as_str(), part["raw"].as_str()) {
                (Some(url), _) => MediaSource::Url { url: url.to_owned() },
                (None, Some(raw)) => MediaSource::Base64 { mime_type: media.clone(), data: raw.to_owned() },
                (None, None) => {
                    return Err(RpcError::new(
                        -32005,
                        format!("part {index} is none of text, url, raw or data: those are the parts served"),
                    ));
                }
            };
            Ok(if media.starts_with("image/") {
                ContentPart::Image { source }
            } else {
                let name = part["filename"].as_str().unwrap_or("attachment").to_owned();
                ContentPart::File { name, source }
            })
        })
        .collect()
}

/// The answer a message that continues an `input-required` task gives its waiting tool calls:
/// `approve` / `deny` as its text, or a data part with `decision` (and `reason`).
fn decision_of(content: &[ContentPart], parts: &[Value]) -> Result<colloquy_tools::ApprovalAnswer, RpcError> {
    let data = parts.iter().find_map(|part| part.get("data"));
    let (word, reason) = match data {
        Some(data) => {
            (data["decision"].as_str().unwrap_or_default().to_owned(), data["reason"].as_str().map(str::to_owned))
        }
        None => {
            let text: String = content
                .iter()
                .filter_map(|p| if let ContentPart::Text { text } = p { Some(text.as_str()) } else { None })
                .collect();
            let text = text.trim().to_lowercase();
            let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text.as_str(), ""));
            (word.trim_end_matches(['.', '!', ',', ':']).to_owned(), Some(rest.trim().to_owned()))
        }
    };
    let decision = match word.as_str() {
        "approve" | "approved" | "allow" | "yes" => crate::protocol::Decision::Allow,
        "deny" | "denied" | "reject" | "no" => crate::protocol::Decision::Deny,
        _ => {
            return Err(RpcError::invalid(
                "this task waits for a tool call's approval: answer `approve` or `deny` (text), or a data part \
                 {\"decision\": \"approve\" | \"deny\", \"reason\": ...}",
            ));
        }
    };
    Ok(decision.answer(reason))
}

/// One request's caller and state, at one agent's endpoint.
struct A2a {
    state: AppState,
    caller: Caller,
    served: Served,
}

/// A task: the turn answering `message` in `conversation`.
#[derive(Debug, Clone, Copy)]
struct TaskRef {
    conversation: ConversationId,
    message: MessageId,
}

impl TaskRef {
    fn parse(id: &str) -> Option<Self> {
        let (conversation, message) = id.split_once(':')?;
        Some(Self { conversation: conversation.parse().ok()?, message: message.parse().ok()? })
    }

    fn id(&self) -> String {
        format!("{}:{}", self.conversation, self.message)
    }
}

impl A2a {
    /// Stores the message in its conversation (a new one of this agent's without `contextId`),
    /// or, with a `taskId`, answers what that task waits for; returns the task, a subscription
    /// that sees its turn from before it began, and whether to return at once.
    async fn post(&self, params: Value) -> Result<(TaskRef, Subscription, bool), RpcError> {
        let SendParams { message, configuration } = parse::<SendParams>(params)?;
        let immediately = configuration.is_some_and(|c| c.return_immediately);
        let parts = message.parts.clone();
        let content = content_of(message.parts)?;
        if let Some(task_id) = &message.task_id {
            let task = self.continue_task(task_id, message.context_id.as_deref(), &content, &parts).await?;
            let prompt = self.prompt(task).await?;
            let from = prompt.seq.saturating_sub(1);
            let subscription = self.state.engine.subscribe(task.conversation, from).await.map_err(ApiError::from)?;
            return Ok((task, subscription, immediately));
        }
        let conversation = match message.context_id {
            Some(context) => {
                let id: ConversationId = context
                    .parse()
                    .map_err(|_| RpcError::invalid(format!("contextId {context} is not a conversation id")))?;
                id
            }
            None => {
                let request = ConversationRequest {
                    agent: Some(self.served.spec.clone()),
                    // A named agent's participant has its name; the default one the engine's default.
                    agent_name: self.served.name.clone(),
                    ..ConversationRequest::default()
                };
                let (created, _) = self
                    .state
                    .engine
                    .create_conversation_for(&self.caller.account, request, &self.state.default_agent)
                    .await
                    .map_err(ApiError::from)?;
                created.id
            }
        };
        let (access, participants) = authorized(&self.state, &self.caller, conversation, Action::Post).await?;
        if let Some(name) = &self.served.name
            && !participants
                .iter()
                .any(|p| p.kind == ParticipantKind::Agent && p.left_at.is_none() && p.display_name == *name)
        {
            return Err(RpcError::invalid(format!(
                "contextId {conversation} is not a conversation of agent `{name}`: send it to the agent that started it"
            )));
        }
        let sender = policy::sender(&self.caller, &access, &participants, None)?;
        let after = self.state.engine.conversation(conversation).await.map_err(ApiError::from)?.last_seq;
        let subscription = self.state.engine.subscribe(conversation, after).await.map_err(ApiError::from)?;
        let post = PostMessage { sender, content, client_msg_id: Some(message.message_id), queue: QueuePolicy::Queue };
        let posted = self.state.engine.post_message(conversation, post).await.map_err(ApiError::from)?;
        let task = TaskRef { conversation, message: posted.message.id };
        // A retry of a message stored before: follow it from its own place in the log.
        let subscription = if posted.duplicate {
            let from = posted.message.seq.saturating_sub(1);
            self.state.engine.subscribe(conversation, from).await.map_err(ApiError::from)?
        } else {
            subscription
        };
        Ok((task, subscription, immediately))
    }

    /// A message with a `taskId`: the task must wait for input (a tool call's approval), and the
    /// message answers it. Finished and working tasks take no messages.
    async fn continue_task(
        &self,
        task_id: &str,
        context: Option<&str>,
        content: &[ContentPart],
        parts: &[Value],
    ) -> Result<TaskRef, RpcError> {
        let task = self.task(json!({ "id": task_id }), Action::Read).await?;
        if let Some(context) = context.filter(|context| *context != task.conversation.to_string()) {
            return Err(RpcError::invalid(format!(
                "task {task_id} is not in contextId {context}: leave contextId out"
            )));
        }
        let prompt = self.prompt(task).await?;
        let follow = self.progress(task, &prompt).await?;
        match follow.state {
            TaskState::InputRequired => {}
            state if state.is_terminal() => {
                return Err(RpcError::new(
                    -32004,
                    format!(
                        "task {task_id} is {} and takes no more messages: send a new message in the same contextId, \
                         without taskId",
                        state.name()
                    ),
                ));
            }
            state => {
                return Err(RpcError::new(
                    -32004,
                    format!(
                        "task {task_id} is {} and asks for nothing: follow it with SubscribeToTask, or send a new \
                         message without taskId to be answered after it",
                        state.name()
                    ),
                ));
            }
        }
        // Approvals are an owner's.
        authorized(&self.state, &self.caller, task.conversation, Action::Manage).await?;
        let answer = decision_of(content, parts)?;
        for call in &follow.waiting {
            self.state.answer_approval(task.conversation, call, answer.clone()).await?;
        }
        Ok(task)
    }

    async fn send(&self, params: Value) -> Result<Value, RpcError> {
        // A request that waits holds a connection's place, as a WebSocket does (taken before
        // posting, so that a refusal posts nothing).
        let permits = self.state.limits.connect(&self.caller)?;
        let (task, mut subscription, immediately) = self.post(params).await?;
        if immediately {
            drop(permits);
        } else if !until_ended(task, &mut subscription, TURN_WAIT).await {
            tracing::warn!(task = %task.id(), "an A2A SendMessage stopped waiting for its turn");
        }
        Ok(json!({ "task": self.snapshot(task).await? }))
    }

    async fn send_streaming(&self, params: Value) -> Result<impl Stream<Item = Value> + Send + 'static, RpcError> {
        let permits = self.state.limits.connect(&self.caller)?;
        let (task, subscription, _) = self.post(params).await?;
        let first = self.snapshot(task).await?;
        Ok(follow_stream(task, first, subscription, permits))
    }

    /// The task the caller may see, from its id.
    async fn task(&self, params: Value, action: Action) -> Result<TaskRef, RpcError> {
        let TaskParams { id } = parse::<TaskParams>(params)?;
        let task = TaskRef::parse(&id).ok_or_else(|| RpcError::task_not_found(&id))?;
        authorized(&self.state, &self.caller, task.conversation, action)
            .await
            .map_err(|_| RpcError::task_not_found(&id))?;
        // The message must be there (stored or queued): a made-up id is not a task.
        self.state
            .engine
            .message_or_queued(task.conversation, task.message)
            .await
            .map_err(|_| RpcError::task_not_found(&id))?;
        Ok(task)
    }

    async fn get_task(&self, params: Value) -> Result<Value, RpcError> {
        let task = self.task(params, Action::Read).await?;
        self.snapshot(task).await
    }

    async fn subscribe_to_task(&self, params: Value) -> Result<impl Stream<Item = Value> + Send + 'static, RpcError> {
        let task = self.task(params, Action::Read).await?;
        let prompt = self.prompt(task).await?;
        // From the message on: the log tells where the turn is, then live events go on.
        let from = prompt.seq.saturating_sub(1);
        let permits = self.state.limits.connect(&self.caller)?;
        let subscription = self.state.engine.subscribe(task.conversation, from).await.map_err(ApiError::from)?;
        let first = self.snapshot(task).await?;
        Ok(follow_stream(task, first, subscription, permits))
    }

    async fn cancel_task(&self, params: Value) -> Result<Value, RpcError> {
        let task = self.task(params, Action::Post).await?;
        let prompt = self.prompt(task).await?;
        // Followed from the message on, so the turn's end is seen however soon it comes.
        let from = prompt.seq.saturating_sub(1);
        let mut subscription = self.state.engine.subscribe(task.conversation, from).await.map_err(ApiError::from)?;
        let state = self.progress(task, &prompt).await?.state;
        match state {
            TaskState::Working | TaskState::InputRequired => {}
            TaskState::Submitted => {
                return Err(RpcError::new(-32002, "the task has not started yet (another turn runs): cancel it later"));
            }
            _ => return Err(RpcError::new(-32002, format!("the task is {} already", state.name()))),
        }
        self.state.cancel(task.conversation).await;
        until_ended(task, &mut subscription, CANCEL_WAIT).await;
        self.snapshot(task).await
    }

    /// The task's message.
    async fn prompt(&self, task: TaskRef) -> Result<Message, RpcError> {
        Ok(self.state.engine.message_or_queued(task.conversation, task.message).await.map_err(ApiError::from)?)
    }

    /// Where the task is, read from the log after its message, and the turn's newest reply.
    async fn progress(&self, task: TaskRef, prompt: &Message) -> Result<Follow, RpcError> {
        let after = prompt.seq.saturating_sub(1);
        let events =
            self.state.engine.events_after(task.conversation, after, TASK_EVENTS).await.map_err(ApiError::from)?;
        let mut follow = Follow::new(task);
        for envelope in &events {
            if follow.on(envelope).1 {
                break;
            }
        }
        Ok(follow)
    }

    /// The task as A2A shows it.
    async fn snapshot(&self, task: TaskRef) -> Result<Value, RpcError> {
        let prompt = self.prompt(task).await?;
        let Follow { state, reply, .. } = self.progress(task, &prompt).await?;
        let mut snapshot = json!({
            "id": task.id(),
            "contextId": task.conversation.to_string(),
            "status": status(task, state, reply.as_ref()),
            "history": [a2a_message(task, &prompt)],
        });
        if let Some(reply) = reply.filter(|m| !m.text().is_empty()) {
            snapshot["artifacts"] =
                json!([{ "artifactId": reply.id.to_string(), "parts": [{ "text": reply.text() }] }]);
        }
        Ok(snapshot)
    }
}

/// A2A's task states, as far as a turn has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Submitted,
    Working,
    InputRequired,
    Completed,
    Canceled,
    Failed,
}

impl TaskState {
    const fn name(self) -> &'static str {
        match self {
            Self::Submitted => "TASK_STATE_SUBMITTED",
            Self::Working => "TASK_STATE_WORKING",
            Self::InputRequired => "TASK_STATE_INPUT_REQUIRED",
            Self::Completed => "TASK_STATE_COMPLETED",
            Self::Canceled => "TASK_STATE_CANCELED",
            Self::Failed => "TASK_STATE_FAILED",
        }
    }

    const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Canceled | Self::Failed)
    }
}

fn a2a_message(task: TaskRef, message: &Message) -> Value {
    let role = if message.role == MessageRole::Assistant { "ROLE_AGENT" } else { "ROLE_USER" };
    json!({
        "messageId": message.client_msg_id.clone().unwrap_or_else(|| message.id.to_string()),
        "contextId": task.conversation.to_string(),
        "taskId": task.id(),
        "role": role,
        "parts": wire::parts_of(&message.content),
    })
}

fn status(task: TaskRef, state: TaskState, reply: Option<&Message>) -> Value {
    let mut status = json!({ "state": state.name(), "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true) });
    if state.is_terminal()
        && let Some(reply) = reply
    {
        status["message"] = a2a_message(task, reply);
    }
    status
}

/// Follows a conversation's events for one task: the turn that answers its message, with its
/// replies, approvals and end.
struct Follow {
    task: TaskRef,
    answer: AnswerTo,
    state: TaskState,
    reply: Option<Message>,
    /// Messages whose deltas have begun (later deltas append to their artifact).
    streaming: HashSet<MessageId>,
    /// Tool calls waiting for an approval.
    waiting: Vec<colloquy_core_model::ToolCallId>,
}

impl Follow {
    fn new(task: TaskRef) -> Self {
        let answer = AnswerTo::new(task.message);
        Self { task, answer, state: TaskState::Submitted, reply: None, streaming: HashSet::new(), waiting: Vec::new() }
    }

    /// Takes in one event; returns the A2A stream responses it makes and whether the task ended.
    fn on(&mut self, envelope: &EventEnvelope) -> (Vec<Value>, bool) {
        let task = self.task;
        let update = |state: TaskState, reply: Option<&Message>| {
            json!({ "statusUpdate": {
                "taskId": task.id(),
                "contextId": task.conversation.to_string(),
                "status": status(task, state, reply),
            } })
        };
        let mut out = Vec::new();
        if !self.answer.takes(&envelope.event) {
            return (out, false);
        }
        match &envelope.event {
            TurnEvent::AgentStart { .. } => {
                self.state = TaskState::Working;
                out.push(update(TaskState::Working, None));
            }
            TurnEvent::MessageUpdate { message_id, delta: MessageDelta::Text { text }, .. } => {
                let append = !self.streaming.insert(*message_id);
                out.push(json!({ "artifactUpdate": {
                    "taskId": task.id(),
                    "contextId": task.conversation.to_string(),
                    "artifact": { "artifactId": message_id.to_string(), "parts": [{ "text": text }] },
                    "append": append,
                } }));
            }
            TurnEvent::MessageEnd { message, .. } => self.reply = Some(message.clone()),
            TurnEvent::ApprovalRequested { tool_call_id, .. } => {
                self.waiting.push(tool_call_id.clone());
                self.state = TaskState::InputRequired;
                out.push(update(TaskState::InputRequired, None));
            }
            TurnEvent::ToolExecutionEnd { tool_call_id, .. } => {
                self.waiting.retain(|call| call != tool_call_id);
                if self.state == TaskState::InputRequired && self.waiting.is_empty() {
                    self.state = TaskState::Working;
                    out.push(update(TaskState::Working, None));
                }
            }
            TurnEvent::AgentEnd { stop, .. } => {
                self.state = match stop {
                    StopReason::Cancelled => TaskState::Canceled,
                    StopReason::Error { .. } => TaskState::Failed,
                    _ => TaskState::Completed,
                };
                out.push(update(self.state, self.reply.as_ref()));
                return (out, true);
            }
            _ => {}
        }
        (out, false)
    }
}

/// Follows the task's events until its turn ends (`true`) or `limit` passes (`false`).
async fn until_ended(task: TaskRef, subscription: &mut Subscription, limit: Duration) -> bool {
    let mut follow = Follow::new(task);
    let ended = async {
        while let Ok(envelope) = subscription.next().await {
            if follow.on(&envelope).1 {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(limit, ended).await.unwrap_or(false)
}

/// The stream of a task: `first` (the task), then its updates until it ends; it holds the
/// connection's place (`permits`) while it is open.
fn follow_stream(
    task: TaskRef,
    first: Value,
    subscription: Subscription,
    permits: ConnectionPermits,
) -> impl Stream<Item = Value> + Send + 'static {
    let terminal = first["status"]["state"]
        .as_str()
        .is_some_and(|state| ["TASK_STATE_COMPLETED", "TASK_STATE_CANCELED", "TASK_STATE_FAILED"].contains(&state));
    let start = futures::stream::iter([json!({ "task": first })]);
    let updates = futures::stream::unfold(
        (subscription, Follow::new(task), std::collections::VecDeque::new(), terminal, permits),
        |(mut subscription, mut follow, mut queued, mut done, permits)| async move {
            loop {
                if let Some(next) = queued.pop_front() {
                    return Some((next, (subscription, follow, queued, done, permits)));
                }
                if done {
                    return None;
                }
                let envelope = subscription.next().await.ok()?;
                let (updates, ended) = follow.on(&envelope);
                queued.extend(updates);
                done = ended;
            }
        },
    );
    futures::StreamExt::chain(start, updates)
}
