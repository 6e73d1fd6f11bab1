//! What the provider tests share: a one-message request and collecting a reply's stream.

use std::time::Duration;

use anyhow::Context;
use colloquy_core_model::{ContentPart, MessageRole, ToolChoice};
use colloquy_llm_providers::{LlmProvider, LlmRequest, ProviderError, ProviderEvent, RequestMessage};
use futures::StreamExt;

/// One item of a reply's stream.
pub type EventResult = Result<ProviderEvent, ProviderError>;

/// A request for `model` with one user message and nothing else.
pub fn ask_model(model: &str, text: &str) -> LlmRequest {
    LlmRequest {
        model: model.into(),
        system_prompt: None,
        messages: vec![RequestMessage { role: MessageRole::User, content: vec![ContentPart::text(text)] }],
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
        temperature: None,
        max_tokens: None,
        conversation: None,
        provider_state: None,
    }
}

/// Every item of the reply's stream; a hang fails the test instead of stalling it.
pub async fn reply(provider: &dyn LlmProvider, request: LlmRequest) -> anyhow::Result<Vec<EventResult>> {
    tokio::time::timeout(Duration::from_secs(20), provider.stream(request).collect::<Vec<_>>())
        .await
        .context("the reply stream did not end")
}

/// The reply the events make, or the error that ended them.
pub fn assemble(items: &[EventResult]) -> anyhow::Result<colloquy_llm_providers::AssembledResponse> {
    let mut accumulator = colloquy_llm_providers::ResponseAccumulator::new();
    for item in items {
        accumulator.push(item.as_ref().map_err(|error| anyhow::anyhow!("the reply failed: {error}"))?);
    }
    Ok(accumulator.finish())
}
