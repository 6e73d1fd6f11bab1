//! `colloquy acp`: the gateway's default agent as an ACP agent (Agent Client Protocol, version 1;
//! docs/acp.md) for editors, over stdio: newline-delimited JSON-RPC 2.0 on stdin and stdout,
//! logs on stderr. A session is a conversation in the configured store, so `session/load` finds
//! it again after a restart; a prompt is one message and the turn that answers it.
//!
//! Served: `initialize`, `authenticate` (nothing to do), `session/new`, `session/load`
//! (replays the history as `session/update`s, then answers), `session/prompt` (streams
//! `agent_message_chunk`, `tool_call` and `tool_call_update`, answers with the stop reason),
//! and the `session/cancel` notification. A tool that needs approval
//! (`tools.require_approval`) asks the editor with `session/request_permission`.
//!
//! Every message is read and written with the protocol's own Rust types (the
//! `agent-client-protocol-schema` crate). Its companion crate's `Agent` trait and connection are
//! not used: they run on one thread (`?Send` futures on a `LocalSet`), while the engine's turns run
//! on tokio's worker threads; this module keeps the framing (one JSON-RPC message per line).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use agent_client_protocol_schema::ProtocolVersion;
use agent_client_protocol_schema::v1 as acp;
use colloquy_core_model::limits::{MAX_JSON_DEPTH, json_depth};
use colloquy_core_model::{
    Account, AccountId, AccountKind, ContentPart, ConversationId, ConversationRequest, MediaSource, MessageDelta,
    MessageRole, StopReason, ToolCallId, TurnEvent,
};
use colloquy_engine::{PostMessage, QueuePolicy};
use colloquy_store::NewAccount;
use colloquy_tools::ApprovalAnswer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::answer::AnswerTo;
use crate::{AppState, Config};

/// The account ACP sessions belong to.
const ACCOUNT: &str = "acp";
/// Messages replayed by `session/load`.
const REPLAY_LIMIT: u64 = 10_000;

/// Runs an ACP agent on stdin and stdout until stdin ends.
pub async fn serve_stdio(config: Config) -> anyhow::Result<()> {
    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    let (state, banner) = AppState::build(config).await?;
    for line in banner {
        tracing::info!("{line}");
    }
    let account = account(&state).await?;
    let (out, mut outgoing) = mpsc::unbounded_channel::<Value>();
    // One writer, so that every message is one whole line, in the order it was sent.
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(message) = outgoing.recv().await {
            let mut line = message.to_string().into_bytes();
            line.push(b'\n');
            stdout.write_all(&line).await?;
            stdout.flush().await?;
        }
        std::io::Result::Ok(())
    });
    let agent =
        Arc::new(Agent { state: state.clone(), account, out, pending: Mutex::default(), next_id: AtomicU64::new(0) });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(error) => {
                agent.send(failure(&Value::Null, -32700, format!("not JSON: {error}")));
                continue;
            }
        };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        if json_depth(&message) > MAX_JSON_DEPTH {
            agent.send(failure(&id, -32600, format!("the message nests deeper than {MAX_JSON_DEPTH} levels")));
            continue;
        }
        if message.get("method").is_none() {
            // A response to one of ours (`session/request_permission`).
            if let Some(waiting) = id.as_u64().and_then(|id| agent.pending().remove(&id)) {
                let _ = waiting.send(message);
            }
            continue;
        }
        let agent = Arc::clone(&agent);
        // Concurrently: a `session/cancel` must reach a prompt that is running.
        tokio::spawn(async move { agent.handle(message).await });
    }
    // The editor closed stdin: finish (running turns get the grace period), then exit.
    state.engine.shutdown(grace).await;
    state.engine.close().await?;
    drop(agent);
    let _ = writer.await;
    Ok(())
}

/// The `acp` account, made at first use.
async fn account(state: &AppState) -> anyhow::Result<Account> {
    if let Some(account) = state.engine.accounts().await?.into_iter().find(|a| a.name == ACCOUNT) {
        return Ok(account);
    }
    let new = NewAccount {
        id: AccountId::new(),
        name: ACCOUNT.to_owned(),
        kind: AccountKind::User,
        display_name: "editor".to_owned(),
    };
    Ok(state.engine.create_account(new).await?)
}

fn failure(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message.into() } })
}

struct Agent {
    state: AppState,
    account: Account,
    out: mpsc::UnboundedSender<Value>,
    /// Our requests waiting for the editor's answer, by id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_id: AtomicU64,
}

impl Agent {
    fn send(&self, message: Value) {
        let _ = self.out.send(message);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Value>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, session: ConversationId, update: acp::SessionUpdate) {
        let params = acp::SessionNotification::new(session.to_string(), update);
        self.send(json!({ "jsonrpc": "2.0", "method": "session/update", "params": params }));
    }

    /// Sends a request to the editor and waits for its answer (`None` if it never comes).
    async fn request(&self, method: &str, params: impl serde::Serialize) -> Option<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.pending().insert(id, answer);
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        answered.await.ok()
    }

    async fn handle(&self, message: Value) {
        let id = message.get("id").cloned();
        let method = message["method"].as_str().unwrap_or_default();
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let result = match method {
            "initialize" => parse::<acp::InitializeRequest>(params).map(|_| {
                let prompts = acp::PromptCapabilities::new().image(true).embedded_context(true);
                let capabilities = acp::AgentCapabilities::new().load_session(true).prompt_capabilities(prompts);
                let info = acp::Implementation::new("colloquy", env!("CARGO_PKG_VERSION")).title("Colloquy".to_owned());
                to_value(
                    acp::InitializeResponse::new(ProtocolVersion::V1).agent_capabilities(capabilities).agent_info(info),
                )
            }),
            "authenticate" => Ok(to_value(acp::AuthenticateResponse::default())),
            "session/new" => match parse::<acp::NewSessionRequest>(params) {
                Ok(_) => self.new_session().await,
                Err(error) => Err(error),
            },
            "session/load" => match parse::<acp::LoadSessionRequest>(params) {
                Ok(request) => self.load_session(&request.session_id).await,
                Err(error) => Err(error),
            },
            "session/prompt" => match parse::<acp::PromptRequest>(params) {
                Ok(request) => self.prompt(request).await,
                Err(error) => Err(error),
            },
            "session/cancel" => {
                if let Ok(cancel) = parse::<acp::CancelNotification>(params)
                    && let Ok(session) = session_id(&cancel.session_id)
                {
                    self.state.cancel(session).await;
                }
                return;
            }
            other => Err((-32601, format!("`{other}` is not a method this agent serves"))),
        };
        // Notifications get no answer.
        let Some(id) = id else { return };
        self.send(match result {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err((code, message)) => failure(&id, code, message),
        });
    }

    async fn new_session(&self) -> Result<Value, (i64, String)> {
        let (conversation, _) = self
            .state
            .engine
            .create_conversation_for(&self.account, ConversationRequest::default(), &self.state.default_agent)
            .await
            .map_err(internal)?;
        Ok(to_value(acp::NewSessionResponse::new(conversation.id.to_string())))
    }

    /// Replays the session's history, then answers.
    async fn load_session(&self, session: &acp::SessionId) -> Result<Value, (i64, String)> {
        let session = self.own_session(session).await?;
        let history = self.state.engine.messages_after(session, 0, REPLAY_LIMIT).await.map_err(internal)?;
        for message in history {
            for part in &message.content {
                match (message.role, part) {
                    (MessageRole::User, ContentPart::Text { text }) => {
                        self.update(session, acp::SessionUpdate::UserMessageChunk(chunk(text)));
                    }
                    (MessageRole::Assistant, ContentPart::Text { text }) => {
                        self.update(session, acp::SessionUpdate::AgentMessageChunk(chunk(text)));
                    }
                    (MessageRole::Assistant, ContentPart::ToolCall { id, name, arguments }) => {
                        self.update(session, tool_call(id, name, arguments, acp::ToolCallStatus::Completed));
                    }
                    (MessageRole::Tool, ContentPart::ToolResult { tool_call_id, content, is_error, .. }) => {
                        self.update(session, tool_result(tool_call_id, content, *is_error));
                    }
                    _ => {}
                }
            }
        }
        Ok(to_value(acp::LoadSessionResponse::new()))
    }

    /// Posts the prompt and streams the turn that answers it; answers with its stop reason.
    async fn prompt(&self, request: acp::PromptRequest) -> Result<Value, (i64, String)> {
        let session = self.own_session(&request.session_id).await?;
        let content = request.prompt.into_iter().map(content_of).collect::<Result<Vec<_>, _>>()?;
        if content.is_empty() {
            return Err((-32602, "the prompt is empty: send at least one text block".to_owned()));
        }
        let engine = &self.state.engine;
        let after = engine.conversation(session).await.map_err(internal)?.last_seq;
        let mut events = engine.subscribe(session, after).await.map_err(internal)?;
        let post = PostMessage { sender: None, content, client_msg_id: None, queue: QueuePolicy::Queue };
        let posted = engine.post_message(session, post).await.map_err(internal)?;
        let mut answer = AnswerTo::new(posted.message.id);
        loop {
            let envelope = events.next().await.map_err(|error| (-32603, error.to_string()))?;
            if !answer.takes(&envelope.event) {
                continue;
            }
            match envelope.event {
                TurnEvent::MessageUpdate { delta: MessageDelta::Text { text }, .. } => {
                    self.update(session, acp::SessionUpdate::AgentMessageChunk(chunk(&text)));
                }
                TurnEvent::ToolExecutionStart { tool_call_id, tool_name, arguments, .. } => {
                    let call = tool_call(&tool_call_id, &tool_name, &arguments, acp::ToolCallStatus::InProgress);
                    self.update(session, call);
                }
                TurnEvent::ToolExecutionEnd { tool_call_id, message, .. } => {
                    for part in &message.content {
                        if let ContentPart::ToolResult { content, is_error, .. } = part {
                            self.update(session, tool_result(&tool_call_id, content, *is_error));
                        }
                    }
                }
                TurnEvent::ApprovalRequested { tool_call_id, tool_name, arguments, .. } => {
                    let answer = self.ask_permission(session, &tool_call_id, &tool_name, &arguments).await;
                    // Not pending any more (the turn was cancelled, or the approval timed out).
                    let _ = engine.answer_approval(session, &tool_call_id, answer);
                }
                TurnEvent::AgentEnd { stop, .. } => return stop_reason(stop),
                _ => {}
            }
        }
    }

    /// Asks the editor whether a tool call may run.
    async fn ask_permission(
        &self,
        session: ConversationId,
        call: &ToolCallId,
        name: &str,
        arguments: &Value,
    ) -> ApprovalAnswer {
        let fields = acp::ToolCallUpdateFields::new()
            .title(name.to_owned())
            .kind(acp::ToolKind::Other)
            .status(acp::ToolCallStatus::Pending)
            .raw_input(arguments.clone());
        let options = vec![
            acp::PermissionOption::new("allow", "Allow", acp::PermissionOptionKind::AllowOnce),
            acp::PermissionOption::new("reject", "Reject", acp::PermissionOptionKind::RejectOnce),
        ];
        let call = acp::ToolCallUpdate::new(call.to_string(), fields);
        let params = acp::RequestPermissionRequest::new(session.to_string(), call, options);
        let answer = self.request("session/request_permission", params).await;
        let outcome = answer
            .and_then(|answer| serde_json::from_value::<acp::RequestPermissionResponse>(answer["result"].clone()).ok())
            .map(|response| response.outcome);
        match outcome {
            Some(acp::RequestPermissionOutcome::Selected(selected)) if &*selected.option_id.0 == "allow" => {
                ApprovalAnswer::Allow
            }
            Some(acp::RequestPermissionOutcome::Selected(_)) => {
                ApprovalAnswer::Deny("rejected in the editor".to_owned())
            }
            _ => ApprovalAnswer::Deny("the editor cancelled the permission request".to_owned()),
        }
    }

    /// The session, if it is one of this agent's.
    async fn own_session(&self, session: &acp::SessionId) -> Result<ConversationId, (i64, String)> {
        let session = session_id(session)?;
        let participants = self.state.engine.participants(session).await.map_err(|_| unknown(session))?;
        if participants.iter().any(|p| p.account == Some(self.account.id)) {
            Ok(session)
        } else {
            Err(unknown(session))
        }
    }
}

fn session_id(session: &acp::SessionId) -> Result<ConversationId, (i64, String)> {
    session.0.parse().map_err(|_| (-32602, format!("sessionId `{session}` is not a session of this agent")))
}

/// A request's params as the protocol's type, or the JSON-RPC error that says what is wrong.
fn parse<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, (i64, String)> {
    serde_json::from_value(params).map_err(|error| (-32602, format!("invalid params: {error}")))
}

fn to_value(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A prompt's content block as message content: text; images; a linked resource (an editor's
/// @-mention) as a Markdown link; an embedded text resource as its text under its URI, a binary
/// one as a file. Audio is not served.
fn content_of(block: acp::ContentBlock) -> Result<ContentPart, (i64, String)> {
    Ok(match block {
        acp::ContentBlock::Text(text) => ContentPart::text(text.text),
        acp::ContentBlock::Image(image) => ContentPart::Image {
            source: match image.uri {
                Some(url) if image.data.is_empty() => MediaSource::Url { url },
                _ => MediaSource::Base64 { mime_type: image.mime_type, data: image.data },
            },
        },
        acp::ContentBlock::ResourceLink(link) => ContentPart::text(format!("[{}]({})", link.name, link.uri)),
        acp::ContentBlock::Resource(embedded) => match embedded.resource {
            acp::EmbeddedResourceResource::TextResourceContents(text) => {
                ContentPart::text(format!("{}:\n```\n{}\n```", text.uri, text.text))
            }
            acp::EmbeddedResourceResource::BlobResourceContents(blob) => ContentPart::File {
                name: blob.uri.rsplit('/').next().unwrap_or("attachment").to_owned(),
                source: MediaSource::Base64 {
                    mime_type: blob.mime_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
                    data: blob.blob,
                },
            },
            _ => return Err((-32602, "this kind of embedded resource is not served: send text or a blob".to_owned())),
        },
        _ => return Err((-32602, "audio content is not served: send text, images or resources".to_owned())),
    })
}

fn unknown(session: ConversationId) -> (i64, String) {
    (-32602, format!("there is no session {session}: start one with session/new"))
}

fn internal(error: colloquy_engine::EngineError) -> (i64, String) {
    (-32603, error.to_string())
}

fn chunk(text: &str) -> acp::ContentChunk {
    acp::ContentChunk::new(text.into())
}

fn tool_call(id: &ToolCallId, name: &str, arguments: &Value, status: acp::ToolCallStatus) -> acp::SessionUpdate {
    let call = acp::ToolCall::new(id.to_string(), name).kind(acp::ToolKind::Other).status(status);
    acp::SessionUpdate::ToolCall(call.raw_input(arguments.clone()))
}

fn tool_result(id: &ToolCallId, content: &str, is_error: bool) -> acp::SessionUpdate {
    let status = if is_error { acp::ToolCallStatus::Failed } else { acp::ToolCallStatus::Completed };
    let fields = acp::ToolCallUpdateFields::new().status(status).content(vec![content.into()]);
    acp::SessionUpdate::ToolCallUpdate(acp::ToolCallUpdate::new(id.to_string(), fields))
}

/// The prompt's answer: ACP's stop reason, or an error for a turn that failed.
fn stop_reason(stop: StopReason) -> Result<Value, (i64, String)> {
    let reason = match stop {
        StopReason::EndTurn => acp::StopReason::EndTurn,
        StopReason::MaxTokens => acp::StopReason::MaxTokens,
        StopReason::MaxTurnRequests | StopReason::BudgetExceeded { .. } => acp::StopReason::MaxTurnRequests,
        StopReason::Refusal => acp::StopReason::Refusal,
        StopReason::Cancelled => acp::StopReason::Cancelled,
        StopReason::Error { error } => return Err((-32603, format!("the turn failed: {}", error.message))),
    };
    Ok(to_value(acp::PromptResponse::new(reason)))
}
