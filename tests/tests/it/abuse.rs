//! Hostile and unlucky clients against the real gateway: foreign web pages, revoked and expired
//! keys, floods, oversized and broken frames, clients that do not read, malformed REST
//! requests, slow headers. Each gets a clear, coded refusal and nobody else loses anything.
//! Nothing here asserts a duration: limits are set low and the test waits for what must happen.

use std::time::Duration;

use colloquy_store::{ConversationStore, SeaStore, StoreOptions};
use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::support::{Gateway, is_agent_end, upgrade_status};

fn quiet() -> Value {
    json!({ "discover_ollama": false })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_web_pages_may_open_a_websocket() -> anyhow::Result<()> {
    let mut config = quiet();
    config["allowed_origins"] = json!(["https://chat.example.com"]);
    let gateway = Gateway::start(config).await?;
    let host = gateway.addr.to_string();
    for (origin, allowed) in [
        ("http://evil.example", false),
        ("null", false),
        ("file://", false),
        ("https://chat.example.com.evil.example", false),
        ("https://chat.example.com", true),
        ("http://localhost:3000", true),
        ("http://127.0.0.1:5173", true),
        (&*format!("http://{host}"), true),
    ] {
        let mut request = gateway.ws_request()?;
        request.headers_mut().insert("origin", origin.parse()?);
        request.headers_mut().insert("authorization", format!("Bearer {}", gateway.admin_key).parse()?);
        let (status, body) = upgrade_status(gateway.connect_with(request).await);
        if allowed {
            assert_eq!(status, 101, "{origin}: {body}");
        } else {
            assert_eq!((status, body["error"]["code"].clone()), (403, json!("forbidden")), "{origin}: {body}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_pass_the_key_as_a_subprotocol_which_is_never_echoed() -> anyhow::Result<()> {
    let gateway = Gateway::start(quiet()).await?;
    let mut request = gateway.ws_request()?;
    let protocols = format!("colloquy.v1, colloquy.key.{}", gateway.admin_key);
    request.headers_mut().insert("sec-websocket-protocol", protocols.parse()?);
    let (mut client, response) = gateway.connect_with(request).await?;
    let selected = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
    assert_eq!(selected, Some("colloquy.v1"));
    client.send(json!({ "type": "ping", "id": "1" })).await?;
    assert_eq!(client.recv().await?["type"], "pong");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_and_its_connections_closed() -> anyhow::Result<()> {
    let gateway = Gateway::start(quiet()).await?;
    // Revoked over REST: this process knows at once.
    let (_, key) = gateway.account("ada", "user").await?;
    let mut client = gateway.connect_as(&key).await?;
    let (_, keys) = gateway.get("/v1/keys").await?;
    let id = keys.as_array().and_then(|k| k.last()).and_then(|k| k["id"].as_str()).unwrap_or_default().to_owned();
    let (status, _) =
        gateway.request_as(&gateway.admin_key, reqwest::Method::DELETE, &format!("/v1/keys/{id}"), None).await?;
    assert_eq!(status, 204);
    assert_eq!(client.closed().await?.0, 1008);
    let (status, body) = gateway.request_as(&key, reqwest::Method::GET, "/v1/me", None).await?;
    assert_eq!((status, body["error"]["code"].clone()), (401, json!("unauthenticated")));

    // Revoked by another process (`colloquy keys revoke`): found by the poll.
    let (_, key) = gateway.account("grace", "user").await?;
    let mut client = gateway.connect_as(&key).await?;
    let other_process = SeaStore::connect(&gateway.database_url, StoreOptions::default()).await?;
    let grace_key =
        other_process.api_keys().await?.into_iter().last().map(|k| k.id).ok_or(anyhow::anyhow!("no key"))?;
    other_process.revoke_api_key(grace_key).await?;
    assert_eq!(client.closed().await?, (1008, "the API key was revoked".to_owned()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused_and_its_connection_closed() -> anyhow::Result<()> {
    let gateway = Gateway::start(quiet()).await?;
    let (account, _) = gateway.account("brief", "user").await?;
    let expires_at = (chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let (_, key) = gateway.post(&format!("/v1/accounts/{account}/keys"), &json!({ "expires_at": expires_at })).await?;
    let secret = key["secret"].as_str().unwrap_or_default().to_owned();
    let mut client = gateway.connect_as(&secret).await?;
    assert_eq!(client.closed().await?, (1008, "the API key expired".to_owned()));
    let (status, _) = gateway.request_as(&secret, reqwest::Method::GET, "/v1/me", None).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_subscription_and_queue_limits_refuse_the_excess_with_codes() -> anyhow::Result<()> {
    let mock =
        MockOpenAi::start(vec![MockReply::Held(Box::new(MockReply::Chunks(chunks::text("m", &["ok"], None))))]).await?;
    let mut config = json!({
        "discover_ollama": false,
        "providers": { "mock": { "kind": "openai_compatible", "base_url": mock.base_url() } },
        "agent": { "provider": "mock", "model": "m" },
        "limits": { "max_connections_per_key": 2, "max_subscriptions_per_connection": 2, "max_queued_prompts": 2 },
    });
    config["limits"]["max_connections"] = json!(4);
    let gateway = Gateway::start(config).await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let _first = gateway.connect_as(&key).await?;
    let _second = gateway.connect_as(&key).await?;
    let (status, body) = upgrade_status(gateway.connect_as(&key).await);
    assert_eq!((status, body["error"]["code"].clone()), (503, json!("too_many_connections")), "{body}");
    // Other accounts still get in, up to the total.
    let mut admin = gateway.connect().await?;
    let _admin_two = gateway.connect().await?;
    let (status, body) = upgrade_status(gateway.connect().await);
    assert_eq!((status, body["error"]["code"].clone()), (503, json!("too_many_connections")), "{body}");

    let ids: Vec<String> = futures::future::try_join_all((0..3).map(|_| gateway.create_conversation(json!({}))))
        .await?
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    admin.subscribe(&ids[0], 0).await?;
    admin.subscribe(&ids[1], 0).await?;
    admin.send(json!({ "type": "subscribe", "id": "3", "conversation_id": ids[2] })).await?;
    let refused = admin.recv_until(|f| f["id"] == "3").await?;
    assert_eq!(refused.last().map(|f| f["code"].clone()), Some(json!("too_many_subscriptions")));

    // The first prompt's turn is held; two may wait behind it, the third is refused.
    let mut codes = Vec::new();
    for n in 0..4 {
        admin
            .send(json!({ "type": "send", "id": format!("m{n}"), "conversation_id": ids[2], "content": "hi" }))
            .await?;
        let reply = admin.recv_until(|f| f["id"] == format!("m{n}")).await?;
        let reply = reply.last().cloned().unwrap_or_default();
        codes.push(
            reply["code"].as_str().map_or_else(|| reply["type"].as_str().unwrap_or_default().to_owned(), str::to_owned),
        );
        if n == 3 {
            assert!(reply["retry_after_ms"].as_u64() > Some(0), "{reply}");
        }
    }
    assert_eq!(codes, ["ack", "ack", "ack", "queue_full"]);
    mock.release();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_and_the_connection_stays_usable() -> anyhow::Result<()> {
    let mut config = quiet();
    config["limits"] = json!({ "frames_per_second": 5, "requests_per_second_per_key": 2 });
    let gateway = Gateway::start(config).await?;
    let mut client = gateway.connect().await?;
    for n in 0..30 {
        client.send(json!({ "type": "ping", "id": n.to_string() })).await?;
    }
    let mut limited = 0;
    for _ in 0..30 {
        let reply = client.recv().await?;
        if reply["code"] == "rate_limited" {
            limited += 1;
            assert!(reply["retry_after_ms"].as_u64() > Some(0) && reply["retryable"] == true, "{reply}");
        }
    }
    assert!(limited >= 15, "a burst of 10 passes, the rest is limited: {limited} limited");
    // REST: a burst of 4, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = gateway.http().get(gateway.url("/v1/me")).bearer_auth(&gateway.admin_key).send().await?;
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = response.json().await?;
            assert_eq!(body["error"]["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert!(statuses.contains(&429) && statuses[0] == 200, "{statuses:?}");
    Ok(())
}

/// A raw frame with `payload`, for what a well-behaved client library would not send.
fn raw_frame(opcode: OpCode, payload: Vec<u8>, fin: bool) -> Message {
    let header = FrameHeader { is_final: fin, opcode, ..FrameHeader::default() };
    Message::Frame(Frame::from_payload(header, payload.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_broken_frames_close_the_connection_with_the_right_code() -> anyhow::Result<()> {
    let mut config = quiet();
    config["max_frame_bytes"] = json!(16 * 1024);
    config["limits"] = json!({ "max_frame_hard_bytes": 64 * 1024 });
    let gateway = Gateway::start(config).await?;

    // Over the soft limit: an error, and the connection stays.
    let mut client = gateway.connect().await?;
    client.send_text(format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(20_000))).await?;
    assert_eq!(client.recv().await?["code"], "frame_too_large");
    client.send(json!({ "type": "ping", "id": "ok" })).await?;
    assert_eq!(client.recv().await?["type"], "pong");
    // Over the hard limit: refused before it is read whole, 1009.
    let _ = client.socket().send(Message::Text("y".repeat(1024 * 1024).into())).await;
    assert_eq!(client.closed().await?.0, 1009);

    // Not UTF-8 in a text frame: 1007.
    let mut client = gateway.connect().await?;
    client.socket().send(raw_frame(OpCode::Data(Data::Text), vec![0xff, 0xfe, 0x80], true)).await?;
    assert_eq!(client.closed().await?.0, 1007);

    // A continuation with nothing to continue: 1002.
    let mut client = gateway.connect().await?;
    client.socket().send(raw_frame(OpCode::Data(Data::Continue), b"lost".to_vec(), true)).await?;
    assert_eq!(client.closed().await?.0, 1002);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_dropped_and_nobody_else_loses_anything() -> anyhow::Result<()> {
    let mock =
        MockOpenAi::start(vec![MockReply::Held(Box::new(MockReply::Chunks(chunks::text("m", &["done"], None))))])
            .await?;
    let config = json!({
        "discover_ollama": false,
        "providers": { "mock": { "kind": "openai_compatible", "base_url": mock.base_url() } },
        "agent": { "provider": "mock", "model": "m" },
        "limits": {
            "outbound_queue_bytes": 256 * 1024,
            "slow_reader_timeout_ms": 500,
            "frames_per_second": 1000,
            "max_connections_per_key": 2,
        },
    });
    let gateway = Gateway::start(config).await?;
    let (slow_account, slow_key) = gateway.account("slow", "user").await?;
    let body = json!({ "kind": "multi_party", "participants": [
        { "kind": "user", "display_name": "ada" },
        { "kind": "user", "display_name": "slow", "account_id": slow_account },
        { "kind": "agent", "display_name": "bot" },
    ] });
    let id = gateway.create_conversation(body).await?["id"].as_str().unwrap_or_default().to_owned();
    // The slow client: a socket that takes in a few KiB, and it never reads.
    let mut slow = gateway.connect_tiny_window_as(&slow_key).await?;
    slow.send(json!({ "type": "subscribe", "conversation_id": id })).await?;
    let _second = gateway.connect_as(&slow_key).await?;
    let mut reader = gateway.connect().await?;
    reader.subscribe(&id, 0).await?;
    // A turn that runs (held) so the slow client's cancel has something to stop.
    let mut writer = gateway.connect().await?;
    writer.send(json!({ "type": "send", "id": "start", "conversation_id": id, "content": "@bot go" })).await?;
    let big = "z".repeat(100 * 1024);
    let mut sent = 0;
    let mut seen = 0_u64;
    let mut post_and_follow = async |reader: &mut crate::support::Client, writer: &mut crate::support::Client| {
        writer.send(json!({ "type": "send", "conversation_id": id, "content": big })).await?;
        loop {
            let frame = reader.recv().await?;
            if frame["event"]["type"] == "message_queued" || frame["event"]["type"] == "message_posted" {
                seen = frame["seq"].as_u64().unwrap_or(seen);
                return anyhow::Ok(());
            }
        }
    };
    for _ in 0..20 {
        post_and_follow(&mut reader, &mut writer).await?;
        sent += 1;
    }
    // Its own frames are still read and answered while it is behind: its cancel stops the turn.
    slow.send(json!({ "type": "cancel", "id": "stop", "conversation_id": id })).await?;
    loop {
        let frame = reader.recv().await?;
        if is_agent_end(&frame) {
            assert_eq!(frame["event"]["stop_reason"], "cancelled", "{frame}");
            break;
        }
    }
    // Keep the events coming until the gateway gives up on it: its account has a free
    // connection place again once that connection is gone.
    loop {
        let (status, body) = upgrade_status(gateway.connect_as(&slow_key).await);
        if status == 101 {
            break;
        }
        assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
        post_and_follow(&mut reader, &mut writer).await?;
        sent += 1;
        assert!(sent < 2_000, "the slow client was never dropped");
    }
    // What it finds when it reads at last: what was on its way, then the end (a 1013 close frame
    // when it got through before the gateway let go).
    match slow.closed().await {
        Ok((code, reason)) => assert_eq!(code, 1013, "{reason}"),
        Err(error) => assert!(
            error.to_string().contains("without a close frame") || error.to_string().contains("broke"),
            "{error}"
        ),
    }
    // Everyone else got every event, in order, with no gap (the admin's two places are taken:
    // another client replays).
    drop(writer);
    let mut last = 0;
    let mut again = reader;
    again.send(json!({ "type": "unsubscribe", "id": "u", "conversation_id": id })).await?;
    again.recv_until(|f| f["id"] == "u").await?;
    again.subscribe(&id, 0).await?;
    while last < seen {
        let frame = again.recv().await?;
        let seq = frame["seq"].as_u64().unwrap_or(last);
        assert_eq!(seq, last + 1, "no gap: {frame}");
        last = seq;
    }
    mock.release();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_malformed_frames_leave_a_gateway_that_still_works() -> anyhow::Result<()> {
    let mock = MockOpenAi::start(vec![MockReply::Chunks(chunks::text("m", &["still ", "here"], Some((5, 2))))]).await?;
    let config = json!({
        "discover_ollama": false,
        "providers": { "mock": { "kind": "openai_compatible", "base_url": mock.base_url() } },
        "agent": { "provider": "mock", "model": "m" },
        "limits": { "frames_per_second": 100000, "max_frame_hard_bytes": 4 * 1024 * 1024 },
    });
    let gateway = Gateway::start(config).await?;
    let id = gateway.create_conversation(json!({})).await?["id"].as_str().unwrap_or_default().to_owned();
    let mut client = gateway.connect().await?;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let long =
        format!("{{\"type\":\"send\",\"conversation_id\":\"{id}\",\"content\":\"{}\"}}", "w".repeat(1024 * 1024));
    let kinds: Vec<String> = vec![
        "not json".into(),
        "{".into(),
        "[]".into(),
        "42".into(),
        "null".into(),
        json!({ "type": 7 }).to_string(),
        json!({ "type": "send", "conversation_id": "not-a-uuid", "content": "x" }).to_string(),
        json!({ "type": "send", "conversation_id": id, "content": 12 }).to_string(),
        json!({ "type": "subscribe", "conversation_id": id, "after_seq": -1 }).to_string(),
        format!("{{\"type\":\"subscribe\",\"conversation_id\":\"{id}\",\"after_seq\":1e400}}"),
        format!("{{\"type\":\"subscribe\",\"conversation_id\":\"{id}\",\"after_seq\":184467440737095516150}}"),
        deep,
        long,
    ];
    let total = 3_000;
    for n in 0..total {
        let kind = &kinds[n % kinds.len()];
        if n % 7 == 0 {
            client.send_binary(kind.as_bytes().to_vec()).await?;
        } else {
            client.send_text(kind.clone()).await?;
        }
    }
    for _ in 0..total {
        let reply = client.recv().await?;
        assert_eq!(reply["type"], "error", "{reply}");
        assert!(reply["code"].is_string() && reply["message"].is_string(), "{reply}");
    }
    client.send(json!({ "type": "ping", "id": "alive" })).await?;
    assert_eq!(client.recv().await?, json!({ "type": "pong", "id": "alive" }));
    client.subscribe(&id, 0).await?;
    client.send(json!({ "type": "send", "conversation_id": id, "content": "hello?" })).await?;
    let frames = client.recv_until(is_agent_end).await?;
    assert_eq!(frames.last().map(|f| f["event"]["stop_reason"].clone()), Some(json!("end_turn")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_rejection_is_the_documented_json_error() -> anyhow::Result<()> {
    let mut config = quiet();
    config["limits"] = json!({ "max_body_bytes": 4096, "requests_per_second_per_key": 1000 });
    let gateway = Gateway::start(config).await?;
    let id = gateway.create_conversation(json!({})).await?["id"].as_str().unwrap_or_default().to_owned();
    let http = gateway.http();
    let key = &gateway.admin_key;
    let post = |body: &'static str, content_type: &'static str| {
        http.post(gateway.url("/v1/conversations")).bearer_auth(key).header("content-type", content_type).body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (post("{not json", "application/json"), 400, "bad_json"),
        (post("{}", "text/plain"), 415, "unsupported_media_type"),
        (post(r#"{"titel": "typo"}"#, "application/json"), 400, "invalid_body"),
        (post("[1, 2]", "application/json"), 400, "invalid_body"),
        (
            http.post(gateway.url("/v1/conversations"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(format!("{{\"title\":\"{}\"}}", "t".repeat(10_000))),
            413,
            "body_too_large",
        ),
        (http.get(gateway.url("/v1/conversations/not-a-uuid")).bearer_auth(key), 400, "invalid_path"),
        (
            http.get(gateway.url(&format!("/v1/conversations/{id}/messages?limit=lots"))).bearer_auth(key),
            400,
            "invalid_query",
        ),
        (
            http.get(gateway.url(&format!("/v1/conversations/{id}/messages?colour=red"))).bearer_auth(key),
            400,
            "invalid_query",
        ),
        (http.get(gateway.url("/v1/nothing-here")).bearer_auth(key), 404, "not_found"),
        (http.put(gateway.url("/v1/conversations")).bearer_auth(key), 405, "method_not_allowed"),
        (http.get(gateway.url("/v1/me")), 401, "unauthenticated"),
    ];
    for (request, status, code) in cases {
        let response = request.send().await?;
        let got = response.status().as_u16();
        let text = response.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.len() > 15), "{body}");
        assert!(body["error"]["retryable"].is_boolean(), "{body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_headers_slowly_is_cut_off() -> anyhow::Result<()> {
    let mut config = quiet();
    config["limits"] = json!({ "header_read_timeout_ms": 300 });
    let gateway = Gateway::start(config).await?;
    let mut socket = tokio::net::TcpStream::connect(gateway.addr).await?;
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await?;
    // ...and never the rest. The server gives up and closes (perhaps after a 408).
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the server kept the half-sent request open");
    let answer = String::from_utf8_lossy(&buffer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    Ok(())
}
