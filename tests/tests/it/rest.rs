//! The REST surface against the real gateway, as a chat product's backend uses it: listing a
//! user's conversations for a sidebar, renaming, archiving, forking and exporting them, posting
//! over HTTP with and without waiting for the answer, editing history, following events without
//! a WebSocket, managing participants and agents, approving tool calls, and the operations
//! endpoints (metrics, request ids, readiness).

use std::collections::HashSet;

use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Gateway, is_agent_end};

/// A gateway answering with `replies` from a mock OpenAI server that lists `gpt-test` and
/// `gpt-other` as its models.
async fn gateway_with(replies: Vec<MockReply>, extra: Value) -> anyhow::Result<(Gateway, MockOpenAi)> {
    let mock = MockOpenAi::start_with_models(replies, &["gpt-test", "gpt-other"]).await?;
    let mut config = json!({
        "providers": { "mock": { "kind": "openai_compatible", "base_url": mock.base_url(), "api_key": "sk-test-secret" } },
        "agent": { "provider": "mock", "model": "gpt-test", "system_prompt": "Be brief.", "tools": ["calculator"] },
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    Ok((Gateway::start(config).await?, mock))
}

/// A text reply of the mock.
fn text(words: &str) -> MockReply {
    MockReply::Chunks(chunks::text("gpt-test", &[words], Some((10, 3))))
}

/// A reply of the mock that calls the calculator.
fn calculator_call(id: &str, expression: &str) -> MockReply {
    let arguments = json!({ "expression": expression }).to_string();
    MockReply::Chunks(chunks::tool_calls("gpt-test", &[(id, "calculator", &[arguments.as_str()])], Some((20, 5))))
}

fn str_of(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// The ids of a page of conversations, in order.
fn ids(page: &Value) -> Vec<String> {
    page["conversations"].as_array().map(|c| c.iter().map(|c| str_of(&c["id"])).collect()).unwrap_or_default()
}

/// The texts of a list of messages, in order.
fn texts(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .map(|m| m.iter().map(|m| str_of(&m["content"][0]["text"])).filter(|t| !t.is_empty()).collect())
        .unwrap_or_default()
}

/// `POST .../messages?wait=true` as `key`: the answer once the turn has ended.
async fn send_and_wait(gateway: &Gateway, key: &str, id: &str, content: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/conversations/{id}/messages?wait=true");
    let (status, sent) = gateway.request_as(key, Method::POST, &path, Some(&json!({ "content": content }))).await?;
    anyhow::ensure!(status == 200, "send failed with {status}: {sent}");
    Ok(sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidebar_lists_a_users_conversations_newest_first_filtered_and_paged() -> anyhow::Result<()> {
    let (gateway, _mock) = gateway_with(vec![], json!({})).await?;
    let (ada, ada_key) = gateway.account("ada", "user").await?;
    let (_, bob_key) = gateway.account("bob", "user").await?;
    let mut made = Vec::new();
    for (title, tags) in [("taxes", json!(["work"])), ("holiday", json!(["home"])), ("budget", json!(["work", "q3"]))] {
        let created = gateway.create_conversation_as(&ada_key, json!({ "title": title, "tags": tags })).await?;
        made.push(str_of(&created["id"]));
    }
    // Bob's conversation, with Ada in it, and one Ada is not in.
    let shared = gateway
        .create_conversation_as(
            &bob_key,
            json!({ "kind": "multi_party", "title": "shared", "participants": [
                { "kind": "user", "display_name": "bob" },
                { "kind": "user", "display_name": "ada", "account_id": ada },
                { "kind": "agent", "display_name": "helper" },
            ] }),
        )
        .await?;
    let shared = str_of(&shared["id"]);
    let bobs_own = str_of(&gateway.create_conversation_as(&bob_key, json!({ "title": "bob's" })).await?["id"]);

    let list = |query: &str| {
        let path = format!("/v1/conversations{query}");
        let key = ada_key.clone();
        let gateway = &gateway;
        async move {
            let (status, page) = gateway.request_as(&key, Method::GET, &path, None).await?;
            anyhow::ensure!(status == 200, "{path}: {status} {page}");
            anyhow::Ok(page)
        }
    };
    // Newest activity first: Ada's three in reverse, after the shared one made last; each with
    // its own participants.
    let page = list("").await?;
    assert_eq!(ids(&page), [shared.clone(), made[2].clone(), made[1].clone(), made[0].clone()]);
    let counts: Vec<usize> = page["conversations"]
        .as_array()
        .map(|c| c.iter().map(|c| c["participants"].as_array().map_or(0, Vec::len)).collect())
        .unwrap_or_default();
    assert_eq!(counts, [3, 2, 2, 2]);
    for conversation in page["conversations"].as_array().cloned().unwrap_or_default() {
        let theirs = conversation["participants"].as_array().cloned().unwrap_or_default();
        assert!(theirs.iter().all(|p| p["conversation_id"] == conversation["id"]), "{conversation}");
    }
    // Activity moves a conversation to the top.
    let (status, _) = gateway
        .request_as(
            &ada_key,
            Method::PATCH,
            &format!("/v1/conversations/{}", made[0]),
            Some(&json!({ "summary": "2025 return" })),
        )
        .await?;
    assert_eq!(status, 200);
    let path = format!("/v1/conversations/{}/messages", made[0]);
    let (status, _) =
        gateway.request_as(&ada_key, Method::POST, &path, Some(&json!({ "content": "any news?" }))).await?;
    assert_eq!(status, 202);
    let page = list("").await?;
    assert_eq!(ids(&page)[0], made[0]);
    assert!(!ids(&page).contains(&bobs_own), "another user's conversation is not listed");

    // Filters.
    assert_eq!(ids(&list("?tag=work").await?), [made[0].clone(), made[2].clone()]);
    assert_eq!(ids(&list("?q=holi").await?), [made[1].clone()]);
    assert_eq!(ids(&list("?q=2025").await?), [made[0].clone()], "the summary is searched too");
    assert_eq!(ids(&list("?kind=multi_party").await?), std::slice::from_ref(&shared));
    assert_eq!(ids(&list("?agent=helper").await?), std::slice::from_ref(&shared));
    let (_, bob_account) = gateway.request_as(&bob_key, Method::GET, "/v1/me", None).await?;
    assert_eq!(ids(&list(&format!("?account={}", str_of(&bob_account["id"]))).await?), std::slice::from_ref(&shared));
    let (status, _) =
        gateway.request_as(&ada_key, Method::POST, &format!("/v1/conversations/{}/archive", made[1]), None).await?;
    assert_eq!(status, 200);
    assert_eq!(ids(&list("?status=archived").await?), [made[1].clone()]);
    assert_eq!(ids(&list("?status=active&tag=home").await?), Vec::<String>::new());

    // Pages of two cover everything once, in the same order.
    let everything = ids(&list("").await?);
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = list(&query).await?;
        assert!(ids(&page).len() <= 2);
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, everything);
    // The admin sees everyone's.
    let (_, all) = gateway.get("/v1/conversations?limit=200").await?;
    let all: HashSet<String> = ids(&all).into_iter().collect();
    assert!(all.contains(&bobs_own) && all.contains(&made[0]));

    // Bad queries say what was wrong.
    for (query, code) in [
        ("?limit=0", "invalid_query"),
        ("?limit=201", "invalid_query"),
        ("?cursor=nonsense", "invalid_cursor"),
        ("?status=sleeping", "invalid_query"),
        ("?sort=name", "invalid_query"),
    ] {
        let (status, body) =
            gateway.request_as(&ada_key, Method::GET, &format!("/v1/conversations{query}"), None).await?;
        assert_eq!((status, str_of(&body["error"]["code"])), (400, code.to_owned()), "{query}: {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_renames_archives_closes_and_deletes_a_conversation() -> anyhow::Result<()> {
    let (gateway, mock) = gateway_with(vec![text("Noted.")], json!({})).await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let id = str_of(&gateway.create_conversation_as(&key, json!({ "title": "draft" })).await?["id"]);
    let path = format!("/v1/conversations/{id}");
    let mut watcher = gateway.connect_as(&key).await?;
    watcher.subscribe(&id, 0).await?;

    // PATCH changes only what it names; `null` removes; the next request sees new options.
    let patch = json!({ "title": "final", "tags": ["a", "b"], "options": { "max_tokens": 77 } });
    let (status, updated) = gateway.request_as(&key, Method::PATCH, &path, Some(&patch)).await?;
    assert_eq!(status, 200, "{updated}");
    assert_eq!((str_of(&updated["title"]), updated["tags"].clone()), ("final".to_owned(), json!(["a", "b"])));
    let event = watcher.recv().await?;
    assert_eq!(event["event"]["type"], "conversation_updated", "{event}");
    let (_, updated) = gateway.request_as(&key, Method::PATCH, &path, Some(&json!({ "title": null }))).await?;
    assert_eq!((updated["title"].clone(), updated["tags"].clone()), (Value::Null, json!(["a", "b"])));
    send_and_wait(&gateway, &key, &id, "remember this").await?;
    assert_eq!(mock.requests()[0]["max_tokens"], 77, "{}", mock.requests()[0]);
    for (body, code) in [
        (json!({ "colour": "red" }), "invalid_body"),
        (json!({ "tags": "a" }), "invalid_body"),
        (json!({ "options": { "max_tokens": "many" } }), "invalid_body"),
    ] {
        let (status, error) = gateway.request_as(&key, Method::PATCH, &path, Some(&body)).await?;
        assert_eq!((status, str_of(&error["error"]["code"])), (400, code.to_owned()), "{body}: {error}");
    }

    // Archived: read-only until unarchived.
    let (status, archived) = gateway.request_as(&key, Method::POST, &format!("{path}/archive"), None).await?;
    assert_eq!((status, str_of(&archived["status"])), (200, "archived".to_owned()));
    let (status, refused) =
        gateway.request_as(&key, Method::POST, &format!("{path}/messages"), Some(&json!({ "content": "hi" }))).await?;
    assert_eq!((status, str_of(&refused["error"]["code"])), (409, "conversation_not_active".to_owned()), "{refused}");
    let (status, active) = gateway.request_as(&key, Method::POST, &format!("{path}/unarchive"), None).await?;
    assert_eq!((status, str_of(&active["status"])), (200, "active".to_owned()));
    // Closed: read-only for good.
    let (status, _) = gateway.request_as(&key, Method::POST, &format!("{path}/close"), None).await?;
    assert_eq!(status, 200);
    let (status, refused) = gateway.request_as(&key, Method::POST, &format!("{path}/unarchive"), None).await?;
    assert_eq!((status, str_of(&refused["error"]["code"])), (409, "invalid_status_change".to_owned()), "{refused}");
    let (status, got) = gateway.request_as(&key, Method::GET, &path, None).await?;
    assert_eq!((status, str_of(&got["status"])), (200, "closed".to_owned()));

    // Deleted: gone, with its messages.
    let (status, _) = gateway.request_as(&key, Method::DELETE, &path, None).await?;
    assert_eq!(status, 204);
    for sub in ["", "/messages", "/events"] {
        let (status, body) = gateway.request_as(&key, Method::GET, &format!("{path}{sub}"), None).await?;
        assert_eq!((status, str_of(&body["error"]["code"])), (404, "conversation_not_found".to_owned()), "{sub}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_copies_the_history_up_to_a_seq_and_an_export_has_all_of_it() -> anyhow::Result<()> {
    let (gateway, _mock) = gateway_with(vec![text("Paris."), text("Berlin.")], json!({})).await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let id = str_of(&gateway.create_conversation_as(&key, json!({ "title": "capitals" })).await?["id"]);
    let first = send_and_wait(&gateway, &key, &id, "Capital of France?").await?;
    let answer_seq = first["reply"][0]["seq"].as_u64().unwrap_or_default();
    send_and_wait(&gateway, &key, &id, "Capital of Germany?").await?;

    let (status, fork) = gateway
        .request_as(&key, Method::POST, &format!("/v1/conversations/{id}/fork"), Some(&json!({ "at_seq": answer_seq })))
        .await?;
    assert_eq!(status, 201, "{fork}");
    let fork_id = str_of(&fork["id"]);
    assert_ne!(fork_id, id);
    let (_, got) = gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{fork_id}"), None).await?;
    assert_eq!(got["forked_from"]["conversation_id"], json!(id), "lineage is visible: {got}");
    assert_eq!(got["forked_from"]["seq"], json!(answer_seq));
    let (_, messages) =
        gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{fork_id}/messages"), None).await?;
    assert_eq!(texts(&messages["messages"]), ["Capital of France?", "Paris."]);
    // A fork with no body copies everything; the fork is the caller's to list.
    let (status, whole) = gateway.request_as(&key, Method::POST, &format!("/v1/conversations/{id}/fork"), None).await?;
    assert_eq!(status, 201, "{whole}");
    let (_, messages) = gateway
        .request_as(&key, Method::GET, &format!("/v1/conversations/{}/messages", str_of(&whole["id"])), None)
        .await?;
    assert_eq!(texts(&messages["messages"]).len(), 4);

    // A fork past the end is refused and leaves no conversation behind.
    let (_, before) = gateway.request_as(&key, Method::GET, "/v1/conversations", None).await?;
    let (status, refused) = gateway
        .request_as(&key, Method::POST, &format!("/v1/conversations/{id}/fork"), Some(&json!({ "at_seq": 9999 })))
        .await?;
    assert_eq!((status, str_of(&refused["error"]["code"])), (400, "seq_out_of_range".to_owned()), "{refused}");
    let (_, after) = gateway.request_as(&key, Method::GET, "/v1/conversations", None).await?;
    assert_eq!(ids(&before), ids(&after));

    // Export: JSON with every message, and a Markdown transcript.
    let (status, export) =
        gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{id}/export"), None).await?;
    assert_eq!(status, 200);
    assert_eq!(texts(&export["messages"]), ["Capital of France?", "Paris.", "Capital of Germany?", "Berlin."]);
    assert_eq!(export["title"], "capitals");
    assert_eq!(export["participants"].as_array().map(Vec::len), Some(2));
    let response = gateway
        .http()
        .get(gateway.url(&format!("/v1/conversations/{id}/export?format=markdown")))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(response.headers()["content-type"], "text/markdown; charset=utf-8");
    let markdown = response.text().await?;
    assert!(markdown.starts_with("# capitals\n"), "{markdown}");
    let france = markdown.find("Capital of France?").unwrap_or(usize::MAX);
    let berlin = markdown.find("Berlin.").unwrap_or(0);
    assert!(france < berlin, "in order: {markdown}");
    assert!(markdown.contains("**ada**") && markdown.contains("**assistant**"), "{markdown}");

    // The chat window in one request: the newest messages, and whether there are older ones.
    let (_, window) =
        gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{id}/with-messages?limit=2"), None).await?;
    assert_eq!(texts(&window["messages"]), ["Capital of Germany?", "Berlin."]);
    assert_eq!((window["has_more"].clone(), window["title"].clone()), (json!(true), json!("capitals")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_posts_over_http_once_per_key_and_can_wait_for_the_answer() -> anyhow::Result<()> {
    let (gateway, _mock) = gateway_with(vec![text("First."), text("Second.")], json!({})).await?;
    let (_, key) = gateway.account("crm", "service").await?;
    let id = str_of(&gateway.create_conversation_as(&key, json!({})).await?["id"]);
    let path = format!("/v1/conversations/{id}/messages");

    // The same Idempotency-Key twice: stored once, the second says so.
    let send = |idempotency: &'static str| {
        let request = gateway
            .http()
            .post(gateway.url(&format!("{path}?wait=true")))
            .bearer_auth(&key)
            .header("idempotency-key", idempotency)
            .json(&json!({ "content": "ticket 7 is open" }));
        async move {
            let response = request.send().await?;
            anyhow::Ok((response.status().as_u16(), response.json::<Value>().await?))
        }
    };
    let (status, first) = send("ticket-7").await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    assert_eq!(texts(&first["reply"]), ["First."]);
    assert_eq!(first["stop"]["stop_reason"], "end_turn", "{first}");
    let (status, again) = send("ticket-7").await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!((again["duplicate"].clone(), again["message_id"].clone()), (json!(true), first["message_id"].clone()));
    // Without wait: 202 with the ack at once.
    let (status, sent) =
        gateway.request_as(&key, Method::POST, &path, Some(&json!({ "content": "and ticket 8" }))).await?;
    assert_eq!((status, sent["duplicate"].clone()), (202, json!(false)), "{sent}");
    let mut client = gateway.connect_as(&key).await?;
    client.subscribe(&id, sent["seq"].as_u64().unwrap_or_default()).await?;
    client.recv_until(is_agent_end).await?;
    let (_, page) = gateway.request_as(&key, Method::GET, &path, None).await?;
    assert_eq!(texts(&page["messages"]), ["ticket 7 is open", "First.", "and ticket 8", "Second."]);

    // Pages both ways.
    let (_, newest) = gateway.request_as(&key, Method::GET, &format!("{path}?before_seq=999999&limit=3"), None).await?;
    assert_eq!(texts(&newest["messages"]), ["First.", "and ticket 8", "Second."]);
    let before = newest["next_before_seq"].as_u64().unwrap_or_default();
    let (_, older) =
        gateway.request_as(&key, Method::GET, &format!("{path}?before_seq={before}&limit=3"), None).await?;
    assert_eq!(
        (texts(&older["messages"]), older["next_before_seq"].clone()),
        (vec!["ticket 7 is open".to_owned()], Value::Null)
    );
    let (_, oldest) = gateway.request_as(&key, Method::GET, &format!("{path}?limit=1"), None).await?;
    let after = oldest["next_after_seq"].as_u64().unwrap_or_default();
    let (_, next) = gateway.request_as(&key, Method::GET, &format!("{path}?after_seq={after}&limit=1"), None).await?;
    assert_eq!(texts(&next["messages"]), ["First."]);
    let (status, both) =
        gateway.request_as(&key, Method::GET, &format!("{path}?after_seq=1&before_seq=5"), None).await?;
    assert_eq!((status, str_of(&both["error"]["code"])), (400, "invalid_query".to_owned()));

    // The newest history within a token budget.
    let (_, small) =
        gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{id}/history?max_tokens=3"), None).await?;
    assert_eq!((texts(&small["messages"]), small["truncated"].clone()), (vec!["Second.".to_owned()], json!(true)));
    let (_, all) = gateway
        .request_as(&key, Method::GET, &format!("/v1/conversations/{id}/history?max_tokens=100000"), None)
        .await?;
    assert_eq!((texts(&all["messages"]).len(), all["truncated"].clone()), (4, json!(false)));
    let (status, missing) =
        gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{id}/history"), None).await?;
    assert_eq!((status, str_of(&missing["error"]["code"])), (400, "invalid_query".to_owned()), "{missing}");

    // Bad sends say what was wrong and store nothing.
    for (body, code) in [
        (json!({ "content": "" }), "empty_message"),
        (
            json!({ "content": [{ "type": "tool_result", "tool_call_id": "x", "name": "calculator", "content": "1", "is_error": false }] }),
            "forbidden_part",
        ),
        (json!({ "content": "hi", "colour": "red" }), "invalid_body"),
        (json!({ "content": "hi", "client_msg_id": "" }), "invalid_client_msg_id"),
    ] {
        let (status, error) = gateway.request_as(&key, Method::POST, &path, Some(&body)).await?;
        assert_eq!((status, str_of(&error["error"]["code"])), (400, code.to_owned()), "{body}: {error}");
    }
    let (_, page) = gateway.request_as(&key, Method::GET, &path, None).await?;
    assert_eq!(texts(&page["messages"]).len(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_removals_between_turns_reach_subscribers_and_the_next_request() -> anyhow::Result<()> {
    let (gateway, mock) = gateway_with(
        vec![
            text("Two."),
            MockReply::Held(Box::new(text("Held."))),
            calculator_call("call_1", "2 + 2"),
            text("Four."),
            text("Again."),
        ],
        json!({}),
    )
    .await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let (_, other_key) = gateway.account("bob", "user").await?;
    let id = str_of(&gateway.create_conversation_as(&key, json!({})).await?["id"]);
    let first = send_and_wait(&gateway, &key, &id, "1 + 1?").await?;
    let question = str_of(&first["message_id"]);
    let mut watcher = gateway.connect_as(&key).await?;
    watcher.subscribe(&id, gateway.last_seq(&id).await?).await?;

    // An edit: same id and seq, new content, `message_updated` live.
    let message_path = format!("/v1/conversations/{id}/messages/{question}");
    let (status, edited) =
        gateway.request_as(&key, Method::PATCH, &message_path, Some(&json!({ "content": "1 + 1, in words?" }))).await?;
    assert_eq!(status, 200, "{edited}");
    assert_eq!((edited["id"].clone(), edited["seq"].clone()), (json!(question), first["seq"].clone()));
    let event = watcher.recv().await?;
    assert_eq!(event["event"]["type"], "message_updated", "{event}");
    // Refused edits change nothing.
    let answer = str_of(&first["reply"][0]["id"]);
    for (path, body, status_code) in [
        (message_path.clone(), json!({ "content": "" }), (400, "empty_message")),
        (
            format!("/v1/conversations/{id}/messages/{answer}"),
            json!({ "content": [{ "type": "tool_call", "id": "call_x", "name": "calculator", "arguments": {} }] }),
            (400, "invalid_edit"),
        ),
        (
            format!("/v1/conversations/{id}/messages/00000000-0000-7000-8000-000000000000"),
            json!({ "content": "x" }),
            (404, "message_not_found"),
        ),
    ] {
        let (status, error) = gateway.request_as(&key, Method::PATCH, &path, Some(&body)).await?;
        assert_eq!((status, error["error"]["code"].as_str()), (status_code.0, Some(status_code.1)), "{body}: {error}");
    }
    // Someone else's conversation: as if it did not exist.
    let (status, _) =
        gateway.request_as(&other_key, Method::PATCH, &message_path, Some(&json!({ "content": "mine" }))).await?;
    assert_eq!(status, 404);
    let (_, page) = gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{id}/messages"), None).await?;
    assert_eq!(texts(&page["messages"]), ["1 + 1, in words?", "Two."], "the refused edits changed nothing");
    watcher.send(json!({ "type": "ping", "id": "p" })).await?;
    assert_eq!(watcher.recv().await?, json!({ "type": "pong", "id": "p" }), "and published nothing");

    // While a turn runs, edits wait their turn (409 busy).
    let path = format!("/v1/conversations/{id}/messages");
    let (status, _) = gateway.request_as(&key, Method::POST, &path, Some(&json!({ "content": "hold on" }))).await?;
    assert_eq!(status, 202);
    watcher.recv_until(|f| f["event"]["type"] == "turn_start").await?;
    let (status, busy) =
        gateway.request_as(&key, Method::PATCH, &message_path, Some(&json!({ "content": "now" }))).await?;
    assert_eq!((status, str_of(&busy["error"]["code"])), (409, "busy".to_owned()), "{busy}");
    // Cancel over REST stops it.
    let (status, cancelled) =
        gateway.request_as(&key, Method::POST, &format!("/v1/conversations/{id}/cancel"), None).await?;
    assert_eq!((status, cancelled["cancelled"].clone()), (200, json!(true)));
    let end = watcher.recv_until(is_agent_end).await?;
    assert_eq!(end[end.len() - 1]["event"]["stop_reason"], "cancelled");
    mock.release();

    // A tool-calling answer, removed: its tool result goes with it, `message_removed` for each.
    let sent = send_and_wait(&gateway, &key, &id, "2 + 2?").await?;
    let call =
        sent["reply"].as_array().and_then(|r| r.iter().find(|m| m["role"] == "assistant")).cloned().unwrap_or_default();
    let tool =
        sent["reply"].as_array().and_then(|r| r.iter().find(|m| m["role"] == "tool")).cloned().unwrap_or_default();
    let (status, refused) =
        gateway.request_as(&key, Method::DELETE, &format!("{path}/{}", str_of(&tool["id"])), None).await?;
    assert_eq!(
        (status, str_of(&refused["error"]["code"])),
        (400, "invalid_edit".to_owned()),
        "a tool result alone stays"
    );
    watcher.recv_until(is_agent_end).await?;
    let (status, _) =
        gateway.request_as(&key, Method::DELETE, &format!("{path}/{}", str_of(&call["id"])), None).await?;
    assert_eq!(status, 204);
    let removed: HashSet<String> = [watcher.recv().await?, watcher.recv().await?]
        .iter()
        .map(|f| {
            assert_eq!(f["event"]["type"], "message_removed", "{f}");
            str_of(&f["event"]["message_id"])
        })
        .collect();
    assert_eq!(removed, HashSet::from([str_of(&call["id"]), str_of(&tool["id"])]));

    // Continue: the agent answers the history as it now is; the request shows the edit and not
    // the removed call.
    let (status, _) = gateway.request_as(&key, Method::POST, &format!("/v1/conversations/{id}/continue"), None).await?;
    assert_eq!(status, 202);
    watcher.recv_until(is_agent_end).await?;
    let requests = mock.requests();
    let last = requests.last().cloned().unwrap_or_default();
    let said = last["messages"].to_string();
    assert!(said.contains("1 + 1, in words?") && !said.contains("1 + 1?\""), "{said}");
    assert!(!said.contains("call_1"), "the removed call is gone: {said}");
    Ok(())
}

/// Reads SSE events from a response until `stop` holds for one; returns their (id, frame).
async fn read_sse(
    response: reqwest::Response,
    stop: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<(Option<u64>, Value)>> {
    let mut stream = response.bytes_stream().eventsource();
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("no SSE event arrived: {events:?}"))?;
        let Some(event) = next else { anyhow::bail!("the SSE stream ended: {events:?}") };
        let event = event?;
        let frame: Value = serde_json::from_str(&event.data)?;
        let kind = if frame["type"] == "event" { str_of(&frame["event"]["type"]) } else { str_of(&frame["type"]) };
        assert_eq!(event.event, kind, "the SSE event name is the event's type");
        let done = stop(&frame);
        events.push((event.id.parse().ok(), frame));
        if done {
            return Ok(events);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_as_json_pages_or_a_live_sse_stream_that_resumes_without_a_gap() -> anyhow::Result<()> {
    let (gateway, _mock) =
        gateway_with(vec![calculator_call("call_1", "6 * 7"), text("42."), text("Bye.")], json!({})).await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let id = str_of(&gateway.create_conversation_as(&key, json!({})).await?["id"]);
    send_and_wait(&gateway, &key, &id, "6 * 7?").await?;
    let path = format!("/v1/conversations/{id}/events");

    // JSON pages, chained by next_after_seq, are the whole log.
    let (_, whole) = gateway.request_as(&key, Method::GET, &format!("{path}?limit=1000"), None).await?;
    let whole = whole["events"].as_array().cloned().unwrap_or_default();
    let seqs: Vec<u64> = whole.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) =
            gateway.request_as(&key, Method::GET, &format!("{path}?after_seq={after}&limit=4"), None).await?;
        paged.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_after_seq"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(paged, whole);

    // SSE: the backlog after a seq, each event with its seq as id.
    let sse = |last_event_id: Option<u64>| {
        let mut request =
            gateway.http().get(gateway.url(&path)).bearer_auth(&key).header("accept", "text/event-stream");
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last.to_string());
        }
        request.send()
    };
    let response = sse(None).await?;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first_part = read_sse(response, |f| f["seq"] == 5).await?;
    // First who is online (the caller), then the log.
    assert_eq!((first_part[0].0, first_part[0].1["type"].as_str()), (None, Some("presence")));
    assert_eq!(first_part[0].1["online"].as_array().map(Vec::len), Some(1), "{:?}", first_part[0]);
    let ids: Vec<Option<u64>> = first_part[1..].iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=5).map(Some).collect::<Vec<_>>());
    // The client drops; it resumes from its Last-Event-ID and gets the rest, then live events.
    let response = sse(Some(5)).await?;
    let sent = {
        let path = format!("/v1/conversations/{id}/messages");
        gateway.request_as(&key, Method::POST, &path, Some(&json!({ "content": "bye" }))).await?
    };
    assert_eq!(sent.0, 202);
    let rest =
        read_sse(response, |f| f["event"]["type"] == "agent_end" && f["seq"].as_u64() > seqs.last().copied()).await?;
    // Ephemeral events have no id of their own (SSE clients keep the last one, as they should).
    for (id, frame) in rest.iter().filter(|(_, f)| f["seq"].is_u64()) {
        assert_eq!(*id, frame["seq"].as_u64(), "a durable event's SSE id is its seq: {frame}");
    }
    let durable: Vec<u64> = rest.iter().filter_map(|(_, f)| f["seq"].as_u64()).collect();
    let last = durable.last().copied().unwrap_or_default();
    assert_eq!(durable, (6..=last).collect::<Vec<_>>(), "no gap and no repeat");
    assert!(
        rest.iter().any(|(_, f)| f["seq"].is_null() && f["event"]["type"] == "message_update"),
        "live deltas come too: {:?}",
        rest.iter().map(|(_, f)| (f["seq"].clone(), f["event"]["type"].clone())).collect::<Vec<_>>()
    );
    let resumed: Vec<Value> = rest
        .iter()
        .filter(|(_, f)| f["seq"].as_u64().is_some_and(|seq| seq <= seqs.len() as u64))
        .map(|(_, f)| f.clone())
        .collect();
    let expected: Vec<Value> = whole[5..]
        .iter()
        .map(|e| json!({ "type": "event", "conversation_id": id, "seq": e["seq"], "event": e["event"] }))
        .collect();
    assert_eq!(resumed, expected, "SSE frames are the WebSocket's frames");

    // A Last-Event-ID that is not a seq is refused.
    let response = gateway
        .http()
        .get(gateway.url(&path))
        .bearer_auth(&key)
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_and_agents_change_mid_conversation_and_bad_ones_are_refused_at_once() -> anyhow::Result<()> {
    let (gateway, mock) = gateway_with(vec![text("One."), text("Two.")], json!({})).await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let (bob, bob_key) = gateway.account("bob", "user").await?;
    let created = gateway.create_conversation_as(&key, json!({})).await?;
    let id = str_of(&created["id"]);
    let of_kind = |kind: &str| {
        created["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["kind"] == kind))
            .map(|p| str_of(&p["id"]))
            .unwrap_or_default()
    };
    let (agent, human) = (of_kind("agent"), of_kind("user"));
    let path = format!("/v1/conversations/{id}/participants");
    let mut watcher = gateway.connect_as(&key).await?;
    watcher.subscribe(&id, 0).await?;

    // Bob joins (participant_joined), may then read it, becomes an observer, leaves.
    let (status, joined) = gateway
        .request_as(
            &key,
            Method::POST,
            &path,
            Some(&json!({ "kind": "user", "display_name": "bob", "account_id": bob })),
        )
        .await?;
    assert_eq!(status, 201, "{joined}");
    let event = watcher.recv().await?;
    assert_eq!(
        (event["event"]["type"].clone(), event["event"]["participant"]["id"].clone()),
        (json!("participant_joined"), joined["id"].clone())
    );
    let (status, _) = gateway.request_as(&bob_key, Method::GET, &format!("/v1/conversations/{id}"), None).await?;
    assert_eq!(status, 200);
    let member = format!("{path}/{}", str_of(&joined["id"]));
    let (status, updated) =
        gateway.request_as(&key, Method::PATCH, &member, Some(&json!({ "role": "observer" }))).await?;
    assert_eq!((status, str_of(&updated["role"])), (200, "observer".to_owned()), "{updated}");
    let event = watcher.recv().await?;
    assert_eq!(event["event"]["type"], "participant_updated", "{event}");
    let (status, refused) = gateway
        .request_as(
            &bob_key,
            Method::POST,
            &format!("/v1/conversations/{id}/messages"),
            Some(&json!({ "content": "hi" })),
        )
        .await?;
    assert_eq!((status, str_of(&refused["error"]["code"])), (403, "forbidden".to_owned()));
    let (_, listed) = gateway.request_as(&key, Method::GET, &path, None).await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    let (status, _) = gateway.request_as(&key, Method::DELETE, &member, None).await?;
    assert_eq!(status, 204);
    assert_eq!(watcher.recv().await?["event"]["type"], "participant_left");

    // Bad participants are refused with what to fix, and nothing is added.
    for (body, code) in [
        (json!({ "kind": "user", "display_name": "x" }), "invalid_body"),
        (
            json!({ "kind": "user", "display_name": "x", "account_id": "00000000-0000-7000-8000-000000000000" }),
            "account_not_found",
        ),
        (
            json!({ "kind": "agent", "display_name": "x", "agent": { "provider": "nope", "model": "gpt-test" } }),
            "unknown_provider",
        ),
        (
            json!({ "kind": "agent", "display_name": "x", "agent": { "provider": "mock", "model": "gpt-9000" } }),
            "unknown_model",
        ),
        (
            json!({ "kind": "agent", "display_name": "x", "agent": { "provider": "mock", "model": "gpt-test", "tools": ["rm_rf"] } }),
            "unknown_tool",
        ),
    ] {
        let (status, error) = gateway.request_as(&key, Method::POST, &path, Some(&body)).await?;
        let code_of = error["error"]["code"].as_str();
        assert!(matches!(status, 400 | 404) && code_of == Some(code), "{body}: {status} {error}");
        if code == "unknown_model" {
            let message = str_of(&error["error"]["message"]);
            assert!(message.contains("gpt-9000") && message.contains("gpt-other"), "names the choices: {message}");
        }
    }
    let (_, listed) = gateway.request_as(&key, Method::GET, &path, None).await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "only the three from before: {listed}");

    // The agent changes model and prompt; the next request uses them.
    send_and_wait(&gateway, &key, &id, "first").await?;
    let agent_path = format!("{path}/{agent}/agent");
    let (status, error) =
        gateway.request_as(&key, Method::PATCH, &agent_path, Some(&json!({ "model": "gpt-9000" }))).await?;
    assert_eq!((status, str_of(&error["error"]["code"])), (400, "unknown_model".to_owned()), "refused at once");
    let (status, changed) = gateway
        .request_as(
            &key,
            Method::PATCH,
            &agent_path,
            Some(&json!({ "model": "gpt-other", "system_prompt": "Answer in French." })),
        )
        .await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["agent"]["model"], "gpt-other");
    let event = watcher.recv_until(|f| f["event"]["type"] == "participant_updated").await?;
    assert!(!event.is_empty());
    send_and_wait(&gateway, &key, &id, "second").await?;
    let requests = mock.requests();
    assert_eq!((requests[0]["model"].clone(), requests[1]["model"].clone()), (json!("gpt-test"), json!("gpt-other")));
    assert_eq!(requests[1]["messages"][0], json!({ "role": "system", "content": "Answer in French." }));
    let (status, error) = gateway
        .request_as(&key, Method::PATCH, &format!("{path}/{human}/agent"), Some(&json!({ "model": "gpt-test" })))
        .await?;
    assert_eq!((status, str_of(&error["error"]["code"])), (400, "not_an_agent".to_owned()), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_needs_approval_waits_for_an_owner_and_times_out_as_denied() -> anyhow::Result<()> {
    let (gateway, _mock) = gateway_with(
        vec![
            calculator_call("call_1", "6 * 7"),
            text("It is 42."),
            calculator_call("call_2", "1 / 0"),
            text("I may not."),
            calculator_call("call_3", "2 + 2"),
            text("No answer came."),
        ],
        json!({ "tools": { "require_approval": ["calculator"] } }),
    )
    .await?;
    let (ada, key) = gateway.account("ada", "user").await?;
    let (_, bob_key) = gateway.account("bob", "user").await?;
    let created = gateway
        .create_conversation_as(
            &key,
            json!({ "kind": "multi_party", "participants": [
                { "kind": "user", "display_name": "ada" },
                { "kind": "user", "display_name": "bob", "account_id": gateway.request_as(&bob_key, Method::GET, "/v1/me", None).await?.1["id"] },
                { "kind": "agent", "display_name": "calc" },
            ] }),
        )
        .await?;
    let _ = ada;
    let id = str_of(&created["id"]);
    let mut owner = gateway.connect_as(&key).await?;
    owner.subscribe(&id, 0).await?;
    let mut member = gateway.connect_as(&bob_key).await?;
    member.subscribe(&id, 0).await?;

    // The owner gets the request and allows it over the socket; the member never sees it.
    owner.send(json!({ "type": "send", "conversation_id": id, "content": "@calc 6 * 7?" })).await?;
    let asked = owner.recv_until(|f| f["event"]["type"] == "approval_requested").await?;
    let request = &asked[asked.len() - 1]["event"];
    assert_eq!((request["tool_call_id"].clone(), request["tool_name"].clone()), (json!("call_1"), json!("calculator")));
    assert_eq!(request["arguments"], json!({ "expression": "6 * 7" }));
    let (_, pending) =
        gateway.request_as(&key, Method::GET, &format!("/v1/conversations/{id}/approvals"), None).await?;
    assert_eq!(pending[0]["tool_call_id"], "call_1", "{pending}");
    let (status, _) =
        gateway.request_as(&bob_key, Method::GET, &format!("/v1/conversations/{id}/approvals"), None).await?;
    assert_eq!(status, 403, "members do not answer approvals");
    owner.send(json!({ "type": "approve", "id": "a1", "conversation_id": id, "tool_call_id": "call_1", "decision": "allow" })).await?;
    let frames = owner.recv_until(is_agent_end).await?;
    assert!(frames.iter().any(|f| f["type"] == "ack" && f["id"] == "a1"));
    let result = frames.iter().find(|f| f["event"]["type"] == "tool_execution_end").cloned().unwrap_or_default();
    assert_eq!(result["event"]["is_error"], false, "{result}");
    let seen = member.recv_until(is_agent_end).await?;
    assert!(!seen.iter().any(|f| f["event"]["type"] == "approval_requested"), "{seen:?}");

    // Denied over REST with a reason, which the model is told.
    owner.send(json!({ "type": "send", "conversation_id": id, "content": "@calc 1 / 0?" })).await?;
    owner.recv_until(|f| f["event"]["type"] == "approval_requested").await?;
    let answer = format!("/v1/conversations/{id}/approvals/call_2");
    let (status, _) = gateway
        .request_as(&key, Method::POST, &answer, Some(&json!({ "decision": "deny", "reason": "no dividing by zero" })))
        .await?;
    assert_eq!(status, 204);
    let frames = owner.recv_until(is_agent_end).await?;
    let result = frames.iter().find(|f| f["event"]["type"] == "tool_execution_end").cloned().unwrap_or_default();
    let content = result["event"]["message"]["content"][0]["content"].as_str().unwrap_or_default().to_owned();
    assert_eq!((result["event"]["is_error"].clone(), content.as_str()), (json!(true), "denied: no dividing by zero"));
    let (status, gone) = gateway.request_as(&key, Method::POST, &answer, Some(&json!({ "decision": "allow" }))).await?;
    assert_eq!((status, str_of(&gone["error"]["code"])), (404, "approval_not_found".to_owned()));

    // Nobody answers: denied when the conversation's approval_timeout_ms runs out.
    let (status, _) = gateway
        .request_as(
            &key,
            Method::PATCH,
            &format!("/v1/conversations/{id}"),
            Some(&json!({ "options": { "approval_timeout_ms": 300 } })),
        )
        .await?;
    assert_eq!(status, 200);
    owner.send(json!({ "type": "send", "conversation_id": id, "content": "@calc 2 + 2?" })).await?;
    let frames = owner.recv_until(is_agent_end).await?;
    let result = frames.iter().find(|f| f["event"]["type"] == "tool_execution_end").cloned().unwrap_or_default();
    let content = result["event"]["message"]["content"][0]["content"].as_str().unwrap_or_default().to_owned();
    assert!(content.starts_with("denied: no approval within 300ms"), "{content}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_is_online_and_who_is_typing_reach_the_others() -> anyhow::Result<()> {
    let (gateway, _mock) = gateway_with(vec![], json!({})).await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let (bob, bob_key) = gateway.account("bob", "user").await?;
    let created = gateway
        .create_conversation_as(
            &key,
            json!({ "kind": "multi_party", "participants": [
                { "kind": "user", "display_name": "ada" },
                { "kind": "user", "display_name": "bob", "account_id": bob },
            ] }),
        )
        .await?;
    let id = str_of(&created["id"]);
    let pid = |name: &str| {
        created["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["display_name"] == name))
            .map(|p| str_of(&p["id"]))
            .unwrap_or_default()
    };
    let mut ada = gateway.connect_as(&key).await?;
    ada.send(json!({ "type": "subscribe", "conversation_id": id })).await?;
    assert_eq!(ada.recv().await?["type"], "ack");
    assert_eq!(ada.recv().await?, json!({ "type": "presence", "conversation_id": id, "online": [pid("ada")] }));

    // Bob comes online: he is told who is there, Ada is told he came.
    let mut bob = gateway.connect_as(&bob_key).await?;
    bob.send(json!({ "type": "subscribe", "conversation_id": id })).await?;
    assert_eq!(bob.recv().await?["type"], "ack");
    let presence = bob.recv().await?;
    let mut online: Vec<String> =
        presence["online"].as_array().map(|o| o.iter().map(str_of).collect()).unwrap_or_default();
    online.sort();
    let mut both = vec![pid("ada"), pid("bob")];
    both.sort();
    assert_eq!(online, both);
    let came = ada.recv().await?;
    assert_eq!(came["event"], json!({ "type": "participant_presence", "participant_id": pid("bob"), "online": true }));
    assert!(came["seq"].is_null(), "presence is ephemeral: {came}");

    // Bob types: Ada sees it, Bob gets an ack; nothing is stored.
    let last_seq = gateway.last_seq(&id).await?;
    bob.send(json!({ "type": "typing", "id": "t", "conversation_id": id })).await?;
    assert_eq!(bob.recv().await?["type"], "ack");
    let typing = ada.recv().await?;
    assert_eq!(typing["event"], json!({ "type": "participant_typing", "participant_id": pid("bob") }));
    assert_eq!(gateway.last_seq(&id).await?, last_seq);

    // Bob subscribes again on the same connection: he never went offline, so Ada hears nothing.
    bob.send(json!({ "type": "subscribe", "conversation_id": id, "after_seq": last_seq })).await?;
    bob.recv_until(|f| f["type"] == "ack").await?;
    assert_eq!(bob.recv().await?["type"], "presence");
    ada.send(json!({ "type": "ping", "id": "p" })).await?;
    assert_eq!(ada.recv().await?, json!({ "type": "pong", "id": "p" }), "no offline/online flicker");

    // Bob goes away: Ada is told.
    drop(bob);
    let gone = ada.recv().await?;
    assert_eq!(gone["event"], json!({ "type": "participant_presence", "participant_id": pid("bob"), "online": false }));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_tools_providers_metrics_readiness_and_request_ids() -> anyhow::Result<()> {
    let (gateway, _mock) =
        gateway_with(vec![calculator_call("call_1", "6 * 7"), text("The answer is 42.")], json!({})).await?;
    let (_, key) = gateway.account("ada", "user").await?;
    let (_, bob_key) = gateway.account("bob", "user").await?;
    let id = str_of(&gateway.create_conversation_as(&key, json!({})).await?["id"]);
    send_and_wait(&gateway, &key, &id, "What is six times seven?").await?;
    let bobs = str_of(&gateway.create_conversation_as(&bob_key, json!({})).await?["id"]);
    let (status, _) = gateway
        .request_as(
            &bob_key,
            Method::POST,
            &format!("/v1/conversations/{bobs}/messages"),
            Some(&json!({ "content": "six times seven, privately", "queue": true })),
        )
        .await?;
    assert_eq!(status, 202);

    // Search finds the caller's messages only.
    let (status, found) = gateway.request_as(&key, Method::GET, "/v1/search?q=seven", None).await?;
    assert_eq!(status, 200, "{found}");
    let hits: Vec<String> = found["messages"]
        .as_array()
        .map(|h| h.iter().map(|h| str_of(&h["conversation_id"])).collect())
        .unwrap_or_default();
    assert_eq!(hits, std::slice::from_ref(&id), "{found}");
    let (status, error) = gateway.request_as(&key, Method::GET, "/v1/search", None).await?;
    assert_eq!((status, str_of(&error["error"]["code"])), (400, "invalid_query".to_owned()));

    // Discovery.
    let (_, tools) = gateway.request_as(&key, Method::GET, "/v1/tools", None).await?;
    let calculator =
        tools.as_array().and_then(|t| t.iter().find(|t| t["name"] == "calculator")).cloned().unwrap_or_default();
    assert_eq!(calculator["parameters"]["type"], "object", "{calculator}");
    assert!(calculator["description"].as_str().is_some_and(|d| !d.is_empty()));
    let (_, providers) = gateway.request_as(&key, Method::GET, "/v1/providers", None).await?;
    let mock = providers.as_array().and_then(|p| p.iter().find(|p| p["name"] == "mock")).cloned().unwrap_or_default();
    assert_eq!(
        (mock["kind"].clone(), mock["models"].clone()),
        (json!("openai_compatible"), json!(["gpt-test", "gpt-other"])),
        "{providers}"
    );
    assert!(!providers.to_string().contains("sk-test-secret"), "no secrets: {providers}");

    // Metrics, in Prometheus' text format.
    let metrics = gateway.http().get(gateway.url("/metrics")).send().await?.text().await?;
    for name in [
        "colloquy_turns_total{stop_reason=\"end_turn\"}",
        "colloquy_llm_request_seconds",
        "colloquy_llm_time_to_first_token_seconds",
        "colloquy_llm_input_tokens_total{provider=\"mock\",model=\"gpt-test\"}",
        "colloquy_tool_calls_total{tool=\"calculator\"",
        "colloquy_tool_call_seconds",
        "colloquy_store_append_seconds",
        "colloquy_ws_connections",
        "colloquy_queued_prompts",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }

    // x-request-id: taken when sent, made when not, echoed in error bodies.
    let response = gateway
        .http()
        .get(gateway.url("/v1/conversations/nope"))
        .bearer_auth(&key)
        .header("x-request-id", "req-abc-123")
        .send()
        .await?;
    assert_eq!(response.headers()["x-request-id"], "req-abc-123");
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["request_id"], "req-abc-123", "{body}");
    let response = gateway.http().get(gateway.url("/v1/me")).bearer_auth(&key).send().await?;
    let made = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(made.len() >= 16, "a request id is made: {made:?}");

    // Ready: the database answers and its schema is current.
    let (status, ready) = gateway.request_as("", Method::GET, "/readyz", None).await?;
    assert_eq!((status, ready["status"].clone()), (200, json!("ready")), "{ready}");
    Ok(())
}
