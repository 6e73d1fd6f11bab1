//! Messages queued while a turn runs: stored at once, outside the history until admitted at the
//! turn boundary with a new seq; and the store refusing JSON it could not read back.

use std::sync::Arc;

use colloquy_core_model::limits::MAX_STORED_JSON_DEPTH;
use colloquy_core_model::{
    AgentSpec, ContentPart, MessageRole, NewMessage, Options, ParticipantId, ParticipantKind, ParticipantRole,
    TurnEvent, TurnId,
};
use colloquy_store::{ConversationStore, MessageEvent, NewParticipant, SeaStore, StoreError};

use crate::fixtures::{self, text, turn_start};

fn kinds(events: &[colloquy_core_model::EventEnvelope]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.kind()).collect()
}

pub async fn queued_messages_join_the_history_when_admitted(store: Arc<SeaStore>) {
    let (conversation, participants) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let start = TurnEvent::AgentStart { turn_id: TurnId::new(), agent: participants[1].id };
    store.append_message(id, text("2 * 3?"), MessageEvent::Posted).await.unwrap();
    store.append_event(id, start).await.unwrap();

    // Two prompts arrive while the turn runs.
    let mut keyed = text("5 * 5?");
    keyed.client_msg_id = Some("c-2".to_owned());
    let second = store.append_message(id, keyed.clone(), MessageEvent::Queued).await.unwrap();
    let third = store.append_message(id, text("7 * 7?"), MessageEvent::Queued).await.unwrap();
    assert!(second.queued && !second.duplicate && third.queued);
    assert_eq!((second.message.seq, third.message.seq), (3, 4));
    assert_eq!(second.event.map(|e| e.event), Some(TurnEvent::MessageQueued { message: second.message.clone() }));
    let retried = store.append_message(id, keyed.clone(), MessageEvent::Queued).await.unwrap();
    assert!(retried.duplicate && retried.queued && retried.event.is_none(), "a retry of a queued message");
    assert_eq!(retried.message, second.message);

    // Queued messages are stored but not history.
    let history: Vec<String> = store.messages_after(id, 0, 100).await.unwrap().iter().map(|m| m.text()).collect();
    assert_eq!(history, ["2 * 3?"]);
    let queued = store.queued_messages(id).await.unwrap();
    assert_eq!(queued, [second.message.clone(), third.message.clone()]);
    assert_eq!(store.conversations_with_pending_prompts().await.unwrap(), [id]);
    let hits = store.search_messages(participants[0].id, "5", 10).await.unwrap();
    assert!(hits.is_empty(), "queued messages are not found by search: {hits:?}");

    // The turn ends; at the boundary the second is admitted (one at a time).
    let reply = NewMessage {
        sender: Some(participants[1].id),
        ..NewMessage::new(MessageRole::Assistant, vec![ContentPart::text("6")])
    };
    store.append_message(id, reply, MessageEvent::End { turn_id: TurnId::new() }).await.unwrap();
    let admitted = store.admit_messages(id, &[second.message.id], None).await.unwrap();
    assert_eq!(admitted.len(), 1);
    let TurnEvent::MessagePosted { message } = &admitted[0].event else { panic!("{admitted:?}") };
    assert_eq!((message.id, message.seq, admitted[0].seq), (second.message.id, 6, Some(6)));
    assert_eq!(message.content, second.message.content);
    let history: Vec<String> = store.messages_after(id, 0, 100).await.unwrap().iter().map(|m| m.text()).collect();
    assert_eq!(history, ["2 * 3?", "6", "5 * 5?"], "history in seq order is the answer order");
    assert_eq!(store.queued_messages(id).await.unwrap(), std::slice::from_ref(&third.message));
    let retried = store.append_message(id, keyed, MessageEvent::Queued).await.unwrap();
    assert!(retried.duplicate && !retried.queued, "a retry after admission finds the admitted message");
    assert_eq!(retried.message.seq, 6);

    // Admitting something that is not queued writes nothing.
    let before = store.conversation(id).await.unwrap().last_seq;
    let refused = store.admit_messages(id, &[third.message.id, second.message.id], None).await;
    assert!(matches!(refused, Err(StoreError::MessageNotFound { .. })), "{refused:?}");
    assert_eq!(store.conversation(id).await.unwrap().last_seq, before);
    assert_eq!(store.queued_messages(id).await.unwrap(), std::slice::from_ref(&third.message));

    store.admit_messages(id, &[third.message.id], None).await.unwrap();
    assert!(store.queued_messages(id).await.unwrap().is_empty());
    let log = store.events_after(id, 0, 100).await.unwrap();
    assert_eq!(
        kinds(&log),
        [
            "message_posted",
            "agent_start",
            "message_queued",
            "message_queued",
            "message_end",
            "message_posted",
            "message_posted"
        ]
    );
    let seqs: Vec<u64> = log.iter().filter_map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "the log stays gap-free");
}

pub async fn pending_prompts_are_found_after_a_stop(store: Arc<SeaStore>) {
    let (answered, participants) = fixtures::create_conversation(&store).await;
    let agent = participants[1].id;
    store.append_message(answered.id, text("hi"), MessageEvent::Posted).await.unwrap();
    let start = store.append_event(answered.id, TurnEvent::AgentStart { turn_id: TurnId::new(), agent }).await.unwrap();
    assert_eq!(store.last_turn_start(answered.id).await.unwrap(), start.seq);

    // Stored, but the process stopped before its turn started.
    let (unanswered, _) = fixtures::create_conversation(&store).await;
    store.append_message(unanswered.id, text("hello?"), MessageEvent::Posted).await.unwrap();
    assert_eq!(store.last_turn_start(unanswered.id).await.unwrap(), None);
    let (idle, _) = fixtures::create_conversation(&store).await;
    store.append_event(idle.id, turn_start(1)).await.unwrap();

    assert_eq!(store.conversations_with_pending_prompts().await.unwrap(), [unanswered.id]);
}

/// `[[[...1...]]]`, `depth` arrays deep.
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(serde_json::json!(1), |inner, _| serde_json::Value::Array(vec![inner]))
}

pub async fn json_too_deep_to_read_back_is_refused(store: Arc<SeaStore>) {
    let (conversation, participants) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    // The deepest content that fits: the event that carries it adds four levels.
    let deepest =
        NewMessage::new(MessageRole::User, vec![ContentPart::Custom { value: nested(MAX_STORED_JSON_DEPTH - 6) }]);
    let stored = store.append_message(id, deepest, MessageEvent::Posted).await.unwrap();
    assert_eq!(store.events_after(id, 0, 10).await.unwrap().len(), 1, "what was stored reads back");
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap(), [stored.message]);

    let deep = NewMessage::new(MessageRole::User, vec![ContentPart::Custom { value: nested(124) }]);
    let refused = store.append_message(id, deep, MessageEvent::Queued).await;
    assert!(matches!(refused, Err(StoreError::TooDeep { limit: MAX_STORED_JSON_DEPTH, .. })), "{refused:?}");
    let mut metadata = text("fine text");
    metadata.metadata = nested(MAX_STORED_JSON_DEPTH + 1);
    assert!(matches!(store.append_message(id, metadata, MessageEvent::Posted).await, Err(StoreError::TooDeep { .. })));
    let mut options = fixtures::new_conversation();
    options.options = Options { context: nested(MAX_STORED_JSON_DEPTH + 1), ..Options::default() };
    assert!(matches!(store.create_conversation(options).await, Err(StoreError::TooDeep { .. })));
    assert_eq!(store.conversation(id).await.unwrap().last_seq, 1, "nothing else was written");
    assert_eq!(store.events_after(id, 0, 10).await.unwrap().len(), 1);
    // A flat spec is fine, and says so in the log.
    let spec = AgentSpec { provider: "x".into(), model: "y".into(), system_prompt: None, tools: Vec::new() };
    let (_, event) = store.update_agent(id, participants[1].id, spec).await.unwrap();
    assert_eq!((event.seq, event.event.kind()), (Some(2), "participant_updated"));
}

pub async fn thousands_of_participants_are_created_in_chunks(store: Arc<SeaStore>) {
    let mut new = fixtures::new_conversation();
    new.participants.extend((0..5_000).map(|n| NewParticipant {
        account: None,
        a2a_url: None,
        a2a_key: None,
        id: ParticipantId::new(),
        kind: ParticipantKind::User,
        display_name: format!("guest {n}"),
        role: ParticipantRole::Member,
        agent: None,
    }));
    let (conversation, participants) = store.create_conversation(new).await.unwrap();
    assert_eq!(participants.len(), 5_002);
    assert_eq!(store.participants(conversation.id).await.unwrap(), participants);
}
