//! Per-conversation options: model settings, tool policy and limits.

use serde::{Deserialize, Serialize};

/// How a conversation's turns are run. Every field has a default, so `{}` is a valid `Options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Overrides the agent's model for this conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature handed to the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Upper bound on output tokens per LLM request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Whether and which tools the model may or must call.
    pub tool_choice: ToolChoice,
    /// Tool calls executed per model response; extra calls get a "not executed" result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tool_calls: Option<u32>,
    /// LLM requests allowed in one prompt turn before it stops with `max_turn_requests`.
    pub max_turn_requests: u32,
    /// Time limit for one tool call, in milliseconds.
    pub tool_timeout_ms: u64,
    /// Tool calls of one response that run at the same time.
    pub tool_concurrency: usize,
    /// How long a tool call that needs approval waits for an answer before it is denied, in
    /// milliseconds.
    pub approval_timeout_ms: u64,
    /// Stop before an LLM request once the conversation has cost this many USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_limit: Option<f64>,
    /// Stop before an LLM request whose prompt would exceed this many tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_limit: Option<u32>,
    /// What happens to prompts that arrive while a turn runs.
    pub queue_mode: QueueMode,
    /// Which agents answer a message in a `multi_party` conversation.
    pub responder_policy: ResponderPolicy,
    /// Agent replies in a row (without a human or service message between them) after which
    /// agents stop answering each other, in `agent_agent` and `multi_party` conversations.
    pub max_exchanges: u32,
    /// An agent reply containing this text ends an agent-to-agent exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_marker: Option<String>,
    /// Free-form JSON handed to every tool call (user, tenant, permissions, ...).
    pub context: serde_json::Value,
}

impl Options {
    /// Default for [`Options::max_turn_requests`].
    pub const DEFAULT_MAX_TURN_REQUESTS: u32 = 16;
    /// Default for [`Options::tool_timeout_ms`]: 30 s, as in the seeds.
    pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 30_000;
    /// Default for [`Options::tool_concurrency`]: 4, as in the seeds.
    pub const DEFAULT_TOOL_CONCURRENCY: usize = 4;
    /// Default for [`Options::approval_timeout_ms`]: 5 minutes.
    pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 300_000;
    /// Default for [`Options::max_exchanges`].
    pub const DEFAULT_MAX_EXCHANGES: u32 = 10;
}

impl Default for Options {
    fn default() -> Self {
        Self {
            model: None,
            temperature: None,
            max_tokens: None,
            tool_choice: ToolChoice::Auto,
            max_tool_calls: None,
            max_turn_requests: Self::DEFAULT_MAX_TURN_REQUESTS,
            tool_timeout_ms: Self::DEFAULT_TOOL_TIMEOUT_MS,
            tool_concurrency: Self::DEFAULT_TOOL_CONCURRENCY,
            approval_timeout_ms: Self::DEFAULT_APPROVAL_TIMEOUT_MS,
            cost_limit: None,
            context_limit: None,
            queue_mode: QueueMode::OneAtATime,
            responder_policy: ResponderPolicy::Mention,
            max_exchanges: Self::DEFAULT_MAX_EXCHANGES,
            stop_marker: None,
            context: serde_json::Value::Null,
        }
    }
}

/// Whether the model may call tools: `"auto"`, `"none"`, `"required"` or `{"function": "name"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// Exactly this tool.
    Function(String),
}

/// What happens to prompts that arrive while a turn is running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// Each queued prompt gets its own turn, in arrival order.
    #[default]
    OneAtATime,
    /// All queued prompts are answered together in the next turn.
    All,
}

/// Who answers a message in a `multi_party` conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResponderPolicy {
    /// Agents answer when @named (by display name), also by another agent.
    #[default]
    Mention,
    /// One agent answers each human message, taking turns in join order.
    RoundRobin,
    /// Every agent answers each human message, in join order.
    All,
    /// An LLM (the first agent's model) picks who speaks next, after humans and agents alike.
    Selector,
}
