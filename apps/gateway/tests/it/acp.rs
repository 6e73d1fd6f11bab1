//! `colloquy acp` through the protocol's own client: `tests/acp/client_test.py`, an editor
//! written with the official Python SDK (`agent-client-protocol`, pinned in
//! `tests/acp/requirements.txt`, installed into `target/acp-venv`), which spawns the binary over
//! stdio: initialize, a new session, a streamed prompt, a prompt with a resource link, a tool
//! call that asks permission, a cancelled prompt, then a second process that loads the session
//! and replays it.

use std::process::Stdio;

use anyhow::Context;
use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acp_sdk_editor_drives_colloquy_acp_through_new_prompt_cancel_and_load() -> anyhow::Result<()> {
    let Some(python) = crate::python::venv("acp").await? else { return Ok(()) };
    let model = MockOpenAi::start(vec![
        MockReply::Chunks(chunks::text("gpt-test", &["Hel", "lo"], None)),
        MockReply::Chunks(chunks::text("gpt-test", &["Seen"], None)),
        MockReply::Chunks(chunks::tool_calls(
            "gpt-test",
            &[("call_1", "calculator", &["{\"expression\": \"6*7\"}"])],
            None,
        )),
        MockReply::Chunks(chunks::text("gpt-test", &["42"], None)),
        MockReply::Stall(chunks::text("gpt-test", &["thinking "], None).into_iter().take(2).collect()),
    ])
    .await?;
    let dir = tempfile::tempdir()?;
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("colloquy.db").display());
    let base_url = model.base_url();
    let env = [
        ("COLLOQUY_CONFIG", "/nonexistent/colloquy.toml"),
        ("COLLOQUY_DATABASE_URL", database.as_str()),
        ("COLLOQUY_DISCOVER_OLLAMA", "false"),
        ("COLLOQUY_PROVIDERS__MOCK__KIND", "openai_compatible"),
        ("COLLOQUY_PROVIDERS__MOCK__BASE_URL", base_url.as_str()),
        ("COLLOQUY_AGENT__PROVIDER", "mock"),
        ("COLLOQUY_AGENT__MODEL", "gpt-test"),
        ("COLLOQUY_TOOLS__REQUIRE_APPROVAL", "[calculator]"),
        ("NO_COLOR", "1"),
    ];
    crate::python::run_client_test(&python, "acp", &[env!("CARGO_BIN_EXE_colloquy")], &env).await?;
    // The resource link reached the model as a link.
    let asked = serde_json::to_string(&model.requests())?;
    assert!(asked.contains("[main.rs](file:///src/main.rs)"), "{asked}");
    Ok(())
}

/// What an editor (or anything else on the other end of the pipe) may send that is not ACP:
/// each line gets its JSON-RPC error and the agent keeps serving; the end of stdin stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colloquy_acp_answers_garbage_with_errors_and_exits_when_stdin_ends() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let dir = tempfile::tempdir()?;
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["--config", "/nonexistent/colloquy.toml", "acp"])
        .env("COLLOQUY_DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display()))
        .env("COLLOQUY_DISCOVER_OLLAMA", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = agent.stdin.take().context("stdin")?;
    let mut replies = BufReader::new(agent.stdout.take().context("stdout")?).lines();
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{}1{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let lines = [
        ("{not json".to_owned(), -32700),
        (deep, -32600),
        (r#"{"jsonrpc":"2.0","id":3,"method":"session/fly"}"#.to_owned(), -32601),
        (r#"{"jsonrpc":"2.0","id":4,"method":"session/prompt","params":{"sessionId":"x","prompt":[]}}"#.to_owned(), -32602),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"session/prompt","params":{"sessionId":"01a237ea-5ed4-70b2-929e-7a75b44f54d2","prompt":[{"type":"text","text":"hi"}]}}"#.to_owned(),
            -32602,
        ),
    ];
    for (line, code) in lines {
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        let reply = tokio::time::timeout(crate::process::WAIT, replies.next_line()).await?.context("no reply")?;
        let reply: serde_json::Value = serde_json::from_str(&reply.context("stdout closed")?)?;
        assert_eq!(reply["error"]["code"], code, "{line:.60} -> {reply}");
    }
    // Still serving.
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"initialize\",\"params\":{\"protocolVersion\":1}}\n")
        .await?;
    let reply = tokio::time::timeout(crate::process::WAIT, replies.next_line()).await?.context("no reply")?;
    assert!(reply.is_some_and(|r| r.contains("\"protocolVersion\":1")));
    drop(stdin);
    let status = tokio::time::timeout(crate::process::WAIT, agent.wait()).await??;
    assert!(status.success(), "the agent exits cleanly at the end of stdin: {status}");
    Ok(())
}
