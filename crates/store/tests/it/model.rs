//! Model-based test: random sequences of store operations run against SQLite and against a
//! plain in-memory model of what they should do, compared after every step.

use std::collections::BTreeMap;

use colloquy_core_model::{
    ConversationId, ConversationStatus, NewMessage, ParticipantId, ParticipantKind, ParticipantRole,
};
use colloquy_store::{
    ConversationStore, ConversationUpdate, MessageCursor, MessageEvent, NewParticipant, SeaStore, StoreError,
    StoreOptions,
};
use proptest::prelude::*;

use crate::fixtures::{self, text, turn_start};

/// Conversations per case, and parties that may join them.
const CONVERSATIONS: usize = 2;
const PARTIES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A message, with an idempotency key from a small set so that retries happen.
    Append {
        conversation: usize,
        key: Option<u8>,
    },
    Batch {
        conversation: usize,
        keys: Vec<Option<u8>>,
    },
    Event {
        conversation: usize,
    },
    Status {
        conversation: usize,
        status: ConversationStatus,
    },
    Join {
        conversation: usize,
        party: usize,
    },
    Leave {
        conversation: usize,
        party: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let conversation = 0..CONVERSATIONS;
    let key = proptest::option::of(0_u8..4);
    let status = prop_oneof![
        Just(ConversationStatus::Active),
        Just(ConversationStatus::Archived),
        Just(ConversationStatus::Closed)
    ];
    prop_oneof![
        4 => (conversation.clone(), key.clone()).prop_map(|(conversation, key)| Op::Append { conversation, key }),
        2 => (conversation.clone(), proptest::collection::vec(key, 0..5))
            .prop_map(|(conversation, keys)| Op::Batch { conversation, keys }),
        2 => conversation.clone().prop_map(|conversation| Op::Event { conversation }),
        1 => (conversation.clone(), status).prop_map(|(conversation, status)| Op::Status { conversation, status }),
        1 => (conversation.clone(), 0..PARTIES).prop_map(|(conversation, party)| Op::Join { conversation, party }),
        1 => (conversation, 0..PARTIES).prop_map(|(conversation, party)| Op::Leave { conversation, party }),
    ]
}

/// What the store should hold for one conversation.
#[derive(Debug, Default)]
struct Model {
    last_seq: u64,
    status: ConversationStatus,
    /// seq -> (text, key)
    messages: BTreeMap<u64, (String, Option<String>)>,
    /// Parties in the conversation now.
    present: Vec<bool>,
}

impl Model {
    fn seq_of_key(&self, key: &str) -> Option<u64> {
        self.messages.iter().find(|(_, (_, k))| k.as_deref() == Some(key)).map(|(seq, _)| *seq)
    }
}

/// The outcome of one operation, comparable between store and model.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Seqs handed out (or found, for duplicates) and whether each was a duplicate.
    Appended(Vec<(u64, bool)>),
    Seq(u64),
    Unchanged,
    NotActive,
    InvalidStatus,
    AlreadyPresent,
    NotPresent,
}

fn message(key: Option<u8>, n: usize) -> NewMessage {
    NewMessage { client_msg_id: key.map(|k| format!("k{k}")), ..text(&format!("message {n}")) }
}

fn from_error(err: StoreError) -> Outcome {
    match err {
        StoreError::ConversationNotActive(_) => Outcome::NotActive,
        StoreError::InvalidStatusChange { .. } => Outcome::InvalidStatus,
        StoreError::ParticipantAlreadyPresent { .. } => Outcome::AlreadyPresent,
        StoreError::ParticipantNotFound { .. } => Outcome::NotPresent,
        other => panic!("unexpected store error: {other}"),
    }
}

/// Applies a batch of keyed messages to the model, as the store should.
fn model_append(model: &mut Model, keys: &[Option<u8>], first_n: usize) -> Outcome {
    let mut planned: Vec<(u64, bool)> = Vec::new();
    let mut new: Vec<(u64, String, Option<String>)> = Vec::new();
    let mut seq = model.last_seq;
    for (i, key) in keys.iter().enumerate() {
        let key = key.map(|k| format!("k{k}"));
        let existing = key.as_deref().and_then(|k| {
            model.seq_of_key(k).or_else(|| new.iter().find(|(_, _, nk)| nk.as_deref() == Some(k)).map(|(s, _, _)| *s))
        });
        match existing {
            Some(found) => planned.push((found, true)),
            None => {
                seq += 1;
                planned.push((seq, false));
                new.push((seq, format!("message {}", first_n + i), key));
            }
        }
    }
    if new.is_empty() {
        return Outcome::Appended(planned);
    }
    if model.status != ConversationStatus::Active {
        return Outcome::NotActive;
    }
    model.last_seq = seq;
    for (seq, text, key) in new {
        model.messages.insert(seq, (text, key));
    }
    Outcome::Appended(planned)
}

async fn run_case(ops: Vec<Op>) {
    let store = SeaStore::connect("sqlite::memory:", StoreOptions::default()).await.unwrap();
    let parties: Vec<ParticipantId> = (0..PARTIES).map(|_| ParticipantId::new()).collect();
    let mut ids: Vec<ConversationId> = Vec::new();
    let mut models: Vec<Model> = Vec::new();
    for _ in 0..CONVERSATIONS {
        let mut new = fixtures::new_conversation();
        new.participants.clear();
        ids.push(store.create_conversation(new).await.unwrap().0.id);
        models.push(Model { present: vec![false; PARTIES], ..Model::default() });
    }
    let mut n = 0;

    for (step, op) in ops.into_iter().enumerate() {
        let (c, actual, expected) = match op.clone() {
            Op::Append { conversation: c, key } => {
                let actual = match store.append_message(ids[c], message(key, n), MessageEvent::Posted).await {
                    Ok(appended) => Outcome::Appended(vec![(appended.message.seq, appended.duplicate)]),
                    Err(err) => from_error(err),
                };
                let expected = model_append(&mut models[c], &[key], n);
                n += 1;
                (c, actual, expected)
            }
            Op::Batch { conversation: c, keys } => {
                let batch =
                    keys.iter().enumerate().map(|(i, key)| (message(*key, n + i), MessageEvent::Posted)).collect();
                let actual = match store.append_messages(ids[c], batch, None).await {
                    Ok(appended) => Outcome::Appended(appended.iter().map(|a| (a.message.seq, a.duplicate)).collect()),
                    Err(err) => from_error(err),
                };
                let expected = model_append(&mut models[c], &keys, n);
                n += keys.len();
                (c, actual, expected)
            }
            Op::Event { conversation: c } => {
                let actual = Outcome::Seq(store.append_event(ids[c], turn_start(1)).await.unwrap().seq.unwrap());
                models[c].last_seq += 1;
                (c, actual, Outcome::Seq(models[c].last_seq))
            }
            Op::Status { conversation: c, status } => {
                let actual = match store.update_conversation(ids[c], ConversationUpdate::status(status)).await {
                    Ok((_, Some(event))) => Outcome::Seq(event.seq.unwrap()),
                    Ok((_, None)) => Outcome::Unchanged,
                    Err(err) => from_error(err),
                };
                let model = &mut models[c];
                let expected = if status == model.status {
                    Outcome::Unchanged
                } else if model.status == ConversationStatus::Closed {
                    Outcome::InvalidStatus
                } else {
                    model.status = status;
                    model.last_seq += 1;
                    Outcome::Seq(model.last_seq)
                };
                (c, actual, expected)
            }
            Op::Join { conversation: c, party } => {
                let new = NewParticipant {
                    account: None,
                    a2a_url: None,
                    a2a_key: None,
                    id: parties[party],
                    kind: ParticipantKind::User,
                    display_name: format!("party {party}"),
                    role: ParticipantRole::Member,
                    agent: None,
                };
                let actual = match store.add_participant(ids[c], new).await {
                    Ok((_, event)) => Outcome::Seq(event.seq.unwrap()),
                    Err(err) => from_error(err),
                };
                let model = &mut models[c];
                let expected = if model.status != ConversationStatus::Active {
                    Outcome::NotActive
                } else if model.present[party] {
                    Outcome::AlreadyPresent
                } else {
                    model.present[party] = true;
                    model.last_seq += 1;
                    Outcome::Seq(model.last_seq)
                };
                (c, actual, expected)
            }
            Op::Leave { conversation: c, party } => {
                let actual = match store.remove_participant(ids[c], parties[party]).await {
                    Ok(event) => Outcome::Seq(event.seq.unwrap()),
                    Err(err) => from_error(err),
                };
                let model = &mut models[c];
                let expected = if model.status != ConversationStatus::Active {
                    Outcome::NotActive
                } else if !model.present[party] {
                    Outcome::NotPresent
                } else {
                    model.present[party] = false;
                    model.last_seq += 1;
                    Outcome::Seq(model.last_seq)
                };
                (c, actual, expected)
            }
        };
        assert_eq!(actual, expected, "step {step}: {op:?}");

        // The whole visible state of the conversation the step touched.
        let model = &models[c];
        let stored = store.conversation(ids[c]).await.unwrap();
        assert_eq!(
            (stored.last_seq, stored.status, stored.totals.messages),
            (model.last_seq, model.status, model.messages.len() as u64),
            "step {step}: {op:?}"
        );
        let messages = store.messages_page(ids[c], MessageCursor::After(0), 1000).await.unwrap().items;
        let seen: Vec<(u64, String)> = messages.iter().map(|m| (m.seq, m.text())).collect();
        let want: Vec<(u64, String)> = model.messages.iter().map(|(seq, (text, _))| (*seq, text.clone())).collect();
        assert_eq!(seen, want, "step {step}: {op:?}");
        let logged: Vec<u64> =
            store.events_after(ids[c], 0, u64::MAX).await.unwrap().iter().filter_map(|e| e.seq).collect();
        assert_eq!(logged, (1..=model.last_seq).collect::<Vec<_>>(), "step {step}: the log is gap-free");
        let present: Vec<bool> = {
            let participants = store.participants(ids[c]).await.unwrap();
            parties.iter().map(|p| participants.iter().any(|q| q.id == *p && q.left_at.is_none())).collect()
        };
        assert_eq!(present, model.present, "step {step}: {op:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_case(ops));
    }
}
