//! Adding, removing and listing participants, each change recorded as an event.

use std::sync::Arc;

use colloquy_core_model::{ParticipantId, ParticipantKind, ParticipantRole, TurnEvent};
use colloquy_store::{ConversationStore, NewParticipant, SeaStore, StoreError};

use crate::fixtures;

fn service(id: ParticipantId, name: &str) -> NewParticipant {
    NewParticipant {
        account: None,
        a2a_url: None,
        a2a_key: None,
        id,
        kind: ParticipantKind::Service,
        display_name: name.to_owned(),
        role: ParticipantRole::Observer,
        agent: None,
    }
}

pub async fn participants_join_leave_and_come_back(store: Arc<SeaStore>) {
    let (conversation, first) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let bot = ParticipantId::new();

    let (joined, event) = store.add_participant(id, service(bot, "indexer")).await.unwrap();
    assert_eq!((joined.id, joined.kind, joined.left_at), (bot, ParticipantKind::Service, None));
    assert_eq!(event.seq, Some(1));
    assert_eq!(event.event, TurnEvent::ParticipantJoined { participant: joined.clone() });
    assert_eq!(store.participants(id).await.unwrap(), [first[0].clone(), first[1].clone(), joined.clone()]);

    assert!(matches!(
        store.add_participant(id, service(bot, "again")).await,
        Err(StoreError::ParticipantAlreadyPresent { participant, .. }) if participant == bot
    ));

    let left = store.remove_participant(id, first[0].id).await.unwrap();
    assert_eq!(left.seq, Some(2));
    assert_eq!(left.event, TurnEvent::ParticipantLeft { participant_id: first[0].id });
    let listed = store.participants(id).await.unwrap();
    assert!(listed[0].left_at.is_some(), "the row stays, marked as gone");
    assert!(matches!(
        store.remove_participant(id, first[0].id).await,
        Err(StoreError::ParticipantNotFound { participant, .. }) if participant == first[0].id
    ));
    assert!(matches!(
        store.remove_participant(id, ParticipantId::new()).await,
        Err(StoreError::ParticipantNotFound { .. })
    ));

    // Coming back keeps the first place in the join order and takes the new details.
    let mut back = service(first[0].id, "Ada again");
    back.kind = ParticipantKind::User;
    let (rejoined, _) = store.add_participant(id, back).await.unwrap();
    let listed = store.participants(id).await.unwrap();
    assert_eq!(listed[0], rejoined);
    assert_eq!((listed[0].display_name.as_str(), listed[0].left_at), ("Ada again", None));
    assert_eq!(store.conversation(id).await.unwrap().last_seq, 3);

    // The same party can take part in another conversation.
    let (other, _) = fixtures::create_conversation(&store).await;
    store.add_participant(other.id, service(bot, "indexer")).await.unwrap();
    assert_eq!(store.participants(other.id).await.unwrap().len(), 3);

    // A closed conversation takes no one new, and writes nothing for the attempt.
    store.close_conversation(other.id).await.unwrap();
    let before = store.conversation(other.id).await.unwrap().last_seq;
    assert!(matches!(
        store.add_participant(other.id, service(ParticipantId::new(), "late")).await,
        Err(StoreError::ConversationNotActive(_))
    ));
    assert_eq!(store.conversation(other.id).await.unwrap().last_seq, before);
}

pub async fn roles_change_with_an_event_and_search_covers_an_account(store: Arc<SeaStore>) {
    use colloquy_core_model::AccountId;
    use colloquy_store::MessageEvent;

    let ada = AccountId::new();
    let (mine, _) = fixtures::create_conversation(&store).await;
    let (theirs, _) = fixtures::create_conversation(&store).await;
    let me = ParticipantId::new();
    let (_, _) = store
        .add_participant(
            mine.id,
            NewParticipant { account: Some(ada), role: ParticipantRole::Member, ..service(me, "ada") },
        )
        .await
        .unwrap();
    let (updated, event) = store.update_participant_role(mine.id, me, ParticipantRole::Observer).await.unwrap();
    assert_eq!(updated.role, ParticipantRole::Observer);
    assert_eq!(event.event, TurnEvent::ParticipantUpdated { participant: updated.clone() });
    assert_eq!(store.participants(mine.id).await.unwrap().last(), Some(&updated));
    let missing = store.update_participant_role(theirs.id, me, ParticipantRole::Owner).await;
    assert!(matches!(missing, Err(StoreError::ParticipantNotFound { .. })), "{missing:?}");

    let found = store.append_message(mine.id, fixtures::text("rainy in paris"), MessageEvent::Posted).await.unwrap();
    store.append_message(theirs.id, fixtures::text("sunny in paris"), MessageEvent::Posted).await.unwrap();
    assert_eq!(store.search_messages_of_account(Some(ada), "paris", 10).await.unwrap(), [found.message]);
    assert_eq!(store.search_messages_of_account(None, "paris", 10).await.unwrap().len(), 2);
    assert!(store.search_messages_of_account(Some(AccountId::new()), "paris", 10).await.unwrap().is_empty());
}
