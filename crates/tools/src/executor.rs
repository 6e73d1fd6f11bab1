//! Runs one response's tool calls: validated, authorized, approved, in parallel up to a bound,
//! each with a timeout and an output limit, each isolated from the others' failures and panics,
//! each behind its tool's circuit breaker.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use colloquy_core_model::ToolCallId;
use futures::{FutureExt, Stream};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};
use tokio::task::JoinSet;

use crate::approval::{Approval, ApprovalAnswer, ApprovalHook, Approvals, PendingApproval};
use crate::circuit::{CircuitBreakerConfig, CircuitState, Circuits, Outcome};
use crate::registry::RegisteredTool;
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
    /// Whether the call failed (refused, invalid, unauthorized, denied, circuit open, timed out,
    /// cancelled, panicked or the tool's own error).
    pub is_error: bool,
}

impl ToolResult {
    fn error(call: &ToolCallRequest, content: String) -> Self {
        Self { id: call.id.clone(), name: call.name.clone(), content, is_error: true }
    }
}

/// Progress of an execution, by the call's position in the request list. For each call:
/// `Started`, then perhaps `ApprovalRequested`, `CircuitChanged` and `Progress`, then exactly
/// one `Finished`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionEvent {
    /// The call got a slot and started.
    Started {
        /// Position in the request list.
        index: usize,
    },
    /// The approval hook asked for an answer from outside; the call waits (without holding a
    /// slot) until [`Approvals::answer`] or the approval timeout.
    ApprovalRequested {
        /// Position in the request list.
        index: usize,
    },
    /// The running tool reported progress ([`ToolContext::progress`]).
    Progress {
        /// Position in the request list.
        index: usize,
        /// What the tool reported.
        progress: serde_json::Value,
    },
    /// This call changed its tool's circuit breaker (shared by every conversation).
    CircuitChanged {
        /// Position in the request list.
        index: usize,
        /// The tool whose circuit changed.
        tool: String,
        /// Its new state.
        state: CircuitState,
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
    /// Time limit per call, once it runs (waiting for approval does not count).
    pub timeout: Duration,
    /// Longest output shown to the model, in bytes; longer output is cut (on a character
    /// boundary) and a note says so.
    pub max_output_bytes: usize,
    /// How long a call waits for an answer when the approval hook asks; then it is denied.
    pub approval_timeout: Duration,
}

impl ExecutorConfig {
    /// Default [`ExecutorConfig::max_output_bytes`]: 64 KiB.
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;
    /// Default [`ExecutorConfig::approval_timeout`]: 5 minutes.
    pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(5 * 60);
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            concurrency: colloquy_core_model::Options::DEFAULT_TOOL_CONCURRENCY,
            timeout: Duration::from_millis(colloquy_core_model::Options::DEFAULT_TOOL_TIMEOUT_MS),
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
            approval_timeout: Self::DEFAULT_APPROVAL_TIMEOUT,
        }
    }
}

/// Runs tool calls against a registry. Clones share the circuit breakers and the approvals.
#[derive(Clone)]
pub struct ToolExecutor {
    registry: Arc<ToolRegistry>,
    /// Per-tool breakers, kept across executions and conversations.
    circuits: Arc<Circuits>,
    /// Calls waiting for an answer from outside.
    approvals: Approvals,
    /// Consulted before each call; none allows everything.
    hook: Option<Arc<dyn ApprovalHook>>,
}

impl std::fmt::Debug for ToolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolExecutor")
            .field("registry", &self.registry)
            .field("circuits", &self.circuits)
            .field("approvals", &self.approvals)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl ToolExecutor {
    /// An executor over these tools, with default circuit breakers and no approval hook.
    pub fn new(registry: Arc<ToolRegistry>) -> Self {
        Self {
            registry,
            circuits: Arc::new(Circuits::new(CircuitBreakerConfig::default())),
            approvals: Approvals::default(),
            hook: None,
        }
    }

    /// Uses these circuit breaker settings (every circuit starts closed).
    #[must_use]
    pub fn with_circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.circuits = Arc::new(Circuits::new(config));
        self
    }

    /// Consults `hook` before each call.
    #[must_use]
    pub fn with_approval(mut self, hook: impl ApprovalHook) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The tools it can run.
    pub fn registry(&self) -> &Arc<ToolRegistry> {
        &self.registry
    }

    /// The calls waiting for approval; answer them here.
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    /// Where the tool's circuit breaker stands now.
    pub fn circuit_state(&self, tool: &str) -> CircuitState {
        self.circuits.state(tool)
    }

    /// Starts every call at once (bounded by `config.concurrency`) and streams their progress.
    /// A call is refused without running if its tool was not offered or does not exist, its
    /// arguments do not match the schema, the caller lacks the tool's permission, the approval
    /// hook denies it or the tool's circuit is open. Every call yields exactly one `Finished`
    /// event; the stream ends after the last. Dropping the stream aborts the calls still running.
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
            let run = Run { executor: self.clone(), index, events: tx.clone(), ctx: ctx.clone(), config };
            let slots = Arc::clone(&slots);
            // A child of the caller's span (the turn's), named after OpenTelemetry's GenAI
            // conventions.
            let span = tracing::info_span!(
                "tool_call",
                gen_ai.operation.name = "execute_tool",
                gen_ai.tool.name = %call.name,
                gen_ai.tool.call.id = %call.id,
            );
            let task = async move {
                // The semaphore is never closed, so acquiring only waits.
                let Ok(slot) = slots.acquire().await else { return };
                run.send(ExecutionEvent::Started { index });
                let result = if is_offered {
                    run.answer(&call, &slots, slot).await
                } else {
                    ToolResult::error(
                        &call,
                        format!(
                            "tool `{}` was not offered in this request: call one of the tools you were given",
                            call.name
                        ),
                    )
                };
                run.send(ExecutionEvent::Finished { index, result });
            };
            tasks.spawn(tracing::Instrument::instrument(task, span));
        }
        ExecutionStream { rx, _tasks: tasks }
    }
}

/// One call's run: what it needs besides the call itself.
struct Run {
    executor: ToolExecutor,
    index: usize,
    events: mpsc::UnboundedSender<ExecutionEvent>,
    ctx: ToolContext,
    config: ExecutorConfig,
}

impl Run {
    fn send(&self, event: ExecutionEvent) {
        // The receiver is gone only if the stream was dropped, which also aborts this task.
        let _ = self.events.send(event);
    }

    /// Takes an offered call through every check and, if it passes, runs it.
    async fn answer<'s>(&self, call: &ToolCallRequest, slots: &'s Semaphore, slot: SemaphorePermit<'s>) -> ToolResult {
        let Some(tool) = self.executor.registry.get(&call.name) else {
            return ToolResult::error(
                call,
                format!("there is no tool named `{}`: call one of the tools you were given", call.name),
            );
        };
        if let Some(permission) = tool.tool.required_permission()
            && !self.ctx.identity.has_permission(permission)
        {
            let who = match &self.ctx.identity.user {
                Some(user) => format!("user `{user}`"),
                None => "the caller".to_owned(),
            };
            return ToolResult::error(
                call,
                format!(
                    "not authorized: `{}` requires the `{permission}` permission, which {who} does not have; \
                     answer without this tool, or ask an administrator to grant the permission",
                    call.name
                ),
            );
        }
        if let Err(problem) = check_arguments(tool, call) {
            return ToolResult::error(call, problem);
        }
        if let Err(message) = self.executor.circuits.check(&call.name) {
            return ToolResult::error(call, message);
        }
        let mut slot = Some(slot);
        if let Err(message) = self.seek_approval(call, &mut slot).await {
            return ToolResult::error(call, message);
        }
        // Waiting for approval gave the slot back; running needs one again.
        let _slot = match slot {
            Some(slot) => slot,
            None => match slots.acquire().await {
                Ok(slot) => slot,
                Err(_closed) => {
                    return ToolResult::error(call, "the executor shut down: call the tool again".to_owned());
                }
            },
        };
        let (permit, changed) = match self.executor.circuits.admit(&call.name) {
            Ok(admitted) => admitted,
            Err(message) => return ToolResult::error(call, message),
        };
        if let Some(state) = changed {
            self.circuit_changed(call, state);
        }
        let (outcome, mut result) = self.run(tool, call).await;
        if let Some(outcome) = outcome
            && let Some((state, note)) = permit.record(outcome)
        {
            self.circuit_changed(call, state);
            result.content.push_str(&format!("\n\n[{note}]"));
        }
        result
    }

    fn circuit_changed(&self, call: &ToolCallRequest, state: CircuitState) {
        tracing::info!(tool = %call.name, ?state, "circuit breaker changed");
        self.send(ExecutionEvent::CircuitChanged { index: self.index, tool: call.name.clone(), state });
    }

    /// Asks the hook; if it asks in turn, gives back the slot and waits for an answer from
    /// outside. `Err` is the refusal for the model.
    async fn seek_approval(
        &self,
        call: &ToolCallRequest,
        slot: &mut Option<SemaphorePermit<'_>>,
    ) -> Result<(), String> {
        let Some(hook) = &self.executor.hook else { return Ok(()) };
        let review = AssertUnwindSafe(hook.review(call, &self.ctx)).catch_unwind().await;
        match review {
            Ok(Approval::Allow) => return Ok(()),
            Ok(Approval::Deny(reason)) => return Err(format!("denied: {reason}")),
            Ok(Approval::Ask) => {}
            Err(_panic) => {
                return Err("denied: the approval check failed unexpectedly; answer without this tool".to_owned());
            }
        }
        let request = PendingApproval {
            conversation_id: self.ctx.conversation_id,
            caller: self.ctx.caller,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
        };
        let Some(mut ticket) = self.executor.approvals.ask(request) else {
            return Err(format!(
                "denied: another call with id `{}` is already waiting for approval; give each call its own id",
                call.id
            ));
        };
        self.send(ExecutionEvent::ApprovalRequested { index: self.index });
        *slot = None;
        let timeout = self.config.approval_timeout;
        tokio::select! {
            biased;
            () = self.ctx.cancel.cancelled() => {
                Err("cancelled: the turn was cancelled while the call waited for approval".to_owned())
            }
            answer = tokio::time::timeout(timeout, ticket.answer()) => match answer {
                Ok(Some(ApprovalAnswer::Allow)) => Ok(()),
                Ok(Some(ApprovalAnswer::Deny(reason))) => Err(format!("denied: {reason}")),
                Ok(None) | Err(_) => Err(format!(
                    "denied: no approval within {timeout:?}; answer without this tool, or ask the user to approve it and try again"
                )),
            },
        }
    }

    /// Runs the tool, forwarding its progress; the outcome is what the circuit breaker counts
    /// (`None` for cancellation, which says nothing about the tool).
    async fn run(&self, tool: &RegisteredTool, call: &ToolCallRequest) -> (Option<Outcome>, ToolResult) {
        let (progress, mut reports) = mpsc::unbounded_channel();
        let ctx = self.ctx.reporting_to(progress);
        let timeout = self.config.timeout;
        let execution = async {
            let run = AssertUnwindSafe(tool.tool.execute(call.arguments.clone(), &ctx)).catch_unwind();
            tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => (None, Err("cancelled: the turn was cancelled before the tool finished".to_owned())),
                outcome = tokio::time::timeout(timeout, run) => match outcome {
                    Err(_) => (Some(Outcome::Failure), Err(format!("timed out after {} ms: the tool did not finish in time", timeout.as_millis()))),
                    Ok(Err(_panic)) => (Some(Outcome::Failure), Err("the tool failed unexpectedly (it panicked); this is a bug in the tool".to_owned())),
                    Ok(Ok(Err(error))) => (Some(Outcome::Failure), Err(error.0)),
                    Ok(Ok(Ok(serde_json::Value::String(text)))) => (Some(Outcome::Success), Ok(text)),
                    Ok(Ok(Ok(other))) => (Some(Outcome::Success), Ok(other.to_string())),
                },
            }
        };
        tokio::pin!(execution);
        let (outcome, content) = loop {
            tokio::select! {
                biased;
                done = &mut execution => break done,
                Some(progress) = reports.recv() => self.send(ExecutionEvent::Progress { index: self.index, progress }),
            }
        };
        while let Ok(progress) = reports.try_recv() {
            self.send(ExecutionEvent::Progress { index: self.index, progress });
        }
        let limit = self.config.max_output_bytes;
        let result = match content {
            Ok(text) => ToolResult {
                id: call.id.clone(),
                name: call.name.clone(),
                content: truncate(text, limit),
                is_error: false,
            },
            Err(text) => ToolResult::error(call, truncate(text, limit)),
        };
        (outcome, result)
    }
}

fn check_arguments(tool: &RegisteredTool, call: &ToolCallRequest) -> Result<(), String> {
    if let serde_json::Value::String(text) = &call.arguments {
        return Err(format!(
            "the arguments are not valid JSON (`{text}`): send a JSON object that matches the tool's parameters schema"
        ));
    }
    let problems: Vec<String> = tool
        .validator
        .iter_errors(&call.arguments)
        .map(|error| {
            let path = error.instance_path().to_string();
            if path.is_empty() { error.to_string() } else { format!("{path}: {error}") }
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "invalid arguments for `{}`: {}; the parameters schema is {}",
        call.name,
        problems.join("; "),
        tool.spec.parameters
    ))
}

/// Cuts `text` to at most `limit` bytes on a character boundary, and says so.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!(
        "\n\n[output truncated: showing the first {cut} of {total} bytes; ask for less (a narrower query or a \
         smaller range) to see the rest]"
    ));
    text
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
