//! What a tool call knows about where it runs: the conversation, who asked and with which
//! permissions, a way to report progress, and cancellation.

use colloquy_core_model::{ConversationId, ParticipantId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a tool call knows about where it runs.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The conversation the call belongs to.
    pub conversation_id: ConversationId,
    /// The agent that made the call.
    pub caller: ParticipantId,
    /// The conversation's `options.context` (user, tenant, permissions, ...).
    pub context: serde_json::Value,
    /// Who the call is made for, read from `context`; authorization checks it.
    pub identity: CallerIdentity,
    /// Cancelled when the turn is cancelled; long-running tools should watch it.
    pub cancel: CancellationToken,
    /// Where [`ToolContext::progress`] goes; the executor installs one per call, so a context
    /// built by hand (a unit test) reports into the void.
    progress: Option<mpsc::UnboundedSender<serde_json::Value>>,
}

impl ToolContext {
    /// The context of calls in `conversation_id` made by `caller`, with the conversation's
    /// `options.context`; the caller's identity is read from it (see [`CallerIdentity::from_context`]).
    pub fn new(
        conversation_id: ConversationId,
        caller: ParticipantId,
        context: serde_json::Value,
        cancel: CancellationToken,
    ) -> Self {
        let identity = CallerIdentity::from_context(&context);
        Self { conversation_id, caller, context, identity, cancel, progress: None }
    }

    /// Reports how far the call has got (any JSON: a percentage, a stage, partial output). The
    /// executor forwards it as [`crate::ExecutionEvent::Progress`] while the call runs; reports
    /// made after the call finished are dropped.
    pub fn progress(&self, progress: serde_json::Value) {
        if let Some(sender) = &self.progress {
            // The receiver is gone only once the call has finished; late reports do not matter.
            let _ = sender.send(progress);
        }
    }

    /// A copy whose progress reports go to `sender`.
    pub(crate) fn reporting_to(&self, sender: mpsc::UnboundedSender<serde_json::Value>) -> Self {
        Self { progress: Some(sender), ..self.clone() }
    }
}

/// Who a call is made for: the user, their tenant and their permissions, as the application put
/// them in the conversation's `options.context`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerIdentity {
    /// The user, if the application named one.
    pub user: Option<String>,
    /// The user's tenant, if any.
    pub tenant: Option<String>,
    /// What the caller may do; a tool's [`crate::Tool::required_permission`] must be among them.
    pub permissions: Vec<String>,
}

impl CallerIdentity {
    /// Reads `{"user": .., "tenant": .., "permissions": [..]}` from a conversation's
    /// `options.context`. Anything missing or malformed counts as absent, so a broken context
    /// grants no permissions rather than failing the turn.
    pub fn from_context(context: &serde_json::Value) -> Self {
        let text = |key: &str| match context.get(key) {
            Some(serde_json::Value::String(text)) => Some(text.clone()),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        let permissions = context
            .get("permissions")
            .and_then(serde_json::Value::as_array)
            .map(|list| list.iter().filter_map(serde_json::Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Self { user: text("user"), tenant: text("tenant"), permissions }
    }

    /// Whether the caller holds this permission (exact match).
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|held| held == permission)
    }
}
