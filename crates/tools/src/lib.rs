//! Colloquy's tools: the [`Tool`] trait, the [`ToolRegistry`] that validates arguments against
//! each tool's JSON Schema, the [`ToolExecutor`] that runs calls in parallel with timeouts (and
//! with authorization, an approval hook, a circuit breaker per tool, progress reports and an
//! output limit), and the built-in tools.
//!
//! Architecture invariant: a tool's failure is data for the model (a [`ToolResult`] with
//! `is_error`), never an error of the turn, and every call handed to the executor yields exactly
//! one result. Nothing here knows about storage or providers.

mod approval;
mod builtin;
mod circuit;
mod context;
mod executor;
mod registry;

use async_trait::async_trait;

pub use approval::{Approval, ApprovalAnswer, ApprovalError, ApprovalHook, Approvals, PendingApproval};
pub use builtin::{Calculator, Clock, JsonQuery};
pub use circuit::{CircuitBreakerConfig, CircuitState};
pub use context::{CallerIdentity, ToolContext};
pub use executor::{ExecutionEvent, ExecutionStream, ExecutorConfig, ToolCallRequest, ToolExecutor, ToolResult};
pub use registry::{RegistryError, ToolRegistry};

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

    /// The permission a caller must hold ([`CallerIdentity::permissions`]) to call it; a call
    /// without it is refused with an error result and never runs. Default: none needed.
    fn required_permission(&self) -> Option<&str> {
        None
    }

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
