//! A multi-party conversation over the gateway: a human and two agents, agents answering when
//! @mentioned, also by each other.

use serde_json::{Value, json};

use crate::support::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_answer_their_mentions_and_can_hand_over_to_each_other() -> anyhow::Result<()> {
    let gateway = Gateway::start(json!({
        "providers": { "demo": { "kind": "scripted", "replies": ["@bob over to you.", "Bob here, done."] } },
        "agent": { "provider": "demo", "tools": [] },
    }))
    .await?;
    let created = gateway
        .create_conversation(json!({
            "kind": "multi_party",
            "participants": [
                { "kind": "user", "display_name": "ada", "role": "owner" },
                { "kind": "agent", "display_name": "alice" },
                { "kind": "agent", "display_name": "bob" },
            ],
        }))
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let names: Vec<(String, String)> = created["participants"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["id"].as_str().unwrap_or_default().to_owned(),
                        p["display_name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let name_of =
        |id: &Value| names.iter().find(|(pid, _)| id == pid.as_str()).map(|(_, n)| n.clone()).unwrap_or_default();

    let mut client = gateway.connect().await?;
    client.send(json!({ "type": "subscribe", "conversation_id": id })).await?;
    client.send(json!({ "type": "send", "conversation_id": id, "content": "Nobody needs to answer this." })).await?;
    client.send(json!({ "type": "send", "conversation_id": id, "content": "@alice can you start?" })).await?;
    let ends = std::cell::Cell::new(0);
    let frames = client
        .recv_until(|f| {
            if f["event"]["type"] == "agent_end" {
                ends.set(ends.get() + 1);
            }
            ends.get() == 2
        })
        .await?;
    let said: Vec<(String, String)> = frames
        .iter()
        .filter(|f| matches!(f["event"]["type"].as_str(), Some("message_posted" | "message_end")))
        .map(|f| {
            let message = &f["event"]["message"];
            (name_of(&message["sender"]), message["content"][0]["text"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        said,
        [
            ("ada".to_owned(), "Nobody needs to answer this.".to_owned()),
            ("ada".to_owned(), "@alice can you start?".to_owned()),
            ("alice".to_owned(), "@bob over to you.".to_owned()),
            ("bob".to_owned(), "Bob here, done.".to_owned()),
        ]
    );
    Ok(())
}
