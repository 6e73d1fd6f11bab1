//! llama-cpp-python's server as it really answers: its recorded transcripts
//! (`tests/fixtures/llama_cpp`, see the README there) replayed through the real HTTP client.

use colloquy_core_model::{ContentPart, MessageRole, ToolChoice, ToolSpec};
use colloquy_llm_providers::{
    Counted, FinishReason, LlmRequest, OpenAiCompatible, OpenAiCompatibleConfig, ProviderError, ProviderEvent,
    RequestMessage,
};
use colloquy_tests::mock_openai::{MockOpenAi, MockReply};
use serde_json::json;

use crate::support::{assemble, reply};

const FORCED_TOOL_CALL: &str = include_str!("../fixtures/llama_cpp/forced_tool_call.sse");
const PLAIN_TEXT: &str = include_str!("../fixtures/llama_cpp/plain_text.sse");
const AFTER_TOOL_RESULT: &str = include_str!("../fixtures/llama_cpp/after_tool_result.sse");
const AUTO_STREAMING_FAILURE: &str = include_str!("../fixtures/llama_cpp/auto_streaming_failure.sse");
const AUTO_NOT_STREAMED: &str = include_str!("../fixtures/llama_cpp/auto_not_streamed.json");

fn provider(base_url: String, stream_tools: bool) -> OpenAiCompatible {
    OpenAiCompatible::new(OpenAiCompatibleConfig { name: "local".into(), base_url, api_key: None, stream_tools })
}

fn calculator() -> ToolSpec {
    ToolSpec {
        name: "calculator".into(),
        description: "Evaluates an arithmetic expression".into(),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
    }
}

fn ask(messages: Vec<RequestMessage>, tool_choice: ToolChoice) -> LlmRequest {
    LlmRequest {
        model: "smollm2".into(),
        system_prompt: None,
        messages,
        tools: vec![calculator()],
        tool_choice,
        temperature: None,
        max_tokens: None,
        conversation: None,
        provider_state: None,
    }
}

fn user(text: &str) -> RequestMessage {
    RequestMessage { role: MessageRole::User, content: vec![ContentPart::text(text)] }
}

#[tokio::test]
async fn a_tool_call_sent_twice_per_chunk_arrives_once() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![MockReply::RawSse(FORCED_TOOL_CALL.to_owned())]).await?;
    let request = ask(vec![user("What is 17 * 23? Use the calculator.")], ToolChoice::Function("calculator".into()));
    let items = reply(&provider(mock.base_url(), true), request).await?;
    // The call's id comes once, on its first piece, although the server repeats it on every one.
    let ids = items.iter().filter(|e| matches!(e, Ok(ProviderEvent::ToolCallDelta { id: Some(_), .. }))).count();
    assert_eq!(ids, 1);
    let response = assemble(&items)?;
    assert_eq!(
        response.content,
        [ContentPart::ToolCall {
            id: "call__0_calculator_cmpl-0f7ac15f-e3d0-43f3-aaf2-c3d2202c48e8".into(),
            name: "calculator".into(),
            arguments: json!({"expression": "17 * 23"}),
        }],
        "the legacy function_call copy is ignored, so the arguments are not doubled"
    );
    assert_eq!(response.finish, Some(FinishReason::ToolCalls));
    Ok(())
}

#[tokio::test]
async fn the_follow_up_after_a_tool_call_has_the_content_llama_cpp_needs() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![MockReply::RawSse(AFTER_TOOL_RESULT.to_owned())]).await?;
    let call = ContentPart::ToolCall {
        id: "call_1".into(),
        name: "calculator".into(),
        arguments: json!({"expression": "17 * 23"}),
    };
    let result = ContentPart::ToolResult {
        tool_call_id: "call_1".into(),
        name: "calculator".into(),
        content: r#"{"expression":"17 * 23","result":391.0}"#.into(),
        is_error: false,
    };
    let messages = vec![
        user("What is 17 * 23? Use the calculator."),
        RequestMessage { role: MessageRole::Assistant, content: vec![call] },
        RequestMessage { role: MessageRole::Tool, content: vec![result] },
    ];
    let items = reply(&provider(mock.base_url(), true), ask(messages, ToolChoice::None)).await?;
    let sent = &mock.requests()[0]["messages"];
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(sent[1]["content"], "", "llama.cpp's template reads `content` on every assistant message");
    assert_eq!(sent[1]["tool_calls"][0]["id"], "call_1");
    let response = assemble(&items)?;
    assert_eq!(response.finish, Some(FinishReason::Length));
    assert!(matches!(response.content.as_slice(), [ContentPart::Text { text }] if text.starts_with("#1.")));
    Ok(())
}

#[tokio::test]
async fn a_server_that_gives_up_on_a_streamed_tool_choice_gets_an_error_that_names_the_setting() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![MockReply::RawSse(AUTO_STREAMING_FAILURE.to_owned())]).await?;
    let items = reply(&provider(mock.base_url(), true), ask(vec![user("17 * 23")], ToolChoice::Auto)).await?;
    let Some(Err(ProviderError::MalformedResponse { message })) = items.last() else { panic!("{items:?}") };
    assert!(message.contains("without sending a single chunk"), "{message}");
    assert!(message.contains("stream_tools = false") && message.contains("`local`"), "{message}");
    assert!(message.contains("COLLOQUY_PROVIDERS__LOCAL__STREAM_TOOLS=false"), "{message}");
    Ok(())
}

#[tokio::test]
async fn with_stream_tools_off_a_request_with_tools_gets_the_whole_reply() -> anyhow::Result<()> {
    let completion: serde_json::Value = serde_json::from_str(AUTO_NOT_STREAMED)?;
    let mock = MockOpenAi::start(vec![
        MockReply::Status { status: 200, headers: Vec::new(), body: completion },
        MockReply::RawSse(PLAIN_TEXT.to_owned()),
    ])
    .await?;
    let provider = provider(mock.base_url(), false);
    let items = reply(&provider, ask(vec![user("Use the calculator to compute 17 * 23.")], ToolChoice::Auto)).await?;
    let response = assemble(&items)?;
    assert_eq!(
        response.content,
        [ContentPart::ToolCall {
            id: "call__0_calculator_cmpl-ca488337-88f5-4a1e-80a0-a57c4eb27821".into(),
            name: "calculator".into(),
            arguments: json!({"expression": "{23.0}"}),
        }],
        "the legacy function_call beside tool_calls (named `calculator:`) is ignored"
    );
    assert_eq!(response.finish, Some(FinishReason::ToolCalls));
    assert_eq!((response.usage.input_tokens, response.usage.output_tokens), (217, 12));
    let sent = &mock.requests()[0];
    assert_eq!((sent["stream"].clone(), sent.get("stream_options")), (json!(false), None));
    assert_eq!(sent["tool_choice"], "auto");

    // Without tools there is nothing to fear: text still streams.
    let mut plain = ask(vec![user("Say hello in five words.")], ToolChoice::Auto);
    plain.tools.clear();
    let items = reply(&provider, plain).await?;
    assert_eq!(mock.requests()[1]["stream"], true);
    assert!(items.iter().filter(|e| matches!(e, Ok(ProviderEvent::TextDelta(_)))).count() > 1);
    Ok(())
}

#[tokio::test]
async fn a_reply_without_usage_is_counted_locally_and_marked_estimated() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![MockReply::RawSse(PLAIN_TEXT.to_owned())]).await?;
    let mut request = ask(vec![user("Say hello in five words.")], ToolChoice::Auto);
    request.tools.clear();
    let items = reply(&Counted::new(provider(mock.base_url(), true)), request).await?;
    let response = assemble(&items)?;
    assert!(response.usage.estimated, "{:?}", response.usage);
    // "Say hello in five words." is 24 bytes (6 estimated tokens) plus 4 for the message.
    assert_eq!(response.usage.input_tokens, 10);
    assert!(response.usage.output_tokens > 0, "{:?}", response.usage);
    assert_eq!(response.finish, Some(FinishReason::Stop));
    Ok(())
}
