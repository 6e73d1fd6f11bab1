//! Stopping and starting as an operator does: the first start prints an admin key once, and
//! SIGTERM stops cleanly (clients told with 1001, running turns given their grace period and
//! then cancelled with every tool call answered, queued prompts kept, exit status 0).

use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::process::{Served, Socket, WAIT, create_conversation, next_frame, start};

/// The admin key a first start printed.
fn printed_key(served: &Served) -> Option<String> {
    served.printed().iter().find_map(|line| line.trim().strip_prefix("ck_").map(|rest| format!("ck_{rest}")))
}

async fn connect(addr: &str, key: &str) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{addr}/v1/ws").into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {key}").parse()?);
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

async fn send(ws: &mut Socket, frame: Value) -> anyhow::Result<Value> {
    let id = frame["id"].clone();
    ws.send(Message::Text(frame.to_string().into())).await?;
    loop {
        let reply = next_frame(ws).await?;
        if reply["id"] == id {
            return Ok(reply);
        }
    }
}

/// Sends SIGTERM, as `kill` or a service manager does.
fn terminate(served: &Served) -> anyhow::Result<()> {
    let pid = served.child.id().ok_or_else(|| anyhow::anyhow!("the process is gone"))?;
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_prints_an_admin_key_once_and_sigterm_stops_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let held = MockReply::Held(Box::new(MockReply::Chunks(chunks::text("gpt-test", &["never sent"], None))));
    let model = MockOpenAi::start(vec![held]).await?;
    let env = [("COLLOQUY_SHUTDOWN_GRACE_SECS", "1")];
    let mut first = start(&database, &model.base_url(), &env).await?;
    let key = first.printed_line(|line| line.trim().starts_with("ck_")).await?.trim().to_owned();
    // Printed after the key: wait for it (reading what has arrived so far raced with it).
    let link = first.printed_line(|line| line.contains("/#key=")).await?;
    assert!(link.contains(&format!("/#key={key}")), "a link with the key in its fragment: {link}");
    assert!(!first.startup_log.iter().any(|line| line.contains(&key)), "the key is never logged");

    // A turn in flight (its model never answers) and a prompt queued behind it.
    let conversation = create_conversation(&first.addr, Some(&key)).await?;
    let mut ws = connect(&first.addr, &key).await?;
    send(&mut ws, json!({ "type": "subscribe", "id": "s", "conversation_id": conversation })).await?;
    send(&mut ws, json!({ "type": "send", "id": "1", "conversation_id": conversation, "content": "first" })).await?;
    while next_frame(&mut ws).await?["event"]["type"] != "turn_start" {}
    let queued =
        send(&mut ws, json!({ "type": "send", "id": "2", "conversation_id": conversation, "content": "second" }))
            .await?;
    assert_eq!(queued["queued"], true);

    terminate(&first)?;
    // The client is told, then the turn ends cancelled after its grace second.
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await? {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => anyhow::bail!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    let status = tokio::time::timeout(WAIT, first.child.wait()).await??;
    assert!(status.success(), "exit status {status}");

    // The next start finds nothing left open and no new key to print; the queued prompt waits
    // for its answer, which it gets.
    let answer =
        MockOpenAi::start(vec![MockReply::Chunks(chunks::text("gpt-test", &["second answered"], None))]).await?;
    let second = start(&database, &answer.base_url(), &[]).await?;
    assert!(!second.startup_log.iter().any(|line| line.contains("recovering")), "{:?}", second.startup_log);
    let mut ws = connect(&second.addr, &key).await?;
    ws.send(Message::Text(json!({ "type": "subscribe", "conversation_id": conversation }).to_string().into())).await?;
    let mut stops = Vec::new();
    while stops.len() < 2 {
        let frame = next_frame(&mut ws).await?;
        if frame["event"]["type"] == "agent_end" {
            stops.push(frame["event"]["stop_reason"].clone());
        }
    }
    assert_eq!(stops, [json!("cancelled"), json!("end_turn")]);
    let asked: Vec<Value> = answer
        .requests()
        .iter()
        .map(|r| r["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default()["content"].clone())
        .collect();
    assert_eq!(asked, [json!("second")]);
    assert!(printed_key(&second).is_none(), "the key is printed on the first start only");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_finishes_within_the_grace_period_ends_normally() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let model = MockOpenAi::start(vec![MockReply::Held(Box::new(MockReply::Chunks(chunks::text(
        "gpt-test",
        &["made it"],
        None,
    ))))])
    .await?;
    let mut served = start(&database, &model.base_url(), &[("COLLOQUY_AUTH", "off")]).await?;
    let conversation = create_conversation(&served.addr, None).await?;
    let mut request = format!("ws://{}/v1/ws", served.addr).into_client_request()?;
    request.headers_mut().remove("authorization");
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    send(&mut ws, json!({ "type": "subscribe", "id": "s", "conversation_id": conversation })).await?;
    send(&mut ws, json!({ "type": "send", "id": "1", "conversation_id": conversation, "content": "hi" })).await?;
    while next_frame(&mut ws).await?["event"]["type"] != "turn_start" {}
    terminate(&served)?;
    // The model answers during the grace period (10 s by default).
    model.release();
    let status = tokio::time::timeout(WAIT, served.child.wait()).await??;
    assert!(status.success(), "exit status {status}");

    let again = start(&database, &model.base_url(), &[("COLLOQUY_AUTH", "off")]).await?;
    let history: Value =
        reqwest::get(format!("http://{}/v1/conversations/{conversation}/messages", again.addr)).await?.json().await?;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["content"][0]["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["hi", "made it"]);
    Ok(())
}
