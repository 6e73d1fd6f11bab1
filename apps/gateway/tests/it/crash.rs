//! A gateway killed (SIGKILL) in the middle of a turn, then started again on the same SQLite
//! file: it resumes the turn (the tool that already ran is not run again, the interrupted LLM
//! request is sent again), answers every prompt that was queued behind it exactly once, and
//! starts even when a conversation's stored data cannot be read back (that one is quarantined).

use std::path::Path;

use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::process::{Served, Socket, create_conversation, event_log, next_frame, subscribe};

/// Starts `colloquy serve` for these tests, which are about crashes (auth is tested elsewhere).
async fn start(database: &Path, base_url: &str) -> anyhow::Result<Served> {
    crate::process::start(database, base_url, &[("COLLOQUY_AUTH", "off")]).await
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
    let Served { child: mut first, addr, .. } = start(&database, &first_model.base_url()).await?;
    let conversation = create_conversation(&addr, None).await?;
    let mut ws = subscribe(&addr, &conversation, 0).await?;
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
    let Served { child: _second, addr, .. } = start(&database, &second_model.base_url()).await?;
    let mut ws = subscribe(&addr, &conversation, 0).await?;
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

/// Sends `content` and returns its ack (or error), skipping events.
async fn send(ws: &mut Socket, conversation: &str, id: &str, content: &str) -> anyhow::Result<Value> {
    ws.send(Message::Text(
        json!({"type": "send", "id": id, "conversation_id": conversation, "content": content}).to_string().into(),
    ))
    .await?;
    loop {
        let frame = next_frame(ws).await?;
        if frame["id"] == id {
            return Ok(frame);
        }
    }
}

/// Reads events until the `n`-th `agent_end`.
async fn until_agent_ends(ws: &mut Socket, n: usize) -> anyhow::Result<Vec<Value>> {
    let mut frames = Vec::new();
    let mut ends = 0;
    while ends < n {
        let frame = next_frame(ws).await?;
        ends += usize::from(frame["event"]["type"] == "agent_end");
        frames.push(frame);
    }
    Ok(frames)
}

/// Reads events until the turn has started (its first LLM request is on its way).
async fn until_turn_start(ws: &mut Socket) -> anyhow::Result<()> {
    while next_frame(ws).await?["event"]["type"] != "turn_start" {}
    Ok(())
}

fn last_user_text(request: &Value) -> String {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or_default();
    format!("{}: {}", last["role"].as_str().unwrap_or("?"), last["content"].as_str().unwrap_or("?"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_queued_when_the_gateway_was_killed_are_answered_exactly_once_after_the_restart() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let first_model =
        MockOpenAi::start(vec![MockReply::Held(Box::new(MockReply::Chunks(chunks::text("gpt-test", &["one"], None))))])
            .await?;
    let Served { child: mut first, addr, .. } = start(&database, &first_model.base_url()).await?;
    let conversation = create_conversation(&addr, None).await?;
    let mut ws = subscribe(&addr, &conversation, 0).await?;
    assert_eq!(send(&mut ws, &conversation, "1", "q1").await?["queued"], false);
    until_turn_start(&mut ws).await?;
    for (id, text) in [("2", "q2"), ("3", "q3")] {
        let ack = send(&mut ws, &conversation, id, text).await?;
        assert_eq!((ack["type"].clone(), ack["queued"].clone()), (json!("ack"), json!(true)), "{ack}");
    }
    // Killed with q1's turn in flight and q2, q3 acked and queued behind it.
    first.kill().await?;

    let second_model = MockOpenAi::start(
        ["a1", "a2", "a3"].iter().map(|t| MockReply::Chunks(chunks::text("gpt-test", &[t], None))).collect(),
    )
    .await?;
    let Served { child: _second, addr, .. } = start(&database, &second_model.base_url()).await?;
    let mut ws = subscribe(&addr, &conversation, 0).await?;
    let frames = until_agent_ends(&mut ws, 3).await?;
    let requests = second_model.requests();
    let asked: Vec<String> = requests.iter().map(last_user_text).collect();
    assert_eq!(asked, ["user: q1", "user: q2", "user: q3"], "each acked prompt reaches the model once, in order");

    let history: Value = reqwest::Client::new()
        .get(format!("http://{addr}/v1/conversations/{conversation}/messages"))
        .send()
        .await?
        .json()
        .await?;
    let texts: Vec<String> = history["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| m["content"][0]["text"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["q1", "a1", "q2", "a2", "q3", "a3"]);
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "the log stays gap-free across the crash");
    Ok(())
}

/// `[[[...1...]]]` `depth` arrays deep, as JSON text.
fn nested_json(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_that_cannot_be_read_back_is_quarantined_and_every_other_one_is_served() -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database, Statement};

    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let held = || MockReply::Held(Box::new(MockReply::Chunks(chunks::text("gpt-test", &["never"], None))));
    let first_model = MockOpenAi::start(vec![held(), held()]).await?;
    let Served { child: mut first, addr, .. } = start(&database, &first_model.base_url()).await?;
    let broken = create_conversation(&addr, None).await?;
    let healthy = create_conversation(&addr, None).await?;
    let mut ws = subscribe(&addr, &broken, 0).await?;
    send(&mut ws, &broken, "1", "hello").await?;
    until_turn_start(&mut ws).await?;
    assert_eq!(send(&mut ws, &broken, "2", "queued behind the turn").await?["queued"], true);
    let mut ws = subscribe(&addr, &healthy, 0).await?;
    send(&mut ws, &healthy, "1", "hi").await?;
    until_turn_start(&mut ws).await?;
    first.kill().await?;

    // The queued message's rows become unreadable, as the issue's 124-level custom value was (a
    // row written by an older version, or changed by hand, is the same to recovery).
    let db = Database::connect(format!("sqlite://{}", database.display())).await?;
    let deep = format!(r#"[{{"type":"custom","value":{}}}]"#, nested_json(130));
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE messages SET content = ? WHERE queued",
        [deep.into()],
    ))
    .await?;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("UPDATE events SET payload = '{}' WHERE kind = 'message_queued'", nested_json(130)),
    ))
    .await?;
    db.close().await?;

    let second_model =
        MockOpenAi::start(vec![MockReply::Chunks(chunks::text("gpt-test", &["Hello again."], None))]).await?;
    let served = start(&database, &second_model.base_url()).await?;
    let addr = served.addr.clone();
    let logged = served.startup_log.iter().any(|line| line.contains("quarantined") && line.contains(&broken));
    assert!(logged, "the log names the conversation that needs attention: {:?}", served.startup_log);

    let (status, ready): (u16, Value) = {
        let response = reqwest::get(format!("http://{addr}/readyz")).await?;
        (response.status().as_u16(), response.json().await?)
    };
    assert_eq!((status, ready["status"].clone()), (200, json!("degraded")), "{ready}");
    assert_eq!(ready["quarantined"][0]["conversation_id"], json!(broken), "{ready}");
    assert_eq!(ready["quarantined"].as_array().map(Vec::len), Some(1));

    // The healthy conversation's interrupted turn is resumed and finishes.
    let mut ws = subscribe(&addr, &healthy, 0).await?;
    let frames = until_agent_ends(&mut ws, 1).await?;
    assert_eq!(frames.last().map(|f| f["event"]["stop_reason"].clone()), Some(json!("end_turn")));
    // The quarantined one refuses with a code that says so.
    let mut ws = subscribe(&addr, &healthy, 0).await?;
    let reply = send(&mut ws, &broken, "x", "anyone there?").await?;
    assert_eq!(reply["code"], "conversation_unavailable", "{reply}");
    Ok(())
}

/// Keeps sending prompts into `conversation` until the connection dies; returns the
/// `client_msg_id`s that were acked.
async fn send_until_killed(addr: String, conversation: String, client: String) -> Vec<String> {
    let mut acked = Vec::new();
    let Ok(mut ws) = subscribe(&addr, &conversation, 0).await else { return acked };
    for n in 0.. {
        let id = format!("c{client}-{n}");
        let frame =
            json!({"type": "send", "id": id, "conversation_id": conversation, "content": "6*7?", "client_msg_id": id});
        if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
            return acked;
        }
        loop {
            match next_frame(&mut ws).await {
                Ok(frame) if frame["id"] == id.as_str() => {
                    if frame["type"] == "ack" {
                        acked.push(id.clone());
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => return acked,
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_group_commits_are_in_flight_loses_no_acked_message_and_leaves_no_call_open()
-> anyhow::Result<()> {
    // Tool calls and answers in turn, every call id its own, more than any run uses.
    let replies = MockReply::tool_rounds(4000);
    let model = MockOpenAi::start(replies).await?;
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("colloquy.db");
    let mut conversations = Vec::new();
    let mut acked: Vec<String> = Vec::new();
    // Killed at three points of a busy run: 8 conversations, each with a client sending as fast
    // as it is acked, so the writer always has a group of appends in flight.
    for (life, kill_after_ms) in [150_u64, 400, 900].into_iter().enumerate() {
        let Served { child: mut served, addr, .. } = start(&database, &model.base_url()).await?;
        while conversations.len() < 8 {
            conversations.push(create_conversation(&addr, None).await?);
        }
        let clients: Vec<_> = conversations
            .iter()
            .enumerate()
            .map(|(client, conversation)| {
                tokio::spawn(send_until_killed(addr.clone(), conversation.clone(), format!("l{life}c{client}")))
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(kill_after_ms)).await;
        served.kill().await?;
        for client in clients {
            acked.extend(client.await?);
        }
    }
    assert!(acked.len() > 8, "the clients got some messages acked before each kill: {}", acked.len());

    // The last life: recovery closes or resumes every open turn and answers every acked prompt.
    let Served { child: _last, addr, .. } = start(&database, &model.base_url()).await?;
    let mut stored_ids = Vec::new();
    for conversation in &conversations {
        // Recovery runs in the background: wait until every turn has ended and the log is still.
        let deadline = std::time::Instant::now() + crate::process::WAIT;
        let mut log = event_log(&addr, conversation).await?;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let again = event_log(&addr, conversation).await?;
            let count = |kind: &str| again.iter().filter(|e| e["event"]["type"] == kind).count();
            let settled = again.len() == log.len() && count("agent_start") == count("agent_end");
            log = again;
            if settled {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "turns never ended: {:?}", log.last());
        }
        let seqs: Vec<u64> = log.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free log in {conversation}");
        // (call id, seq) of every start and end.
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for envelope in &log {
            let event = &envelope["event"];
            let at = (event["tool_call_id"].clone(), envelope["seq"].as_u64());
            match event["type"].as_str() {
                Some("tool_execution_start") => starts.push(at),
                Some("tool_execution_end") => ends.push(at),
                Some("message_posted" | "message_queued") => {
                    // A queued message is admitted later: two events, one message.
                    if let (Some(key), Some(message)) =
                        (event["message"]["client_msg_id"].as_str(), event["message"]["id"].as_str())
                        && !stored_ids.contains(&(key.to_owned(), message.to_owned()))
                    {
                        stored_ids.push((key.to_owned(), message.to_owned()));
                    }
                }
                _ => {}
            }
        }
        // Every call the model made has exactly one result in the history.
        let history: Value = reqwest::Client::new()
            .get(format!("http://{addr}/v1/conversations/{conversation}/messages?limit=1000"))
            .send()
            .await?
            .json()
            .await?;
        let parts: Vec<Value> = history["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .collect();
        let calls: Vec<&Value> = parts.iter().filter(|p| p["type"] == "tool_call").map(|p| &p["id"]).collect();
        for call in &calls {
            let results = parts.iter().filter(|p| p["type"] == "tool_result" && &&p["tool_call_id"] == call).count();
            assert_eq!(results, 1, "call {call} in {conversation} has {results} results");
        }
        // A call ends once, after its start; a replay-safe call the crash interrupted runs
        // again after the restart and so has a second start, never a second end.
        for (call, _) in &starts {
            let ended = ends.iter().filter(|(id, _)| id == call).count();
            assert_eq!(ended, 1, "{call} in {conversation} ended {ended} times");
        }
        for (call, end) in &ends {
            let before = starts.iter().filter(|(id, start)| id == call && start < end).count();
            assert!(before >= 1, "{call} in {conversation} ended without a start before it");
        }
    }
    for id in &acked {
        assert_eq!(stored_ids.iter().filter(|(key, _)| key == id).count(), 1, "acked message {id} stored once");
    }
    Ok(())
}
