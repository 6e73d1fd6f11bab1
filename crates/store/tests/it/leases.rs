//! Leases with fencing tokens: who may append to a conversation when several nodes share it.

use std::sync::Arc;
use std::time::Duration;

use colloquy_core_model::ConversationId;
use colloquy_store::{ConversationStore, FencingToken, MessageEvent, SeaStore, StoreError};

use crate::fixtures::{self, text, turn_start};

const MINUTE: Duration = Duration::from_secs(60);

pub async fn stale_fencing_token_is_refused(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;

    let lease = store.acquire_lease(id, "node-a", MINUTE).await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.token), ("node-a", FencingToken(1)));
    let appended = store.append_messages(id, vec![(text("by a"), MessageEvent::Posted)], Some(lease.token)).await;
    assert_eq!(appended.unwrap()[0].message.seq, 1);
    assert_eq!(store.append_event_fenced(id, turn_start(1), lease.token).await.unwrap().seq, Some(2));

    // Another node cannot take a live lease.
    assert!(matches!(
        store.acquire_lease(id, "node-b", MINUTE).await,
        Err(StoreError::LeaseHeld { holder, .. }) if holder == "node-a"
    ));

    // Once it has expired (a zero TTL expires at once), another node takes it with a new token,
    // and the old holder's appends are refused and write nothing.
    let renewed = store.renew_lease(&lease, Duration::ZERO).await.unwrap();
    assert_eq!(renewed.token, lease.token);
    let taken = store.acquire_lease(id, "node-b", MINUTE).await.unwrap();
    assert_eq!(taken.token, FencingToken(2));
    let refused =
        store.append_messages(id, vec![(text("by a, too late"), MessageEvent::Posted)], Some(lease.token)).await;
    assert!(matches!(refused, Err(StoreError::StaleLease(c)) if c == id), "{refused:?}");
    assert!(matches!(store.append_event_fenced(id, turn_start(2), lease.token).await, Err(StoreError::StaleLease(_))));
    assert!(matches!(store.renew_lease(&lease, MINUTE).await, Err(StoreError::StaleLease(_))));
    assert!(matches!(store.release_lease(&lease).await, Err(StoreError::StaleLease(_))));
    assert_eq!(store.conversation(id).await.unwrap().last_seq, 2);
    store.append_event_fenced(id, turn_start(2), taken.token).await.unwrap();
    // Admitting a queued prompt is fenced too: only the holder brings it into the history.
    let queued = store.append_message(id, text("queued by anyone"), MessageEvent::Queued).await.unwrap();
    let late = store.admit_messages(id, &[queued.message.id], Some(lease.token)).await;
    assert!(matches!(late, Err(StoreError::StaleLease(_))), "{late:?}");
    assert_eq!(store.queued_messages(id).await.unwrap().len(), 1, "a refused admission writes nothing");
    assert_eq!(store.admit_messages(id, &[queued.message.id], Some(taken.token)).await.unwrap().len(), 1);

    // A released lease fences nothing any more; the next one is newer still.
    store.release_lease(&taken).await.unwrap();
    assert!(matches!(store.append_event_fenced(id, turn_start(3), taken.token).await, Err(StoreError::StaleLease(_))));
    let again = store.acquire_lease(id, "node-a", MINUTE).await.unwrap();
    assert_eq!(again.token, FencingToken(3));

    // Unfenced appends (one node, no leases) are unaffected; a conversation never leased refuses
    // every token.
    store.append_message(id, text("unfenced"), MessageEvent::Posted).await.unwrap();
    let (never, _) = fixtures::create_conversation(&store).await;
    assert!(matches!(
        store.append_event_fenced(never.id, turn_start(1), FencingToken(1)).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        store.acquire_lease(ConversationId::new(), "node-a", MINUTE).await,
        Err(StoreError::ConversationNotFound(_))
    ));
}

pub async fn api_keys_are_stored_hashed(store: Arc<SeaStore>) {
    use colloquy_core_model::{AccountId, AccountKind};
    use colloquy_store::{ApiKeyId, NewAccount, NewApiKey};
    use sea_orm::{ConnectionTrait, Statement};

    let account = store
        .create_account(NewAccount {
            id: AccountId::new(),
            name: "ada".to_owned(),
            kind: AccountKind::User,
            display_name: "Ada".to_owned(),
        })
        .await
        .unwrap();
    let taken =
        NewAccount { id: AccountId::new(), name: "ada".to_owned(), kind: AccountKind::Admin, display_name: "x".into() };
    assert!(matches!(store.create_account(taken).await, Err(StoreError::AccountExists(_))));
    let spaced =
        NewAccount { id: AccountId::new(), name: "a b".to_owned(), kind: AccountKind::User, display_name: "x".into() };
    assert!(matches!(store.create_account(spaced).await, Err(StoreError::InvalidAccountName(_))));
    assert_eq!(store.account_by_name("ada").await.unwrap(), Some(account.clone()));
    assert_eq!(store.account(account.id).await.unwrap(), account);
    assert_eq!(store.accounts().await.unwrap(), std::slice::from_ref(&account));

    let secret = "ck_live_0123456789abcdefghijklmnop".to_owned();
    let new = NewApiKey {
        id: ApiKeyId::new(),
        secret: secret.clone(),
        label: Some("laptop".to_owned()),
        account: account.id,
        expires_at: None,
    };
    assert!(!format!("{new:?}").contains(&secret), "Debug redacts the secret");
    let key = store.create_api_key(new.clone()).await.unwrap();
    assert_eq!((key.account, key.revoked_at), (Some(account.id), None));

    let now = chrono::Utc::now();
    assert_eq!(store.authenticate_api_key(&secret, now).await.unwrap(), Some((key.clone(), account.clone())));
    assert_eq!(store.authenticate_api_key("ck_live_0123456789abcdefghijklmnoq", now).await.unwrap(), None);

    // Only the hash is in the database.
    let backend = store.connection().get_database_backend();
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(backend, "SELECT key_hash FROM api_keys".to_owned()))
        .await
        .unwrap();
    let hash: String = rows[0].try_get("", "key_hash").unwrap();
    assert_eq!(hash.len(), 64);
    assert!(!hash.contains(&secret));

    // The same secret twice is refused; too short a secret too; so is a key for no account.
    assert!(store.create_api_key(NewApiKey { id: ApiKeyId::new(), ..new.clone() }).await.is_err());
    let weak = NewApiKey { id: ApiKeyId::new(), secret: "short".to_owned(), ..new.clone() };
    assert!(matches!(store.create_api_key(weak).await, Err(StoreError::WeakApiKey { .. })));
    let orphan =
        NewApiKey { id: ApiKeyId::new(), secret: format!("{secret}-2"), account: AccountId::new(), ..new.clone() };
    assert!(matches!(store.create_api_key(orphan).await, Err(StoreError::AccountNotFound(_))));

    // A key with an expiry works until then.
    let hour = chrono::Duration::hours(1);
    let expiring = NewApiKey {
        id: ApiKeyId::new(),
        secret: format!("{secret}-expiring"),
        expires_at: Some(now + hour),
        ..new.clone()
    };
    store.create_api_key(expiring.clone()).await.unwrap();
    assert!(store.authenticate_api_key(&expiring.secret, now).await.unwrap().is_some());
    assert!(store.authenticate_api_key(&expiring.secret, now + hour * 2).await.unwrap().is_none());

    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    store.revoke_api_key(key.id).await.unwrap();
    assert_eq!(store.authenticate_api_key(&secret, now).await.unwrap(), None);
    let revoked = store.api_keys_revoked_since(before).await.unwrap();
    assert_eq!(revoked.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [key.id]);
    assert!(store.api_keys_revoked_since(chrono::Utc::now() + hour).await.unwrap().is_empty());
    let listed = store.api_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].revoked_at.is_some());
    assert!(matches!(store.revoke_api_key(ApiKeyId::new()).await, Err(StoreError::ApiKeyNotFound(_))));
}

pub async fn racing_acquirers_get_one_lease(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let tasks: Vec<_> = (0..8)
        .map(|node| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.acquire_lease(id, &format!("node-{node}"), MINUTE).await })
        })
        .collect();
    let mut won = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(lease) => won.push(lease),
            Err(StoreError::LeaseHeld { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one node holds the lease: {won:?}");
    assert_eq!(won[0].token, FencingToken(1));
    store.append_event_fenced(id, turn_start(1), won[0].token).await.unwrap();
}
