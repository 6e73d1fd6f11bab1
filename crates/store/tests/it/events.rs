//! Reading the event log and the message history after a seq.

use std::sync::Arc;

use colloquy_core_model::{EventEnvelope, MessageRole, TurnEvent, TurnId};
use colloquy_store::{Append, AppendOptions, ConversationStore, MessageEvent, SeaStore, StoreError};

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

/// The `events` rows of a conversation as stored: kind, whether the payload holds a message, and
/// whether the row refers to one.
async fn raw_rows(store: &SeaStore, conversation: colloquy_core_model::ConversationId) -> Vec<(String, bool, bool)> {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = store.connection().get_database_backend();
    let rows = store
        .connection()
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => {
                    "SELECT kind, payload, message_id FROM events WHERE conversation_id = $1 ORDER BY seq"
                }
                _ => "SELECT kind, payload, message_id FROM events WHERE conversation_id = ? ORDER BY seq",
            },
            [conversation.as_uuid().into()],
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("", "kind").unwrap();
            let payload: serde_json::Value = row.try_get("", "payload").unwrap();
            let message_id: Option<uuid::Uuid> = row.try_get("", "message_id").unwrap();
            (kind, payload.get("message").is_some(), message_id.is_some())
        })
        .collect()
}

pub async fn message_content_is_stored_once_and_the_log_reads_back_whole(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let posted = store.append_message(id, text("stored once"), MessageEvent::Posted).await.unwrap();
    let turn = TurnId::new();
    let mut reply = text("the reply");
    reply.role = MessageRole::Assistant;
    let batch = vec![
        Append::Event(turn_start(1)),
        Append::Message(reply, MessageEvent::End { turn_id: turn }),
        Append::Event(TurnEvent::TurnEnd { turn_id: turn, request: 1 }),
    ];
    let written = store.append_batch(id, batch, AppendOptions::default()).await.unwrap();
    assert_eq!(written.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(2), Some(3), Some(4)]);

    // The rows refer to their messages instead of copying them ...
    assert_eq!(
        raw_rows(&store, id).await,
        [
            ("message_posted".to_owned(), false, true),
            ("turn_start".to_owned(), false, false),
            ("message_end".to_owned(), false, true),
            ("turn_end".to_owned(), false, false),
        ]
    );
    // ... and the log reads back exactly what was published.
    let mut log = vec![posted.event.clone().unwrap()];
    log.extend(written.clone());
    assert_eq!(store.events_after(id, 0, 100).await.unwrap(), log);

    // Removing a message puts its copy back into the events that recorded it.
    store.remove_messages(id, &[posted.message.id]).await.unwrap();
    assert_eq!(raw_rows(&store, id).await[0], ("message_posted".to_owned(), true, false));
    let replayed = store.events_after(id, 0, 100).await.unwrap();
    assert_eq!(replayed[..4], log[..]);
    assert!(matches!(replayed[4].event, TurnEvent::MessageRemoved { .. }));
}

pub async fn a_batch_for_a_closed_conversation_fails_alone_in_its_group(store: Arc<SeaStore>) {
    let (open, _) = fixtures::create_conversation(&store).await;
    let (closed, _) = fixtures::create_conversation(&store).await;
    fixtures::set_status(&store, closed.id, "closed").await;
    // Sent together, so the writer may put them in one transaction: the refused one rolls back
    // only its own savepoint.
    let message = |body: &str| vec![Append::Message(text(body), MessageEvent::Posted)];
    let (refused, accepted) = tokio::join!(
        store.append_batch(closed.id, message("refused"), AppendOptions::default()),
        store.append_batch(open.id, message("accepted"), AppendOptions { fence: None, sync: true }),
    );
    assert!(matches!(refused, Err(StoreError::ConversationNotActive(_))), "{refused:?}");
    assert_eq!(accepted.unwrap().len(), 1);
    assert_eq!(store.messages_after(open.id, 0, 10).await.unwrap().len(), 1);
    assert!(store.messages_after(closed.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.conversation(closed.id).await.unwrap().last_seq, 0);
}
