//! [`SeaStore`]: the one SeaORM implementation of [`ConversationStore`], for SQLite and Postgres.
//!
//! Both backends run the same statements; the code branches on the backend only to open the pool
//! (SQLite pragmas, one connection for an in-memory database) and to serialize SQLite's writers.

mod conversations;
mod events;
mod messages;
mod participants;
mod recovery;

use std::fmt::Display;
use std::time::Duration;

use async_trait::async_trait;
use chrono::SubsecRound;
use colloquy_core_model::{
    Conversation, ConversationId, ConversationStatus, EventEnvelope, Message, NewMessage, Participant, Timestamp,
    TurnEvent, Usage,
};
use colloquy_migrations::Migrator;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, MutexGuard};

use crate::{AppendedMessage, ConversationStore, MessageEvent, NewConversation, StoreError};

/// How hard SQLite works to keep a commit through a power loss. Postgres ignores it (its own
/// `synchronous_commit` setting decides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: a committed append survives a power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: in WAL mode a power loss may lose the last commits but never
    /// corrupts the database; much faster on slow disks.
    Normal,
}

/// How [`SeaStore::connect`] opens its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// SQLite's `synchronous` pragma.
    pub durability: Durability,
    /// Pool size; an in-memory SQLite database always uses one connection.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { durability: Durability::Full, max_connections: 8 }
    }
}

/// How long a SQLite connection waits for another process's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The conversation store over SQLite or Postgres.
#[derive(Debug)]
pub struct SeaStore {
    /// The pool every operation uses.
    db: DatabaseConnection,
    /// SQLite admits one writer at a time: a deferred transaction that later wants to write fails
    /// with `SQLITE_BUSY`, and waiting writers poll for the lock until the busy timeout. So this
    /// process's write transactions queue here instead. `None` on Postgres, where the
    /// conversation row lock orders writers.
    writer: Option<Mutex<()>>,
}

impl SeaStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// Accepts `sqlite://PATH?mode=rwc`, `sqlite:PATH`, `sqlite::memory:` and
    /// `postgres://USER@HOST/DB` (or `postgresql://`); any other URL is
    /// [`StoreError::UnsupportedUrl`].
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let (db, writer) = if url.starts_with("sqlite:") {
            (connect_sqlite(url, options).await?, Some(Mutex::new(())))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (connect_postgres(url, options).await?, None)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        Migrator::up(&db, None).await?;
        Ok(Self { db, writer })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The connection pool, for queries the trait does not cover (benches, maintenance).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a write transaction; on SQLite it first waits for this process's other writers.
    /// Keep the guard until the transaction is committed or rolled back.
    async fn begin_write(&self) -> Result<(Option<MutexGuard<'_, ()>>, DatabaseTransaction), StoreError> {
        let guard = match &self.writer {
            Some(writer) => Some(writer.lock().await),
            None => None,
        };
        // IMMEDIATE takes SQLite's write lock up front, so another process's writer makes this
        // one wait (busy timeout) at BEGIN rather than fail halfway. Postgres ignores the mode.
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        Ok((guard, txn))
    }
}

async fn connect_sqlite(url: &str, options: StoreOptions) -> Result<DatabaseConnection, StoreError> {
    let synchronous = match options.durability {
        Durability::Full => SqliteSynchronous::Full,
        Durability::Normal => SqliteSynchronous::Normal,
    };
    let mut connect = ConnectOptions::new(url);
    connect.sqlx_logging(false);
    // The pragmas are per connection, so sqlx sets them on every connection the pool opens.
    connect.map_sqlx_sqlite_opts(move |sqlite| {
        sqlite
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .synchronous(synchronous)
    });
    if is_sqlite_memory(url) {
        // Each connection to `:memory:` would see its own database, and the database vanishes
        // with its last connection: keep exactly one, forever.
        connect.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
    } else {
        connect.max_connections(options.max_connections.max(1));
    }
    Ok(Database::connect(connect).await?)
}

async fn connect_postgres(url: &str, options: StoreOptions) -> Result<DatabaseConnection, StoreError> {
    let mut connect = ConnectOptions::new(url);
    connect.sqlx_logging(false).max_connections(options.max_connections.max(1));
    Ok(Database::connect(connect).await?)
}

/// Whether a `sqlite:` URL names an in-memory database (`sqlite::memory:`, `sqlite://:memory:`,
/// or `mode=memory`).
fn is_sqlite_memory(url: &str) -> bool {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

/// The store's clock: whole microseconds, the finest Postgres keeps, so that what an append
/// returns equals what a later read returns on every backend.
fn now() -> Timestamp {
    chrono::Utc::now().trunc_subsecs(6)
}

/// A [`StoreError::Corrupt`] about `what`.
fn corrupt(what: &'static str, detail: impl Display) -> StoreError {
    StoreError::Corrupt { what, detail: detail.to_string() }
}

/// A count or seq as stored: neither backend has unsigned 64-bit integers. Counts beyond
/// `i64::MAX` cannot occur in practice, so saturating is only a guard.
fn to_db_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored count or seq; a negative one means the row was changed by hand.
fn from_db_count(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(what, format!("negative value {value}")))
}

/// A page size as bound: Postgres has no unsigned integers, so `u64::MAX` ("everything") must
/// become `i64::MAX`.
fn db_limit(limit: u64) -> u64 {
    limit.min(i64::MAX.unsigned_abs())
}

/// What an appended message adds to its conversation's totals.
struct TotalsDelta {
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
}

impl TotalsDelta {
    fn of(usage: Option<&Usage>) -> Self {
        let usage = usage.copied().unwrap_or_default();
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: usage.cost_usd.unwrap_or(0.0),
        }
    }
}

/// Takes the conversation's next seq: bumps `last_seq` and `last_activity` (and the totals, for a
/// message) in one statement whose row lock orders concurrent appenders on Postgres. Returns the
/// new seq and the conversation's status. Must run inside the transaction that writes the rows.
async fn next_seq(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    now: Timestamp,
    totals: Option<&TotalsDelta>,
) -> Result<(u64, ConversationStatus), StoreError> {
    // Scoped here: its `max`/`min` methods would shadow `Ord`'s elsewhere in the file.
    use conversations::Column;
    use sea_orm::sea_query::ExprTrait;

    let mut update = Query::update();
    update
        .table(conversations::Entity)
        .value(Column::LastSeq, Expr::col(Column::LastSeq).add(1))
        .value(Column::LastActivity, now)
        .and_where(Expr::col(Column::Id).eq(conversation.as_uuid()))
        .returning(Query::returning().columns([Column::LastSeq, Column::Status]));
    if let Some(totals) = totals {
        update
            .value(Column::TotalMessages, Expr::col(Column::TotalMessages).add(1))
            .value(Column::TotalInputTokens, Expr::col(Column::TotalInputTokens).add(to_db_count(totals.input_tokens)))
            .value(
                Column::TotalOutputTokens,
                Expr::col(Column::TotalOutputTokens).add(to_db_count(totals.output_tokens)),
            )
            .value(Column::TotalCostUsd, Expr::col(Column::TotalCostUsd).add(totals.cost_usd));
    }
    let row = txn.query_one(&update).await?.ok_or(StoreError::ConversationNotFound(conversation))?;
    let seq: i64 = row.try_get("", "last_seq")?;
    let status: String = row.try_get("", "status")?;
    Ok((from_db_count(seq, "conversations.last_seq")?, conversations::parse_status(&status)?))
}

/// The message stored under `client_msg_id` in `conversation`, if any.
async fn message_by_client_msg_id<C: ConnectionTrait>(
    db: &C,
    conversation: ConversationId,
    client_msg_id: &str,
) -> Result<Option<Message>, StoreError> {
    messages::Entity::find()
        .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
        .filter(messages::Column::ClientMsgId.eq(client_msg_id))
        .one(db)
        .await?
        .map(messages::Model::into_domain)
        .transpose()
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

#[async_trait]
impl ConversationStore for SeaStore {
    async fn create_conversation(
        &self,
        mut new: NewConversation,
    ) -> Result<(Conversation, Vec<Participant>), StoreError> {
        let now = now();
        let conversation_id = new.id;
        let mut participants = Vec::with_capacity(new.participants.len());
        let mut participant_rows = Vec::with_capacity(new.participants.len());
        for (join_order, participant) in (0_i64..).zip(new.participants.drain(..)) {
            let (participant, row) = participants::new_row(conversation_id, join_order, participant, now)?;
            participants.push(participant);
            participant_rows.push(row);
        }
        let (conversation, conversation_row) = conversations::new_row(new, now)?;

        let (_writer, txn) = self.begin_write().await?;
        conversations::Entity::insert(conversation_row).exec_without_returning(&txn).await?;
        if !participant_rows.is_empty() {
            participants::Entity::insert_many(participant_rows).exec_without_returning(&txn).await?;
        }
        txn.commit().await?;
        Ok((conversation, participants))
    }

    async fn conversation(&self, id: ConversationId) -> Result<Conversation, StoreError> {
        conversations::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await?
            .ok_or(StoreError::ConversationNotFound(id))?
            .into_domain()
    }

    async fn participants(&self, id: ConversationId) -> Result<Vec<Participant>, StoreError> {
        participants::Entity::find()
            .filter(participants::Column::ConversationId.eq(id.as_uuid()))
            .order_by_asc(participants::Column::JoinOrder)
            .all(&self.db)
            .await?
            .into_iter()
            .map(participants::Model::into_domain)
            .collect()
    }

    async fn append_message(
        &self,
        conversation: ConversationId,
        message: NewMessage,
        event: MessageEvent,
    ) -> Result<AppendedMessage, StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        if let Some(client_msg_id) = &message.client_msg_id
            && let Some(stored) = message_by_client_msg_id(&txn, conversation, client_msg_id).await?
        {
            txn.rollback().await?;
            return Ok(AppendedMessage { message: stored, event: None, duplicate: true });
        }

        let now = now();
        let totals = TotalsDelta::of(message.usage.as_ref());
        let (seq, status) = next_seq(&txn, conversation, now, Some(&totals)).await?;
        if status != ConversationStatus::Active {
            txn.rollback().await?;
            return Err(StoreError::ConversationNotActive(conversation));
        }
        let stored = message.into_message(conversation, seq, now);
        let event = event.into_event(stored.clone());

        if let Err(err) = messages::Entity::insert(messages::new_row(&stored)?).exec_without_returning(&txn).await {
            // Another writer (a Postgres connection, or another process on the same SQLite file)
            // stored the same client_msg_id after the check above: answer with its message.
            if is_unique_violation(&err)
                && let Some(client_msg_id) = &stored.client_msg_id
            {
                txn.rollback().await?;
                if let Some(earlier) = message_by_client_msg_id(&self.db, conversation, client_msg_id).await? {
                    return Ok(AppendedMessage { message: earlier, event: None, duplicate: true });
                }
            }
            return Err(err.into());
        }
        events::Entity::insert(events::new_row(conversation, seq, &event, now)?).exec_without_returning(&txn).await?;
        txn.commit().await?;

        Ok(AppendedMessage {
            message: stored,
            event: Some(EventEnvelope { conversation_id: conversation, seq: Some(seq), event }),
            duplicate: false,
        })
    }

    async fn append_event(&self, conversation: ConversationId, event: TurnEvent) -> Result<EventEnvelope, StoreError> {
        debug_assert!(event.is_durable(), "{} is ephemeral and must not be stored", event.kind());
        let (_writer, txn) = self.begin_write().await?;
        let now = now();
        let (seq, _status) = next_seq(&txn, conversation, now, None).await?;
        events::Entity::insert(events::new_row(conversation, seq, &event, now)?).exec_without_returning(&txn).await?;
        txn.commit().await?;
        Ok(EventEnvelope { conversation_id: conversation, seq: Some(seq), event })
    }

    async fn messages_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError> {
        messages::Entity::find()
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::Seq.gt(to_db_count(after_seq)))
            .order_by_asc(messages::Column::Seq)
            .limit(db_limit(limit))
            .all(&self.db)
            .await?
            .into_iter()
            .map(messages::Model::into_domain)
            .collect()
    }

    async fn unfinished_turns(&self) -> Result<Vec<(ConversationId, u64)>, StoreError> {
        recovery::unfinished_turns(&self.db).await
    }

    async fn events_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        events::Entity::find()
            .filter(events::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(events::Column::Seq.gt(to_db_count(after_seq)))
            .order_by_asc(events::Column::Seq)
            .limit(db_limit(limit))
            .all(&self.db)
            .await?
            .into_iter()
            .map(events::Model::into_domain)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::is_sqlite_memory;

    #[test]
    fn in_memory_sqlite_urls_are_recognized() {
        for url in
            ["sqlite::memory:", "sqlite://:memory:", "sqlite://?mode=memory", "sqlite:x.db?cache=shared&mode=memory"]
        {
            assert!(is_sqlite_memory(url), "{url}");
        }
        for url in ["sqlite://data/colloquy.db?mode=rwc", "sqlite:colloquy.db", "sqlite://memory.db"] {
            assert!(!is_sqlite_memory(url), "{url}");
        }
    }
}
