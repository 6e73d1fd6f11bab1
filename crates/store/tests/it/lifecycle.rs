//! A conversation's life: forking at a seq, full-text search limited to one's conversations,
//! and the TTL sweeper.

use std::sync::Arc;
use std::time::Duration;

use colloquy_core_model::{
    ContentPart, ConversationId, ForkPoint, MessageRole, NewMessage, ParticipantId, ToolCallId, TurnEvent,
};
use colloquy_store::{ConversationStore, ConversationUpdate, MessageEvent, SeaStore, StoreError};
use serde_json::json;

use crate::fixtures::{self, text, turn_start};

pub async fn fork_copies_history_up_to_the_seq(store: Arc<SeaStore>) {
    let (source, participants) = fixtures::create_conversation(&store).await;
    let id = source.id;
    store
        .update_conversation(id, ConversationUpdate { tools: Some(vec!["weather".to_owned()]), ..Default::default() })
        .await
        .unwrap(); // seq 1
    store.append_message(id, text("one"), MessageEvent::Posted).await.unwrap(); // 2
    store.append_event(id, turn_start(1)).await.unwrap(); // 3
    store.append_message(id, text("two"), MessageEvent::Posted).await.unwrap(); // 4
    store.append_message(id, text("three"), MessageEvent::Posted).await.unwrap(); // 5

    let fork_id = ConversationId::new();
    let fork = store.fork_conversation(id, 4, fork_id).await.unwrap();
    assert_eq!(fork.id, fork_id);
    assert_eq!(fork.forked_from, Some(ForkPoint { conversation_id: id, seq: 4 }));
    assert_eq!((fork.last_seq, fork.totals.messages), (4, 2));
    assert_eq!(
        (fork.title.clone(), fork.tags.clone(), fork.options.clone()),
        (source.title, source.tags, source.options)
    );
    assert_eq!(store.conversation(fork_id).await.unwrap(), fork);
    assert_eq!(store.conversation_tools(fork_id).await.unwrap(), ["weather"]);

    let original = store.messages_after(id, 0, 10).await.unwrap();
    let copied = store.messages_after(fork_id, 0, 10).await.unwrap();
    assert_eq!(copied.len(), 2);
    for (copy, original) in copied.iter().zip(&original) {
        assert_ne!(copy.id, original.id, "copies get their own ids");
        assert_eq!((copy.conversation_id, copy.seq, copy.text()), (fork_id, original.seq, original.text()));
    }
    let events = store.events_after(fork_id, 0, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(events[1].event, TurnEvent::MessagePosted { message: copied[0].clone() }, "events carry the copies");
    let forked_participants = store.participants(fork_id).await.unwrap();
    assert_eq!(
        forked_participants.iter().map(|p| (p.id, p.conversation_id)).collect::<Vec<_>>(),
        participants.iter().map(|p| (p.id, fork_id)).collect::<Vec<_>>()
    );

    // The fork goes on from its own last seq; the source is untouched.
    assert_eq!(store.append_message(fork_id, text("diverge"), MessageEvent::Posted).await.unwrap().message.seq, 5);
    assert_eq!(store.conversation(id).await.unwrap().last_seq, 5);
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap(), original);

    // Forking at 0 copies only the configuration; beyond the end is refused.
    let empty = store.fork_conversation(id, 0, ConversationId::new()).await.unwrap();
    assert_eq!((empty.last_seq, empty.totals.messages), (0, 0));
    assert!(matches!(
        store.fork_conversation(id, 6, ConversationId::new()).await,
        Err(StoreError::SeqOutOfRange { seq: 6, last_seq: 5, .. })
    ));
    assert!(matches!(
        store.fork_conversation(ConversationId::new(), 0, ConversationId::new()).await,
        Err(StoreError::ConversationNotFound(_))
    ));
}

pub async fn search_finds_words_only_in_ones_conversations(store: Arc<SeaStore>) {
    let (mine, participants) = fixtures::create_conversation(&store).await;
    let (theirs, _) = fixtures::create_conversation(&store).await;
    let me = participants[0].id;
    // A message without text is not indexed, so index rows and message rows do not line up.
    let call = NewMessage::new(
        MessageRole::Assistant,
        vec![ContentPart::ToolCall { id: ToolCallId::from("c1"), name: "weather".to_owned(), arguments: json!({}) }],
    );
    store.append_message(mine.id, call, MessageEvent::Posted).await.unwrap();
    let weather =
        store.append_message(mine.id, text("The weather in Paris is sunny"), MessageEvent::Posted).await.unwrap();
    store.append_message(mine.id, text("Berlin is rainy today"), MessageEvent::Posted).await.unwrap();
    let later = store.append_message(mine.id, text("paris again, WEATHER again"), MessageEvent::Posted).await.unwrap();
    store.append_message(theirs.id, text("secret weather in Paris"), MessageEvent::Posted).await.unwrap();

    let hits = store.search_messages(me, "paris weather", 10).await.unwrap();
    assert_eq!(hits, [later.message.clone(), weather.message.clone()], "every word, any case, newest first");
    assert_eq!(store.search_messages(me, "paris weather", 1).await.unwrap(), [later.message]);
    assert!(store.search_messages(me, "paris london", 10).await.unwrap().is_empty());
    // Query syntax is text: no operator reaches the index.
    assert_eq!(store.search_messages(me, "\"rainy\" -( today*", 10).await.unwrap().len(), 1);
    assert!(store.search_messages(me, "  *  ", 10).await.unwrap().is_empty());
    assert!(store.search_messages(ParticipantId::new(), "paris", 10).await.unwrap().is_empty());

    // After leaving, the conversation is no longer searched.
    store.remove_participant(mine.id, me).await.unwrap();
    assert!(store.search_messages(me, "paris", 10).await.unwrap().is_empty());
}

pub async fn sweeper_deletes_inactive_conversations_but_not_archived_ones(store: Arc<SeaStore>) {
    let day = Duration::from_secs(24 * 60 * 60);
    let (idle, _) = fixtures::create_conversation(&store).await;
    let (archived, _) = fixtures::create_conversation(&store).await;
    let (deadline, _) = fixtures::create_conversation(&store).await;
    store.archive_conversation(archived.id).await.unwrap();
    let soon = chrono::Utc::now() + chrono::Duration::minutes(5);
    store
        .update_conversation(deadline.id, ConversationUpdate { expires_at: Some(Some(soon)), ..Default::default() })
        .await
        .unwrap();
    store.append_message(idle.id, text("last words"), MessageEvent::Posted).await.unwrap();

    // Nothing is idle for a day yet, and the deadline has not come.
    assert!(store.sweep_expired(chrono::Utc::now(), day).await.unwrap().is_empty());

    // Ten minutes on: only the deadline has passed.
    let later = chrono::Utc::now() + chrono::Duration::minutes(10);
    assert_eq!(store.sweep_expired(later, day).await.unwrap(), [deadline.id]);

    // A day and a minute on: the idle one goes, the archived one stays.
    let tomorrow = chrono::Utc::now() + chrono::Duration::hours(24) + chrono::Duration::minutes(1);
    assert_eq!(store.sweep_expired(tomorrow, day).await.unwrap(), [idle.id]);
    assert!(matches!(store.conversation(idle.id).await, Err(StoreError::ConversationNotFound(_))));
    assert!(store.messages_after(idle.id, 0, 10).await.unwrap().is_empty());
    assert!(store.conversation(archived.id).await.is_ok());

    // A shorter inactivity is a setting, not a code change.
    let (fresh, _) = fixtures::create_conversation(&store).await;
    let in_two_hours = chrono::Utc::now() + chrono::Duration::hours(2);
    assert_eq!(store.sweep_expired(in_two_hours, Duration::from_secs(3600)).await.unwrap(), [fresh.id]);
}
