//! Many writers at once: seqs stay gap-free and a retried send is still stored once.

use std::sync::Arc;

use colloquy_core_model::{MessageId, NewMessage};
use colloquy_store::{ConversationStore, MessageEvent, SeaStore};

use crate::fixtures::{self, text, turn_start};

const TASKS: u64 = 8;
const APPENDS_PER_TASK: u64 = 1_000;

pub async fn concurrent_appenders_get_every_seq_once(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;

    // Half the tasks append messages, half append events: both draw from the same seq.
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..APPENDS_PER_TASK {
                    let seq = if task % 2 == 0 {
                        let message = NewMessage { client_msg_id: Some(format!("{task}-{n}")), ..text("hi") };
                        store.append_message(id, message, MessageEvent::Posted).await.unwrap().message.seq
                    } else {
                        store.append_event(id, turn_start(1)).await.unwrap().seq.unwrap()
                    };
                    seqs.push(seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        let task_seqs = task.await.unwrap();
        assert!(task_seqs.is_sorted(), "one task's appends get increasing seqs");
        seqs.extend(task_seqs);
    }
    seqs.sort_unstable();

    let total = TASKS * APPENDS_PER_TASK;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let stored = store.conversation(id).await.unwrap();
    assert_eq!(stored.last_seq, total);
    assert_eq!(stored.totals.messages, total / 2);
    let logged: Vec<u64> = store.events_after(id, 0, total + 1).await.unwrap().iter().map(|e| e.seq.unwrap()).collect();
    assert_eq!(logged, (1..=total).collect::<Vec<_>>());
}

pub async fn concurrent_retries_store_one_message(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let message = NewMessage { client_msg_id: Some("same-send".to_owned()), ..text("once") };
                store.append_message(id, message, MessageEvent::Posted).await.unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }

    let stored: Vec<_> = outcomes.iter().filter(|o| !o.duplicate).collect();
    assert_eq!(stored.len(), 1, "exactly one send is stored");
    let ids: Vec<MessageId> = outcomes.iter().map(|o| o.message.id).collect();
    assert!(ids.iter().all(|&m| m == stored[0].message.id), "every retry gets the stored message");
    let conversation = store.conversation(id).await.unwrap();
    assert_eq!((conversation.last_seq, conversation.totals.messages), (1, 1));
    assert_eq!(store.events_after(id, 0, 10).await.unwrap().len(), 1);
}
