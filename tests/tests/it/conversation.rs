//! One conversation end to end: a prompt, a tool call, the second LLM request, the answer; a
//! retried send; and a reconnect that gets exactly the missed events.

use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use serde_json::{Value, json};

use crate::support::{Gateway, is_agent_end, redact};

fn gateway_config(base_url: &str) -> Value {
    json!({
        "providers": { "mock": { "kind": "openai_compatible", "base_url": base_url, "api_key": "sk-test-secret" } },
        "agent": { "provider": "mock", "model": "gpt-test", "system_prompt": "Be brief.", "tools": ["calculator"] },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_with_a_tool_call_streams_every_event_and_a_reconnect_misses_nothing() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![
        MockReply::Chunks(chunks::tool_calls(
            "gpt-test",
            &[("call_1", "calculator", &["{\"expres", "sion\": \"6 ", "* 7\"}"])],
            Some((20, 10)),
        )),
        MockReply::Chunks(chunks::text("gpt-test", &["6 * 7 ", "is 42."], Some((35, 6)))),
    ])
    .await?;
    let gateway = Gateway::start(gateway_config(&mock.base_url())).await?;
    let created = gateway.create_conversation(json!({ "title": "arithmetic" })).await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();

    let mut client = gateway.connect().await?;
    client.send(json!({ "type": "subscribe", "id": "s1", "conversation_id": id, "after_seq": 0 })).await?;
    assert_eq!(client.recv().await?, json!({ "type": "ack", "id": "s1", "conversation_id": id }));
    client
        .send(json!({ "type": "send", "id": "m1", "conversation_id": id, "client_msg_id": "c-1", "content": "What is 6 * 7?" }))
        .await?;
    let frames = client.recv_until(is_agent_end).await?;
    // The ack and the first event race (the event is published as the message is stored), so
    // the ack is checked on its own and the events are snapshot in their (deterministic) order.
    let (acks, frames): (Vec<Value>, Vec<Value>) = frames.into_iter().partition(|f| f["type"] == "ack");
    assert_eq!(acks.len(), 1);
    assert_eq!(
        (acks[0]["id"].clone(), acks[0]["seq"].clone(), acks[0]["duplicate"].clone()),
        (json!("m1"), json!(1), json!(false))
    );
    // Keys sorted, whatever order serde_json keeps them in (`preserve_order` is on in this build).
    insta::with_settings!({ sort_maps => true }, {
        insta::assert_json_snapshot!("prompt_with_tool_call", redact(&Value::Array(frames.clone())));
    });

    // The second LLM request carried the tool's result back to the model.
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let second = &requests[1]["messages"];
    let tool_message =
        second.as_array().and_then(|m| m.iter().find(|m| m["role"] == "tool")).cloned().unwrap_or_default();
    assert_eq!(tool_message["tool_call_id"], "call_1");
    assert!(tool_message["content"].as_str().unwrap_or_default().contains("42"), "{tool_message}");

    // A retried send is stored once and says so.
    client
        .send(json!({ "type": "send", "id": "m2", "conversation_id": id, "client_msg_id": "c-1", "content": "What is 6 * 7?" }))
        .await?;
    let retry = client.recv().await?;
    assert_eq!(
        (retry["type"].clone(), retry["seq"].clone(), retry["duplicate"].clone()),
        (json!("ack"), json!(1), json!(true))
    );

    // A client that read only part of the stream reconnects with its last seq and gets exactly
    // the durable events it missed.
    let durable: Vec<&Value> = frames.iter().filter(|f| f["type"] == "event" && f["seq"].is_u64()).collect();
    let seqs: Vec<u64> = durable.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "durable seqs are gap-free from 1");
    let cut = 4;
    let mut late = gateway.connect().await?;
    late.send(json!({ "type": "subscribe", "conversation_id": id, "after_seq": seqs[cut - 1] })).await?;
    let replay = late.recv_until(is_agent_end).await?;
    // The ack, then who is online, then the backlog.
    assert_eq!((replay[0]["type"].as_str(), replay[1]["type"].as_str()), (Some("ack"), Some("presence")));
    let replayed: Vec<&Value> = replay[2..].iter().collect();
    assert_eq!(replayed, durable[cut..].to_vec());

    // History over REST matches what was streamed.
    let (status, page) = gateway.get(&format!("/v1/conversations/{id}/messages")).await?;
    assert_eq!(status, 200);
    let roles: Vec<&str> =
        page["messages"].as_array().map(|m| m.iter().filter_map(|m| m["role"].as_str()).collect()).unwrap_or_default();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_provider_a_prompt_gets_a_clear_error_event_not_a_hang() -> anyhow::Result<()> {
    let gateway = Gateway::start(json!({ "discover_ollama": false })).await?;
    let created = gateway.create_conversation(json!({})).await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let mut client = gateway.connect().await?;
    client.send(json!({ "type": "subscribe", "conversation_id": id })).await?;
    client.send(json!({ "type": "send", "conversation_id": id, "content": "hello?" })).await?;
    let frames = client.recv_until(is_agent_end).await?;
    let end = &frames[frames.len() - 1]["event"];
    assert_eq!(end["stop_reason"], "error");
    assert_eq!(end["error"]["kind"], "provider");
    let message = end["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("OPENAI_API_KEY") && message.contains("colloquy.toml"), "{message}");
    Ok(())
}
