//! Provider errors, classified so that callers can decide whether to retry and users what to do.

use std::time::Duration;

/// Why an LLM request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// No provider is set up for this agent.
    #[error("no LLM provider is configured: {message}")]
    NotConfigured {
        /// How to configure one.
        message: String,
    },
    /// The key was missing, wrong or lacks access.
    #[error("the provider rejected the API key: {message}; check the key in the configuration")]
    Auth {
        /// The provider's words.
        message: String,
    },
    /// Too many requests.
    #[error("the provider is rate limiting requests: {message}; retry later")]
    RateLimited {
        /// When the provider said to retry.
        retry_after: Option<Duration>,
        /// The provider's words.
        message: String,
    },
    /// The prompt is longer than the model's context window.
    #[error("the prompt exceeds the model's context window: {message}; shorten the history or set a context_limit")]
    ContextLengthExceeded {
        /// The provider's words.
        message: String,
    },
    /// The provider rejected the request as malformed (unknown model, bad parameter, ...).
    #[error("the provider rejected the request: {message}")]
    InvalidRequest {
        /// The provider's words.
        message: String,
    },
    /// The provider failed (5xx).
    #[error("the provider failed with status {status}: {message}; retry later")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The provider's words.
        message: String,
    },
    /// The provider could not be reached, or the connection broke.
    #[error("could not reach the provider: {message}; check its base URL and that it is running")]
    Network {
        /// What the client saw.
        message: String,
    },
    /// The provider's answer was not in its documented format.
    #[error("the provider sent a malformed response: {message}")]
    MalformedResponse {
        /// What did not parse.
        message: String,
    },
}

impl ProviderError {
    /// Whether the same request may succeed if sent again later.
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Server { .. } | Self::Network { .. })
    }
}
