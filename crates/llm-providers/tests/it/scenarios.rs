//! The same scenarios against both HTTP providers, each through the stack the gateway builds
//! (`Priced<Retrying<provider>>`) and a mock server replaying fixtures in that provider's real
//! wire format. The normalized event streams are snapshotted with insta: whatever the provider,
//! the engine sees the same kind of stream.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use colloquy_core_model::{ContentPart, MessageRole, ToolChoice};
use colloquy_llm_providers::{
    Anthropic, AnthropicConfig, FinishReason, LlmProvider, LlmRequest, OpenAiCompatible, OpenAiCompatibleConfig,
    PriceTable, Priced, ProviderError, ProviderEvent, RequestMessage, RetryPolicy, Retrying,
};
use colloquy_tests::{mock_anthropic, mock_openai};
use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Priced models, so that every snapshot also shows the cost.
const OPENAI_MODEL: &str = "gpt-4o-mini";
const ANTHROPIC_MODEL: &str = "claude-haiku-4-5";

#[derive(Debug, Clone, Copy)]
enum Wire {
    OpenAi,
    Anthropic,
}

/// One fixture in each wire format.
struct Fixture {
    openai: Vec<mock_openai::MockReply>,
    anthropic: Vec<mock_anthropic::MockReply>,
}

enum Server {
    OpenAi(mock_openai::MockOpenAi),
    Anthropic(mock_anthropic::MockAnthropic),
}

impl Server {
    fn requests(&self) -> usize {
        match self {
            Self::OpenAi(mock) => mock.requests().len(),
            Self::Anthropic(mock) => mock.requests().len(),
        }
    }
}

/// Tiny waits: the tests run on paused time anyway, and must not sleep for real.
fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        deadline: Duration::from_secs(30),
    }
}

async fn start(wire: Wire, fixture: Fixture) -> anyhow::Result<(Server, Arc<dyn LlmProvider>, String)> {
    let key = Some(SecretString::from("sk-test"));
    let prices = Arc::new(PriceTable::builtin());
    Ok(match wire {
        Wire::OpenAi => {
            let mock = mock_openai::MockOpenAi::start(fixture.openai).await?;
            let provider = OpenAiCompatible::new(OpenAiCompatibleConfig {
                name: "openai".into(),
                base_url: mock.base_url(),
                api_key: key,
                stream_tools: true,
            });
            let provider = Priced::new(Retrying::new(provider, policy()), prices);
            (Server::OpenAi(mock), Arc::new(provider), OPENAI_MODEL.to_owned())
        }
        Wire::Anthropic => {
            let mock = mock_anthropic::MockAnthropic::start(fixture.anthropic).await?;
            let provider =
                Anthropic::new(AnthropicConfig { name: "anthropic".into(), base_url: mock.base_url(), api_key: key });
            let provider = Priced::new(Retrying::new(provider, policy()), prices);
            (Server::Anthropic(mock), Arc::new(provider), ANTHROPIC_MODEL.to_owned())
        }
    })
}

/// Runs the fixture and returns the normalized stream, the number of requests the server got
/// and how long it took (in paused time: the retry waits).
async fn run(wire: Wire, fixture: Fixture) -> anyhow::Result<(Value, Duration)> {
    let (server, provider, model) = start(wire, fixture).await?;
    let request = LlmRequest {
        model,
        system_prompt: Some("You are terse.".into()),
        messages: vec![RequestMessage { role: MessageRole::User, content: vec![ContentPart::text("hi")] }],
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
        temperature: None,
        max_tokens: None,
        conversation: None,
        provider_state: None,
    };
    let started = tokio::time::Instant::now();
    let items = tokio::time::timeout(Duration::from_secs(600), provider.stream(request).collect::<Vec<_>>())
        .await
        .context("the reply stream did not end")?;
    let elapsed = started.elapsed();
    let events: Vec<Value> = items.iter().map(normalized).collect();
    Ok((json!({"requests": server.requests(), "events": events}), elapsed))
}

fn normalized(item: &Result<ProviderEvent, ProviderError>) -> Value {
    match item {
        Ok(ProviderEvent::TextDelta(text)) => json!({"text": text}),
        Ok(ProviderEvent::ToolCallDelta { index, id, name, arguments }) => {
            json!({"tool_call": {"index": index, "id": id, "name": name, "arguments": arguments}})
        }
        Ok(ProviderEvent::Usage(usage)) => {
            let mut usage = json!(usage);
            // Dollars to a millionth of a cent, so float noise does not churn the snapshots.
            if let Some(cost) = usage["cost_usd"].as_f64() {
                usage["cost_usd"] = json!(format!("{cost:.8}"));
            }
            json!({"usage": usage})
        }
        Ok(ProviderEvent::State(state)) => json!({ "state": state }),
        Ok(ProviderEvent::Finish(reason)) => json!({"finish": match reason {
            FinishReason::Stop => "stop".to_owned(),
            FinishReason::Length => "length".to_owned(),
            FinishReason::ToolCalls => "tool_calls".to_owned(),
            FinishReason::Refusal => "refusal".to_owned(),
            FinishReason::Other(other) => format!("other: {other}"),
        }}),
        Err(error) => {
            let kind = match error {
                ProviderError::NotConfigured { .. } => "not_configured",
                ProviderError::Auth { .. } => "auth",
                ProviderError::RateLimited { .. } => "rate_limited",
                ProviderError::ContextLengthExceeded { .. } => "context_length_exceeded",
                ProviderError::InvalidRequest { .. } => "invalid_request",
                ProviderError::Server { .. } => "server",
                ProviderError::Network { .. } => "network",
                ProviderError::MalformedResponse { .. } => "malformed_response",
            };
            json!({"error": {"kind": kind, "retryable": error.is_retryable(), "message": error.to_string()}})
        }
    }
}

/// Runs the fixture against both providers and snapshots each stream as `<name>_<provider>`.
async fn snapshot_both(name: &str, fixture: impl Fn() -> Fixture) -> anyhow::Result<Vec<(Value, Duration)>> {
    let mut results = Vec::new();
    for (wire, suffix) in [(Wire::OpenAi, "openai"), (Wire::Anthropic, "anthropic")] {
        let (stream, elapsed) = run(wire, fixture()).await?;
        // Keys sorted: serde_json keeps insertion order when another crate of the build turns on
        // its `preserve_order` (the gateway's ACP types do), and a snapshot must not depend on that.
        insta::with_settings!({ sort_maps => true }, {
            insta::assert_json_snapshot!(format!("{name}_{suffix}"), stream);
        });
        results.push((stream, elapsed));
    }
    Ok(results)
}

fn openai_text(pieces: &[&str], usage: Option<(u64, u64)>) -> mock_openai::MockReply {
    mock_openai::MockReply::Chunks(mock_openai::chunks::text(OPENAI_MODEL, pieces, usage))
}

fn anthropic_text(pieces: &[&str], usage: (u64, u64)) -> mock_anthropic::MockReply {
    mock_anthropic::MockReply::Events(mock_anthropic::events::text(ANTHROPIC_MODEL, pieces, usage))
}

#[tokio::test(start_paused = true)]
async fn text_only() -> anyhow::Result<()> {
    snapshot_both("text_only", || Fixture {
        openai: vec![openai_text(&["Hel", "lo, ", "world!"], None)],
        anthropic: vec![anthropic_text(&["Hel", "lo, ", "world!"], (12, 6))],
    })
    .await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn parallel_tool_calls_split_across_chunks() -> anyhow::Result<()> {
    let calls: &[(&str, &str, &[&str])] = &[
        ("call_calc", "calculator", &["{\"expr", "ession\": ", "\"6*7\"}"]),
        ("call_clock", "clock", &["{\"zone\"", ": \"UTC\"}"]),
    ];
    snapshot_both("parallel_tool_calls", || Fixture {
        openai: vec![mock_openai::MockReply::Chunks(mock_openai::chunks::tool_calls(
            OPENAI_MODEL,
            calls,
            Some((40, 22)),
        ))],
        anthropic: vec![mock_anthropic::MockReply::Events(mock_anthropic::events::tool_uses(
            ANTHROPIC_MODEL,
            Some("Let me check."),
            &[
                ("toolu_calc", "calculator", &["{\"expr", "ession\": ", "\"6*7\"}"]),
                ("toolu_clock", "clock", &["", "{\"zone\"", ": \"UTC\"}"]),
            ],
            (40, 22),
        ))],
    })
    .await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn usage_in_the_last_chunk_with_cached_tokens_is_priced() -> anyhow::Result<()> {
    let mut openai = mock_openai::chunks::text(OPENAI_MODEL, &["Cached."], Some((2000, 5)));
    if let Some(usage) = openai.last_mut() {
        usage["usage"]["prompt_tokens_details"]["cached_tokens"] = json!(1536);
    }
    let anthropic = vec![
        mock_anthropic::events::message_start_with_cache(ANTHROPIC_MODEL, 12, 400, 1536),
        mock_anthropic::events::text_start(0),
        mock_anthropic::events::text_delta(0, "Cached."),
        mock_anthropic::events::block_stop(0),
        mock_anthropic::events::message_delta("end_turn", 5),
        mock_anthropic::events::message_stop(),
    ];
    let results = snapshot_both("usage_in_last_chunk", || Fixture {
        openai: vec![mock_openai::MockReply::Chunks(openai.clone())],
        anthropic: vec![mock_anthropic::MockReply::Events(anthropic.clone())],
    })
    .await?;
    // gpt-4o-mini: 464 uncached at 0.15, 1536 cached at 0.075, 5 out at 0.60 (USD per million).
    let cost = |stream: &Value| {
        stream["events"][1]["usage"]["cost_usd"].as_str().and_then(|cost| cost.parse::<f64>().ok()).context("no cost")
    };
    let openai_cost = cost(&results[0].0)?;
    assert!((openai_cost - (464.0 * 0.15 + 1536.0 * 0.075 + 5.0 * 0.6) / 1e6).abs() < 1e-8, "{openai_cost}");
    // claude-haiku-4-5: 12 uncached at 1, 400 written at 1.25, 1536 read at 0.10, 5 out at 5.
    let anthropic_cost = cost(&results[1].0)?;
    assert!((anthropic_cost - (12.0 + 400.0 * 1.25 + 1536.0 * 0.1 + 25.0) / 1e6).abs() < 1e-8, "{anthropic_cost}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn rate_limited_with_retry_after_then_success() -> anyhow::Result<()> {
    let retry_after = || vec![("retry-after".to_owned(), "2".to_owned())];
    let results = snapshot_both("rate_limited_then_success", || Fixture {
        openai: vec![
            mock_openai::MockReply::Status {
                status: 429,
                headers: retry_after(),
                body: json!({"error": {"message": "Rate limit reached for gpt-4o-mini on requests per min (RPM)",
                    "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
            },
            openai_text(&["ok"], Some((10, 1))),
        ],
        anthropic: vec![
            mock_anthropic::MockReply::Status {
                status: 429,
                headers: retry_after(),
                body: mock_anthropic::events::error_body(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
            },
            anthropic_text(&["ok"], (10, 1)),
        ],
    })
    .await?;
    for (stream, elapsed) in results {
        assert_eq!(stream["requests"], 2);
        // The provider's two seconds, not the 10 ms backoff.
        assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_is_honoured() -> anyhow::Result<()> {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(20));
    let limited = |body: Value| mock_openai::MockReply::Status {
        status: 429,
        headers: vec![("Retry-After".to_owned(), date.clone())],
        body,
    };
    let (stream, elapsed) = run(
        Wire::OpenAi,
        Fixture {
            openai: vec![
                limited(json!({"error": {"message": "slow down", "type": "requests"}})),
                openai_text(&["ok"], None),
            ],
            anthropic: Vec::new(),
        },
    )
    .await?;
    assert_eq!(stream["requests"], 2);
    // The date has whole seconds and was written on the real clock some (real) time before it
    // was read: the wait is up to 20 seconds, and far more than the 10 ms backoff.
    assert!(elapsed >= Duration::from_secs(10) && elapsed <= Duration::from_millis(20_200), "{elapsed:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn server_error_then_success() -> anyhow::Result<()> {
    let results = snapshot_both("server_error_then_success", || Fixture {
        openai: vec![
            mock_openai::MockReply::Status {
                status: 500,
                headers: Vec::new(),
                body: json!({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                    "type": "server_error", "param": null, "code": null}}),
            },
            openai_text(&["ok"], Some((10, 1))),
        ],
        anthropic: vec![
            mock_anthropic::MockReply::Status {
                status: 500,
                headers: Vec::new(),
                body: mock_anthropic::events::error_body("api_error", "Internal server error"),
            },
            anthropic_text(&["ok"], (10, 1)),
        ],
    })
    .await?;
    for (stream, _) in results {
        assert_eq!(stream["requests"], 2);
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_mid_way_is_an_error_and_is_not_retried() -> anyhow::Result<()> {
    let openai_good = mock_openai::chunks::delta(OPENAI_MODEL, json!({"content": "The answer is"}), None, false);
    let anthropic_events = [
        mock_anthropic::events::message_start(ANTHROPIC_MODEL, 10),
        mock_anthropic::events::text_start(0),
        mock_anthropic::events::text_delta(0, "The answer is"),
    ];
    let anthropic_cut: String = anthropic_events.iter().map(mock_anthropic::frame).collect::<String>()
        + "event: content_block_delta\ndata: {\"type\": \"content_block_del";
    let results = snapshot_both("stream_cut", || Fixture {
        openai: vec![
            mock_openai::MockReply::RawSse(format!("data: {openai_good}\n\ndata: {{\"id\": \"chatcmpl-")),
            openai_text(&["never sent"], None),
        ],
        anthropic: vec![
            mock_anthropic::MockReply::RawSse(anthropic_cut.clone()),
            anthropic_text(&["never sent"], (1, 1)),
        ],
    })
    .await?;
    for (stream, _) in results {
        assert_eq!(stream["requests"], 1, "{stream}");
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_malformed_chunk_is_a_clear_error() -> anyhow::Result<()> {
    let openai_good = mock_openai::chunks::delta(OPENAI_MODEL, json!({"content": "Hel"}), None, false);
    let anthropic_good = [
        mock_anthropic::events::message_start(ANTHROPIC_MODEL, 10),
        mock_anthropic::events::text_start(0),
        mock_anthropic::events::text_delta(0, "Hel"),
    ]
    .iter()
    .map(mock_anthropic::frame)
    .collect::<String>();
    let results = snapshot_both("malformed_chunk", || Fixture {
        openai: vec![mock_openai::MockReply::RawSse(format!(
            "data: {openai_good}\n\ndata: {{not json\n\ndata: [DONE]\n\n"
        ))],
        anthropic: vec![mock_anthropic::MockReply::RawSse(format!(
            "{anthropic_good}event: content_block_delta\ndata: {{not json\n\n"
        ))],
    })
    .await?;
    for (stream, _) in results {
        assert_eq!(stream["requests"], 1, "{stream}");
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn context_length_exceeded_is_its_own_error_and_is_not_retried() -> anyhow::Result<()> {
    let results = snapshot_both("context_length_exceeded", || Fixture {
        openai: vec![mock_openai::MockReply::Status {
            status: 400,
            headers: Vec::new(),
            body: json!({"error": {
                "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
        }],
        anthropic: vec![mock_anthropic::MockReply::Status {
            status: 400,
            headers: Vec::new(),
            body: mock_anthropic::events::error_body("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
        }],
    })
    .await?;
    for (stream, _) in results {
        assert_eq!(stream["requests"], 1, "{stream}");
    }
    Ok(())
}
