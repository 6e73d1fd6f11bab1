//! The A2A endpoint (`POST /a2a/v1`) under hostile or mistaken requests, through the real
//! gateway: every one gets the JSON-RPC error that says what was wrong, nothing is stored for
//! it, and nobody reaches another account's conversations or tasks through A2A. (The protocol's
//! own SDK drives the working paths in apps/gateway/tests/it/a2a.rs.)

use serde_json::{Value, json};

use crate::support::Gateway;

fn send(text: &str, context: Option<&str>) -> Value {
    let mut message = json!({ "messageId": text, "role": "ROLE_USER", "parts": [{ "text": text }] });
    if let Some(context) = context {
        message["contextId"] = json!(context);
    }
    json!({ "jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": { "message": message, "configuration": { "returnImmediately": true } } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a2a_requests_get_json_rpc_errors_and_reach_nobody_elses_conversation() -> anyhow::Result<()> {
    let gateway = Gateway::start(json!({ "discover_ollama": false })).await?;
    let admin = gateway.admin_key.clone();
    let rpc = |key: &str, body: Value| {
        let (key, body) = (key.to_owned(), body);
        let gateway = &gateway;
        async move { gateway.request_as(&key, reqwest::Method::POST, "/a2a/v1", Some(&body)).await }
    };
    let code = |reply: &Value| reply["error"]["code"].as_i64();

    // No key: the gateway's own 401, as for every authenticated route.
    let (status, _) = rpc("", send("hi", None)).await?;
    assert_eq!(status, 401);
    // Not JSON, too deep, no method, unknown method, a protocol version not served.
    let raw = gateway.http().post(gateway.url("/a2a/v1")).bearer_auth(&admin).body("{not json").send().await?;
    assert_eq!(code(&raw.json().await?), Some(-32700));
    let deep = (0..64).fold(json!("x"), |inner, _| json!([inner]));
    assert_eq!(
        code(&rpc(&admin, json!({ "jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": deep })).await?.1),
        Some(-32600)
    );
    assert_eq!(code(&rpc(&admin, json!({ "jsonrpc": "2.0", "id": 3 })).await?.1), Some(-32600));
    let unknown = rpc(&admin, json!({ "jsonrpc": "2.0", "id": 4, "method": "tasks/list" })).await?.1;
    assert_eq!(code(&unknown), Some(-32601), "{unknown}");
    let newer = gateway
        .http()
        .post(gateway.url("/a2a/v1"))
        .bearer_auth(&admin)
        .header("A2A-Version", "2.0")
        .json(&send("hi", None))
        .send()
        .await?;
    let newer: Value = newer.json().await?;
    assert_eq!(code(&newer), Some(-32009), "{newer}");
    assert!(newer["error"]["message"].as_str().is_some_and(|m| m.contains("1.0 or 0.3")), "{newer}");
    // Bad params, in both versions: no message, no parts, a part of no known kind, a task id
    // that is no task, a context that is no id.
    for method in ["SendMessage", "message/send"] {
        let empty = json!({ "jsonrpc": "2.0", "id": 5, "method": method, "params": {} });
        assert_eq!(code(&rpc(&admin, empty).await?.1), Some(-32602), "{method} without a message");
    }
    let mut partless = send("partless", None);
    partless["params"]["message"]["parts"] = json!([]);
    assert_eq!(code(&rpc(&admin, partless).await?.1), Some(-32602));
    let mut odd = send("odd", None);
    odd["params"]["message"]["parts"] = json!([{ "hologram": "x" }]);
    assert_eq!(code(&rpc(&admin, odd).await?.1), Some(-32005));
    let mut continued = send("more", None);
    continued["params"]["message"]["taskId"] = json!("t");
    assert_eq!(code(&rpc(&admin, continued).await?.1), Some(-32001));
    assert_eq!(code(&rpc(&admin, send("hi", Some("nope"))).await?.1), Some(-32602));

    // Ada's context and task are not Bob's.
    let (_, ada) = gateway.account("ada", "user").await?;
    let (_, bob) = gateway.account("bob", "user").await?;
    // Waits for its turn (which fails: no model is configured), so the log is still after it.
    let mut waiting = send("mine", None);
    waiting["params"]["configuration"] = json!({});
    let (status, mine) = rpc(&ada, waiting).await?;
    assert_eq!(status, 200, "{mine}");
    let task = mine["result"]["task"].clone();
    let (context, task_id) = (task["contextId"].as_str().unwrap_or_default(), task["id"].as_str().unwrap_or_default());
    let before = gateway.last_seq(context).await?;
    let intruding = rpc(&bob, send("theirs", Some(context))).await?.1;
    assert!(
        intruding["error"]["message"].as_str().is_some_and(|m| m.contains("forbidden") || m.contains("not_found")),
        "{intruding}"
    );
    assert_eq!(gateway.last_seq(context).await?, before, "nothing of Bob's was stored in Ada's conversation");
    for method in ["GetTask", "CancelTask", "SubscribeToTask"] {
        let probe = json!({ "jsonrpc": "2.0", "id": 6, "method": method, "params": { "id": task_id } });
        let reply = rpc(&bob, probe).await?.1;
        assert_eq!(code(&reply), Some(-32001), "{method} of Ada's task, as Bob: {reply}");
    }
    // Nor can Bob answer for Ada's task by its id.
    let mut answering = send("approve", None);
    answering["params"]["message"]["taskId"] = json!(task_id);
    assert_eq!(code(&rpc(&bob, answering).await?.1), Some(-32001), "continuing Ada's task, as Bob");
    let own = json!({ "jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": { "id": task_id } });
    assert_eq!(rpc(&ada, own).await?.1["result"]["id"], json!(task_id));
    let old = json!({ "jsonrpc": "2.0", "id": 8, "method": "tasks/get", "params": { "id": task_id } });
    let old = rpc(&ada, old).await?.1;
    assert_eq!((old["result"]["kind"].as_str(), old["result"]["id"].as_str()), (Some("task"), Some(task_id)), "{old}");
    Ok(())
}

/// Named agents: an unknown one is a 404 naming the real ones; a context started with one agent
/// is not another agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_agents_keep_to_their_own_conversations() -> anyhow::Result<()> {
    let gateway = Gateway::start(json!({ "discover_ollama": false, "agents": { "helper": {}, "critic": {} } })).await?;
    let (_, ada) = gateway.account("ada", "user").await?;
    let post = |path: &'static str, body: Value| {
        let (gateway, ada) = (&gateway, ada.clone());
        async move { gateway.request_as(&ada, reqwest::Method::POST, path, Some(&body)).await }
    };
    let (status, missing) = post("/a2a/agents/nobody", send("hi", None)).await?;
    assert_eq!(status, 404, "{missing}");
    assert!(missing["error"]["message"].as_str().is_some_and(|m| m.contains("critic, helper")), "{missing}");
    let (_, card) =
        gateway.request_as("", reqwest::Method::GET, "/a2a/agents/critic/.well-known/agent-card.json", None).await?;
    assert_eq!(card["name"], "critic", "{card}");
    let (_, started) = post("/a2a/agents/helper", send("helper, hi", None)).await?;
    let context = started["result"]["task"]["contextId"].as_str().unwrap_or_default().to_owned();
    assert!(!context.is_empty(), "{started}");
    let (_, other) = post("/a2a/agents/critic", send("critic, hi", Some(&context))).await?;
    assert_eq!(code_of(&other), Some(-32602), "{other}");
    assert!(other["error"]["message"].as_str().is_some_and(|m| m.contains("agent `critic`")), "{other}");
    let (_, same) = post("/a2a/agents/helper", send("helper, again", Some(&context))).await?;
    assert_eq!(same["result"]["task"]["contextId"], json!(context), "{same}");
    Ok(())
}

fn code_of(reply: &Value) -> Option<i64> {
    reply["error"]["code"].as_i64()
}

/// A blocking or streamed A2A request holds a connection's place, as a WebSocket does: past the
/// key's limit it is refused before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_a2a_requests_count_against_the_connection_limit() -> anyhow::Result<()> {
    let gateway =
        Gateway::start(json!({ "discover_ollama": false, "limits": { "max_connections_per_key": 1 } })).await?;
    let (_, ada) = gateway.account("ada", "user").await?;
    let _socket = gateway.connect_as(&ada).await?;
    let mut blocking = send("wait for me", None);
    blocking["params"]["configuration"] = json!({});
    let streaming =
        json!({ "jsonrpc": "2.0", "id": 2, "method": "SendStreamingMessage", "params": blocking["params"] });
    for request in [blocking, streaming] {
        let (_, reply) = gateway.request_as(&ada, reqwest::Method::POST, "/a2a/v1", Some(&request)).await?;
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("too_many_connections"), "{reply}");
    }
    let (_, mine) = gateway.request_as(&ada, reqwest::Method::GET, "/v1/conversations", None).await?;
    assert_eq!(mine["conversations"], json!([]), "nothing was created or stored: {mine}");
    Ok(())
}
