//! The authorization policy over every route and every frame, as a table: for each caller
//! (admin, the conversation's owner, a member, an observer, a service, a stranger, no key, a
//! bad key) what each route answers and what each frame gets. A route or frame without a row
//! fails the test, so new ones cannot slip through untested.

use std::collections::HashMap;

use colloquy_gateway::FRAMES;
use serde_json::{Value, json};

use crate::support::Gateway;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Admin,
    Owner,
    Member,
    Observer,
    Service,
    Stranger,
    NoKey,
    BadKey,
}

const EVERYONE: [Who; 8] =
    [Who::Admin, Who::Owner, Who::Member, Who::Observer, Who::Service, Who::Stranger, Who::NoKey, Who::BadKey];

/// A conversation made by the owner with everyone else in it, and the ids a table row needs.
struct World {
    gateway: Gateway,
    keys: HashMap<Who, String>,
    accounts: HashMap<Who, String>,
}

struct Conversation {
    id: String,
    /// Participant ids by who they belong to; `agent` is the owner's agent.
    participants: HashMap<&'static str, String>,
    /// A message of the owner's, which nothing answers.
    note: String,
    /// The note's seq.
    note_seq: u64,
}

impl World {
    async fn new() -> anyhow::Result<Self> {
        let gateway = Gateway::start(json!({ "discover_ollama": false, "agents": { "helper": {} } })).await?;
        let mut keys = HashMap::new();
        let mut accounts = HashMap::new();
        keys.insert(Who::Admin, gateway.admin_key.clone());
        for (who, name, kind) in [
            (Who::Owner, "owner", "user"),
            (Who::Member, "member", "user"),
            (Who::Observer, "observer", "user"),
            (Who::Service, "service", "service"),
            (Who::Stranger, "stranger", "user"),
        ] {
            let (account, key) = gateway.account(name, kind).await?;
            keys.insert(who, key);
            accounts.insert(who, account);
        }
        keys.insert(Who::NoKey, String::new());
        keys.insert(Who::BadKey, "ck_this-key-was-never-issued-by-anyone".to_owned());
        Ok(Self { gateway, keys, accounts })
    }

    fn key(&self, who: Who) -> &str {
        self.keys.get(&who).map_or("", String::as_str)
    }

    /// A fresh conversation, so that rows that change it do not affect each other.
    async fn conversation(&self) -> anyhow::Result<Conversation> {
        let body = json!({
            "kind": "multi_party",
            "participants": [
                { "kind": "user", "display_name": "owner" },
                { "kind": "user", "display_name": "member", "account_id": self.accounts[&Who::Member] },
                { "kind": "user", "display_name": "observer", "role": "observer", "account_id": self.accounts[&Who::Observer] },
                { "kind": "service", "display_name": "service", "account_id": self.accounts[&Who::Service] },
                { "kind": "agent", "display_name": "agent" },
            ],
        });
        let created = self.gateway.create_conversation_as(self.key(Who::Owner), body).await?;
        let mut participants = HashMap::new();
        for p in created["participants"].as_array().cloned().unwrap_or_default() {
            let name = match p["display_name"].as_str() {
                Some("owner") => "owner",
                Some("member") => "member",
                Some("observer") => "observer",
                Some("service") => "service",
                Some("agent") => "agent",
                _ => continue,
            };
            participants.insert(name, p["id"].as_str().unwrap_or_default().to_owned());
        }
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        // `wait`: answered once nothing runs (nothing answers it: it mentions no agent).
        let path = format!("/v1/conversations/{id}/messages?wait=true");
        let body = json!({ "content": "a note" });
        let (_, sent) =
            self.gateway.request_as(self.key(Who::Owner), reqwest::Method::POST, &path, Some(&body)).await?;
        let note = sent["message_id"].as_str().unwrap_or_default().to_owned();
        let note_seq = sent["seq"].as_u64().unwrap_or_default();
        Ok(Conversation { id, participants, note, note_seq })
    }
}

/// What a caller gets from a route: its status, and for errors the code.
type Outcome = (u16, &'static str);

/// Any authenticated caller gets `ok`.
fn anyone(ok: u16) -> impl Fn(Who) -> Outcome {
    move |who| match who {
        Who::NoKey | Who::BadKey => (401, "unauthenticated"),
        _ => (ok, ""),
    }
}

/// Anyone may call it, key or not.
fn public(_: Who) -> Outcome {
    (200, "")
}

/// Participants read; strangers are not told it exists.
fn reader(ok: u16) -> impl Fn(Who) -> Outcome {
    move |who| match who {
        Who::Admin | Who::Owner | Who::Member | Who::Observer | Who::Service => (ok, ""),
        Who::Stranger => (404, "conversation_not_found"),
        Who::NoKey | Who::BadKey => (401, "unauthenticated"),
    }
}

/// Owners, members and services post; observers may not.
fn poster(ok: u16) -> impl Fn(Who) -> Outcome {
    move |who| match who {
        Who::Observer => (403, "forbidden"),
        other => reader(ok)(other),
    }
}

/// Only owners (and admins) manage.
fn manager(ok: u16) -> impl Fn(Who) -> Outcome {
    move |who| match who {
        Who::Member | Who::Observer | Who::Service => (403, "forbidden"),
        other => reader(ok)(other),
    }
}

/// Only admins.
fn admin_only(ok: u16) -> impl Fn(Who) -> Outcome {
    move |who| match who {
        Who::Admin => (ok, ""),
        Who::NoKey | Who::BadKey => (401, "unauthenticated"),
        _ => (403, "forbidden"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_the_policy_says() -> anyhow::Result<()> {
    let world = World::new().await?;
    let routes = colloquy_gateway::routes();
    assert!(routes.len() > 30, "the routes come from the OpenAPI description: {routes:?}");
    for (method, path) in &routes {
        for who in EVERYONE {
            let c = world.conversation().await?;
            let key = world.key(who).to_owned();
            let message = c.note.clone();
            let key_id = if path == "/v1/keys/{id}" {
                // A key of its own for each row, so no row locks the next one out.
                let name = format!("doomed-{who:?}-{}", c.id).to_lowercase();
                let (_, secret) = world.gateway.account(&name, "user").await?;
                let (_, me) = world.gateway.request_as(&secret, reqwest::Method::GET, "/v1/me", None).await?;
                let (_, keys) = world.gateway.get("/v1/keys").await?;
                keys.as_array()
                    .and_then(|keys| keys.iter().rev().find(|k| k["account"] == me["id"]))
                    .and_then(|k| k["id"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            } else {
                String::new()
            };
            let agent = json!({ "provider": "unconfigured", "model": "none", "tools": [] });
            let (expect, body): (Box<dyn Fn(Who) -> Outcome>, Option<Value>) = match (method.as_str(), path.as_str()) {
                (
                    "GET",
                    "/healthz"
                    | "/readyz"
                    | "/openapi.json"
                    | "/metrics"
                    | "/.well-known/agent-card.json"
                    | "/a2a/agents/{name}/.well-known/agent-card.json"
                    | "/"
                    | "/assets/{*path}",
                ) => (Box::new(public), None),
                // A2A: posting into the conversation (its contextId), as `send` would.
                ("POST", "/a2a/v1") => (
                    Box::new(poster(200)),
                    Some(json!({ "jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                        "message": { "messageId": format!("a2a-{who:?}"), "contextId": c.id, "role": "ROLE_USER", "parts": [{ "text": "hi" }] },
                        "configuration": { "returnImmediately": true },
                    } })),
                ),
                // A named agent: without a contextId, a new conversation of the caller's.
                ("POST", "/a2a/agents/{name}") => (
                    Box::new(anyone(200)),
                    Some(json!({ "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {
                        "message": { "messageId": format!("helper-{who:?}-{}", c.id), "kind": "message", "role": "user",
                            "parts": [{ "kind": "text", "text": "hi" }] },
                        "configuration": { "blocking": false },
                    } })),
                ),
                ("GET", "/v1/ws") => (Box::new(anyone(101)), None),
                ("GET", "/v1/me" | "/v1/search" | "/v1/tools" | "/v1/providers" | "/v1/conversations") => {
                    (Box::new(anyone(200)), None)
                }
                ("POST", "/v1/conversations") => (Box::new(anyone(201)), Some(json!({}))),
                ("POST", "/v1/accounts") => {
                    let name = format!("new-{who:?}-{}", c.id).to_lowercase();
                    (Box::new(admin_only(201)), Some(json!({ "name": name, "kind": "user" })))
                }
                ("GET", "/v1/accounts" | "/v1/keys") => (Box::new(admin_only(200)), None),
                ("POST", "/v1/accounts/{id}/keys") => (Box::new(admin_only(201)), Some(json!({}))),
                ("DELETE", "/v1/keys/{id}") => (Box::new(admin_only(204)), None),
                ("GET", "/v1/conversations/{id}")
                | ("GET", "/v1/conversations/{id}/with-messages")
                | ("GET", "/v1/conversations/{id}/export")
                | ("GET", "/v1/conversations/{id}/messages")
                | ("GET", "/v1/conversations/{id}/events")
                | ("GET", "/v1/conversations/{id}/participants") => (Box::new(reader(200)), None),
                ("GET", "/v1/conversations/{id}/history") => (Box::new(reader(200)), None),
                ("PATCH", "/v1/conversations/{id}") => (Box::new(manager(200)), Some(json!({ "title": "renamed" }))),
                ("DELETE", "/v1/conversations/{id}") => (Box::new(manager(204)), None),
                (
                    "POST",
                    "/v1/conversations/{id}/archive"
                    | "/v1/conversations/{id}/unarchive"
                    | "/v1/conversations/{id}/close",
                ) => (Box::new(manager(200)), None),
                ("POST", "/v1/conversations/{id}/fork") => (Box::new(poster(201)), None),
                ("POST", "/v1/conversations/{id}/cancel") => (Box::new(poster(200)), None),
                ("POST", "/v1/conversations/{id}/continue") => (Box::new(poster(202)), None),
                ("POST", "/v1/conversations/{id}/messages") => {
                    (Box::new(poster(202)), Some(json!({ "content": "hi" })))
                }
                ("PATCH", "/v1/conversations/{id}/messages/{message_id}") => (
                    // The owner's message: its sender (and admins) may change it, not the others.
                    Box::new(|who| match who {
                        Who::Member | Who::Service => (403, "forbidden"),
                        other => manager(200)(other),
                    }),
                    Some(json!({ "content": "an edited note" })),
                ),
                ("DELETE", "/v1/conversations/{id}/messages/{message_id}") => (
                    Box::new(|who| match who {
                        Who::Member | Who::Service => (403, "forbidden"),
                        other => manager(204)(other),
                    }),
                    None,
                ),
                ("POST", "/v1/conversations/{id}/participants") => {
                    (Box::new(manager(201)), Some(json!({ "kind": "agent", "display_name": "extra", "agent": agent })))
                }
                ("PATCH", "/v1/conversations/{id}/participants/{participant}") => {
                    (Box::new(manager(200)), Some(json!({ "role": "observer" })))
                }
                ("DELETE", "/v1/conversations/{id}/participants/{participant}") => (
                    // The member: its owner takes it out, or it leaves.
                    Box::new(|who| match who {
                        Who::Member => (204, ""),
                        other => manager(204)(other),
                    }),
                    None,
                ),
                ("PATCH", "/v1/conversations/{id}/participants/{participant}/agent") => {
                    (Box::new(manager(200)), Some(json!({ "system_prompt": "Be kind." })))
                }
                ("GET", "/v1/conversations/{id}/approvals") => (Box::new(manager(200)), None),
                ("POST", "/v1/conversations/{id}/approvals/{tool_call_id}") => (
                    // Nothing waits: an owner is told so; others are refused first.
                    Box::new(|who| match manager(204)(who) {
                        (204, _) => (404, "approval_not_found"),
                        other => other,
                    }),
                    Some(json!({ "decision": "allow" })),
                ),
                other => panic!("route {other:?} has no row in this table: add one"),
            };
            let participant =
                if path.ends_with("/agent") { &c.participants["agent"] } else { &c.participants["member"] };
            let url = path
                .replace("{id}", if path.starts_with("/v1/accounts") { &world.accounts[&Who::Stranger] } else { &c.id })
                .replace("{participant}", participant)
                .replace("{message_id}", &message)
                .replace("{tool_call_id}", "call_none")
                .replace("{name}", "helper")
                .replace("/v1/keys/{id}", &format!("/v1/keys/{key_id}"));
            let url = if path == "/v1/keys/{id}" { format!("/v1/keys/{key_id}") } else { url };
            let url = match path.as_str() {
                "/v1/search" => "/v1/search?q=hi".to_owned(),
                "/assets/{*path}" => "/assets/app.js".to_owned(),
                "/v1/conversations/{id}/history" => format!("{url}?max_tokens=1000"),
                _ => url,
            };
            let (status, reply) = if path == "/v1/ws" {
                crate::support::upgrade_status(world.gateway.connect_as(&key).await)
            } else {
                let method = reqwest::Method::from_bytes(method.as_bytes())?;
                world.gateway.request_as(&key, method, &url, body.as_ref()).await?
            };
            // A JSON-RPC refusal comes with 200 and the gateway's code at the front of its message.
            let (status, reply) = match reply["error"]["message"].as_str().and_then(|m| m.split_once(':')) {
                Some((code, _)) if path.starts_with("/a2a/") && status == 200 => {
                    let status = if code == "forbidden" { 403 } else { 404 };
                    (status, json!({ "error": { "code": code } }))
                }
                _ => (status, reply),
            };
            let (want_status, want_code) = expect(who);
            assert_eq!(status, want_status, "{method} {path} as {who:?}: {reply}");
            if !want_code.is_empty() {
                assert_eq!(reply["error"]["code"], want_code, "{method} {path} as {who:?}: {reply}");
            }
        }
    }
    Ok(())
}

/// Builds a row's frame for a conversation.
type FrameFor = Box<dyn Fn(&Conversation) -> Value>;
/// What each caller gets from a row's frame.
type ExpectFrame = fn(Who) -> Result<(), String>;

/// What a frame gets: `Ok(())` for its success reply, `Err(code)` for an error.
fn frame_outcome(reply: &Value) -> Result<(), String> {
    match reply["type"].as_str() {
        Some("error") => Err(reply["code"].as_str().unwrap_or_default().to_owned()),
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_gets_what_the_policy_says_for_each_caller() -> anyhow::Result<()> {
    let world = World::new().await?;
    for frame_type in FRAMES {
        // Each row: a frame (built from the conversation) and what each caller gets.
        let rows: Vec<(&str, FrameFor, ExpectFrame)> = match frame_type {
            "ping" => vec![("ping", Box::new(|_| json!({ "type": "ping", "id": "f" })), |_| Ok(()))],
            "subscribe" => vec![(
                "subscribe",
                Box::new(|c| json!({ "type": "subscribe", "id": "f", "conversation_id": c.id })),
                |who| if who == Who::Stranger { Err("conversation_not_found".into()) } else { Ok(()) },
            )],
            "unsubscribe" => vec![(
                "unsubscribe (never subscribed)",
                Box::new(|c| json!({ "type": "unsubscribe", "id": "f", "conversation_id": c.id })),
                |_| Err("not_subscribed".into()),
            )],
            "send" => vec![
                (
                    "send as oneself",
                    Box::new(|c| json!({ "type": "send", "id": "f", "conversation_id": c.id, "content": "hi" })),
                    |who| match who {
                        Who::Stranger => Err("conversation_not_found".into()),
                        Who::Observer => Err("forbidden".into()),
                        _ => Ok(()),
                    },
                ),
                (
                    "send as the owner's agent",
                    Box::new(
                        |c| json!({ "type": "send", "id": "f", "conversation_id": c.id, "content": "hi", "sender": c.participants["agent"] }),
                    ),
                    |who| match who {
                        Who::Admin | Who::Owner => Ok(()),
                        Who::Stranger => Err("conversation_not_found".into()),
                        _ => Err("forbidden".into()),
                    },
                ),
                (
                    "send as the member",
                    Box::new(
                        |c| json!({ "type": "send", "id": "f", "conversation_id": c.id, "content": "hi", "sender": c.participants["member"] }),
                    ),
                    |who| match who {
                        Who::Admin | Who::Member => Ok(()),
                        Who::Stranger => Err("conversation_not_found".into()),
                        _ => Err("forbidden".into()),
                    },
                ),
                (
                    "send as the service",
                    Box::new(
                        |c| json!({ "type": "send", "id": "f", "conversation_id": c.id, "content": "hi", "sender": c.participants["service"] }),
                    ),
                    |who| match who {
                        Who::Admin | Who::Service => Ok(()),
                        Who::Stranger => Err("conversation_not_found".into()),
                        _ => Err("forbidden".into()),
                    },
                ),
            ],
            "cancel" => {
                vec![("cancel", Box::new(|c| json!({ "type": "cancel", "id": "f", "conversation_id": c.id })), |who| {
                    match who {
                        Who::Stranger => Err("conversation_not_found".into()),
                        Who::Observer => Err("forbidden".into()),
                        _ => Ok(()),
                    }
                })]
            }
            "approve" => vec![(
                "approve (nothing waiting)",
                Box::new(
                    |c| json!({ "type": "approve", "id": "f", "conversation_id": c.id, "tool_call_id": "call_1", "decision": "allow" }),
                ),
                |who| match who {
                    Who::Admin | Who::Owner => Err("approval_not_found".into()),
                    Who::Stranger => Err("conversation_not_found".into()),
                    _ => Err("forbidden".into()),
                },
            )],
            "typing" => {
                vec![("typing", Box::new(|c| json!({ "type": "typing", "id": "f", "conversation_id": c.id })), |who| {
                    match who {
                        Who::Stranger => Err("conversation_not_found".into()),
                        // The admin takes no part; an observer may not post.
                        Who::Admin | Who::Observer => Err("forbidden".into()),
                        _ => Ok(()),
                    }
                })]
            }
            "edit" => vec![(
                "edit the owner's note",
                Box::new(
                    |c| json!({ "type": "edit", "id": "f", "conversation_id": c.id, "message_id": c.note, "content": "edited" }),
                ),
                |who| match who {
                    Who::Admin | Who::Owner => Ok(()),
                    Who::Stranger => Err("conversation_not_found".into()),
                    _ => Err("forbidden".into()),
                },
            )],
            other => panic!("frame `{other}` has no row in this table: add one"),
        };
        for (name, frame, expected) in rows {
            for who in [Who::Admin, Who::Owner, Who::Member, Who::Observer, Who::Service, Who::Stranger] {
                let conversation = world.conversation().await?;
                let mut client = world.gateway.connect_as(world.key(who)).await?;
                client.send(frame(&conversation)).await?;
                let reply = loop {
                    let reply = client.recv().await?;
                    if reply["id"] == "f" || reply["type"] == "error" {
                        break reply;
                    }
                };
                assert_eq!(frame_outcome(&reply), expected(who), "{name} as {who:?}: {reply}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_taken_out_stops_receiving_the_conversation() -> anyhow::Result<()> {
    let world = World::new().await?;
    let conversation = world.conversation().await?;
    let mut member = world.gateway.connect_as(world.key(Who::Member)).await?;
    member.subscribe(&conversation.id, conversation.note_seq).await?;
    let path = format!("/v1/conversations/{}/participants/{}", conversation.id, conversation.participants["member"]);
    let (status, _) = world.gateway.request_as(world.key(Who::Owner), reqwest::Method::DELETE, &path, None).await?;
    assert_eq!(status, 204);
    let left = member.recv().await?;
    assert_eq!(left["event"]["type"], "participant_left", "{left}");
    let ended = member.recv().await?;
    assert_eq!((ended["type"].clone(), ended["code"].clone()), (json!("error"), json!("forbidden")), "{ended}");
    // Later events do not reach it; it may not read or post any more.
    let mut owner = world.gateway.connect_as(world.key(Who::Owner)).await?;
    owner.send(json!({ "type": "send", "id": "o", "conversation_id": conversation.id, "content": "after" })).await?;
    member.send(json!({ "type": "ping", "id": "p" })).await?;
    assert_eq!(member.recv().await?, json!({ "type": "pong", "id": "p" }), "nothing of the conversation came first");
    member.send(json!({ "type": "subscribe", "id": "s", "conversation_id": conversation.id })).await?;
    assert_eq!(member.recv().await?["code"], "conversation_not_found");
    Ok(())
}

/// A service that is a remote A2A agent makes the gateway send requests to its `a2a_url`: only
/// admins may add one anywhere, others only under the URLs the operator allows
/// (`a2a_allowed_urls`). Its key is taken but never shown; a bad URL is a clear 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_add_remote_agents_unless_the_operator_allows_their_url() -> anyhow::Result<()> {
    let remote = |url: &str| {
        json!({ "kind": "multi_party", "participants": [
            { "kind": "user", "display_name": "me" },
            { "kind": "service", "display_name": "remote", "a2a_url": url, "a2a_key": "sekrit" },
        ] })
    };
    let inside = "http://10.0.0.7:8080/internal";
    for allowed in [json!([]), json!(["https://agents.example.com/"])] {
        let gateway = Gateway::start(json!({ "discover_ollama": false, "a2a_allowed_urls": allowed })).await?;
        let (_, user) = gateway.account("someone", "user").await?;
        let create = |key: String, body: Value| {
            let gateway = &gateway;
            async move { gateway.request_as(&key, reqwest::Method::POST, "/v1/conversations", Some(&body)).await }
        };
        let (status, reply) = create(user.clone(), remote(inside)).await?;
        assert_eq!(status, 403, "{reply}");
        assert!(reply["error"]["message"].as_str().unwrap_or_default().contains("a2a_allowed_urls"), "{reply}");
        let (status, reply) = create(gateway.admin_key.clone(), remote(inside)).await?;
        assert_eq!(status, 201, "an admin may: {reply}");
        assert!(!reply.to_string().contains("sekrit"), "the key is never shown: {reply}");
        let (status, reply) = create(user.clone(), remote("https://agents.example.com/helper")).await?;
        let want = if allowed.as_array().is_some_and(|a| a.is_empty()) { 403 } else { 201 };
        assert_eq!(status, want, "allowed {allowed}: {reply}");
        // Added later, the same rule holds.
        let (status, mine) = create(user.clone(), json!({})).await?;
        assert_eq!(status, 201, "{mine}");
        let path = format!("/v1/conversations/{}/participants", mine["id"].as_str().unwrap_or_default());
        let add = json!({ "kind": "service", "display_name": "remote", "a2a_url": inside });
        let (status, reply) = gateway.request_as(&user, reqwest::Method::POST, &path, Some(&add)).await?;
        assert_eq!(status, 403, "{reply}");
        for (bad, why) in [
            (json!({ "kind": "service", "display_name": "x", "a2a_url": "ftp://example.com" }), "not an http"),
            (json!({ "kind": "agent", "display_name": "x", "a2a_url": "https://example.com" }), "only a service"),
            (json!({ "kind": "service", "display_name": "x", "a2a_key": "k" }), "without an a2a_url"),
            (
                json!({ "kind": "service", "display_name": "x", "a2a_url": "https://example.com", "a2a_key": "k".repeat(5000) }),
                "at most 4096",
            ),
        ] {
            let (status, reply) = gateway.post(&path, &bad).await?;
            assert_eq!(status, 400, "{bad}: {reply}");
            assert!(reply["error"]["message"].as_str().unwrap_or_default().contains(why), "{bad}: {reply}");
        }
    }
    Ok(())
}
