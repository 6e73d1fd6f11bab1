//! Appending messages and events: seq allocation, idempotency, totals and closed conversations.

use std::sync::Arc;

use colloquy_core_model::{ContentPart, MessageRole, NewMessage, ToolCallId, TurnEvent, TurnId, Usage};
use colloquy_store::{ConversationStore, MessageEvent, SeaStore, StoreError};

use crate::fixtures::{self, text, turn_start};

pub async fn appends_get_gap_free_seqs(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;

    let mut seqs = Vec::new();
    for round in 1..=3 {
        let appended = store.append_message(id, text(&format!("message {round}")), MessageEvent::Posted).await.unwrap();
        let envelope = appended.event.expect("a new message has an event");
        assert!(!appended.duplicate);
        assert_eq!(envelope.seq, Some(appended.message.seq), "a message's seq is its event's seq");
        assert_eq!(envelope.conversation_id, id);
        assert_eq!(envelope.event, TurnEvent::MessagePosted { message: appended.message.clone() });
        seqs.push(appended.message.seq);

        let envelope = store.append_event(id, turn_start(round)).await.unwrap();
        seqs.push(envelope.seq.expect("durable events have a seq"));
    }

    assert_eq!(seqs, (1..=6).collect::<Vec<u64>>());
    assert_eq!(store.conversation(id).await.unwrap().last_seq, 6);
    let logged: Vec<Option<u64>> = store.events_after(id, 0, 100).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(logged, (1..=6).map(Some).collect::<Vec<_>>());
    let message_seqs: Vec<u64> = store.messages_after(id, 0, 100).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(message_seqs, [1, 3, 5]);

    // Seqs count per conversation.
    let (other, _) = fixtures::create_conversation(&store).await;
    let first = store.append_message(other.id, text("elsewhere"), MessageEvent::Posted).await.unwrap();
    assert_eq!(first.message.seq, 1);
}

pub async fn appended_message_reads_back_unchanged(store: Arc<SeaStore>) {
    let (conversation, participants) = fixtures::create_conversation(&store).await;
    let turn_id = TurnId::new();
    let message = NewMessage {
        sender: Some(participants[1].id),
        turn_id: Some(turn_id),
        usage: Some(Usage {
            input_tokens: 1200,
            output_tokens: 85,
            cache_read_tokens: 1000,
            cache_write_tokens: 7,
            cost_usd: Some(0.012_5),
            // Counted locally: the flag reads back too.
            estimated: true,
        }),
        model: Some("gpt-test".to_owned()),
        provider: Some("scripted".to_owned()),
        temperature: Some(0.7),
        latency_ms: Some(842),
        client_msg_id: Some("reply-1".to_owned()),
        metadata: serde_json::json!({"lang": "en", "scores": [0.25, 1e-9]}),
        ..NewMessage::new(
            MessageRole::Assistant,
            vec![
                ContentPart::text("Checking the weather. ünïcödé ✓"),
                ContentPart::ToolCall {
                    id: ToolCallId::from("call_1"),
                    name: "weather".to_owned(),
                    arguments: serde_json::json!({"city": "Paris", "days": 3}),
                },
            ],
        )
    };

    let appended = store.append_message(conversation.id, message.clone(), MessageEvent::End { turn_id }).await.unwrap();
    assert_eq!(appended.message.id, message.id);
    assert_eq!(appended.message.content, message.content);
    assert_eq!(appended.message.usage, message.usage);
    assert_eq!(appended.message.metadata, message.metadata);

    assert_eq!(store.messages_after(conversation.id, 0, 10).await.unwrap(), std::slice::from_ref(&appended.message));
    let envelope = appended.event.expect("a new message has an event");
    assert_eq!(envelope.event, TurnEvent::MessageEnd { turn_id, message: appended.message.clone() });
    assert_eq!(store.events_after(conversation.id, 0, 10).await.unwrap(), [envelope]);

    // A message without optional fields reads back with them absent, not defaulted.
    let bare = store.append_message(conversation.id, text("ok"), MessageEvent::Posted).await.unwrap();
    let read = store.messages_after(conversation.id, 1, 10).await.unwrap();
    assert_eq!(read, std::slice::from_ref(&bare.message));
    assert_eq!((read[0].usage, read[0].sender, &read[0].metadata), (None, None, &serde_json::Value::Null));
}

pub async fn retried_client_msg_id_is_stored_once(store: Arc<SeaStore>) {
    let (conversation, participants) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let send = |body: &str| NewMessage {
        sender: Some(participants[0].id),
        client_msg_id: Some("client-42".to_owned()),
        ..text(body)
    };

    let first = store.append_message(id, send("hello"), MessageEvent::Posted).await.unwrap();
    assert!(!first.duplicate);
    store.append_event(id, turn_start(1)).await.unwrap();

    // The retry carries a new message id (and here even new text): the key alone decides.
    let retry = store.append_message(id, send("hello again"), MessageEvent::Posted).await.unwrap();
    assert!(retry.duplicate);
    assert!(retry.event.is_none());
    assert_eq!(retry.message, first.message);
    assert_eq!(retry.message.seq, 1);

    let stored = store.conversation(id).await.unwrap();
    assert_eq!(stored.last_seq, 2, "the retry took no seq");
    assert_eq!(stored.totals.messages, 1);
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.events_after(id, 0, 10).await.unwrap().len(), 2);

    // The key is per conversation, and messages without one are never duplicates.
    let (other, _) = fixtures::create_conversation(&store).await;
    let elsewhere = store.append_message(other.id, send("hello"), MessageEvent::Posted).await.unwrap();
    assert!(!elsewhere.duplicate);
    for _ in 0..2 {
        assert!(!store.append_message(id, text("no key"), MessageEvent::Posted).await.unwrap().duplicate);
    }
}

pub async fn totals_follow_appended_messages(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let with_usage = |usage: Usage| NewMessage {
        usage: Some(usage),
        ..NewMessage::new(MessageRole::Assistant, vec![ContentPart::text("answer")])
    };

    store
        .append_message(
            id,
            with_usage(Usage { input_tokens: 100, output_tokens: 20, cost_usd: Some(0.5), ..Usage::default() }),
            MessageEvent::Posted,
        )
        .await
        .unwrap();
    store.append_message(id, text("thanks"), MessageEvent::Posted).await.unwrap();
    store
        .append_message(
            id,
            with_usage(Usage { input_tokens: 30, output_tokens: 5, cost_usd: None, ..Usage::default() }),
            MessageEvent::Posted,
        )
        .await
        .unwrap();
    store.append_event(id, turn_start(1)).await.unwrap();

    let stored = store.conversation(id).await.unwrap();
    assert_eq!(stored.totals.messages, 3);
    assert_eq!(stored.totals.input_tokens, 130);
    assert_eq!(stored.totals.output_tokens, 25);
    assert!((stored.totals.cost_usd - 0.5).abs() < 1e-12, "cost was {}", stored.totals.cost_usd);
    assert_eq!(stored.last_seq, 4);
    assert!(stored.last_activity >= conversation.last_activity);
}

pub async fn closed_conversation_refuses_messages(store: Arc<SeaStore>) {
    for status in ["closed", "archived"] {
        let (conversation, _) = fixtures::create_conversation(&store).await;
        let id = conversation.id;
        store.append_message(id, text("before"), MessageEvent::Posted).await.unwrap();
        fixtures::set_status(&store, id, status).await;

        let refused = store.append_message(id, text("after"), MessageEvent::Posted).await;
        assert!(
            matches!(refused, Err(StoreError::ConversationNotActive(refused_id)) if refused_id == id),
            "{status}: {refused:?}"
        );

        let stored = store.conversation(id).await.unwrap();
        assert_eq!(stored.last_seq, 1, "{status}: a refused message takes no seq");
        assert_eq!(stored.totals.messages, 1);
        assert_eq!(store.messages_after(id, 0, 10).await.unwrap().len(), 1);
    }
}

pub async fn batch_appends_take_consecutive_seqs_once(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let keyed = |key: &str, body: &str| NewMessage { client_msg_id: Some(key.to_owned()), ..text(body) };
    store.append_message(id, keyed("a", "first"), MessageEvent::Posted).await.unwrap();

    let priced = NewMessage {
        usage: Some(Usage { input_tokens: 10, output_tokens: 4, cost_usd: Some(0.25), ..Usage::default() }),
        ..NewMessage::new(MessageRole::Assistant, vec![ContentPart::text("priced")])
    };
    let batch = vec![
        (keyed("b", "second"), MessageEvent::Posted),
        (keyed("a", "retry of first"), MessageEvent::Posted),
        (priced, MessageEvent::End { turn_id: TurnId::new() }),
        (keyed("b", "retry of second in the same batch"), MessageEvent::Posted),
        (text("no key"), MessageEvent::Posted),
    ];
    let outcomes = store.append_messages(id, batch, None).await.unwrap();
    let summary: Vec<(u64, bool, bool)> =
        outcomes.iter().map(|o| (o.message.seq, o.duplicate, o.event.is_some())).collect();
    assert_eq!(summary, [(2, false, true), (1, true, false), (3, false, true), (2, true, false), (4, false, true)]);
    assert_eq!(outcomes[1].message.text(), "first");
    assert_eq!(outcomes[3].message, outcomes[0].message);

    let stored = store.conversation(id).await.unwrap();
    assert_eq!((stored.last_seq, stored.totals.messages), (4, 4));
    assert_eq!((stored.totals.input_tokens, stored.totals.output_tokens), (10, 4));
    assert!((stored.totals.cost_usd - 0.25).abs() < 1e-12);
    let texts: Vec<String> = store.messages_after(id, 0, 10).await.unwrap().iter().map(|m| m.text()).collect();
    assert_eq!(texts, ["first", "second", "priced", "no key"]);
    let logged: Vec<Option<u64>> = store.events_after(id, 0, 10).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(logged, [Some(1), Some(2), Some(3), Some(4)]);

    // A batch of nothing but retries writes nothing at all.
    let before = store.conversation(id).await.unwrap();
    let retries = store.append_messages(id, vec![(keyed("a", "x"), MessageEvent::Posted)], None).await.unwrap();
    assert!(retries[0].duplicate);
    assert_eq!(store.conversation(id).await.unwrap(), before);
    assert!(store.append_messages(id, Vec::new(), None).await.unwrap().is_empty());
}

pub async fn failed_transaction_leaves_nothing_behind(store: Arc<SeaStore>) {
    let (conversation, participants) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let first = store.append_message(id, text("kept"), MessageEvent::Posted).await.unwrap().message;
    let before = store.conversation(id).await.unwrap();

    // The batch's third message reuses a stored message id: the insert fails after the batch's
    // seqs and totals were taken, in the same transaction.
    let clash =
        NewMessage { id: first.id, usage: Some(Usage { input_tokens: 7, ..Usage::default() }), ..text("clash") };
    let batch = vec![
        (text("lost 1"), MessageEvent::Posted),
        (text("lost 2"), MessageEvent::Posted),
        (clash, MessageEvent::Posted),
    ];
    let failed = store.append_messages(id, batch, None).await;
    assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");

    assert_eq!(store.conversation(id).await.unwrap(), before, "seq, totals and activity are unchanged");
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap(), [first]);
    assert_eq!(store.events_after(id, 0, 10).await.unwrap().len(), 1);
    assert!(store.search_messages(participants[0].id, "lost", 10).await.unwrap().is_empty());
    // The next append takes the next seq as if nothing had happened.
    assert_eq!(store.append_message(id, text("next"), MessageEvent::Posted).await.unwrap().message.seq, 2);
}

pub async fn edits_rewrite_and_remove_messages_with_events_and_totals(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let first = store.append_message(id, text("teh typo"), MessageEvent::Posted).await.unwrap().message;
    let costly = NewMessage {
        usage: Some(Usage { input_tokens: 100, output_tokens: 20, cost_usd: Some(0.5), ..Usage::default() }),
        ..text("a reply")
    };
    let second = store.append_message(id, costly, MessageEvent::Posted).await.unwrap().message;

    let (edited, event) = store.update_message(id, first.id, vec![ContentPart::text("the typo, fixed")]).await.unwrap();
    assert_eq!((edited.id, edited.seq, edited.text()), (first.id, first.seq, "the typo, fixed".to_owned()));
    assert_eq!((event.seq, event.event), (Some(3), TurnEvent::MessageUpdated { message: edited.clone() }));
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap()[0], edited);

    let removed = store.remove_messages(id, &[second.id]).await.unwrap();
    assert_eq!(removed.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(4)]);
    assert_eq!(removed[0].event, TurnEvent::MessageRemoved { message_id: second.id });
    let after = store.conversation(id).await.unwrap();
    assert_eq!((after.totals.messages, after.totals.input_tokens, after.totals.output_tokens), (1, 0, 0));
    assert!(after.totals.cost_usd.abs() < 1e-9);
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap(), vec![edited]);

    // A missing message changes nothing.
    let missing = colloquy_core_model::MessageId::new();
    let err = store.remove_messages(id, &[first.id, missing]).await.unwrap_err();
    assert!(matches!(err, StoreError::MessageNotFound { message, .. } if message == missing), "{err}");
    assert_eq!(store.messages_after(id, 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.conversation(id).await.unwrap().last_seq, 4);
}
