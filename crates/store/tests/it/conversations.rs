//! Creating and reading conversations and their participants.

use std::sync::Arc;

use colloquy_core_model::{
    ConversationId, ConversationStatus, ParticipantId, ParticipantKind, ParticipantRole, Totals,
};
use colloquy_store::{ConversationStore, NewParticipant, SeaStore, StoreError};

use crate::fixtures::{self, text, turn_start};

pub async fn created_conversation_reads_back(store: Arc<SeaStore>) {
    let new = fixtures::new_conversation();
    let (created, participants) = store.create_conversation(new.clone()).await.unwrap();

    assert_eq!(created.id, new.id);
    assert_eq!(created.kind, new.kind);
    assert_eq!(created.status, ConversationStatus::Active);
    assert_eq!(created.title, new.title);
    assert_eq!(created.tags, new.tags);
    assert_eq!(created.options, new.options);
    assert_eq!(created.last_seq, 0);
    assert_eq!(created.totals, Totals::default());
    assert_eq!(created.created_at, created.last_activity);
    assert_eq!(created.forked_from, None);
    assert_eq!(created.expires_at, None);

    assert_eq!(store.conversation(new.id).await.unwrap(), created);
    assert_eq!(store.participants(new.id).await.unwrap(), participants);
    assert_eq!(participants.len(), 2);
    assert_eq!(participants[1].agent, new.participants[1].agent);
    assert!(participants.iter().all(|p| p.conversation_id == new.id && p.joined_at == created.created_at));
}

pub async fn participants_list_in_join_order(store: Arc<SeaStore>) {
    // Ids are time-ordered: minting the first participant's id last shows that the list follows
    // join order, not id order.
    let later = ParticipantId::new();
    let earlier = ParticipantId::new();
    let mut new = fixtures::new_conversation();
    new.participants = [(later, "first"), (earlier, "second"), (ParticipantId::new(), "third")]
        .into_iter()
        .map(|(id, name)| NewParticipant {
            account: None,
            a2a_url: None,
            a2a_key: None,
            id,
            kind: ParticipantKind::User,
            display_name: name.to_owned(),
            role: ParticipantRole::Member,
            agent: None,
        })
        .collect();
    store.create_conversation(new.clone()).await.unwrap();

    let names: Vec<String> = store.participants(new.id).await.unwrap().into_iter().map(|p| p.display_name).collect();
    assert_eq!(names, ["first", "second", "third"]);
}

pub async fn participants_of_several_conversations_come_in_one_call(store: Arc<SeaStore>) {
    let a = fixtures::create_conversation(&store).await.0.id;
    let b = fixtures::create_conversation(&store).await.0.id;
    let other = fixtures::create_conversation(&store).await.0.id;
    let together = store.participants_of(&[b, a]).await.unwrap();
    for id in [a, b] {
        let theirs: Vec<_> = together.iter().filter(|p| p.conversation_id == id).cloned().collect();
        assert_eq!(theirs, store.participants(id).await.unwrap(), "each conversation's, in join order");
    }
    assert!(together.iter().all(|p| p.conversation_id != other));
    assert!(store.participants_of(&[]).await.unwrap().is_empty());
}

pub async fn unknown_conversation_is_not_found(store: Arc<SeaStore>) {
    fixtures::create_conversation(&store).await;
    let unknown = ConversationId::new();

    assert!(matches!(
        store.conversation(unknown).await,
        Err(StoreError::ConversationNotFound(id)) if id == unknown
    ));
    assert!(matches!(
        store.append_message(unknown, text("hello?"), colloquy_store::MessageEvent::Posted).await,
        Err(StoreError::ConversationNotFound(id)) if id == unknown
    ));
    assert!(matches!(
        store.append_event(unknown, turn_start(1)).await,
        Err(StoreError::ConversationNotFound(id)) if id == unknown
    ));
    assert!(store.participants(unknown).await.unwrap().is_empty());
    assert!(store.events_after(unknown, 0, 10).await.unwrap().is_empty());
}
