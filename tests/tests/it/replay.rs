//! A property of the real gateway: whatever `send` it acknowledges can be replayed from the
//! event log, whatever the content (deeply nested custom values, odd text, unknown fields).
//! The defect was a frame that was acked and stored but could never be read back.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::support::Gateway;

/// A JSON value nested `depth` levels (arrays and objects in turn) around `leaf`.
fn nest(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, level| if level % 2 == 0 { json!([inner]) } else { json!({ "k": inner }) })
}

fn any_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

/// Content parts as a client might send them, valid or not.
fn any_part() -> impl Strategy<Value = Value> {
    prop_oneof![
        "\\PC{0,16}".prop_map(|text| json!({ "type": "text", "text": text })),
        "[ \\n\\t]{0,3}".prop_map(|text| json!({ "type": "text", "text": text })),
        (0usize..140, any_leaf()).prop_map(|(depth, leaf)| json!({ "type": "custom", "value": nest(depth, leaf) })),
        any_leaf().prop_map(|value| json!({ "type": "custom", "value": value })),
        ".{0,8}".prop_map(|url| json!({ "type": "image", "source": { "type": "url", "url": url } })),
        Just(json!({ "type": "text", "text": "hi", "extra": 1 })),
        Just(json!({ "type": "tool_result", "tool_call_id": "c", "name": "n", "content": "x", "is_error": false })),
    ]
}

fn any_content() -> impl Strategy<Value = Value> {
    prop_oneof![
        "\\PC{0,16}".prop_map(Value::from),
        prop::collection::vec(any_part(), 0..4).prop_map(Value::from),
        (0usize..140).prop_map(|depth| nest(depth, json!("deep"))),
    ]
}

#[test]
fn whatever_the_gateway_acknowledges_can_be_replayed() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let gateway = runtime.block_on(Gateway::start(json!({ "discover_ollama": false })))?;
    // Humans only: nothing answers, so every stored event is a `message_posted`.
    let body = json!({ "kind": "multi_party", "participants": [{ "kind": "user", "display_name": "ada" }] });
    let created = runtime.block_on(gateway.create_conversation(body))?;
    let conversation = created["id"].as_str().unwrap_or_default().to_owned();
    // The runner takes an `Fn`; each case runs to its end before the next starts.
    let sender = tokio::sync::Mutex::new(runtime.block_on(gateway.connect())?);
    let acked = std::cell::Cell::new(0_u64);

    let mut runner = TestRunner::new(Config { cases: 96, failure_persistence: None, ..Config::default() });
    let outcome = runner.run(&(any_content(), proptest::option::of("\\PC{0,4}")), |(content, key)| {
        runtime
            .block_on(async {
                let mut sender = sender.lock().await;
                let mut frame =
                    json!({ "type": "send", "id": "p", "conversation_id": conversation, "content": content });
                if let Some(key) = key {
                    frame["client_msg_id"] = json!(key);
                }
                sender.send(frame).await?;
                let reply = sender.recv().await?;
                if reply["type"] == "error" {
                    anyhow::ensure!(reply["code"].is_string() && reply["message"].is_string(), "{reply}");
                    return Ok(());
                }
                anyhow::ensure!(reply["type"] == "ack", "{reply}");
                if reply["duplicate"] == true {
                    return Ok(());
                }
                acked.set(acked.get() + 1);
                let seq = reply["seq"].as_u64().unwrap_or_default();
                // A fresh reader replays the log from just before the message.
                let mut reader = gateway.connect().await?;
                reader.subscribe(&conversation, seq - 1).await?;
                let replayed = reader.recv().await?;
                anyhow::ensure!(replayed["type"] == "event" && replayed["seq"] == seq, "not replayed: {replayed}");
                anyhow::ensure!(replayed["event"]["message"]["id"] == reply["message_id"], "{replayed}");
                Ok(())
            })
            .map_err(|error| TestCaseError::fail(format!("{error:#}")))
    });
    outcome.map_err(|error| anyhow::anyhow!("{error}"))?;
    // Then the whole log replays from the start.
    runtime.block_on(async {
        let mut reader = gateway.connect().await?;
        reader.subscribe(&conversation, 0).await?;
        for expected in 1..=acked.get() {
            let event = reader.recv().await?;
            anyhow::ensure!(event["seq"] == expected, "{event}");
        }
        anyhow::Ok(())
    })?;
    assert!(acked.get() > 10, "the strategy should produce acceptable sends too ({} acked)", acked.get());
    Ok(())
}
