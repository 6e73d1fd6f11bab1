//! The A2A server through the protocol's own client: `tests/a2a/client_test.py`, written with
//! the official Python SDK (`a2a-sdk`, pinned in `tests/a2a/requirements.txt`, installed into
//! `target/a2a-venv`, never into the repository), against the `colloquy` binary with auth on and
//! a mock OpenAI-compatible model: card, blocking and streamed sends in one context, GetTask,
//! the A2A errors, and a stalled task followed from a second connection and cancelled; all of it
//! again over A2A 0.3 (the SDK's 0.3 transport); a named agent's own card and endpoint; and a
//! task that waits for a tool's approval, answered by a message with its `taskId`.
//!
//! Where Python 3 (with venv) is missing this test says so and passes (`cargo xtask test`); with
//! `COLLOQUY_REQUIRE_PYTHON=1` (`cargo xtask ci`) it fails instead.

use anyhow::Context;
use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a2a_sdk_client_sends_streams_follows_and_cancels_tasks() -> anyhow::Result<()> {
    let Some(python) = crate::python::venv("a2a").await? else { return Ok(()) };
    let model = MockOpenAi::start(vec![
        MockReply::Chunks(chunks::text("gpt-test", &["Hello", " there"], None)),
        MockReply::Chunks(chunks::text("gpt-test", &["Forty", "-two"], None)),
        MockReply::Stall(chunks::text("gpt-test", &["thinking "], None).into_iter().take(2).collect()),
        // A2A 0.3.
        MockReply::Chunks(chunks::text("gpt-test", &["Old", " hello"], None)),
        MockReply::Chunks(chunks::text("gpt-test", &["Still", " here"], None)),
        MockReply::Stall(chunks::text("gpt-test", &["slowly "], None).into_iter().take(2).collect()),
        // The named agent.
        MockReply::Chunks(chunks::text("gpt-helper", &["Helper", " here"], None)),
        // A call that waits for approval, then the answer.
        MockReply::Chunks(chunks::tool_calls(
            "gpt-test",
            &[("call_1", "calculator", &[r#"{"expression":"6*7"}"#])],
            None,
        )),
        MockReply::Chunks(chunks::text("gpt-test", &["It is", " 42"], None)),
    ])
    .await?;
    let dir = tempfile::tempdir()?;
    let env = [
        ("COLLOQUY_AGENTS__HELPER__MODEL", "gpt-helper"),
        ("COLLOQUY_AGENTS__HELPER__SYSTEM_PROMPT", "You are the helper."),
        ("COLLOQUY_AGENTS__HELPER__DESCRIPTION", "Helps with everything"),
        ("COLLOQUY_TOOLS__REQUIRE_APPROVAL", "[calculator]"),
    ];
    let mut served = crate::process::start(&dir.path().join("colloquy.db"), &model.base_url(), &env).await?;
    let key = served.printed_line(|line| line.trim().starts_with("ck_")).await?.trim().to_owned();
    let base = format!("http://{}", served.addr);
    crate::python::run_client_test(&python, "a2a", &[&base, &key], &[]).await?;
    // The named agent asked its own model with its own prompt.
    let asked = model.requests();
    let helper = asked.iter().find(|r| r["model"] == "gpt-helper").context("no request to the helper's model")?;
    assert_eq!(helper["messages"][0]["content"], "You are the helper.", "{helper}");
    Ok(())
}

/// An a2a-sdk agent server (`tests/a2a/echo_server.py`) speaking `version`, and its log lines.
async fn echo_agent(
    python: &std::path::Path,
    version: &str,
) -> anyhow::Result<(tokio::process::Child, tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>, String)>
{
    use tokio::io::AsyncBufReadExt;
    // A port picked by binding 0 and letting go can be taken by another test's server before
    // Python binds it: then the card that answers is not the echo agent's, and it is tried again.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut echo = tokio::process::Command::new(python)
            .arg(crate::python::source("a2a").join("echo_server.py"))
            .args([&port.to_string(), version])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let said = tokio::io::BufReader::new(echo.stdout.take().context("stdout")?).lines();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + crate::process::WAIT;
        loop {
            let card = reqwest::get(format!("{url}/.well-known/agent-card.json")).await;
            if let Ok(card) = card
                && let Ok(card) = card.json::<serde_json::Value>().await
            {
                if card["name"] == "echo" {
                    return Ok((echo, said, url));
                }
                break; // someone else's server on the port
            }
            if echo.try_wait()?.is_some() {
                break; // it could not bind the port
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "the echo agent never served");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    anyhow::bail!("the echo agent found no free port in 5 tries")
}

/// Colloquy as the A2A client: service participants that are remote A2A agents (`a2a_url`;
/// a2a-sdk servers, one speaking 1.0 and one 0.3) answer in a multi-party conversation when
/// @mentioned, streamed, as their own messages; the remote context survives a restart of the
/// gateway; cancelling the turn cancels the remote task; an agent whose server is down ends its
/// turn with a clear error. An agent participant whose provider is of kind `a2a` works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_a2a_agents_answer_in_a_multi_party_conversation() -> anyhow::Result<()> {
    use futures::SinkExt;
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;

    let Some(python) = crate::python::venv("a2a").await? else { return Ok(()) };
    let (_echo, mut said, url) = echo_agent(&python, "1.0").await?;
    let (_old, mut old_said, old_url) = echo_agent(&python, "0.3").await?;
    let model = MockOpenAi::start(vec![]).await?;
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let env = [
        ("COLLOQUY_AUTH", "off"),
        ("COLLOQUY_PROVIDERS__ECHO__KIND", "a2a"),
        ("COLLOQUY_PROVIDERS__ECHO__URL", url.as_str()),
    ];
    let mut served = crate::process::start(&database, &model.base_url(), &env).await?;
    let created: Value = reqwest::Client::new()
        .post(format!("http://{}/v1/conversations", served.addr))
        .json(&json!({
            "kind": "multi_party",
            "participants": [
                { "kind": "user", "display_name": "ada", "role": "owner" },
                { "kind": "service", "display_name": "echo", "a2a_url": url, "a2a_key": "remote-secret" },
                { "kind": "service", "display_name": "oldecho", "a2a_url": old_url },
                { "kind": "service", "display_name": "gone", "a2a_url": "http://127.0.0.1:9" },
                { "kind": "agent", "display_name": "viaprovider", "agent": { "provider": "echo", "model": "a2a" } },
            ],
        }))
        .send()
        .await?
        .json()
        .await?;
    let conversation = created["id"].as_str().context("created")?.to_owned();
    let participants = created["participants"].as_array().cloned().unwrap_or_default();
    let echo_participant = participants.iter().find(|p| p["display_name"] == "echo").context("echo")?;
    assert_eq!(echo_participant["a2a_url"], url.as_str(), "{echo_participant}");
    assert!(!created.to_string().contains("remote-secret"), "the key is never shown: {created}");
    let echo_id = echo_participant["id"].clone();
    let say = async |ws: &mut crate::process::Socket, text: &str| -> anyhow::Result<()> {
        let frame = json!({ "type": "send", "conversation_id": conversation, "content": text });
        ws.send(Message::Text(frame.to_string().into())).await?;
        Ok(())
    };
    let until_end = async |ws: &mut crate::process::Socket| -> anyhow::Result<(Vec<Value>, Value)> {
        let mut frames = Vec::new();
        loop {
            let frame = crate::process::next_frame(ws).await?;
            if frame["event"]["type"] == "agent_end" {
                return Ok((frames, frame["event"].clone()));
            }
            frames.push(frame);
        }
    };
    let reply_text = |frames: &[Value]| {
        let reply = frames.iter().rev().find(|f| f["event"]["type"] == "message_end").cloned().unwrap_or_default();
        (reply["event"]["message"]["content"][0]["text"].as_str().unwrap_or_default().to_owned(), reply)
    };
    let field = |line: &str, name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).map(str::to_owned)
    };

    // Mentioned, it answers: streamed, as its own message.
    let mut ws = crate::process::subscribe(&served.addr, &conversation, 0).await?;
    say(&mut ws, "@echo hello there").await?;
    let (frames, end) = until_end(&mut ws).await?;
    assert_eq!(end["stop_reason"], "end_turn", "{end}");
    let deltas = frames.iter().filter(|f| f["event"]["type"] == "message_update").count();
    assert!(deltas >= 2, "its reply streamed in: {deltas} deltas");
    let (text, reply) = reply_text(&frames);
    assert!(text.starts_with("echo: ") && text.contains("hello there"), "{text}");
    assert_eq!(reply["event"]["message"]["sender"], echo_id, "the reply is the echo participant's");
    let usage = &reply["event"]["message"]["usage"];
    assert!(usage["estimated"] == true && usage["output_tokens"].as_u64() > Some(0), "counted here: {usage}");
    let first = said.next_line().await?.context("the echo agent's log")?;
    assert_eq!(field(&first, "method").as_deref(), Some("SendStreamingMessage"), "{first}");
    assert_eq!(field(&first, "key").as_deref(), Some("Bearer_remote-secret"), "its key is sent: {first}");

    // After a restart, asked again, it goes on in the same remote context.
    drop(ws);
    served.child.kill().await?;
    served = crate::process::start(&database, &model.base_url(), &env).await?;
    let mut ws = crate::process::subscribe(&served.addr, &conversation, 0).await?;
    while crate::process::next_frame(&mut ws).await?["event"]["type"] != "agent_end" {}
    say(&mut ws, "@echo again").await?;
    until_end(&mut ws).await?;
    let second = said.next_line().await?.context("the echo agent's log")?;
    assert_eq!(field(&first, "context"), field(&second, "context"), "one remote context: {first} / {second}");
    assert_eq!(field(&second, "key"), field(&first, "key"), "the key is kept: {second}");

    // A 0.3 agent is spoken to in 0.3.
    say(&mut ws, "@oldecho hi from the past").await?;
    let (frames, end) = until_end(&mut ws).await?;
    assert_eq!(end["stop_reason"], "end_turn", "{end}");
    assert!(reply_text(&frames).0.contains("hi from the past"), "{frames:?}");
    let line = old_said.next_line().await?.context("the 0.3 agent's log")?;
    assert_eq!(field(&line, "method").as_deref(), Some("message/stream"), "{line}");

    // Cancelled mid-answer, the remote task is cancelled too (0.3: tasks/cancel).
    for (name, log) in [("echo", &mut said), ("oldecho", &mut old_said)] {
        say(&mut ws, &format!("@{name} slow please")).await?;
        while crate::process::next_frame(&mut ws).await?["event"]["type"] != "message_update" {}
        let cancel = json!({ "type": "cancel", "id": "c", "conversation_id": conversation });
        ws.send(Message::Text(cancel.to_string().into())).await?;
        let (_, end) = until_end(&mut ws).await?;
        assert_eq!(end["stop_reason"], "cancelled", "{end}");
        loop {
            let line = tokio::time::timeout(crate::process::WAIT, log.next_line()).await?.context("no CANCELED")?;
            if line.is_some_and(|l| l.starts_with("CANCELED")) {
                break;
            }
        }
    }

    // An agent whose A2A server is down: a clear error, not a stuck turn.
    say(&mut ws, "@gone are you there?").await?;
    let (_, end) = until_end(&mut ws).await?;
    assert_eq!(end["stop_reason"], "error", "{end}");
    let message = end["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not reach"), "{message}");

    // An agent participant with an `a2a` provider answers the same way.
    say(&mut ws, "@viaprovider ping").await?;
    let (frames, end) = until_end(&mut ws).await?;
    assert_eq!(end["stop_reason"], "end_turn", "{end}");
    assert!(reply_text(&frames).0.contains("ping"), "{frames:?}");
    Ok(())
}
