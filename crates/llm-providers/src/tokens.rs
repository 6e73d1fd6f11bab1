//! Counting tokens locally: exact for OpenAI's model families (tiktoken), estimated otherwise.
//! Used to trim a request to a context window and, by [`Counted`], to give a reply usage when
//! its provider reports none.

use std::sync::OnceLock;

use colloquy_core_model::{ContentPart, Usage};
use futures::StreamExt;

use crate::{LlmProvider, LlmRequest, ProviderEvent, ProviderStream, RequestMessage};

/// Tokens in `text` for `model`: exact (tiktoken's o200k or cl100k vocabulary) for OpenAI model
/// families, otherwise an estimate of one token per 4 bytes, rounded up, which is close for
/// English with the Llama, Mistral and Claude tokenizers and errs high for code.
pub fn count_tokens(model: &str, text: &str) -> u64 {
    let bpe = if is_o200k_family(model) {
        o200k()
    } else if model.starts_with("gpt-4") || model.starts_with("gpt-3.5") {
        cl100k()
    } else {
        None
    };
    match bpe {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

fn is_o200k_family(model: &str) -> bool {
    ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o"].iter().any(|p| model.starts_with(p))
}

/// The vocabularies are parsed once per process (it takes tens of milliseconds).
fn o200k() -> Option<&'static tiktoken_rs::CoreBPE> {
    static BPE: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

fn cl100k() -> Option<&'static tiktoken_rs::CoreBPE> {
    static BPE: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

/// Tokens of content parts: text through the tokenizer, tool calls as their name and JSON.
fn parts_tokens(model: &str, parts: &[ContentPart]) -> u64 {
    parts
        .iter()
        .map(|part| match part {
            ContentPart::Text { text } => count_tokens(model, text),
            ContentPart::ToolCall { name, arguments, .. } => {
                count_tokens(model, name) + count_tokens(model, &arguments.to_string())
            }
            ContentPart::ToolResult { content, .. } => count_tokens(model, content),
            // Providers bill images by size; 85 tokens is OpenAI's low-detail flat rate.
            ContentPart::Image { .. } | ContentPart::File { .. } => 85,
            ContentPart::Custom { .. } => 0,
        })
        .sum()
}

/// Tokens a request message costs: its content plus a small per-message overhead for role and
/// framing (4, as OpenAI documents for its chat format).
pub fn message_tokens(model: &str, message: &RequestMessage) -> u64 {
    parts_tokens(model, &message.content) + 4
}

/// The prompt tokens a request will cost: system prompt, messages and tool schemas.
pub fn estimate_request_tokens(request: &LlmRequest) -> u64 {
    let model = request.model.as_str();
    let system = request.system_prompt.as_deref().map_or(0, |s| count_tokens(model, s) + 4);
    let messages: u64 = request.messages.iter().map(|m| message_tokens(model, m)).sum();
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| {
            count_tokens(model, &t.name)
                + count_tokens(model, &t.description)
                + count_tokens(model, &t.parameters.to_string())
        })
        .sum();
    system + messages + tools
}

/// A provider whose replies always report usage: when the wrapped one reports none (llama.cpp's
/// server, some proxies), the prompt and the reply are counted locally with [`count_tokens`]
/// and the usage is marked `estimated`. It is reported before the reply's last event (its finish
/// reason or its error), so a [`crate::Priced`] around it prices it and budgets see it. A request
/// refused before anything was streamed spent nothing and gets no estimate.
#[derive(Debug, Clone)]
pub struct Counted<P> {
    inner: P,
}

impl<P: LlmProvider> Counted<P> {
    /// Wraps `inner`.
    pub fn new(inner: P) -> Self {
        Self { inner }
    }
}

/// What [`Counted`] watches in a reply.
struct Tally {
    /// The request as sent (the original is moved into the inner provider), counted only if
    /// the provider does not report usage: counting every prompt up front cost about a seventh
    /// of the gateway's CPU in `cargo xtask bench`, for servers that report usage anyway.
    request: LlmRequest,
    /// Text and tool-call pieces so far.
    output: String,
    /// The provider reported usage itself.
    reported: bool,
    /// The provider began answering (an event came before any error).
    started: bool,
    /// The reply is over: nothing more to add.
    done: bool,
}

impl Tally {
    fn estimate(&mut self) -> ProviderEvent {
        self.done = true;
        ProviderEvent::Usage(Usage {
            input_tokens: estimate_request_tokens(&self.request),
            output_tokens: count_tokens(&self.request.model, &self.output),
            estimated: true,
            ..Usage::default()
        })
    }
}

impl<P: LlmProvider> LlmProvider for Counted<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn models(&self) -> crate::BoxFuture<'_, Option<Vec<String>>> {
        self.inner.models()
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        let tally =
            Tally { request: request.clone(), output: String::new(), reported: false, started: false, done: false };
        let inner = self.inner.stream(request);
        Box::pin(futures::stream::unfold((inner, tally, None), |(mut inner, mut tally, held)| async move {
            // An item held back while the estimate went out first.
            if let Some(item) = held {
                return Some((item, (inner, tally, None)));
            }
            let item = match inner.next().await {
                Some(item) => item,
                None if tally.reported || tally.done || !tally.started => return None,
                // The stream ended without a finish reason or an error: still say what was spent.
                None => return Some((Ok(tally.estimate()), (inner, tally, None))),
            };
            tally.started |= item.is_ok();
            match &item {
                Ok(ProviderEvent::TextDelta(text)) => tally.output.push_str(text),
                Ok(ProviderEvent::ToolCallDelta { name, arguments, .. }) => {
                    tally.output.push_str(name.as_deref().unwrap_or_default());
                    tally.output.push_str(arguments);
                }
                Ok(ProviderEvent::Usage(_)) => tally.reported = true,
                Ok(ProviderEvent::Finish(_)) | Err(_) if tally.started && !tally.reported && !tally.done => {
                    let estimate = tally.estimate();
                    return Some((Ok(estimate), (inner, tally, Some(item))));
                }
                Ok(ProviderEvent::Finish(_) | ProviderEvent::State(_)) | Err(_) => {}
            }
            Some((item, (inner, tally, None)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use colloquy_core_model::{MessageRole, ToolChoice};

    use super::*;
    use crate::{FinishReason, ScriptStep, ScriptedProvider};

    fn request() -> LlmRequest {
        LlmRequest {
            model: "smollm2".into(),
            system_prompt: Some("Be brief.".into()),
            messages: vec![RequestMessage { role: MessageRole::User, content: vec![ContentPart::text("Hello there")] }],
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            temperature: None,
            max_tokens: None,
            conversation: None,
            provider_state: None,
        }
    }

    async fn events(step: ScriptStep) -> Vec<Result<ProviderEvent, crate::ProviderError>> {
        Counted::new(ScriptedProvider::new(vec![step])).stream(request()).collect().await
    }

    #[tokio::test]
    async fn a_reply_without_usage_gets_an_estimate_before_its_finish() {
        let step = ScriptStep::Reply(vec![
            ProviderEvent::TextDelta("Hi, ".into()),
            ProviderEvent::TextDelta("how are you?".into()),
            ProviderEvent::Finish(FinishReason::Stop),
        ]);
        let events = events(step).await;
        // "Be brief." is 3 estimated tokens + 4, "Hello there" 3 + 4; the reply's 16 bytes are 4.
        let usage = Usage { input_tokens: 14, output_tokens: 4, estimated: true, ..Usage::default() };
        assert_eq!(events[2], Ok(ProviderEvent::Usage(usage)));
        assert_eq!(events[3], Ok(ProviderEvent::Finish(FinishReason::Stop)));
        assert_eq!(events.len(), 4);
    }

    #[tokio::test]
    async fn reported_usage_is_passed_on_untouched() {
        let events = events(ScriptStep::text("Hi there")).await;
        let usages: Vec<_> = events.iter().filter(|e| matches!(e, Ok(ProviderEvent::Usage(_)))).collect();
        assert_eq!(
            usages,
            [&Ok(ProviderEvent::Usage(Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() }))]
        );
    }

    #[tokio::test]
    async fn a_failed_or_cut_reply_still_reports_what_it_spent() {
        let failed = ScriptStep::ReplyThenFail(
            vec![ProviderEvent::TextDelta("Hi".into())],
            crate::ProviderError::Network { message: "cut".into() },
        );
        let failed = events(failed).await;
        assert!(matches!(&failed[1], Ok(ProviderEvent::Usage(usage)) if usage.estimated && usage.output_tokens == 1));
        assert!(failed[2].is_err());
        // Refused before a single event: nothing was spent, nothing is made up.
        let refused =
            ScriptStep::ReplyThenFail(Vec::new(), crate::ProviderError::Network { message: "refused".into() });
        let refused = events(refused).await;
        assert!(matches!(refused.as_slice(), [Err(_)]), "{refused:?}");
    }
}
