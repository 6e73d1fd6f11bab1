//! The A2A server (Agent2Agent protocol 1.0, JSON-RPC binding; docs/a2a.md): the gateway's
//! default agent as an A2A agent. Its card is at `/.well-known/agent-card.json`; JSON-RPC
//! requests go to `POST /a2a/v1` with the gateway's bearer keys. An A2A `contextId` is a
//! conversation (a message without one starts a new `user_agent` conversation of the caller's),
//! and a task is the prompt turn that answers one message: its id is
//! `<conversation>:<message>`, and its state is read from the conversation's event log, so a
//! task survives restarts and is the same on every node of a cluster.
//!
//! Methods: `SendMessage` (waits for the turn unless `configuration.returnImmediately`),
//! `SendStreamingMessage` and `SubscribeToTask` (SSE: the task, then status and artifact
//! updates, token deltas included, until the turn ends), `GetTask`, `CancelTask`.

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use colloquy_core_model::limits::{MAX_JSON_DEPTH, json_depth};
use colloquy_core_model::{
    ContentPart, ConversationId, ConversationRequest, EventEnvelope, Message, MessageDelta, MessageId, MessageRole,
    StopReason, TurnEvent,
};
use colloquy_engine::{PostMessage, QueuePolicy, Subscription};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::answer::AnswerTo;
use crate::auth::Caller;
use crate::limits::ConnectionPermits;
use crate::policy::{self, Action};
use crate::rest::authorized;
use crate::{ApiError, AppState};

/// The protocol version this server speaks.
const PROTOCOL_VERSION: &str = "1.0";
/// How long `SendMessage` waits for its turn.
const TURN_WAIT: Duration = Duration::from_secs(600);
/// How long `CancelTask` waits for the turn to end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// Events of the log read to tell a task's state.
const TASK_EVENTS: u64 = 5_000;

/// The A2A routes, for the authorization test's table ([`crate::routes`]).
pub const ROUTES: [(&str, &str); 2] = [("GET", "/.well-known/agent-card.json"), ("POST", "/a2a/v1")];

/// The A2A routes: public card, authenticated JSON-RPC endpoint.
pub fn router() -> Router<AppState> {
    Router::new().route(ROUTES[0].1, get(card)).route(ROUTES[1].1, post(rpc))
}

/// `GET /.well-known/agent-card.json`: the default agent's card.
async fn card(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
    let agent = &state.default_agent;
    let tools = if agent.tools.is_empty() { "none".to_owned() } else { agent.tools.join(", ") };
    let mut card = json!({
        "name": "Colloquy",
        "description": format!(
            "A Colloquy conversation agent ({} on {}); tools: {tools}. Each contextId is a stored conversation.",
            agent.model, agent.provider
        ),
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{
            "url": format!("{scheme}://{host}/a2a/v1"),
            "protocolBinding": "JSONRPC",
            "protocolVersion": PROTOCOL_VERSION,
        }],
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
        card["securitySchemes"] = json!({ "bearer": { "httpAuthSecurityScheme": { "scheme": "Bearer" } } });
        card["securityRequirements"] = json!([{ "schemes": { "bearer": { "list": [] } } }]);
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

/// `POST /a2a/v1`: one JSON-RPC request.
async fn rpc(State(state): State<AppState>, caller: Caller, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
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
        && !version.starts_with('1')
    {
        let error = RpcError::new(-32009, format!("A2A version {version} is not served here: use {PROTOCOL_VERSION}"));
        return axum::Json(reply(&id, Err(error))).into_response();
    }
    let method = request.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    let a2a = A2a { state, caller };
    let result = match method.as_str() {
        "SendMessage" => a2a.send(params).await,
        "GetTask" => a2a.get_task(params).await,
        "CancelTask" => a2a.cancel_task(params).await,
        "SendStreamingMessage" => match a2a.send_streaming(params).await {
            Ok(stream) => return sse(id, stream),
            Err(error) => Err(error),
        },
        "SubscribeToTask" => match a2a.subscribe_to_task(params).await {
            Ok(stream) => return sse(id, stream),
            Err(error) => Err(error),
        },
        "" => Err(RpcError::new(-32600, "a JSON-RPC request needs a `method`")),
        other => Err(RpcError::new(-32601, format!("`{other}` is not a method this agent serves"))),
    };
    axum::Json(reply(&id, result)).into_response()
}

/// The SSE response of a stream: each event is a JSON-RPC response with the request's id; the
/// response ends with the task (so the client's stream ends).
fn sse(id: Value, stream: impl Stream<Item = Value> + Send + 'static) -> Response {
    use futures::StreamExt;
    let events = stream.map(move |result| {
        Ok::<_, std::convert::Infallible>(Event::default().data(reply(&id, Ok(result)).to_string()))
    });
    Sse::new(events).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct A2aPart {
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct A2aMessage {
    message_id: String,
    context_id: Option<String>,
    task_id: Option<String>,
    #[serde(default)]
    parts: Vec<A2aPart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendConfiguration {
    #[serde(default)]
    return_immediately: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
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

/// One request's caller and state.
struct A2a {
    state: AppState,
    caller: Caller,
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
    /// Stores the message in its conversation (a new one without `contextId`); returns the task
    /// and a subscription from just before the message.
    async fn post(&self, params: Value) -> Result<(TaskRef, Subscription, bool), RpcError> {
        let SendParams { message, configuration } = parse::<SendParams>(params)?;
        if message.task_id.is_some() {
            return Err(RpcError::new(
                -32004,
                "a message that continues a task is not served: send it without taskId, in the same contextId",
            ));
        }
        let text: Vec<String> = message.parts.into_iter().filter_map(|part| part.text).collect();
        if text.is_empty() {
            return Err(RpcError::new(-32005, "only text parts are served: send the message as {\"text\": ...} parts"));
        }
        let conversation = match message.context_id {
            Some(context) => {
                let id: ConversationId = context
                    .parse()
                    .map_err(|_| RpcError::invalid(format!("contextId {context} is not a conversation id")))?;
                id
            }
            None => {
                let request = ConversationRequest::default();
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
        let sender = policy::sender(&self.caller, &access, &participants, None)?;
        let after = self.state.engine.conversation(conversation).await.map_err(ApiError::from)?.last_seq;
        let subscription = self.state.engine.subscribe(conversation, after).await.map_err(ApiError::from)?;
        let content = text.into_iter().map(ContentPart::text).collect();
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
        Ok((task, subscription, configuration.is_some_and(|c| c.return_immediately)))
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
        // The message must be there: a made-up id is not a task.
        self.state.engine.message(task.conversation, task.message).await.map_err(|_| RpcError::task_not_found(&id))?;
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
        let (state, _) = self.progress(task, &prompt).await?;
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
        Ok(self.state.engine.message(task.conversation, task.message).await.map_err(ApiError::from)?)
    }

    /// Where the task is, read from the log after its message, and the turn's newest reply.
    async fn progress(&self, task: TaskRef, prompt: &Message) -> Result<(TaskState, Option<Message>), RpcError> {
        let after = prompt.seq.saturating_sub(1);
        let events =
            self.state.engine.events_after(task.conversation, after, TASK_EVENTS).await.map_err(ApiError::from)?;
        let mut follow = Follow::new(task);
        for envelope in &events {
            if follow.on(envelope).1 {
                break;
            }
        }
        Ok((follow.state, follow.reply))
    }

    /// The task as A2A shows it.
    async fn snapshot(&self, task: TaskRef) -> Result<Value, RpcError> {
        let prompt = self.prompt(task).await?;
        let (state, reply) = self.progress(task, &prompt).await?;
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
        "parts": [{ "text": message.text() }],
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
}

impl Follow {
    fn new(task: TaskRef) -> Self {
        let answer = AnswerTo::new(task.message);
        Self { task, answer, state: TaskState::Submitted, reply: None, streaming: HashSet::new() }
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
            TurnEvent::ApprovalRequested { .. } => {
                self.state = TaskState::InputRequired;
                out.push(update(TaskState::InputRequired, None));
            }
            TurnEvent::ToolExecutionEnd { .. } if self.state == TaskState::InputRequired => {
                self.state = TaskState::Working;
                out.push(update(TaskState::Working, None));
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
