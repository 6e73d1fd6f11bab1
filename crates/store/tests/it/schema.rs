//! The schema and the connection: migrations, reopening a file, URLs and SQLite pragmas.

use std::sync::Arc;

use colloquy_migrations::Migrator;
use colloquy_store::{ConversationStore, Durability, MessageEvent, SeaStore, StoreError, StoreOptions};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;

use crate::backends::sqlite_file_url;
use crate::fixtures::{self, text};

pub async fn migrations_go_down_and_up_again(store: Arc<SeaStore>) {
    let (conversation, _) = fixtures::create_conversation(&store).await;

    Migrator::down(store.connection(), None).await.unwrap();
    assert!(matches!(store.conversation(conversation.id).await, Err(StoreError::Database(_))), "tables are gone");

    Migrator::up(store.connection(), None).await.unwrap();
    assert!(matches!(store.conversation(conversation.id).await, Err(StoreError::ConversationNotFound(_))));
    fixtures::create_conversation(&store).await;
}

pub async fn records_migration_keeps_and_indexes_existing_rows(store: Arc<SeaStore>) {
    let (conversation, participants) = fixtures::create_conversation(&store).await;
    let id = conversation.id;
    let hello = store.append_message(id, text("hello from before the upgrade"), MessageEvent::Posted).await.unwrap();
    let other = store.append_message(id, text("unrelated"), MessageEvent::Posted).await.unwrap();

    // Back to the initial schema with the rows in place, then up again: the rows survive both
    // ways and the new columns and the search index are filled from them.
    Migrator::down(store.connection(), Some(1)).await.unwrap();
    Migrator::up(store.connection(), None).await.unwrap();

    assert_eq!(store.messages_after(id, 0, 10).await.unwrap(), [hello.message.clone(), other.message]);
    assert_eq!(store.participants(id).await.unwrap(), participants);
    assert_eq!(store.search_messages(participants[0].id, "upgrade", 10).await.unwrap(), [hello.message]);
    let history = store.history_within_tokens(id, u64::MAX).await.unwrap();
    assert!(history.tokens >= 2, "sizes were estimated: {history:?}");
    // New messages are indexed by the triggers (SQLite) or the generated column (Postgres).
    let after = store.append_message(id, text("after the upgrade"), MessageEvent::Posted).await.unwrap();
    let hits = store.search_messages(participants[0].id, "upgrade", 10).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0], after.message);
}

#[tokio::test]
async fn sqlite_file_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_file_url(dir.path());
    let store = SeaStore::connect(&url, StoreOptions::default()).await.unwrap();
    let (conversation, _) = fixtures::create_conversation(&store).await;
    let appended = store.append_message(conversation.id, text("remember me"), MessageEvent::Posted).await.unwrap();
    store.connection().close_by_ref().await.unwrap();
    drop(store);

    // Connecting again runs the migrations again, which must find nothing to do.
    let reopened = SeaStore::connect(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(reopened.messages_after(conversation.id, 0, 10).await.unwrap(), [appended.message]);
    assert_eq!(reopened.conversation(conversation.id).await.unwrap().last_seq, 1);
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in ["mysql://root@localhost/colloquy", "colloquy.db", "", "http://example.com"] {
        let result = SeaStore::connect(url, StoreOptions::default()).await;
        assert!(matches!(&result, Err(StoreError::UnsupportedUrl(u)) if u == url), "{url}: {result:?}");
    }
}

#[tokio::test]
async fn sqlite_connections_get_the_configured_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    for (durability, synchronous) in [(Durability::Full, 2), (Durability::Normal, 1)] {
        let options = StoreOptions { durability, max_connections: 4 };
        let store = SeaStore::connect(&sqlite_file_url(dir.path()), options).await.unwrap();
        assert_eq!(store.backend(), DbBackend::Sqlite);
        assert_eq!(pragma::<String>(&store, "journal_mode").await, "wal");
        assert_eq!(pragma::<i64>(&store, "synchronous").await, synchronous);
        assert_eq!(pragma::<i64>(&store, "foreign_keys").await, 1);
        assert_eq!(pragma::<i64>(&store, "busy_timeout").await, 5000);
        store.connection().close_by_ref().await.unwrap();
    }
}

async fn pragma<T: sea_orm::TryGetable>(store: &SeaStore, name: &str) -> T {
    let statement = Statement::from_string(DbBackend::Sqlite, format!("PRAGMA {name}"));
    let row = store.connection().query_one_raw(statement).await.unwrap().expect("pragma row");
    row.try_get_by_index(0).unwrap()
}
