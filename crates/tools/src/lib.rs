//! Colloquy's tools: the [`Tool`] trait, the [`ToolRegistry`] that validates arguments against
//! each tool's JSON Schema, the [`ToolExecutor`] that runs calls in parallel with timeouts, and
//! the built-in tools.
//!
//! Architecture invariant: a tool's failure is data for the model (a [`ToolResult`] with
//! `is_error`), never an error of the turn, and every call handed to the executor yields exactly
//! one result. Nothing here knows about storage or providers.

mod builtin;
mod executor;
mod registry;

use async_trait::async_trait;
use colloquy_core_model::{ConversationId, ParticipantId};
use tokio_util::sync::CancellationToken;

pub use builtin::Calculator;
pub use executor::{ExecutionEvent, ExecutionStream, ExecutorConfig, ToolCallRequest, ToolExecutor, ToolResult};
pub use registry::{RegistryError, ToolRegistry};

/// What a tool call knows about where it runs.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The conversation the call belongs to.
    pub conversation_id: ConversationId,
    /// The agent that made the call.
    pub caller: ParticipantId,
    /// The conversation's `options.context` (user, tenant, permissions, ...).
    pub context: serde_json::Value,
    /// Cancelled when the turn is cancelled; long-running tools should watch it.
    pub cancel: CancellationToken,
}

/// Why a tool call failed, in words for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Something an agent can call.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    /// The name the model calls it by: `^[a-zA-Z0-9_-]{1,64}$`.
    fn name(&self) -> &str;

    /// What it does, for the model.
    fn description(&self) -> &str;

    /// JSON Schema of its arguments object.
    fn parameters(&self) -> serde_json::Value;

    /// Whether running the same call again after a crash is harmless (no side effects, or
    /// idempotent ones). Crash recovery re-runs only such calls; others are closed with an
    /// `interrupted` result instead. Default: `false`.
    fn replay_safe(&self) -> bool {
        false
    }

    /// Runs one call with arguments that already passed the schema. The returned JSON is shown to
    /// the model (strings as they are, anything else as JSON text).
    async fn execute(&self, arguments: serde_json::Value, ctx: &ToolContext) -> Result<serde_json::Value, ToolError>;
}
