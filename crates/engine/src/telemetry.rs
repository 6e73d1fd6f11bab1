//! What the engine tells operators: Prometheus-style metrics (through the `metrics` facade;
//! the gateway installs the exporter) and the attributes of its trace spans, named after
//! OpenTelemetry's GenAI conventions (`gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...).

use std::time::{Duration, Instant};

use colloquy_core_model::{StopReason, Usage};
use colloquy_tools::CircuitState;

/// A prompt turn ended.
pub(crate) fn turn_ended(stop: &StopReason) {
    let reason = match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::MaxTurnRequests => "max_turn_requests",
        StopReason::Refusal => "refusal",
        StopReason::Cancelled => "cancelled",
        StopReason::BudgetExceeded { .. } => "budget_exceeded",
        StopReason::Error { .. } => "error",
    };
    metrics::counter!("colloquy_turns_total", "stop_reason" => reason).increment(1);
}

/// One LLM request, from its start to its last event.
pub(crate) struct LlmRequest {
    provider: String,
    model: String,
    started: Instant,
    first_event: Option<Duration>,
    span: tracing::Span,
}

impl LlmRequest {
    pub(crate) fn start(provider: &str, model: &str, request: u32) -> Self {
        let span = tracing::info_span!(
            "llm_request",
            gen_ai.operation.name = "chat",
            gen_ai.system = %provider,
            gen_ai.request.model = %model,
            request,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        Self {
            provider: provider.to_owned(),
            model: model.to_owned(),
            started: Instant::now(),
            first_event: None,
            span,
        }
    }

    /// The span the request runs in.
    pub(crate) fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// An event arrived (the first one marks the time to first token).
    pub(crate) fn event(&mut self) {
        if self.first_event.is_none() {
            let waited = self.started.elapsed();
            self.first_event = Some(waited);
            metrics::histogram!("colloquy_llm_time_to_first_token_seconds", "provider" => self.provider.clone(), "model" => self.model.clone())
                .record(waited.as_secs_f64());
        }
    }

    /// The request is over.
    pub(crate) fn finish(self, usage: &Usage, finish: Option<&str>, error: Option<&str>) {
        let labels = [("provider", self.provider.clone()), ("model", self.model.clone())];
        metrics::histogram!("colloquy_llm_request_seconds", &labels).record(self.started.elapsed().as_secs_f64());
        metrics::counter!("colloquy_llm_input_tokens_total", &labels).increment(usage.input_tokens);
        metrics::counter!("colloquy_llm_output_tokens_total", &labels).increment(usage.output_tokens);
        if let Some(cost) = usage.cost_usd {
            // Counters are whole numbers: micro-dollars.
            metrics::counter!("colloquy_llm_cost_microusd_total", &labels).increment((cost * 1e6).round() as u64);
        }
        if let Some(error) = error {
            metrics::counter!("colloquy_llm_errors_total", &labels).increment(1);
            self.span.record("error.type", error);
        }
        self.span.record("gen_ai.usage.input_tokens", usage.input_tokens);
        self.span.record("gen_ai.usage.output_tokens", usage.output_tokens);
        if let Some(finish) = finish {
            self.span.record("gen_ai.response.finish_reasons", finish);
        }
    }
}

/// A tool call finished after running for `took`.
pub(crate) fn tool_finished(tool: &str, is_error: bool, took: Duration) {
    let outcome = if is_error { "error" } else { "ok" };
    metrics::counter!("colloquy_tool_calls_total", "tool" => tool.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!("colloquy_tool_call_seconds", "tool" => tool.to_owned()).record(took.as_secs_f64());
    tracing::debug!(gen_ai.tool.name = %tool, is_error, took_ms = took.as_millis() as u64, "tool call finished");
}

/// A tool's circuit breaker changed state: 0 closed, 1 open, 0.5 half-open.
pub(crate) fn circuit(tool: &str, state: CircuitState) {
    let value = match state {
        CircuitState::Closed => 0.0,
        CircuitState::Open => 1.0,
        CircuitState::HalfOpen => 0.5,
    };
    metrics::gauge!("colloquy_tool_circuit_open", "tool" => tool.to_owned()).set(value);
}

/// A write to the store took `took`.
pub(crate) fn store_append(took: Duration) {
    metrics::histogram!("colloquy_store_append_seconds").record(took.as_secs_f64());
}

/// Prompts waiting behind running turns, over all conversations, changed by `by`.
pub(crate) fn queued_prompts(by: f64) {
    metrics::gauge!("colloquy_queued_prompts").increment(by);
}

/// A conversation's lease was `taken`, `released` or `lost` (to another node) by this node.
pub(crate) fn lease(what: &'static str) {
    metrics::counter!("colloquy_cluster_leases_total", "event" => what).increment(1);
}
