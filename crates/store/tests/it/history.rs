//! Reading history: pages by cursor in both directions and the tail that fits a token budget.

use std::sync::Arc;

use colloquy_core_model::{ContentPart, MessageRole, NewMessage, Usage};
use colloquy_store::{ConversationStore, MessageCursor, MessageEvent, SeaStore};

use crate::fixtures::{self, text, turn_start};

pub async fn message_pages_go_both_ways(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    for n in 1..=5 {
        store.append_message(id, text(&format!("m{n}")), MessageEvent::Posted).await.unwrap();
        store.append_event(id, turn_start(n)).await.unwrap();
    }
    // Message seqs are 1, 3, 5, 7, 9.
    let seqs = |page: &colloquy_store::Page<colloquy_core_model::Message, MessageCursor>| {
        page.items.iter().map(|m| m.seq).collect::<Vec<_>>()
    };

    let page = store.messages_page(id, MessageCursor::After(0), 2).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![1, 3], Some(MessageCursor::After(3))));
    let page = store.messages_page(id, MessageCursor::After(3), 2).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![5, 7], Some(MessageCursor::After(7))));
    let page = store.messages_page(id, MessageCursor::After(7), 2).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![9], None));

    let page = store.messages_page(id, MessageCursor::Before(u64::MAX), 2).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![7, 9], Some(MessageCursor::Before(7))));
    let page = store.messages_page(id, MessageCursor::Before(7), 2).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![3, 5], Some(MessageCursor::Before(3))));
    let page = store.messages_page(id, MessageCursor::Before(3), 2).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![1], None));

    // Exactly a page left: no further page is promised.
    let page = store.messages_page(id, MessageCursor::Before(5), 2).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![1, 3], None));
    let page = store.messages_page(id, MessageCursor::After(0), 0).await.unwrap();
    assert_eq!((seqs(&page), page.next), (vec![], None));
}

pub async fn history_fits_the_token_budget(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    // A reply's size is its output tokens.
    let reply = |output_tokens: u64| NewMessage {
        usage: Some(Usage { input_tokens: 5000, output_tokens, ..Usage::default() }),
        ..NewMessage::new(MessageRole::Assistant, vec![ContentPart::text("x")])
    };
    // 40 bytes of text: a little over 10 tokens by the estimate, including the JSON around it.
    let question = || text(&"q".repeat(40));
    let q1 = store.append_message(id, question(), MessageEvent::Posted).await.unwrap().message;
    let r1 = store.append_message(id, reply(100), MessageEvent::Posted).await.unwrap().message;
    let q2 = store.append_message(id, question(), MessageEvent::Posted).await.unwrap().message;
    let r2 = store.append_message(id, reply(30), MessageEvent::Posted).await.unwrap().message;

    let everything = store.history_within_tokens(id, 1_000_000).await.unwrap();
    assert_eq!(everything.messages, [q1.clone(), r1.clone(), q2.clone(), r2.clone()]);
    assert!(!everything.truncated);
    let question_size = (everything.tokens - 130) / 2;
    assert!((10..=20).contains(&question_size), "a 40-byte question counts {question_size} tokens");

    let recent = store.history_within_tokens(id, 30 + question_size).await.unwrap();
    assert_eq!(recent.messages, [q2.clone(), r2.clone()]);
    assert_eq!(recent.tokens, 30 + question_size);
    assert!(recent.truncated);

    // One token short of the question: only the reply fits. The budget never splits a message.
    let tail = store.history_within_tokens(id, 30 + question_size - 1).await.unwrap();
    assert_eq!(tail.messages, [r2]);
    let none = store.history_within_tokens(id, 29).await.unwrap();
    assert!(none.messages.is_empty() && none.truncated && none.tokens == 0);
}

pub async fn long_history_budget_walks_past_one_chunk(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let batch = (0..600).map(|n| (text(&format!("message {n:04}")), MessageEvent::Posted)).collect();
    store.append_messages(id, batch, None).await.unwrap();
    let all = store.history_within_tokens(id, u64::MAX).await.unwrap();
    assert_eq!(all.messages.len(), 600);
    let size = all.tokens / 600;
    let some = store.history_within_tokens(id, size * 400).await.unwrap();
    assert_eq!(some.messages.len(), 400);
    assert_eq!(some.messages.first().map(|m| m.seq), Some(201));
}
