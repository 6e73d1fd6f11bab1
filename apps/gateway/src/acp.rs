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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use colloquy_core_model::limits::{MAX_JSON_DEPTH, json_depth};
use colloquy_core_model::{
    Account, AccountId, AccountKind, ContentPart, ConversationId, ConversationRequest, MessageDelta, MessageRole,
    StopReason, ToolCallId, TurnEvent,
};
use colloquy_engine::{PostMessage, QueuePolicy};
use colloquy_store::NewAccount;
use colloquy_tools::ApprovalAnswer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::answer::AnswerTo;
use crate::{AppState, Config};

/// The ACP version this agent speaks.
const PROTOCOL_VERSION: u64 = 1;
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

    fn update(&self, session: ConversationId, update: Value) {
        let params = json!({ "sessionId": session.to_string(), "update": update });
        self.send(json!({ "jsonrpc": "2.0", "method": "session/update", "params": params }));
    }

    /// Sends a request to the editor and waits for its answer (`None` if it never comes).
    async fn request(&self, method: &str, params: Value) -> Option<Value> {
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
            "initialize" => Ok(json!({
                "protocolVersion": PROTOCOL_VERSION,
                "agentCapabilities": {
                    "loadSession": true,
                    "promptCapabilities": { "image": false, "audio": false, "embeddedContext": false },
                },
                "authMethods": [],
                "agentInfo": { "name": "colloquy", "title": "Colloquy", "version": env!("CARGO_PKG_VERSION") },
            })),
            "authenticate" => Ok(json!({})),
            "session/new" => self.new_session().await,
            "session/load" => self.load_session(&params).await,
            "session/prompt" => self.prompt(&params).await,
            "session/cancel" => {
                if let Ok(session) = session_id(&params) {
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
        Ok(json!({ "sessionId": conversation.id.to_string() }))
    }

    /// Replays the session's history, then answers.
    async fn load_session(&self, params: &Value) -> Result<Value, (i64, String)> {
        let session = self.own_session(params).await?;
        let history = self.state.engine.messages_after(session, 0, REPLAY_LIMIT).await.map_err(internal)?;
        for message in history {
            for part in &message.content {
                match (message.role, part) {
                    (MessageRole::User, ContentPart::Text { text }) => {
                        self.update(session, chunk("user_message_chunk", text))
                    }
                    (MessageRole::Assistant, ContentPart::Text { text }) => {
                        self.update(session, chunk("agent_message_chunk", text));
                    }
                    (MessageRole::Assistant, ContentPart::ToolCall { id, name, arguments }) => {
                        self.update(session, tool_call(id, name, arguments, "completed"));
                    }
                    (MessageRole::Tool, ContentPart::ToolResult { tool_call_id, content, is_error, .. }) => {
                        self.update(session, tool_result(tool_call_id, content, *is_error));
                    }
                    _ => {}
                }
            }
        }
        Ok(json!({}))
    }

    /// Posts the prompt and streams the turn that answers it; answers with its stop reason.
    async fn prompt(&self, params: &Value) -> Result<Value, (i64, String)> {
        let session = self.own_session(params).await?;
        let blocks = params["prompt"].as_array().cloned().unwrap_or_default();
        let mut content = Vec::new();
        for block in &blocks {
            match (block["type"].as_str(), block["text"].as_str()) {
                (Some("text"), Some(text)) => content.push(ContentPart::text(text)),
                (kind, _) => {
                    let kind = kind.unwrap_or("untyped");
                    return Err((-32602, format!("`{kind}` content is not served: send text blocks")));
                }
            }
        }
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
                    self.update(session, chunk("agent_message_chunk", &text));
                }
                TurnEvent::ToolExecutionStart { tool_call_id, tool_name, arguments, .. } => {
                    self.update(session, tool_call(&tool_call_id, &tool_name, &arguments, "in_progress"));
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
        let params = json!({
            "sessionId": session.to_string(),
            "toolCall": { "toolCallId": call.to_string(), "title": name, "kind": "other", "status": "pending", "rawInput": arguments },
            "options": [
                { "optionId": "allow", "name": "Allow", "kind": "allow_once" },
                { "optionId": "reject", "name": "Reject", "kind": "reject_once" },
            ],
        });
        let answer = self.request("session/request_permission", params).await;
        let outcome = answer.as_ref().map(|a| &a["result"]["outcome"]);
        match outcome {
            Some(outcome) if outcome["outcome"] == "selected" && outcome["optionId"] == "allow" => {
                ApprovalAnswer::Allow
            }
            Some(outcome) if outcome["outcome"] == "selected" => {
                ApprovalAnswer::Deny("rejected in the editor".to_owned())
            }
            _ => ApprovalAnswer::Deny("the editor cancelled the permission request".to_owned()),
        }
    }

    /// The session of `params`, if it is one of this agent's.
    async fn own_session(&self, params: &Value) -> Result<ConversationId, (i64, String)> {
        let session = session_id(params)?;
        let participants = self.state.engine.participants(session).await.map_err(|_| unknown(session))?;
        if participants.iter().any(|p| p.account == Some(self.account.id)) {
            Ok(session)
        } else {
            Err(unknown(session))
        }
    }
}

fn session_id(params: &Value) -> Result<ConversationId, (i64, String)> {
    let id = params["sessionId"].as_str().unwrap_or_default();
    id.parse().map_err(|_| (-32602, format!("sessionId `{id}` is not a session of this agent")))
}

fn unknown(session: ConversationId) -> (i64, String) {
    (-32602, format!("there is no session {session}: start one with session/new"))
}

fn internal(error: colloquy_engine::EngineError) -> (i64, String) {
    (-32603, error.to_string())
}

fn chunk(kind: &str, text: &str) -> Value {
    json!({ "sessionUpdate": kind, "content": { "type": "text", "text": text } })
}

fn tool_call(id: &ToolCallId, name: &str, arguments: &Value, status: &str) -> Value {
    json!({
        "sessionUpdate": "tool_call",
        "toolCallId": id.to_string(),
        "title": name,
        "kind": "other",
        "status": status,
        "rawInput": arguments,
    })
}

fn tool_result(id: &ToolCallId, content: &str, is_error: bool) -> Value {
    json!({
        "sessionUpdate": "tool_call_update",
        "toolCallId": id.to_string(),
        "status": if is_error { "failed" } else { "completed" },
        "content": [{ "type": "content", "content": { "type": "text", "text": content } }],
    })
}

/// The prompt's answer: ACP's stop reason, or an error for a turn that failed.
fn stop_reason(stop: StopReason) -> Result<Value, (i64, String)> {
    let reason = match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::MaxTurnRequests | StopReason::BudgetExceeded { .. } => "max_turn_requests",
        StopReason::Refusal => "refusal",
        StopReason::Cancelled => "cancelled",
        StopReason::Error { error } => return Err((-32603, format!("the turn failed: {}", error.message))),
    };
    Ok(json!({ "stopReason": reason }))
}
