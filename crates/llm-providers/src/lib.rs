//! Colloquy's LLM providers: one request model in, one event stream out, whatever the provider.
//!
//! [`LlmProvider::stream`] turns an [`LlmRequest`] into a stream of [`ProviderEvent`]s (text
//! deltas, tool-call deltas, usage, finish reason). [`ResponseAccumulator`] folds that stream into
//! the finished reply; a non-streaming call is the same stream collected.
//!
//! Providers: [`OpenAiCompatible`] (OpenAI, Ollama, vLLM, llama.cpp), [`Anthropic`],
//! [`ScriptedProvider`] and [`Unconfigured`]. Wrappers that work with any of them:
//! [`Retrying`] (backoff, `Retry-After`, only before the first event), [`Counted`] (usage counted
//! locally, marked estimated, when a provider reports none) and [`Priced`] (each reply's cost
//! from a [`PriceTable`]).
//!
//! Architecture invariant: nothing here knows about storage, conversations or the gateway; the
//! engine never branches on which provider it talks to.

mod a2a;
mod accumulator;
mod anthropic;
mod error;
mod http;
mod openai;
mod pricing;
mod retry;
mod scripted;
mod tokens;

use std::sync::Arc;

use colloquy_core_model::{ContentPart, MessageRole, ToolChoice, ToolSpec, Usage};
use futures::stream::BoxStream;

pub use a2a::{A2aAgent, A2aConfig, wire as a2a_wire};
pub use accumulator::{AssembledResponse, ResponseAccumulator};
pub use anthropic::{Anthropic, AnthropicConfig};
pub use error::ProviderError;
pub use openai::{OpenAiCompatible, OpenAiCompatibleConfig};
pub use pricing::{ModelPrice, PriceTable, Priced};
pub use retry::{RetryPolicy, Retrying};
pub use scripted::{ScriptStep, ScriptedProvider};
pub use tokens::{Counted, count_tokens, estimate_request_tokens, message_tokens};

/// One message of the prompt, in provider-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMessage {
    /// `user`, `assistant` or `tool` (system text goes in [`LlmRequest::system_prompt`]).
    pub role: MessageRole,
    /// Its parts: text, images, tool calls (assistant), tool results (tool).
    pub content: Vec<ContentPart>,
}

/// Everything a provider needs for one LLM request. `Default` is an empty request (no model,
/// no messages), for building one field by field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmRequest {
    /// The model to ask.
    pub model: String,
    /// Instructions sent before the messages.
    pub system_prompt: Option<String>,
    /// The conversation so far, oldest first.
    pub messages: Vec<RequestMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Whether it may or must call them.
    pub tool_choice: ToolChoice,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// The conversation the request is for, when there is one: a provider that keeps state per
    /// conversation on its side (a remote A2A agent's context) keys it by this.
    pub conversation: Option<colloquy_core_model::ConversationId>,
    /// The [`ProviderEvent::State`] this participant's provider gave with its newest reply in
    /// this conversation, if any.
    pub provider_state: Option<serde_json::Value>,
}

/// Why the provider stopped generating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end of the answer.
    Stop,
    /// The output token limit.
    Length,
    /// The model wants tool results.
    ToolCalls,
    /// The model or a content filter refused.
    Refusal,
    /// Anything else the provider said, verbatim.
    Other(String),
}

/// One step of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// More answer text.
    TextDelta(String),
    /// More of the tool call at `index`: `id` and `name` usually come once, `arguments` in pieces.
    ToolCallDelta {
        /// The call's position in the reply.
        index: u32,
        /// The provider's id for the call, when this piece carries it.
        id: Option<String>,
        /// The tool's name, when this piece carries it.
        name: Option<String>,
        /// More of the JSON arguments text.
        arguments: String,
    },
    /// Tokens (and cost) of the request; may come more than once, the last one wins.
    Usage(Usage),
    /// The reply is complete.
    Finish(FinishReason),
    /// What the provider keeps on its side of the conversation (a remote agent's context id):
    /// stored with the reply, and handed back in the next request of the same participant as
    /// [`LlmRequest::provider_state`], so it survives restarts. The last one of a reply wins.
    State(serde_json::Value),
}

/// A stream of one reply's events. It ends after `Finish`, or with an error.
pub type ProviderStream = BoxStream<'static, Result<ProviderEvent, ProviderError>>;

/// Something that answers LLM requests.
pub trait LlmProvider: Send + Sync + 'static {
    /// The provider's configured name (`openai`, `ollama`, `scripted`, ...), stored with replies.
    fn name(&self) -> &str;

    /// Starts one request. Errors before the first event (auth, rate limit, unreachable server)
    /// come as the stream's first item; dropping the stream cancels the request.
    fn stream(&self, request: LlmRequest) -> ProviderStream;

    /// The models it serves, when it can tell (OpenAI-compatible servers list them at
    /// `/models`); `None` when it cannot, and then any model name is tried.
    fn models(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(async { None })
    }
}

/// A boxed future, as [`LlmProvider::models`] returns.
pub type BoxFuture<'a, T> = futures::future::BoxFuture<'a, T>;

/// A shared provider is a provider, so the wrappers ([`Retrying`], [`Priced`]) also take
/// `Arc<dyn LlmProvider>`.
impl<P: LlmProvider + ?Sized> LlmProvider for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        (**self).stream(request)
    }

    fn models(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        (**self).models()
    }
}

/// A provider that is not configured: every request fails at once with a message saying how to
/// configure one, so that a prompt gets a clear error instead of a hang.
#[derive(Debug, Clone)]
pub struct Unconfigured {
    name: String,
    hint: Arc<str>,
}

impl Unconfigured {
    /// A provider named `name` whose every request fails with `hint`.
    pub fn new(name: impl Into<String>, hint: impl Into<Arc<str>>) -> Self {
        Self { name: name.into(), hint: hint.into() }
    }
}

impl LlmProvider for Unconfigured {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, _request: LlmRequest) -> ProviderStream {
        let error = ProviderError::NotConfigured { message: self.hint.to_string() };
        Box::pin(futures::stream::once(async move { Err(error) }))
    }
}
