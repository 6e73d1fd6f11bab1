//! What an operator's log pipeline gets with `log_format = "json"`: one JSON object per line,
//! requests carrying their `x-request-id`, turns and LLM requests carrying conversation, turn
//! and OpenTelemetry GenAI fields, and no secrets.

use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use serde_json::{Value, json};

use crate::process::start;

/// The span of `name` in a JSON log line, if the line was logged inside one.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_genai_fields_and_no_secrets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mock = MockOpenAi::start(vec![MockReply::Chunks(chunks::text("gpt-test", &["Hi."], Some((7, 2))))]).await?;
    let env = [
        ("COLLOQUY_LOG_FORMAT", "json"),
        ("COLLOQUY_PROVIDERS__MOCK__API_KEY", "sk-never-log-this-secret"),
        ("RUST_LOG", "info,tower_http=debug,colloquy_llm_providers=debug"),
    ];
    let mut served = start(&dir.path().join("colloquy.db"), &mock.base_url(), &env).await?;
    let key = served.printed_line(|line| line.trim().starts_with("ck_")).await?.trim().to_owned();
    let http = reqwest::Client::new();

    // A request's lines carry the id it was sent with.
    let response = http
        .get(format!("http://{}/v1/conversations/not-an-id", served.addr))
        .bearer_auth(&key)
        .header("x-request-id", "trace-me-1")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let line = served.logged_line(|l| l.contains("trace-me-1")).await?;
    let line: Value = serde_json::from_str(&line)?;
    assert_eq!(span(&line, "request").map(|s| s["request_id"].clone()), Some(json!("trace-me-1")), "{line}");

    // A turn's LLM request logs inside the turn's and the request's spans.
    let created: Value = http
        .post(format!("http://{}/v1/conversations", served.addr))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let sent = http
        .post(format!("http://{}/v1/conversations/{id}/messages?wait=true", served.addr))
        .bearer_auth(&key)
        .json(&json!({ "content": "hello" }))
        .send()
        .await?;
    assert_eq!(sent.status(), 200);
    let line = served.logged_line(|l| l.contains("\"llm_request\"")).await?;
    let line: Value = serde_json::from_str(&line)?;
    let turn = span(&line, "turn").cloned().unwrap_or_default();
    assert_eq!(turn["conversation_id"], json!(id), "{line}");
    assert!(turn["turn_id"].is_string(), "{line}");
    let request = span(&line, "llm_request").cloned().unwrap_or_default();
    assert_eq!(
        (request["gen_ai.request.model"].clone(), request["gen_ai.system"].clone()),
        (json!("gpt-test"), json!("mock"))
    );

    // Every line is one JSON object; the provider's key appears in none.
    let log = served.log.borrow().clone();
    assert!(log.len() > 3, "{log:?}");
    for line in &log {
        let parsed: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON ({e}): {line}"))?;
        assert!(parsed["level"].is_string() && parsed["timestamp"].is_string(), "{line}");
        assert!(!line.contains("sk-never-log-this-secret"), "a secret was logged: {line}");
        assert!(!line.contains(&key), "an API key was logged: {line}");
    }
    Ok(())
}
