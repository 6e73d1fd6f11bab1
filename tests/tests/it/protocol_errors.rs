//! Bad input on the socket gets an `error` frame with a stable code, and the connection stays
//! usable.

use serde_json::json;

use crate::support::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_frame_gets_a_stable_error_code_and_the_connection_stays_usable() -> anyhow::Result<()> {
    let gateway = Gateway::start(json!({ "discover_ollama": false, "max_frame_bytes": 1024 })).await?;
    let created = gateway.create_conversation(json!({})).await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let unknown = "0190b6a2-7c1e-7d4a-9f3e-2b1c0d9e8f7a";
    let mut client = gateway.connect().await?;

    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("bad_json", "this is not json".to_owned(), None),
        ("invalid_frame", json!({ "id": "1", "no_type": true }).to_string(), Some("1")),
        ("unknown_frame", json!({ "type": "dance", "id": "2" }).to_string(), Some("2")),
        ("invalid_frame", json!({ "type": "send", "id": "3", "conversation_id": id }).to_string(), Some("3")),
        (
            "invalid_frame",
            json!({ "type": "subscribe", "id": "4", "conversation_id": "not-a-uuid" }).to_string(),
            Some("4"),
        ),
        (
            "conversation_not_found",
            json!({ "type": "subscribe", "id": "5", "conversation_id": unknown }).to_string(),
            Some("5"),
        ),
        (
            "conversation_not_found",
            json!({ "type": "send", "id": "6", "conversation_id": unknown, "content": "hi" }).to_string(),
            Some("6"),
        ),
        (
            "empty_message",
            json!({ "type": "send", "id": "7", "conversation_id": id, "content": [] }).to_string(),
            Some("7"),
        ),
        ("not_subscribed", json!({ "type": "unsubscribe", "id": "8", "conversation_id": id }).to_string(), Some("8")),
        (
            "frame_too_large",
            json!({ "type": "send", "conversation_id": id, "content": "x".repeat(2000) }).to_string(),
            None,
        ),
    ];
    for (code, frame, id) in cases {
        client.send_text(frame.clone()).await?;
        let reply = client.recv().await?;
        assert_eq!(reply["type"], "error", "{frame} -> {reply}");
        assert_eq!(reply["code"], code, "{frame} -> {reply}");
        assert_eq!(reply["retryable"], false, "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| m.len() > 20), "{reply}");
        assert_eq!(reply["id"].as_str(), id, "{reply}");
    }
    client.send_binary(vec![1, 2, 3]).await?;
    assert_eq!(client.recv().await?["code"], "binary_not_supported");

    client.send(json!({ "type": "ping", "id": "still-there" })).await?;
    assert_eq!(client.recv().await?, json!({ "type": "pong", "id": "still-there" }));

    // Nothing was stored by the bad frames.
    let (status, page) = gateway.get(&format!("/v1/conversations/{id}/messages")).await?;
    assert_eq!((status, page["messages"].clone()), (200, json!([])));
    let (status, body) = gateway.get(&format!("/v1/conversations/{unknown}")).await?;
    assert_eq!((status, body["error"]["code"].clone()), (404, json!("conversation_not_found")));
    Ok(())
}
