//! A tool that does what its arguments say and counts its runs, and helpers to call it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use colloquy_core_model::{ConversationId, ParticipantId};
use colloquy_tools::{ExecutionEvent, Tool, ToolCallRequest, ToolContext, ToolError, ToolExecutor, ToolRegistry};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// `probe`: succeeds, fails, panics, sleeps, reports progress or writes a lot, as `mode` says;
/// counts how often it actually ran.
pub struct Probe {
    pub runs: Arc<AtomicUsize>,
    pub permission: Option<&'static str>,
}

#[async_trait]
impl Tool for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn description(&self) -> &str {
        "behaves as told"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "mode": {"enum": ["ok", "fail", "panic", "slow", "progress", "big"]},
                "size": {"type": "integer", "minimum": 0}
            },
            "required": ["mode"]
        })
    }
    fn required_permission(&self) -> Option<&str> {
        self.permission
    }
    async fn execute(&self, arguments: serde_json::Value, ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match arguments["mode"].as_str() {
            Some("fail") => Err(ToolError::new("failed as asked")),
            Some("panic") => panic!("panicked as asked"),
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(json!("slow but fine"))
            }
            Some("progress") => {
                ctx.progress(json!({"step": 1}));
                tokio::time::sleep(Duration::from_millis(10)).await;
                ctx.progress(json!({"step": 2}));
                Ok(json!("done"))
            }
            Some("big") => Ok(json!("é".repeat(arguments["size"].as_u64().unwrap_or(0) as usize))),
            _ => Ok(json!("fine")),
        }
    }
}

pub struct Fixture {
    pub executor: ToolExecutor,
    pub runs: Arc<AtomicUsize>,
}

impl Fixture {
    pub fn new(permission: Option<&'static str>) -> Self {
        let runs = Arc::new(AtomicUsize::new(0));
        let mut registry = ToolRegistry::new();
        registry.register(Probe { runs: Arc::clone(&runs), permission }).unwrap();
        Self { executor: ToolExecutor::new(Arc::new(registry)), runs }
    }

    pub fn with_breaker(mut self, config: colloquy_tools::CircuitBreakerConfig) -> Self {
        self.executor = self.executor.with_circuit_breaker(config);
        self
    }

    pub fn with_approval(mut self, hook: impl colloquy_tools::ApprovalHook) -> Self {
        self.executor = self.executor.with_approval(hook);
        self
    }

    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    /// Runs the calls with default bounds in a fresh conversation and collects every event.
    pub async fn events(&self, calls: Vec<ToolCallRequest>) -> Vec<ExecutionEvent> {
        self.events_with(calls, ctx(serde_json::Value::Null), colloquy_tools::ExecutorConfig::default()).await
    }

    pub async fn events_with(
        &self,
        calls: Vec<ToolCallRequest>,
        ctx: ToolContext,
        config: colloquy_tools::ExecutorConfig,
    ) -> Vec<ExecutionEvent> {
        self.executor.execute(calls, &["probe".to_owned()], ctx, config).collect().await
    }
}

pub fn ctx(context: serde_json::Value) -> ToolContext {
    ToolContext::new(ConversationId::new(), ParticipantId::new(), context, CancellationToken::new())
}

pub fn call(id: &str, name: &str, arguments: serde_json::Value) -> ToolCallRequest {
    ToolCallRequest { id: id.into(), name: name.into(), arguments }
}

pub fn probe(id: &str, mode: &str) -> ToolCallRequest {
    call(id, "probe", json!({ "mode": mode }))
}

/// The content of the one `Finished` event, with whether it is an error.
pub fn only_result(events: &[ExecutionEvent]) -> (bool, String) {
    let finished: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            ExecutionEvent::Finished { result, .. } => Some((result.is_error, result.content.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{events:?}");
    finished.into_iter().next().unwrap()
}
