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

/// Unsubscribing and subscribing again while events keep coming: nothing of a subscription
/// arrives after its unsubscribe's ack, and each new subscription replays from `after_seq` and
/// goes on live with every seq exactly once, in order. The defect was a forwarding task that
/// was told to stop but could still queue one event after the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_under_a_flood_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let config = json!({ "discover_ollama": false, "limits": { "frames_per_second": 100000 } });
    let gateway = Gateway::start(config).await?;
    let body = json!({ "kind": "multi_party", "participants": [{ "kind": "user", "display_name": "ada" }] });
    let conversation = gateway.create_conversation(body).await?["id"].as_str().unwrap_or_default().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writer = gateway.connect().await?;
    let writing = tokio::spawn({
        let (stop, conversation) = (stop.clone(), conversation.clone());
        async move {
            // Large, so that encoding an event takes a while: the window the defect needed.
            let content = "x".repeat(64 * 1024);
            let mut n = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("w{n}");
                writer
                    .send(json!({ "type": "send", "id": id, "conversation_id": conversation, "content": content }))
                    .await?;
                writer.recv_until(|f| f["id"] == id.as_str()).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }
    });

    let mut reader = gateway.connect().await?;
    let mut last = 0_u64;
    // A frame without its 64 KiB of content, for a failure message.
    let brief =
        |frame: &Value| format!("{} {} {} seq {}", frame["type"], frame["id"], frame["event"]["type"], frame["seq"]);
    // Every event frame must be the next seq of this conversation.
    let next_event = |frame: &Value, last: &mut u64| -> Result<(), String> {
        if frame["type"] != "event" {
            return Ok(());
        }
        let seq = frame["seq"].as_u64().unwrap_or_default();
        if frame["conversation_id"] != conversation.as_str() || seq != *last + 1 {
            return Err(format!("after seq {last} came {}", brief(frame)));
        }
        *last = seq;
        Ok(())
    };
    for cycle in 0..150 {
        let (subscribe, unsubscribe) = (format!("s{cycle}"), format!("u{cycle}"));
        reader
            .send(json!({ "type": "subscribe", "id": subscribe, "conversation_id": conversation, "after_seq": last }))
            .await?;
        let ack = reader.recv().await?;
        assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!(subscribe)), "cycle {cycle}: {}", brief(&ack));
        // Replay, then live: a few events of it before letting go again.
        let until = last + 3;
        while last < until {
            let frame = reader.recv().await?;
            if let Err(error) = next_event(&frame, &mut last) {
                panic!("cycle {cycle}, subscribed: {error}");
            }
        }
        reader.send(json!({ "type": "unsubscribe", "id": unsubscribe, "conversation_id": conversation })).await?;
        loop {
            let frame = reader.recv().await?;
            if frame["id"] == unsubscribe.as_str() {
                assert_eq!(frame["type"], "ack", "cycle {cycle}: {}", brief(&frame));
                break;
            }
            if let Err(error) = next_event(&frame, &mut last) {
                panic!("cycle {cycle}, unsubscribing: {error}");
            }
        }
        // Nothing of the old subscription follows its ack, even while the writer goes on.
        if let Ok(frame) = tokio::time::timeout(std::time::Duration::from_millis(2), reader.recv()).await {
            panic!("cycle {cycle}: {} arrived after the unsubscribe's ack", brief(&frame?));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writing.await??;
    let stored = gateway.last_seq(&conversation).await?;
    assert!(stored > last, "the writer ({written} messages) went on while the reader resubscribed: {stored} > {last}");
    Ok(())
}
