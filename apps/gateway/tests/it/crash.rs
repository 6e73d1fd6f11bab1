//! A gateway killed (SIGKILL) in the middle of a turn, then started again on the same SQLite
//! file, resumes the turn: the tool that already ran is not run again, the interrupted LLM
//! request is sent again, and the conversation ends with one complete turn.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// A guard against hangs, not a speed check.
const WAIT: Duration = Duration::from_secs(60);

/// Starts `colloquy serve` on port 0 against `database` and the mock at `base_url`; returns the
/// process and its address, read from its own "listening on" line.
async fn start(database: &Path, base_url: &str) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["--config", "/nonexistent/colloquy.toml", "serve", "--listen", "127.0.0.1:0"])
        .env("COLLOQUY_DATABASE_URL", format!("sqlite://{}?mode=rwc", database.display()))
        .env("COLLOQUY_PROVIDERS__MOCK__KIND", "openai_compatible")
        .env("COLLOQUY_PROVIDERS__MOCK__BASE_URL", base_url)
        .env("COLLOQUY_AGENT__PROVIDER", "mock")
        .env("COLLOQUY_AGENT__MODEL", "gpt-test")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return anyhow::Ok(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
        bail!("colloquy exited before listening")
    })
    .await??;
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("colloquy: {line}");
        }
    });
    Ok((child, addr))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_frame(ws: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await?.context("connection closed")??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(text.as_str())?);
        }
    }
}

async fn subscribe(addr: &str, conversation: &str) -> anyhow::Result<Socket> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await?;
    ws.send(Message::Text(json!({"type": "subscribe", "conversation_id": conversation}).to_string().into())).await?;
    Ok(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_turn_resumes_the_turn_when_it_starts_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let first_model = MockOpenAi::start(vec![
        MockReply::Chunks(chunks::tool_calls(
            "gpt-test",
            &[("call_1", "calculator", &["{\"expression\": \"6*7\"}"])],
            Some((20, 5)),
        )),
        MockReply::Stall(chunks::text("gpt-test", &["The answer "], None).into_iter().take(2).collect()),
    ])
    .await?;

    // First life: the tool runs, then the second LLM request hangs mid-answer; kill -9.
    let (mut first, addr) = start(&database, &first_model.base_url()).await?;
    let created: Value = reqwest::Client::new()
        .post(format!("http://{addr}/v1/conversations"))
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    let conversation = created["id"].as_str().context("no id")?.to_owned();
    let mut ws = subscribe(&addr, &conversation).await?;
    ws.send(Message::Text(
        json!({"type": "send", "conversation_id": conversation, "content": "6*7?"}).to_string().into(),
    ))
    .await?;
    let mut turn_id = Value::Null;
    loop {
        let frame = next_frame(&mut ws).await?;
        let event = &frame["event"];
        if event["type"] == "agent_start" {
            turn_id = event["turn_id"].clone();
        }
        if event["type"] == "message_update" && event["delta"]["type"] == "text" {
            break;
        }
    }
    first.kill().await?;
    assert_eq!(first_model.requests().len(), 2);

    // Second life on the same file: the open turn is resumed at start.
    let second_model =
        MockOpenAi::start(vec![MockReply::Chunks(chunks::text("gpt-test", &["It is 42."], Some((30, 4))))]).await?;
    let (_second, addr) = start(&database, &second_model.base_url()).await?;
    let mut ws = subscribe(&addr, &conversation).await?;
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(&mut ws).await?;
        let done = frame["event"]["type"] == "agent_end";
        frames.push(frame);
        if done {
            break;
        }
    }
    let end = &frames[frames.len() - 1]["event"];
    assert_eq!((end["stop_reason"].clone(), end["turn_id"].clone()), (json!("end_turn"), turn_id));
    let starts = frames.iter().filter(|f| f["event"]["type"] == "agent_start").count();
    assert_eq!(starts, 1, "one turn, resumed, not a second one");
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "the log stays gap-free across the crash");
    let tool_runs = frames.iter().filter(|f| f["event"]["type"] == "tool_execution_start").count();
    assert_eq!(tool_runs, 1, "the calculator ran once, before the crash");

    // The resumed request carried the tool result that was stored before the crash.
    let requests = second_model.requests();
    assert_eq!(requests.len(), 1);
    let roles: Vec<&str> = requests[0]["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["role"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    Ok(())
}
