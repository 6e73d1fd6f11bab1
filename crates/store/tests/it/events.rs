//! Reading the event log and the message history after a seq.

use std::sync::Arc;

use colloquy_core_model::EventEnvelope;
use colloquy_store::{ConversationStore, MessageEvent, SeaStore};

use crate::fixtures::{self, text, turn_start};

pub async fn events_after_returns_exactly_the_later_events(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let (other, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let mut appended: Vec<EventEnvelope> = Vec::new();
    for request in 1..=10 {
        appended.push(store.append_event(id, turn_start(request)).await.unwrap());
        store.append_event(other.id, turn_start(request)).await.unwrap();
    }

    assert_eq!(store.events_after(id, 4, 100).await.unwrap(), appended[4..]);
    assert_eq!(store.events_after(id, 4, 3).await.unwrap(), appended[4..7]);
    assert_eq!(store.events_after(id, 0, 100).await.unwrap(), appended);
    assert!(store.events_after(id, 10, 100).await.unwrap().is_empty());
    assert!(store.events_after(id, 0, 0).await.unwrap().is_empty());
    assert_eq!(store.events_after(id, 0, u64::MAX).await.unwrap(), appended, "u64::MAX means no limit");
    assert!(store.events_after(id, u64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(store.messages_after(id, 0, u64::MAX).await.unwrap(), []);
}

pub async fn messages_after_pages_by_seq(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    for n in 1..=5 {
        store.append_event(id, turn_start(n)).await.unwrap();
        store.append_message(id, text(&format!("m{n}")), MessageEvent::Posted).await.unwrap();
    }

    // Page through with the last seq seen as the cursor.
    let mut pages = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.messages_after(id, cursor, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        pages.push(page.iter().map(|m| (m.seq, m.text())).collect::<Vec<_>>());
    }
    let expected: Vec<Vec<(u64, String)>> = vec![
        vec![(2, "m1".into()), (4, "m2".into())],
        vec![(6, "m3".into()), (8, "m4".into())],
        vec![(10, "m5".into())],
    ];
    assert_eq!(pages, expected);
}
