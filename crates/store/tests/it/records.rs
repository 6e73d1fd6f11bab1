//! Changing conversations: title, summary, tags, tools and status, deleting, and listing them by
//! participant and status with cursor pagination.

use std::sync::Arc;

use colloquy_core_model::{
    ConversationId, ConversationKind, ConversationStatus, ParticipantId, ParticipantKind, ParticipantRole, TurnEvent,
};
use colloquy_store::{
    ConversationCursor, ConversationFilter, ConversationStore, ConversationUpdate, MessageEvent, NewParticipant,
    SeaStore, StoreError,
};

use crate::fixtures::{self, text};

pub async fn updates_write_one_event_with_the_changes(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    store.append_message(id, text("hello"), MessageEvent::Posted).await.unwrap();

    let update = ConversationUpdate {
        title: Some(Some("Renamed".to_owned())),
        summary: Some(Some("They said hello.".to_owned())),
        tags: Some(vec!["greeting".to_owned()]),
        tools: Some(vec!["calculator".to_owned(), "weather".to_owned()]),
        // Unchanged: not reported as a change.
        options: Some(conversation.options.clone()),
        ..ConversationUpdate::default()
    };
    let (updated, event) = store.update_conversation(id, update).await.unwrap();
    let event = event.expect("something changed");
    assert_eq!(event.seq, Some(2));
    assert_eq!(
        event.event,
        TurnEvent::ConversationUpdated {
            changes: serde_json::json!({
                "title": "Renamed",
                "summary": "They said hello.",
                "tags": ["greeting"],
                "tools": ["calculator", "weather"],
            })
        }
    );
    assert_eq!(updated.title.as_deref(), Some("Renamed"));
    assert_eq!(updated.summary.as_deref(), Some("They said hello."));
    assert_eq!(updated.tags, ["greeting"]);
    assert_eq!(updated.last_seq, 2);
    assert_eq!(store.conversation(id).await.unwrap(), updated);
    assert_eq!(store.conversation_tools(id).await.unwrap(), ["calculator", "weather"]);
    assert_eq!(store.events_after(id, 1, 10).await.unwrap(), [event]);

    // The same update again changes nothing and writes nothing.
    let again = ConversationUpdate { title: Some(Some("Renamed".to_owned())), ..ConversationUpdate::default() };
    let (same, none) = store.update_conversation(id, again).await.unwrap();
    assert!(none.is_none());
    assert_eq!(same, updated);

    // Removing the title.
    let (untitled, _) = store
        .update_conversation(id, ConversationUpdate { title: Some(None), ..ConversationUpdate::default() })
        .await
        .unwrap();
    assert_eq!(untitled.title, None);
    assert_eq!(untitled.last_seq, 3);

    let unknown = ConversationId::new();
    assert!(matches!(
        store.update_conversation(unknown, ConversationUpdate::default()).await,
        Err(StoreError::ConversationNotFound(missing)) if missing == unknown
    ));
}

pub async fn archive_and_close_make_a_conversation_read_only(store: Arc<SeaStore>) {
    let (archived, _) = fixtures::create_conversation(&store).await;
    let (stored, event) = store.archive_conversation(archived.id).await.unwrap();
    assert_eq!(stored.status, ConversationStatus::Archived);
    assert_eq!(
        event.map(|e| e.event),
        Some(TurnEvent::ConversationUpdated { changes: serde_json::json!({"status": "archived"}) })
    );
    assert!(matches!(
        store.append_message(archived.id, text("late"), MessageEvent::Posted).await,
        Err(StoreError::ConversationNotActive(_))
    ));
    // Archived conversations can be taken back into use.
    let (active, _) =
        store.update_conversation(archived.id, ConversationUpdate::status(ConversationStatus::Active)).await.unwrap();
    assert_eq!(active.status, ConversationStatus::Active);
    store.append_message(archived.id, text("back"), MessageEvent::Posted).await.unwrap();

    let (closed, _) = fixtures::create_conversation(&store).await;
    let (stored, _) = store.close_conversation(closed.id).await.unwrap();
    assert_eq!(stored.status, ConversationStatus::Closed);
    for to in [ConversationStatus::Active, ConversationStatus::Archived] {
        let refused = store.update_conversation(closed.id, ConversationUpdate::status(to)).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidStatusChange { from: ConversationStatus::Closed, to: t, .. }) if t == to),
            "{refused:?}"
        );
    }
    assert_eq!(store.conversation(closed.id).await.unwrap().status, ConversationStatus::Closed);
    assert_eq!(store.conversation(closed.id).await.unwrap().last_seq, 1, "refused changes write no event");
}

pub async fn deleting_removes_everything(store: Arc<SeaStore>) {
    let (conversation, participants) = fixtures::create_conversation(&store).await;
    let (kept, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    store.append_message(id, text("gone soon"), MessageEvent::Posted).await.unwrap();
    store.append_message(kept.id, text("gone soon"), MessageEvent::Posted).await.unwrap();

    store.delete_conversation(id).await.unwrap();
    assert!(matches!(store.conversation(id).await, Err(StoreError::ConversationNotFound(_))));
    assert!(store.messages_after(id, 0, 10).await.unwrap().is_empty());
    assert!(store.events_after(id, 0, 10).await.unwrap().is_empty());
    assert!(store.participants(id).await.unwrap().is_empty());
    assert!(matches!(store.delete_conversation(id).await, Err(StoreError::ConversationNotFound(_))));
    // Its messages left the search index too; the other conversation's did not.
    let hits = store.search_messages(participants[0].id, "gone soon", 10).await.unwrap();
    assert!(hits.is_empty(), "{hits:?}");
    assert_eq!(store.messages_after(kept.id, 0, 10).await.unwrap().len(), 1);
}

fn member(id: ParticipantId) -> NewParticipant {
    NewParticipant {
        account: None,
        a2a_url: None,
        a2a_key: None,
        id,
        kind: ParticipantKind::User,
        display_name: "Grace".to_owned(),
        role: ParticipantRole::Member,
        agent: None,
    }
}

pub async fn conversations_list_by_participant_and_status(store: Arc<SeaStore>) {
    let grace = ParticipantId::new();
    let mut hers = Vec::new();
    for n in 0..7 {
        let mut new = fixtures::new_conversation();
        if n % 3 == 0 {
            new.kind = ConversationKind::MultiParty;
        }
        new.participants.push(member(grace));
        let (conversation, _) = store.create_conversation(new).await.unwrap();
        hers.push(conversation.id);
        // Someone else's conversation in between.
        fixtures::create_conversation(&store).await;
    }
    store.archive_conversation(hers[1]).await.unwrap();
    store.archive_conversation(hers[4]).await.unwrap();
    // Grace left this one: it is no longer hers to list.
    store.remove_participant(hers[6], grace).await.unwrap();

    let filter = ConversationFilter { participant: Some(grace), ..ConversationFilter::default() };
    let mut listed = Vec::new();
    let mut cursor: Option<ConversationCursor> = None;
    let mut pages = 0;
    loop {
        let page = store.list_conversations(filter.clone(), cursor, 2).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        listed.extend(page.items.iter().map(|c| c.id));
        // Cursors survive a round trip through text, as in a URL.
        cursor = page.next.map(|next| next.to_string().parse().unwrap());
        if cursor.is_none() {
            break;
        }
    }
    // Newest activity first: archiving is activity.
    let expected = [hers[4], hers[1], hers[5], hers[3], hers[2], hers[0]];
    assert_eq!(listed, expected, "newest activity first, each once");
    assert_eq!(pages, 3);

    let active = ConversationFilter { status: Some(ConversationStatus::Active), ..filter.clone() };
    let ids: Vec<_> = store.list_conversations(active, None, 100).await.unwrap().items.iter().map(|c| c.id).collect();
    assert_eq!(ids, [hers[5], hers[3], hers[2], hers[0]]);

    let multi = ConversationFilter { kind: Some(ConversationKind::MultiParty), ..filter };
    let ids: Vec<_> = store.list_conversations(multi, None, 100).await.unwrap().items.iter().map(|c| c.id).collect();
    assert_eq!(ids, [hers[3], hers[0]]);

    let everyone = store.list_conversations(ConversationFilter::default(), None, 100).await.unwrap();
    assert_eq!(everyone.items.len(), 14);
    assert!(everyone.next.is_none());
    assert!(matches!("not-a-cursor".parse::<ConversationCursor>(), Err(StoreError::InvalidCursor(_))));
}

pub async fn conversations_list_by_account_tag_agent_and_text(store: Arc<SeaStore>) {
    use colloquy_core_model::AccountId;

    let (ada, grace) = (AccountId::new(), AccountId::new());
    let person = |account: AccountId| NewParticipant {
        id: ParticipantId::new(),
        kind: ParticipantKind::User,
        display_name: "someone".to_owned(),
        role: ParticipantRole::Member,
        agent: None,
        account: Some(account),
        a2a_url: None,
        a2a_key: None,
    };
    let mut made = Vec::new();
    for (n, (title, tags, accounts)) in [
        ("Trip to Paris", vec!["travel"], vec![ada]),
        ("Budget 100% review", vec!["work", "money"], vec![ada, grace]),
        ("Weekly sync", vec!["work"], vec![grace]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut new = fixtures::new_conversation();
        new.title = Some(title.to_owned());
        new.tags = tags.into_iter().map(str::to_owned).collect();
        new.participants.extend(accounts.into_iter().map(person));
        if n == 2 {
            // Its agent has another name.
            new.participants[1].display_name = "Scribe".to_owned();
        }
        made.push(store.create_conversation(new).await.unwrap().0.id);
    }
    let list = |filter: ConversationFilter| {
        let store = Arc::clone(&store);
        async move {
            store.list_conversations(filter, None, 100).await.unwrap().items.iter().map(|c| c.id).collect::<Vec<_>>()
        }
    };
    let all = ConversationFilter::default;
    assert_eq!(list(ConversationFilter { accounts: vec![ada], ..all() }).await, [made[1], made[0]]);
    assert_eq!(list(ConversationFilter { accounts: vec![ada, grace], ..all() }).await, [made[1]]);
    assert_eq!(list(ConversationFilter { tag: Some("work".into()), ..all() }).await, [made[2], made[1]]);
    assert_eq!(list(ConversationFilter { tag: Some("wor".into()), ..all() }).await, Vec::<ConversationId>::new());
    assert_eq!(list(ConversationFilter { agent: Some("scribe".into()), ..all() }).await, [made[2]]);
    assert_eq!(list(ConversationFilter { text: Some("PARIS".into()), ..all() }).await, [made[0]]);
    // The text is a literal: `%` matches itself, not everything.
    assert_eq!(list(ConversationFilter { text: Some("100%".into()), ..all() }).await, [made[1]]);
    assert_eq!(list(ConversationFilter { text: Some("%".into()), ..all() }).await, [made[1]]);
    assert_eq!(
        list(ConversationFilter {
            accounts: vec![grace],
            tag: Some("work".into()),
            text: Some("sync".into()),
            ..all()
        })
        .await,
        [made[2]]
    );
}
