//! The OpenAI-compatible provider through its real HTTP client against the mock server.

use std::time::Duration;

use colloquy_core_model::{ContentPart, MediaSource, MessageRole, ToolChoice, ToolSpec, Usage};
use colloquy_llm_providers::{
    FinishReason, LlmRequest, OpenAiCompatible, OpenAiCompatibleConfig, ProviderError, ProviderEvent, RequestMessage,
};
use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};

use crate::support::{EventResult, ask_model, assemble, reply};
use secrecy::SecretString;
use serde_json::json;

const MODEL: &str = "gpt-test";

fn provider(base_url: String) -> OpenAiCompatible {
    OpenAiCompatible::new(OpenAiCompatibleConfig {
        name: "mock".into(),
        base_url,
        api_key: Some(SecretString::from("sk-test")),
        stream_tools: true,
    })
}

fn ask(text: &str) -> LlmRequest {
    ask_model(MODEL, text)
}

/// The error a reply failed with at once, with nothing streamed before it.
async fn failure(reply: MockReply) -> anyhow::Result<(ProviderError, usize)> {
    let mock = MockOpenAi::start(vec![reply]).await?;
    let items = self::reply(&provider(mock.base_url()), ask("hi")).await?;
    match <[_; 1]>::try_from(items) {
        Ok([Err(error)]) => Ok((error, mock.requests().len())),
        other => anyhow::bail!("expected only an error, got {other:?}"),
    }
}

fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> serde_json::Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

fn tool_call_delta(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> EventResult {
    Ok(ProviderEvent::ToolCallDelta {
        index,
        id: id.map(str::to_owned),
        name: name.map(str::to_owned),
        arguments: arguments.to_owned(),
    })
}

fn usage(input_tokens: u64, output_tokens: u64) -> Usage {
    Usage { input_tokens, output_tokens, ..Usage::default() }
}

#[tokio::test]
async fn a_text_reply_streams_its_pieces_then_usage_then_stop() -> anyhow::Result<()> {
    let mock =
        MockOpenAi::start(vec![MockReply::Chunks(chunks::text(MODEL, &["Hel", "lo, ", "world!"], Some((12, 3))))])
            .await?;

    let items = reply(&provider(mock.base_url()), ask("Say hello")).await?;

    assert_eq!(
        items,
        vec![
            Ok(ProviderEvent::TextDelta("Hel".into())),
            Ok(ProviderEvent::TextDelta("lo, ".into())),
            Ok(ProviderEvent::TextDelta("world!".into())),
            Ok(ProviderEvent::Usage(usage(12, 3))),
            Ok(ProviderEvent::Finish(FinishReason::Stop)),
        ]
    );
    let response = assemble(&items)?;
    assert_eq!(response.content, vec![ContentPart::text("Hello, world!")]);
    assert_eq!(response.usage, usage(12, 3));
    assert_eq!(response.finish, Some(FinishReason::Stop));
    Ok(())
}

#[tokio::test]
async fn two_tool_calls_with_arguments_split_across_chunks_are_assembled() -> anyhow::Result<()> {
    let calls: &[(&str, &str, &[&str])] = &[
        ("call_calc", "calculator", &["{\"expr", "ession\": ", "\"6*7\"}"]),
        ("call_clock", "clock", &["{\"zone\": ", "\"UTC\"}"]),
    ];
    let mock = MockOpenAi::start(vec![MockReply::Chunks(chunks::tool_calls(MODEL, calls, Some((40, 22))))]).await?;

    let items = reply(&provider(mock.base_url()), ask("What is 6*7, and what time is it?")).await?;

    assert_eq!(
        items,
        vec![
            tool_call_delta(0, Some("call_calc"), Some("calculator"), ""),
            tool_call_delta(0, None, None, "{\"expr"),
            tool_call_delta(0, None, None, "ession\": "),
            tool_call_delta(0, None, None, "\"6*7\"}"),
            tool_call_delta(1, Some("call_clock"), Some("clock"), ""),
            tool_call_delta(1, None, None, "{\"zone\": "),
            tool_call_delta(1, None, None, "\"UTC\"}"),
            Ok(ProviderEvent::Usage(usage(40, 22))),
            Ok(ProviderEvent::Finish(FinishReason::ToolCalls)),
        ]
    );
    let response = assemble(&items)?;
    assert_eq!(
        response.content,
        vec![
            ContentPart::ToolCall {
                id: "call_calc".into(),
                name: "calculator".into(),
                arguments: json!({"expression": "6*7"})
            },
            ContentPart::ToolCall { id: "call_clock".into(), name: "clock".into(), arguments: json!({"zone": "UTC"}) },
        ]
    );
    assert_eq!(response.usage, usage(40, 22));
    assert_eq!(response.finish, Some(FinishReason::ToolCalls));
    Ok(())
}

#[tokio::test]
async fn the_request_carries_prompt_history_tools_and_options_in_openai_form() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![MockReply::Chunks(chunks::text(MODEL, &["2"], Some((50, 1))))]).await?;
    let request = LlmRequest {
        model: MODEL.into(),
        system_prompt: Some("You are terse.".into()),
        messages: vec![
            RequestMessage {
                role: MessageRole::User,
                content: vec![
                    ContentPart::text("What is 1+1? Also, this:"),
                    ContentPart::Image {
                        source: MediaSource::Base64 { mime_type: "image/png".into(), data: "iVBORw0KGgo=".into() },
                    },
                    ContentPart::Custom { value: json!({"ui": "card"}) },
                ],
            },
            RequestMessage {
                role: MessageRole::Assistant,
                content: vec![
                    ContentPart::text("Let me calculate."),
                    ContentPart::ToolCall {
                        id: "call_1".into(),
                        name: "calculator".into(),
                        arguments: json!({"expression": "1+1"}),
                    },
                ],
            },
            RequestMessage {
                role: MessageRole::Tool,
                content: vec![ContentPart::ToolResult {
                    tool_call_id: "call_1".into(),
                    name: "calculator".into(),
                    content: "2".into(),
                    is_error: false,
                }],
            },
            RequestMessage { role: MessageRole::Custom, content: vec![ContentPart::Custom { value: json!({"x": 1}) }] },
        ],
        tools: vec![ToolSpec {
            name: "calculator".into(),
            description: "Evaluates arithmetic".into(),
            parameters: json!({
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"]
            }),
        }],
        tool_choice: ToolChoice::Function("calculator".into()),
        temperature: Some(0.5),
        max_tokens: Some(256),
        conversation: None,
        provider_state: None,
    };

    let items = reply(&provider(mock.base_url()), request).await?;

    assert_eq!(items.last(), Some(&Ok(ProviderEvent::Finish(FinishReason::Stop))));
    assert_eq!(
        mock.requests(),
        vec![json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is 1+1? Also, this:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": "Let me calculate.", "tool_calls": [
                    {"type": "function", "id": "call_1",
                     "function": {"name": "calculator", "arguments": "{\"expression\":\"1+1\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "2"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "calculator",
                "description": "Evaluates arithmetic",
                "parameters": {
                    "type": "object",
                    "properties": {"expression": {"type": "string"}},
                    "required": ["expression"]
                }
            }}],
            "tool_choice": {"type": "function", "function": {"name": "calculator"}},
            "temperature": 0.5,
            "max_tokens": 256,
            "stream": true,
            "stream_options": {"include_usage": true}
        })]
    );
    Ok(())
}

#[tokio::test]
async fn tool_choice_modes_are_sent_as_strings_and_dropped_without_tools() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![
        MockReply::Chunks(chunks::text(MODEL, &["a"], None)),
        MockReply::Chunks(chunks::text(MODEL, &["b"], None)),
        MockReply::Chunks(chunks::text(MODEL, &["c"], None)),
    ])
    .await?;
    let provider = provider(mock.base_url());
    let tool = ToolSpec { name: "clock".into(), description: String::new(), parameters: json!({"type": "object"}) };
    for choice in [ToolChoice::Required, ToolChoice::None] {
        let request = LlmRequest { tools: vec![tool.clone()], tool_choice: choice, ..ask("time?") };
        reply(&provider, request).await?;
    }
    reply(&provider, LlmRequest { tool_choice: ToolChoice::Required, ..ask("time?") }).await?;

    let requests = mock.requests();
    assert_eq!(requests[0]["tool_choice"], json!("required"));
    assert_eq!(
        requests[0]["tools"],
        json!([{"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}])
    );
    assert_eq!(requests[1]["tool_choice"], json!("none"));
    assert_eq!(requests[2].get("tools"), None);
    assert_eq!(requests[2].get("tool_choice"), None);
    Ok(())
}

#[tokio::test]
async fn status_401_is_an_auth_error() -> anyhow::Result<()> {
    let message = "Incorrect API key provided: sk-test. You can find your API key at \
                   https://platform.openai.com/account/api-keys.";
    let (error, requests) = failure(MockReply::Status {
        status: 401,
        headers: Vec::new(),
        body: error_body(message, "invalid_request_error", None, Some("invalid_api_key")),
    })
    .await?;
    assert_eq!(error, ProviderError::Auth { message: message.into() });
    assert_eq!(requests, 1);
    Ok(())
}

#[tokio::test]
async fn status_429_is_rate_limited_with_retry_after_and_is_not_retried() -> anyhow::Result<()> {
    let message = "Rate limit reached for gpt-test on requests per min (RPM): Limit 3, Used 3, Requested 1.";
    let (error, requests) = failure(MockReply::Status {
        status: 429,
        headers: vec![("Retry-After".into(), "7".into())],
        body: error_body(message, "requests", None, Some("rate_limit_exceeded")),
    })
    .await?;
    assert_eq!(
        error,
        ProviderError::RateLimited { retry_after: Some(Duration::from_secs(7)), message: message.into() }
    );
    // async-openai's own client would have retried; retries are the caller's business.
    assert_eq!(requests, 1);
    Ok(())
}

#[tokio::test]
async fn status_500_is_a_server_error_and_is_not_retried() -> anyhow::Result<()> {
    let message = "The server had an error while processing your request. Sorry about that!";
    let (error, requests) = failure(MockReply::Status {
        status: 500,
        headers: Vec::new(),
        body: error_body(message, "server_error", None, None),
    })
    .await?;
    assert_eq!(error, ProviderError::Server { status: 500, message: message.into() });
    assert_eq!(requests, 1);
    Ok(())
}

#[tokio::test]
async fn status_400_context_length_exceeded_is_its_own_error() -> anyhow::Result<()> {
    let message = "This model's maximum context length is 128000 tokens. However, your messages resulted in \
                   130512 tokens. Please reduce the length of the messages.";
    let (error, _) = failure(MockReply::Status {
        status: 400,
        headers: Vec::new(),
        body: error_body(message, "invalid_request_error", Some("messages"), Some("context_length_exceeded")),
    })
    .await?;
    assert_eq!(error, ProviderError::ContextLengthExceeded { message: message.into() });
    Ok(())
}

#[tokio::test]
async fn other_4xx_answers_are_invalid_requests_whatever_their_body_shape() -> anyhow::Result<()> {
    let (error, _) = failure(MockReply::Status {
        status: 400,
        headers: Vec::new(),
        body: error_body("Invalid value for 'temperature'.", "invalid_request_error", Some("temperature"), None),
    })
    .await?;
    assert_eq!(error, ProviderError::InvalidRequest { message: "Invalid value for 'temperature'.".into() });

    // Ollama's shape: the error is a bare string.
    let (error, _) = failure(MockReply::Status {
        status: 404,
        headers: Vec::new(),
        body: json!({"error": "model \"gpt-test\" not found, try pulling it first"}),
    })
    .await?;
    assert_eq!(
        error,
        ProviderError::InvalidRequest { message: "model \"gpt-test\" not found, try pulling it first".into() }
    );
    Ok(())
}

#[tokio::test]
async fn a_malformed_chunk_ends_the_stream_with_a_malformed_response_error() -> anyhow::Result<()> {
    let good = chunks::delta(MODEL, json!({"content": "Hel"}), None, false);
    let mock =
        MockOpenAi::start(vec![MockReply::RawSse(format!("data: {good}\n\ndata: {{not json\n\ndata: [DONE]\n\n"))])
            .await?;

    let items = reply(&provider(mock.base_url()), ask("hi")).await?;

    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], Ok(ProviderEvent::TextDelta("Hel".into())));
    assert!(
        matches!(&items[1], Err(ProviderError::MalformedResponse { message }) if message.contains("{not json")),
        "{:?}",
        items[1]
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_cut_before_its_finish_reason_is_an_error_not_a_complete_reply() -> anyhow::Result<()> {
    let good = chunks::delta(MODEL, json!({"content": "The answer is"}), None, false);
    let mock = MockOpenAi::start(vec![MockReply::RawSse(format!("data: {good}\n\n"))]).await?;

    let items = reply(&provider(mock.base_url()), ask("hi")).await?;

    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], Ok(ProviderEvent::TextDelta("The answer is".into())));
    assert!(
        matches!(&items[1], Err(ProviderError::MalformedResponse { message }) if message.contains("finish_reason")),
        "{:?}",
        items[1]
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);

    let items = reply(&provider(format!("http://127.0.0.1:{port}/v1")), ask("hi")).await?;

    let [Err(error)] = <[_; 1]>::try_from(items).map_err(|items| anyhow::anyhow!("expected one error: {items:?}"))?
    else {
        anyhow::bail!("expected an error");
    };
    assert!(matches!(&error, ProviderError::Network { message } if message.contains(&port.to_string())), "{error:?}");
    assert!(error.is_retryable());
    Ok(())
}

#[tokio::test]
async fn a_quirky_server_without_ids_or_usage_and_with_whole_arguments_works() -> anyhow::Result<()> {
    // What llama.cpp- and Ollama-style servers may send: no tool-call ids, each call whole in one
    // chunk, no `usage` anywhere and no usage chunk.
    let quirky = vec![
        chunks::delta(MODEL, json!({"role": "assistant", "content": null}), None, false),
        chunks::delta(
            MODEL,
            json!({"tool_calls": [
                {"index": 0, "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"2+2\"}"}},
                {"index": 1, "type": "function", "function": {"name": "clock", "arguments": "{}"}}
            ]}),
            None,
            false,
        ),
        chunks::delta(MODEL, json!({}), Some("tool_calls"), false),
    ];
    let mock = MockOpenAi::start(vec![MockReply::Chunks(quirky)]).await?;

    let items = reply(&provider(mock.base_url()), ask("2+2 and the time")).await?;

    assert_eq!(
        items,
        vec![
            tool_call_delta(0, None, Some("calculator"), "{\"expression\":\"2+2\"}"),
            tool_call_delta(1, None, Some("clock"), "{}"),
            Ok(ProviderEvent::Finish(FinishReason::ToolCalls)),
        ]
    );
    let response = assemble(&items)?;
    let calls: Vec<_> = response
        .content
        .iter()
        .map(|part| match part {
            ContentPart::ToolCall { id, name, arguments } => (id.as_str().to_owned(), name.clone(), arguments.clone()),
            other => panic!("expected only tool calls, got {other:?}"),
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].1.as_str(), &calls[0].2), ("calculator", &json!({"expression": "2+2"})));
    assert_eq!((calls[1].1.as_str(), &calls[1].2), ("clock", &json!({})));
    assert!(calls.iter().all(|(id, _, _)| id.starts_with("call_")), "{calls:?}");
    assert_ne!(calls[0].0, calls[1].0);
    assert_eq!(response.usage, Usage::default());
    assert_eq!(response.finish, Some(FinishReason::ToolCalls));
    Ok(())
}

#[tokio::test]
async fn the_mock_answers_500_once_its_replies_are_used_up() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![MockReply::Chunks(chunks::text(MODEL, &["one"], None))]).await?;
    let provider = provider(mock.base_url());

    reply(&provider, ask("first")).await?;
    let items = reply(&provider, ask("second")).await?;

    assert_eq!(
        items,
        vec![Err(ProviderError::Server {
            status: 500,
            message: "the mock OpenAI server has no reply left for request 2".into()
        })]
    );
    assert_eq!(mock.requests().len(), 2);
    Ok(())
}
