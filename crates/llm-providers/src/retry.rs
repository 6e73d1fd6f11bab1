//! Retries of failed requests: exponential backoff with jitter (backon), honouring the provider's
//! `Retry-After`, bounded by a number of attempts and a total deadline, and only ever before the
//! first event of a reply has been handed on.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;

use crate::{LlmProvider, LlmRequest, ProviderError, ProviderEvent, ProviderStream};

/// When and how often a failed request is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `1` never retries.
    pub max_attempts: u32,
    /// The wait before the first retry; each later wait doubles, plus up to as much again of
    /// random jitter so that many clients do not retry in step.
    pub base_delay: Duration,
    /// The longest backoff wait (a longer `Retry-After` from the provider is still honoured).
    pub max_delay: Duration,
    /// No retry starts, and no wait reaches, later than this after the first attempt began. An
    /// attempt under way is never cut short: dropping the stream does that.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, waits from half a second up to 8 seconds, within one minute.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub const fn never() -> Self {
        Self { max_attempts: 1, base_delay: Duration::ZERO, max_delay: Duration::ZERO, deadline: Duration::ZERO }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let retries = usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay.max(self.base_delay))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(retries)
    }
}

/// Sends a request again when it fails with a retryable error ([`ProviderError::is_retryable`])
/// before its reply's first event: never once an event has been handed on, as the caller may
/// already have shown it. Wraps any provider, so every HTTP provider retries the same way.
#[derive(Debug, Clone)]
pub struct Retrying<P> {
    /// The provider that does the work.
    inner: Arc<P>,
    /// When to try again.
    policy: RetryPolicy,
}

impl<P: LlmProvider> Retrying<P> {
    /// `inner`, retried according to `policy`.
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        Self { inner: Arc::new(inner), policy }
    }
}

impl<P: LlmProvider> LlmProvider for Retrying<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn models(&self) -> crate::BoxFuture<'_, Option<Vec<String>>> {
        self.inner.models()
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        let inner = Arc::clone(&self.inner);
        let policy = self.policy;
        let first_event = async move {
            // tokio's clock, so that tests with paused time see the same waits.
            let started = tokio::time::Instant::now();
            let attempt = || first_event(inner.stream(request.clone()));
            attempt
                .retry(policy.backoff())
                .sleep(tokio::time::sleep)
                .when(ProviderError::is_retryable)
                .adjust(move |error, backoff| {
                    let wait = match error {
                        ProviderError::RateLimited { retry_after: Some(retry_after), .. } => {
                            backoff.map(|backoff| backoff.max(*retry_after))
                        }
                        _ => backoff,
                    }?;
                    (started.elapsed() + wait <= policy.deadline).then_some(wait)
                })
                .notify(|error, wait| tracing::info!(%error, ?wait, "retrying the LLM request"))
                .await
        };
        Box::pin(futures::stream::once(first_event).flat_map(|first| match first {
            Ok((event, rest)) => futures::stream::once(async { Ok(event) }).chain(rest).left_stream(),
            Err(error) => futures::stream::iter([Err(error)]).right_stream(),
        }))
    }
}

/// Waits for a reply's first event; the rest of the reply comes with it.
async fn first_event(mut reply: ProviderStream) -> Result<(ProviderEvent, ProviderStream), ProviderError> {
    match reply.next().await {
        Some(Ok(event)) => Ok((event, reply)),
        Some(Err(error)) => Err(error),
        None => Err(ProviderError::MalformedResponse {
            message: "the reply ended before its first event; check that the server streams chat completions"
                .to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use colloquy_core_model::{ContentPart, MessageRole, ToolChoice};

    use super::*;
    use crate::{FinishReason, RequestMessage, ScriptStep, ScriptedProvider};

    fn request() -> LlmRequest {
        LlmRequest {
            model: "m".into(),
            system_prompt: None,
            messages: vec![RequestMessage { role: MessageRole::User, content: vec![ContentPart::text("hi")] }],
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            temperature: None,
            max_tokens: None,
            conversation: None,
            provider_state: None,
        }
    }

    fn fail(error: ProviderError) -> ScriptStep {
        ScriptStep::ReplyThenFail(Vec::new(), error)
    }

    fn server_error() -> ProviderError {
        ProviderError::Server { status: 500, message: "boom".into() }
    }

    fn rate_limited(retry_after: Option<Duration>) -> ProviderError {
        ProviderError::RateLimited { retry_after, message: "slow down".into() }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            deadline: Duration::from_secs(30),
        }
    }

    /// The reply's items, how many requests were sent, and how long (in paused time) it took.
    async fn run(
        steps: Vec<ScriptStep>,
        policy: RetryPolicy,
    ) -> (Vec<Result<ProviderEvent, ProviderError>>, usize, Duration) {
        let scripted = ScriptedProvider::new(steps);
        let retrying = Retrying::new(scripted.clone(), policy);
        let started = tokio::time::Instant::now();
        let items = retrying.stream(request()).collect::<Vec<_>>().await;
        (items, scripted.requests().len(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_error_before_the_first_event_is_retried_with_growing_waits() {
        let (items, requests, elapsed) =
            run(vec![fail(server_error()), fail(server_error()), ScriptStep::text("ok")], policy()).await;
        assert_eq!(items.last(), Some(&Ok(ProviderEvent::Finish(FinishReason::Stop))));
        assert_eq!(items.first(), Some(&Ok(ProviderEvent::TextDelta("ok".into()))));
        assert_eq!(requests, 3);
        // 100 ms, then 200 ms, each plus up to as much again of jitter.
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(600), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let steps = vec![fail(rate_limited(Some(Duration::from_secs(5)))), ScriptStep::text("ok")];
        let (items, requests, elapsed) = run(steps, policy()).await;
        assert_eq!(items.last(), Some(&Ok(ProviderEvent::Finish(FinishReason::Stop))));
        assert_eq!(requests, 2);
        assert!(elapsed >= Duration::from_secs(5) && elapsed < Duration::from_millis(5300), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_deadline_gives_up_at_once() {
        let limited = rate_limited(Some(Duration::from_secs(120)));
        let (items, requests, elapsed) = run(vec![fail(limited.clone()), ScriptStep::text("ok")], policy()).await;
        assert_eq!(items, vec![Err(limited)]);
        assert_eq!(requests, 1);
        assert_eq!(elapsed, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_the_last_error_is_returned() {
        let last = ProviderError::Network { message: "refused".into() };
        let steps = vec![fail(server_error()), fail(server_error()), fail(last.clone()), ScriptStep::text("ok")];
        let (items, requests, _) = run(steps, policy()).await;
        assert_eq!(items, vec![Err(last)]);
        assert_eq!(requests, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_that_retrying_cannot_fix_are_returned_at_once() {
        let auth = ProviderError::Auth { message: "bad key".into() };
        let (items, requests, _) = run(vec![fail(auth.clone()), ScriptStep::text("ok")], policy()).await;
        assert_eq!(items, vec![Err(auth)]);
        assert_eq!(requests, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_after_the_first_event_is_handed_on_and_never_retried() {
        let cut = ProviderError::Network { message: "connection reset".into() };
        let steps = vec![
            ScriptStep::ReplyThenFail(vec![ProviderEvent::TextDelta("The answer".into())], cut.clone()),
            ScriptStep::text("ok"),
        ];
        let (items, requests, _) = run(steps, policy()).await;
        assert_eq!(items, vec![Ok(ProviderEvent::TextDelta("The answer".into())), Err(cut)]);
        assert_eq!(requests, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn never_means_one_attempt() {
        let (items, requests, _) = run(vec![fail(server_error()), ScriptStep::text("ok")], RetryPolicy::never()).await;
        assert_eq!(items, vec![Err(server_error())]);
        assert_eq!(requests, 1);
    }
}
