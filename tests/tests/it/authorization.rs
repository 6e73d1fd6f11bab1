//! The authorization policy over every route and every frame, as a table: for each caller
//! (admin, the conversation's owner, a member, an observer, a service, a stranger, no key, a
//! bad key) what each route answers and what each frame gets. A route or frame without a row
//! fails the test, so new ones cannot slip through untested.

use std::collections::HashMap;

use colloquy_gateway::{FRAMES, ROUTES};
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
}

impl World {
    async fn new() -> anyhow::Result<Self> {
        let gateway = Gateway::start(json!({ "discover_ollama": false })).await?;
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
        Ok(Conversation { id: created["id"].as_str().unwrap_or_default().to_owned(), participants })
    }
}

/// What a caller gets from a route: its HTTP status.
type Expect = fn(Who) -> u16;

fn conversation_reader(who: Who) -> u16 {
    match who {
        Who::Admin | Who::Owner | Who::Member | Who::Observer | Who::Service => 200,
        // Not told whether it exists.
        Who::Stranger => 404,
        Who::NoKey | Who::BadKey => 401,
    }
}

fn admin_only(ok: u16) -> impl Fn(Who) -> u16 {
    move |who| match who {
        Who::Admin => ok,
        Who::NoKey | Who::BadKey => 401,
        _ => 403,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_the_policy_says() -> anyhow::Result<()> {
    let world = World::new().await?;
    let mut covered = Vec::new();
    for (method, path) in ROUTES {
        covered.push((method, path));
        for who in EVERYONE {
            let conversation = world.conversation().await?;
            let key = world.key(who).to_owned();
            let member = conversation.participants["member"].clone();
            let (status, expected, body) = match (method, path) {
                ("GET", "/healthz") | ("GET", "/readyz") => {
                    let (status, _) = world.gateway.request_as(&key, reqwest::Method::GET, path, None).await?;
                    (status, 200, Value::Null)
                }
                ("GET", "/v1/ws") => {
                    let (status, body) = crate::support::upgrade_status(world.gateway.connect_as(&key).await);
                    let expected = if matches!(who, Who::NoKey | Who::BadKey) { 401 } else { 101 };
                    (status, expected, body)
                }
                ("GET", "/v1/me") => {
                    let (status, body) = world.gateway.request_as(&key, reqwest::Method::GET, path, None).await?;
                    (status, if matches!(who, Who::NoKey | Who::BadKey) { 401 } else { 200 }, body)
                }
                ("POST", "/v1/conversations") => {
                    let (status, body) =
                        world.gateway.request_as(&key, reqwest::Method::POST, path, Some(&json!({}))).await?;
                    (status, if matches!(who, Who::NoKey | Who::BadKey) { 401 } else { 201 }, body)
                }
                ("GET", "/v1/conversations/{id}") | ("GET", "/v1/conversations/{id}/messages") => {
                    let path = path.replace("{id}", &conversation.id);
                    let (status, body) = world.gateway.request_as(&key, reqwest::Method::GET, &path, None).await?;
                    (status, (conversation_reader as Expect)(who), body)
                }
                ("DELETE", "/v1/conversations/{id}/participants/{participant}") => {
                    let path = path.replace("{id}", &conversation.id).replace("{participant}", &member);
                    let (status, body) = world.gateway.request_as(&key, reqwest::Method::DELETE, &path, None).await?;
                    let expected = match who {
                        // The owner manages; the member may take itself out.
                        Who::Admin | Who::Owner | Who::Member => 204,
                        Who::Observer | Who::Service => 403,
                        Who::Stranger => 404,
                        Who::NoKey | Who::BadKey => 401,
                    };
                    (status, expected, body)
                }
                ("POST", "/v1/accounts") => {
                    let name = format!("new-{who:?}-{}", conversation.id).to_lowercase();
                    let body = json!({ "name": name, "kind": "user" });
                    let (status, body) =
                        world.gateway.request_as(&key, reqwest::Method::POST, path, Some(&body)).await?;
                    (status, admin_only(201)(who), body)
                }
                ("GET", "/v1/accounts") | ("GET", "/v1/keys") => {
                    let (status, body) = world.gateway.request_as(&key, reqwest::Method::GET, path, None).await?;
                    (status, admin_only(200)(who), body)
                }
                ("POST", "/v1/accounts/{id}/keys") => {
                    let path = path.replace("{id}", &world.accounts[&Who::Stranger]);
                    let (status, body) =
                        world.gateway.request_as(&key, reqwest::Method::POST, &path, Some(&json!({}))).await?;
                    (status, admin_only(201)(who), body)
                }
                ("DELETE", "/v1/keys/{id}") => {
                    // A key of its own for each row, so no row locks the next one out.
                    let name = format!("doomed-{who:?}-{}", conversation.id).to_lowercase();
                    let (_, secret) = world.gateway.account(&name, "user").await?;
                    let (_, me) = world.gateway.request_as(&secret, reqwest::Method::GET, "/v1/me", None).await?;
                    let (_, keys) = world.gateway.get("/v1/keys").await?;
                    let id = keys
                        .as_array()
                        .and_then(|keys| keys.iter().rev().find(|k| k["account"] == me["id"]))
                        .and_then(|k| k["id"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let path = path.replace("{id}", &id);
                    let (status, body) = world.gateway.request_as(&key, reqwest::Method::DELETE, &path, None).await?;
                    (status, admin_only(204)(who), body)
                }
                other => panic!("route {other:?} has no row in this table: add one"),
            };
            assert_eq!(status, expected, "{method} {path} as {who:?}: {body}");
            if status >= 400 {
                let code = body["error"]["code"].as_str().unwrap_or_default();
                let expected_code = match status {
                    401 => "unauthenticated",
                    403 => "forbidden",
                    404 => "conversation_not_found",
                    _ => code,
                };
                assert_eq!(code, expected_code, "{method} {path} as {who:?}: {body}");
            }
        }
    }
    assert_eq!(covered.len(), ROUTES.len());
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
    member.subscribe(&conversation.id, 0).await?;
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
