//! The Anthropic provider through its real HTTP client against the mock Messages API server.

use colloquy_core_model::{ContentPart, MessageRole, ToolChoice, ToolSpec, Usage};
use colloquy_llm_providers::{
    Anthropic, AnthropicConfig, FinishReason, LlmRequest, ProviderError, ProviderEvent, RequestMessage,
    ResponseAccumulator,
};
use colloquy_tests::mock_anthropic::{MockAnthropic, MockReply, events};

use crate::support::{ask_model, reply};
use secrecy::SecretString;
use serde_json::json;

const MODEL: &str = "claude-test";

fn provider(base_url: String) -> Anthropic {
    Anthropic::new(AnthropicConfig {
        name: "anthropic".into(),
        base_url,
        api_key: Some(SecretString::from("sk-ant-test")),
    })
}

fn ask(text: &str) -> LlmRequest {
    ask_model(MODEL, text)
}

#[tokio::test]
async fn a_text_reply_streams_its_pieces_then_usage_then_stop() -> anyhow::Result<()> {
    let mock = MockAnthropic::start(vec![MockReply::Events(events::text(MODEL, &["Hel", "lo!"], (25, 4)))]).await?;

    let items = reply(&provider(mock.base_url()), ask("Say hello")).await?;

    assert_eq!(
        items,
        vec![
            Ok(ProviderEvent::TextDelta("Hel".into())),
            Ok(ProviderEvent::TextDelta("lo!".into())),
            Ok(ProviderEvent::Usage(Usage { input_tokens: 25, output_tokens: 4, ..Usage::default() })),
            Ok(ProviderEvent::Finish(FinishReason::Stop)),
        ]
    );
    assert_eq!(mock.header("x-api-key"), vec![Some("sk-ant-test".to_owned())]);
    assert_eq!(mock.header("anthropic-version"), vec![Some("2023-06-01".to_owned())]);
    Ok(())
}

#[tokio::test]
async fn tool_use_blocks_are_assembled_into_calls_and_sent_back_with_their_results() -> anyhow::Result<()> {
    let calls: &[(&str, &str, &[&str])] =
        &[("toolu_01", "calculator", &["{\"expression\":", " \"6*7\"}"]), ("toolu_02", "clock", &["{}"])];
    let mock = MockAnthropic::start(vec![
        MockReply::Events(events::tool_uses(MODEL, Some("Let me check."), calls, (100, 30))),
        MockReply::Events(events::text(MODEL, &["42, and it is noon."], (180, 9))),
    ])
    .await?;
    let provider = provider(mock.base_url());
    let calculator = ToolSpec {
        name: "calculator".into(),
        description: "Evaluates arithmetic".into(),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
    };
    let first = LlmRequest {
        system_prompt: Some("Use tools.".into()),
        tools: vec![calculator],
        tool_choice: ToolChoice::Function("calculator".into()),
        temperature: Some(0.2),
        max_tokens: Some(512),
        ..ask("6*7, and the time?")
    };

    let items = reply(&provider, first.clone()).await?;
    let mut accumulator = ResponseAccumulator::new();
    for item in &items {
        accumulator.push(item.as_ref().map_err(|error| anyhow::anyhow!("the reply failed: {error}"))?);
    }
    let response = accumulator.finish();
    assert_eq!(
        response.content,
        vec![
            ContentPart::text("Let me check."),
            ContentPart::ToolCall {
                id: "toolu_01".into(),
                name: "calculator".into(),
                arguments: json!({"expression": "6*7"})
            },
            ContentPart::ToolCall { id: "toolu_02".into(), name: "clock".into(), arguments: json!({}) },
        ]
    );
    assert_eq!(response.finish, Some(FinishReason::ToolCalls));

    let mut second = first.clone();
    second.messages.push(RequestMessage { role: MessageRole::Assistant, content: response.content });
    second.messages.push(RequestMessage {
        role: MessageRole::Tool,
        content: vec![
            ContentPart::ToolResult {
                tool_call_id: "toolu_01".into(),
                name: "calculator".into(),
                content: "42".into(),
                is_error: false,
            },
            ContentPart::ToolResult {
                tool_call_id: "toolu_02".into(),
                name: "clock".into(),
                content: "unknown tool: clock".into(),
                is_error: true,
            },
        ],
    });
    let items = reply(&provider, second).await?;
    assert_eq!(items.last(), Some(&Ok(ProviderEvent::Finish(FinishReason::Stop))));

    let requests = mock.requests();
    assert_eq!(
        requests[0],
        json!({
            "model": MODEL,
            "max_tokens": 512,
            "system": "Use tools.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "6*7, and the time?"}]}],
            "tools": [{"name": "calculator", "description": "Evaluates arithmetic",
                       "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "calculator"},
            "temperature": 0.2,
            "stream": true
        })
    );
    assert_eq!(
        requests[1]["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "6*7, and the time?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "calculator", "input": {"expression": "6*7"}},
                {"type": "tool_use", "id": "toolu_02", "name": "clock", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "42", "is_error": false},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "unknown tool: clock", "is_error": true}
            ]}
        ])
    );
    Ok(())
}

#[tokio::test]
async fn status_401_is_an_auth_error() -> anyhow::Result<()> {
    let mock = MockAnthropic::start(vec![MockReply::Status {
        status: 401,
        headers: Vec::new(),
        body: events::error_body("authentication_error", "invalid x-api-key"),
    }])
    .await?;

    let items = reply(&provider(mock.base_url()), ask("hi")).await?;

    assert_eq!(items, vec![Err(ProviderError::Auth { message: "invalid x-api-key".into() })]);
    Ok(())
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_the_reply_with_a_classified_error() -> anyhow::Result<()> {
    let mock = MockAnthropic::start(vec![MockReply::Events(vec![
        events::message_start(MODEL, 10),
        events::text_start(0),
        events::text_delta(0, "Partial"),
        events::error("overloaded_error", "Overloaded"),
        events::message_stop(),
    ])])
    .await?;

    let items = reply(&provider(mock.base_url()), ask("hi")).await?;

    assert_eq!(
        items,
        vec![
            Ok(ProviderEvent::TextDelta("Partial".into())),
            Err(ProviderError::Server { status: 529, message: "Overloaded".into() }),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_refusal_finishes_as_refusal_and_max_tokens_as_length() -> anyhow::Result<()> {
    let stop = |reason: &str| {
        MockReply::Events(vec![
            events::message_start(MODEL, 10),
            events::text_start(0),
            events::text_delta(0, "I"),
            events::block_stop(0),
            events::message_delta(reason, 1),
            events::message_stop(),
        ])
    };
    let mock = MockAnthropic::start(vec![stop("refusal"), stop("max_tokens")]).await?;
    let provider = provider(mock.base_url());

    let refused = reply(&provider, ask("hi")).await?;
    let cut = reply(&provider, ask("hi")).await?;

    assert_eq!(refused.last(), Some(&Ok(ProviderEvent::Finish(FinishReason::Refusal))));
    assert_eq!(cut.last(), Some(&Ok(ProviderEvent::Finish(FinishReason::Length))));
    Ok(())
}
