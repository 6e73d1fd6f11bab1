//! Runs one response's tool calls: validated, in parallel up to a bound, each with a timeout,
//! each isolated from the others' failures and panics.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use colloquy_core_model::ToolCallId;
use futures::{FutureExt, Stream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::{ToolContext, ToolRegistry};

/// One call as the model made it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRequest {
    /// The provider's id for the call.
    pub id: ToolCallId,
    /// The tool the model asked for.
    pub name: String,
    /// The arguments the model wrote (a JSON string if they were not JSON).
    pub arguments: serde_json::Value,
}

/// The one result of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The call it answers.
    pub id: ToolCallId,
    /// The tool.
    pub name: String,
    /// What the model is shown.
    pub content: String,
    /// Whether the call failed (refused, invalid, timed out, cancelled, panicked or the tool's
    /// own error).
    pub is_error: bool,
}

impl ToolResult {
    fn error(call: &ToolCallRequest, content: String) -> Self {
        Self { id: call.id.clone(), name: call.name.clone(), content, is_error: true }
    }
}

/// Progress of an execution, by the call's position in the request list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionEvent {
    /// The call got a slot and started.
    Started {
        /// Position in the request list.
        index: usize,
    },
    /// The call finished; exactly one per call.
    Finished {
        /// Position in the request list.
        index: usize,
        /// Its result.
        result: ToolResult,
    },
}

/// Bounds for one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// Calls running at once (at least 1).
    pub concurrency: usize,
    /// Time limit per call.
    pub timeout: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            concurrency: colloquy_core_model::Options::DEFAULT_TOOL_CONCURRENCY,
            timeout: Duration::from_millis(colloquy_core_model::Options::DEFAULT_TOOL_TIMEOUT_MS),
        }
    }
}

/// Runs tool calls against a registry.
#[derive(Debug, Clone)]
pub struct ToolExecutor {
    registry: Arc<ToolRegistry>,
}

impl ToolExecutor {
    /// An executor over these tools.
    pub fn new(registry: Arc<ToolRegistry>) -> Self {
        Self { registry }
    }

    /// The tools it can run.
    pub fn registry(&self) -> &Arc<ToolRegistry> {
        &self.registry
    }

    /// Starts every call at once (bounded by `config.concurrency`) and streams their progress.
    /// A call to a tool not in `offered` is refused without running. Every call yields exactly
    /// one `Finished` event; the stream ends after the last. Dropping the stream aborts the calls
    /// still running.
    pub fn execute(
        &self,
        calls: Vec<ToolCallRequest>,
        offered: &[String],
        ctx: ToolContext,
        config: ExecutorConfig,
    ) -> ExecutionStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (index, call) in calls.into_iter().enumerate() {
            let is_offered = offered.contains(&call.name);
            let registry = Arc::clone(&self.registry);
            let (tx, slots, ctx) = (tx.clone(), Arc::clone(&slots), ctx.clone());
            tasks.spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _slot = slots.acquire().await;
                let _ = tx.send(ExecutionEvent::Started { index });
                let result = if is_offered {
                    run_one(&registry, &call, &ctx, config.timeout).await
                } else {
                    ToolResult::error(
                        &call,
                        format!(
                            "tool `{}` was not offered in this request: call one of the tools you were given",
                            call.name
                        ),
                    )
                };
                let _ = tx.send(ExecutionEvent::Finished { index, result });
            });
        }
        ExecutionStream { rx, _tasks: tasks }
    }
}

async fn run_one(registry: &ToolRegistry, call: &ToolCallRequest, ctx: &ToolContext, timeout: Duration) -> ToolResult {
    let Some(tool) = registry.get(&call.name) else {
        return ToolResult::error(
            call,
            format!("there is no tool named `{}`: call one of the tools you were given", call.name),
        );
    };
    if let serde_json::Value::String(text) = &call.arguments {
        return ToolResult::error(
            call,
            format!(
                "the arguments are not valid JSON (`{text}`): send a JSON object that matches the tool's parameters schema"
            ),
        );
    }
    let problems: Vec<String> = tool
        .validator
        .iter_errors(&call.arguments)
        .map(|error| {
            let path = error.instance_path().to_string();
            if path.is_empty() { error.to_string() } else { format!("{path}: {error}") }
        })
        .collect();
    if !problems.is_empty() {
        return ToolResult::error(
            call,
            format!(
                "invalid arguments for `{}`: {}; the parameters schema is {}",
                call.name,
                problems.join("; "),
                tool.spec.parameters
            ),
        );
    }
    let run = AssertUnwindSafe(tool.tool.execute(call.arguments.clone(), ctx)).catch_unwind();
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => ToolResult::error(call, "cancelled: the turn was cancelled before the tool finished".to_owned()),
        outcome = tokio::time::timeout(timeout, run) => match outcome {
            Err(_) => ToolResult::error(call, format!("timed out after {} ms: the tool did not finish in time", timeout.as_millis())),
            Ok(Err(_panic)) => ToolResult::error(call, "the tool failed unexpectedly (it panicked); this is a bug in the tool".to_owned()),
            Ok(Ok(Err(error))) => ToolResult::error(call, error.0),
            Ok(Ok(Ok(value))) => ToolResult {
                id: call.id.clone(),
                name: call.name.clone(),
                content: match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                },
                is_error: false,
            },
        },
    }
}

/// The progress of one [`ToolExecutor::execute`]; aborts its calls when dropped.
#[derive(Debug)]
pub struct ExecutionStream {
    rx: mpsc::UnboundedReceiver<ExecutionEvent>,
    _tasks: JoinSet<()>,
}

impl ExecutionStream {
    /// Waits for every call and returns the results in call order.
    pub async fn results_in_order(mut self) -> Vec<ToolResult> {
        let mut results = Vec::new();
        while let Some(event) = self.rx.recv().await {
            if let ExecutionEvent::Finished { index, result } = event {
                results.push((index, result));
            }
        }
        results.sort_by_key(|(index, _)| *index);
        results.into_iter().map(|(_, result)| result).collect()
    }
}

impl Stream for ExecutionStream {
    type Item = ExecutionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
