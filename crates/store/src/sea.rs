//! [`SeaStore`]: the one SeaORM implementation of [`ConversationStore`], for SQLite and Postgres.
//!
//! Both backends run the same statements; the code branches on the backend only to open the pool
//! (SQLite pragmas, one connection for an in-memory database, Postgres `synchronous_commit`), to
//! serialize SQLite's writers, and for full-text search (FTS5 or `tsvector`, in `history.rs`).

mod accounts;
mod agents;
mod api_keys;
mod append;
mod commit;
mod conversations;
mod edits;
mod events;
mod history;
mod leases;
mod lifecycle;
mod messages;
mod participants;
mod recovery;

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::SubsecRound;
use colloquy_core_model::limits::{MAX_STORED_JSON_DEPTH, json_depth};
use colloquy_core_model::{
    Conversation, ConversationId, ConversationStatus, EventEnvelope, Message, NewMessage, Participant, ParticipantId,
    Timestamp, TurnEvent, Usage,
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

use crate::{
    ApiKey, ApiKeyId, Append, AppendOptions, AppendedMessage, ConversationCursor, ConversationFilter,
    ConversationStore, ConversationUpdate, FencingToken, History, Lease, MessageCursor, MessageEvent, NewAccount,
    NewApiKey, NewConversation, NewParticipant, Page, StoreError,
};

/// How hard a commit (every append is one) works to survive a crash or a power loss. An explicit
/// setting, `Full` by default; `crates/store/README.md` has the table of what each value means.
///
/// Either way a crash never corrupts the database or breaks the seq invariant: what is lost is
/// lost whole, with its seqs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk when it returns: SQLite `synchronous = FULL` (the WAL is fsynced
    /// at each commit); on Postgres the server's `synchronous_commit` (`on` unless an operator
    /// chose otherwise). A committed append survives a power loss.
    #[default]
    Full,
    /// Commits survive a process crash but an OS crash or power loss may lose the last ones
    /// (about a second): SQLite `synchronous = NORMAL` (WAL fsynced at checkpoints), Postgres
    /// `synchronous_commit = off` on the store's connections. Faster on slow disks.
    Normal,
}

/// How [`SeaStore::connect`] opens its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How hard each commit works to reach the disk; [`Durability::Full`] by default.
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
    writer: Option<Arc<Mutex<()>>>,
    /// The group commit every append goes through.
    committer: commit::Committer,
}

impl SeaStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// Accepts `sqlite://PATH?mode=rwc`, `sqlite:PATH`, `sqlite::memory:` and
    /// `postgres://USER@HOST/DB` (or `postgresql://`); any other URL is
    /// [`StoreError::UnsupportedUrl`].
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let db = connect_sqlite(url, options, false).await?;
            Migrator::up(&db, None).await?;
            let writer = Some(Arc::new(Mutex::new(())));
            // The group commit's own connection, so it can switch `synchronous` per commit; an
            // in-memory database has only the one connection.
            let committer = if is_sqlite_memory(url) {
                commit::Committer::start(db.clone(), false, writer.clone(), options.durability)
            } else {
                let own = connect_sqlite(url, options, true).await?;
                commit::Committer::start(own, true, writer.clone(), options.durability)
            };
            Ok(Self { db, writer, committer })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let db = connect_postgres(url, options).await?;
            Migrator::up(&db, None).await?;
            let committer = commit::Committer::start(db.clone(), false, None, options.durability);
            Ok(Self { db, writer: None, committer })
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
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

/// The pool of a SQLite database; with `writer`, the one long-lived connection of the group
/// commit (never recycled, so the `synchronous` it switched stays as it left it).
async fn connect_sqlite(url: &str, options: StoreOptions, writer: bool) -> Result<DatabaseConnection, StoreError> {
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
    if writer {
        connect.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
    } else if is_sqlite_memory(url) {
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
    if options.durability == Durability::Normal {
        // Per connection, like SQLite's pragma; `Full` leaves the server's setting (`on` unless
        // an operator chose otherwise).
        connect.map_sqlx_postgres_opts(|postgres| postgres.options([("synchronous_commit", "off")]));
    }
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

/// `value` as the JSON a column stores, refused with [`StoreError::TooDeep`] when it nests more
/// than [`MAX_STORED_JSON_DEPTH`] levels: readers stop at 128, so a deeper row could be written
/// but never read back (and a conversation that cannot be read cannot be recovered).
fn stored_json<T: serde::Serialize + ?Sized>(value: &T, what: &'static str) -> Result<serde_json::Value, StoreError> {
    let json = serde_json::to_value(value).map_err(|err| corrupt(what, err))?;
    let depth = json_depth(&json);
    if depth > MAX_STORED_JSON_DEPTH {
        return Err(StoreError::TooDeep { what, depth, limit: MAX_STORED_JSON_DEPTH });
    }
    Ok(json)
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

/// What appended messages add to their conversation's totals.
#[derive(Default)]
struct TotalsDelta {
    messages: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
}

impl TotalsDelta {
    /// Counts one more message with `usage`.
    fn add(&mut self, usage: Option<&Usage>) {
        let usage = usage.copied().unwrap_or_default();
        self.messages += 1;
        self.input_tokens += usage.input_tokens;
        self.output_tokens += usage.output_tokens;
        self.cost_usd += usage.cost_usd.unwrap_or(0.0);
    }
}

/// Takes the conversation's next `count` seqs: bumps `last_seq` and `last_activity` (and the
/// totals, for messages) in one statement whose row lock orders concurrent appenders on Postgres.
/// Returns the new `last_seq` (the last of the seqs taken) and the conversation's status. Must run
/// inside the transaction that writes the rows.
async fn next_seq(
    txn: &DatabaseTransaction,
    conversation: ConversationId,
    now: Timestamp,
    count: u64,
    totals: Option<&TotalsDelta>,
) -> Result<(u64, ConversationStatus), StoreError> {
    // Scoped here: its `max`/`min` methods would shadow `Ord`'s elsewhere in the file.
    use conversations::Column;
    use sea_orm::sea_query::ExprTrait;

    let mut update = Query::update();
    update
        .table(conversations::Entity)
        .value(Column::LastSeq, Expr::col(Column::LastSeq).add(to_db_count(count)))
        .value(Column::LastActivity, now)
        .and_where(Expr::col(Column::Id).eq(conversation.as_uuid()))
        .returning(Query::returning().columns([Column::LastSeq, Column::Status]));
    if let Some(totals) = totals {
        update
            .value(Column::TotalMessages, Expr::col(Column::TotalMessages).add(to_db_count(totals.messages)))
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

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

#[async_trait]
impl ConversationStore for SeaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        let pending = Migrator::get_pending_migrations(&self.db).await?.len();
        if pending > 0 {
            return Err(StoreError::SchemaBehind { pending });
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.committer.close().await?;
        Ok(self.db.close_by_ref().await?)
    }

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
        // In chunks: one statement for thousands of rows would pass SQLite's bound-value limit.
        append::insert_chunked::<participants::Entity, _>(&txn, participant_rows).await?;
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
        self.participants_of(&[id]).await
    }

    async fn a2a_key(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
    ) -> Result<Option<secrecy::SecretString>, StoreError> {
        let row = participants::Entity::find_by_id((conversation.as_uuid(), participant.as_uuid()))
            .one(&self.db)
            .await?
            .ok_or(StoreError::ParticipantNotFound { conversation, participant })?;
        Ok(row.a2a_key.map(secrecy::SecretString::from))
    }

    async fn participants_of(&self, ids: &[ConversationId]) -> Result<Vec<Participant>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        participants::Entity::find()
            .filter(participants::Column::ConversationId.is_in(ids.iter().map(ConversationId::as_uuid)))
            .order_by_asc(participants::Column::ConversationId)
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
        let mut appended = self.append_messages(conversation, vec![(message, event)], None).await?;
        appended.pop().ok_or_else(|| corrupt("messages", "an append of one message stored none"))
    }

    async fn append_event(&self, conversation: ConversationId, event: TurnEvent) -> Result<EventEnvelope, StoreError> {
        let mut events = self.committer.entries(conversation, vec![Append::Event(event)], None, true).await?;
        events.pop().ok_or_else(|| corrupt("events", "an append of one event stored none"))
    }

    async fn messages_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError> {
        messages::Entity::find()
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::Queued.eq(false))
            .filter(messages::Column::Seq.gt(to_db_count(after_seq)))
            .order_by_asc(messages::Column::Seq)
            .limit(db_limit(limit))
            .all(&self.db)
            .await?
            .into_iter()
            .map(messages::Model::into_domain)
            .collect()
    }

    async fn message(
        &self,
        conversation: ConversationId,
        message: colloquy_core_model::MessageId,
    ) -> Result<Message, StoreError> {
        messages::Entity::find_by_id(message.as_uuid())
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::Queued.eq(false))
            .one(&self.db)
            .await?
            .ok_or(StoreError::MessageNotFound { conversation, message })?
            .into_domain()
    }

    async fn update_message(
        &self,
        conversation: ConversationId,
        message: colloquy_core_model::MessageId,
        content: Vec<colloquy_core_model::ContentPart>,
    ) -> Result<(Message, EventEnvelope), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let outcome = edits::update_message(&txn, conversation, message, content, now()).await;
        commit_or_abort(txn, outcome).await
    }

    async fn remove_messages(
        &self,
        conversation: ConversationId,
        messages: &[colloquy_core_model::MessageId],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let outcome = edits::remove_messages(&txn, conversation, messages, now()).await;
        commit_or_abort(txn, outcome).await
    }

    async fn update_agent(
        &self,
        conversation: ConversationId,
        participant: colloquy_core_model::ParticipantId,
        spec: colloquy_core_model::AgentSpec,
    ) -> Result<(Participant, EventEnvelope), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let outcome = match agents::update_agent(&txn, conversation, participant, &spec).await {
            Ok(updated) => agents::record_update(&txn, updated).await,
            Err(err) => Err(err),
        };
        commit_or_abort(txn, outcome).await
    }

    async fn update_participant_role(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
        role: colloquy_core_model::ParticipantRole,
    ) -> Result<(Participant, EventEnvelope), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let outcome = match participants::set_role(&txn, conversation, participant, role).await {
            Ok(updated) => agents::record_update(&txn, updated).await,
            Err(err) => Err(err),
        };
        commit_or_abort(txn, outcome).await
    }

    async fn unfinished_turns(&self) -> Result<Vec<(ConversationId, u64)>, StoreError> {
        recovery::unfinished_turns(&self.db).await
    }

    async fn admit_messages(
        &self,
        conversation: ConversationId,
        messages: &[colloquy_core_model::MessageId],
        fence: Option<FencingToken>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.admit(conversation, messages, fence).await
    }

    async fn queued_messages(&self, conversation: ConversationId) -> Result<Vec<Message>, StoreError> {
        messages::Entity::find()
            .filter(messages::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(messages::Column::Queued.eq(true))
            .order_by_asc(messages::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(messages::Model::into_domain)
            .collect()
    }

    async fn conversations_with_pending_prompts(&self) -> Result<Vec<ConversationId>, StoreError> {
        recovery::conversations_with_pending_prompts(&self.db).await
    }

    async fn last_turn_start(&self, conversation: ConversationId) -> Result<Option<u64>, StoreError> {
        recovery::last_turn_start(&self.db, conversation).await
    }

    async fn events_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows = events::Entity::find()
            .filter(events::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(events::Column::Seq.gt(to_db_count(after_seq)))
            .order_by_asc(events::Column::Seq)
            .limit(db_limit(limit))
            .all(&self.db)
            .await?;
        events::into_domains(&self.db, rows).await
    }
    async fn append_messages(
        &self,
        conversation: ConversationId,
        batch: Vec<(NewMessage, MessageEvent)>,
        fence: Option<FencingToken>,
    ) -> Result<Vec<AppendedMessage>, StoreError> {
        self.write_messages(conversation, batch, fence).await
    }

    async fn append_event_fenced(
        &self,
        conversation: ConversationId,
        event: TurnEvent,
        fence: FencingToken,
    ) -> Result<EventEnvelope, StoreError> {
        let mut events = self.committer.entries(conversation, vec![Append::Event(event)], Some(fence), true).await?;
        events.pop().ok_or_else(|| corrupt("events", "an append of one event stored none"))
    }

    async fn append_batch(
        &self,
        conversation: ConversationId,
        entries: Vec<Append>,
        options: AppendOptions,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.committer.entries(conversation, entries, options.fence, options.sync).await
    }

    async fn update_conversation(
        &self,
        id: ConversationId,
        update: ConversationUpdate,
    ) -> Result<(Conversation, Option<EventEnvelope>), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let event = match lifecycle::update_conversation(&txn, id, update, now()).await {
            Ok(event) => event,
            Err(err) => return abort(txn, err).await,
        };
        let conversation = conversations::Entity::find_by_id(id.as_uuid())
            .one(&txn)
            .await?
            .ok_or(StoreError::ConversationNotFound(id))?;
        if event.is_some() {
            txn.commit().await?;
        } else {
            txn.rollback().await?;
        }
        Ok((conversation.into_domain()?, event))
    }

    async fn delete_conversation(&self, id: ConversationId) -> Result<(), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let deleted = conversations::Entity::delete_by_id(id.as_uuid()).exec(&txn).await?;
        if deleted.rows_affected == 0 {
            return abort(txn, StoreError::ConversationNotFound(id)).await;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn conversation_tools(&self, id: ConversationId) -> Result<Vec<String>, StoreError> {
        conversations::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await?
            .ok_or(StoreError::ConversationNotFound(id))?
            .tool_names()
    }

    async fn list_conversations(
        &self,
        filter: ConversationFilter,
        after: Option<ConversationCursor>,
        limit: u64,
    ) -> Result<Page<Conversation, ConversationCursor>, StoreError> {
        history::list_conversations(&self.db, filter, after, limit).await
    }

    async fn messages_page(
        &self,
        conversation: ConversationId,
        cursor: MessageCursor,
        limit: u64,
    ) -> Result<Page<Message, MessageCursor>, StoreError> {
        history::messages_page(&self.db, conversation, cursor, limit).await
    }

    async fn history_within_tokens(&self, conversation: ConversationId, budget: u64) -> Result<History, StoreError> {
        history::history_within_tokens(&self.db, conversation, budget).await
    }

    async fn add_participant(
        &self,
        conversation: ConversationId,
        participant: NewParticipant,
    ) -> Result<(Participant, EventEnvelope), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let now = now();
        let (seq, status) = next_seq(&txn, conversation, now, 1, None).await?;
        if status != ConversationStatus::Active {
            return abort(txn, StoreError::ConversationNotActive(conversation)).await;
        }
        let participant = match participants::add(&txn, conversation, participant, now).await {
            Ok(participant) => participant,
            Err(err) => return abort(txn, err).await,
        };
        let event = TurnEvent::ParticipantJoined { participant: participant.clone() };
        events::Entity::insert(events::new_row(conversation, seq, &event, now)?).exec_without_returning(&txn).await?;
        txn.commit().await?;
        Ok((participant, EventEnvelope { conversation_id: conversation, seq: Some(seq), event }))
    }

    async fn remove_participant(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
    ) -> Result<EventEnvelope, StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let now = now();
        let (seq, status) = next_seq(&txn, conversation, now, 1, None).await?;
        if status != ConversationStatus::Active {
            return abort(txn, StoreError::ConversationNotActive(conversation)).await;
        }
        if let Err(err) = participants::remove(&txn, conversation, participant, now).await {
            return abort(txn, err).await;
        }
        let event = TurnEvent::ParticipantLeft { participant_id: participant };
        events::Entity::insert(events::new_row(conversation, seq, &event, now)?).exec_without_returning(&txn).await?;
        txn.commit().await?;
        Ok(EventEnvelope { conversation_id: conversation, seq: Some(seq), event })
    }

    async fn fork_conversation(
        &self,
        source: ConversationId,
        at_seq: u64,
        new_id: ConversationId,
    ) -> Result<Conversation, StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let fork = match lifecycle::fork_conversation(&txn, source, at_seq, new_id, now()).await {
            Ok(fork) => fork,
            Err(err) => return abort(txn, err).await,
        };
        txn.commit().await?;
        Ok(fork)
    }

    async fn search_messages(
        &self,
        participant: ParticipantId,
        query: &str,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError> {
        history::search_messages(&self.db, history::SearchScope::Participant(participant), query, limit).await
    }

    async fn search_messages_of_account(
        &self,
        account: Option<colloquy_core_model::AccountId>,
        query: &str,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError> {
        let scope = account.map_or(history::SearchScope::All, history::SearchScope::Account);
        history::search_messages(&self.db, scope, query, limit).await
    }

    async fn sweep_expired(&self, now: Timestamp, inactivity: Duration) -> Result<Vec<ConversationId>, StoreError> {
        self.sweep(now, inactivity).await
    }

    async fn acquire_lease(
        &self,
        conversation: ConversationId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (_writer, txn) = self.begin_write().await?;
            let now = now();
            if conversations::Entity::find_by_id(conversation.as_uuid()).one(&txn).await?.is_none() {
                return abort(txn, StoreError::ConversationNotFound(conversation)).await;
            }
            match leases::acquire(&txn, conversation, holder, expiry(now, ttl), now).await {
                // Two first acquires raced to insert the row: the retry sees the winner's.
                Err(StoreError::Database(err)) if attempt < 3 && is_unique_violation(&err) => {
                    txn.rollback().await?;
                }
                Err(err) => return abort(txn, err).await,
                Ok(lease) => {
                    txn.commit().await?;
                    return Ok(lease);
                }
            }
        }
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let expires_at = expiry(now(), ttl);
        if let Err(err) = leases::update_current(&txn, lease, expires_at, false).await {
            return abort(txn, err).await;
        }
        txn.commit().await?;
        Ok(Lease { expires_at, ..lease.clone() })
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        if let Err(err) = leases::update_current(&txn, lease, now(), true).await {
            return abort(txn, err).await;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        let account = key.account;
        let (stored, row) = api_keys::new_row(key, now())?;
        let (_writer, txn) = self.begin_write().await?;
        if accounts::Entity::find_by_id(account.as_uuid()).one(&txn).await?.is_none() {
            return abort(txn, StoreError::AccountNotFound(account.to_string())).await;
        }
        api_keys::Entity::insert(row).exec_without_returning(&txn).await?;
        txn.commit().await?;
        Ok(stored)
    }

    async fn authenticate_api_key(
        &self,
        secret: &str,
        now: Timestamp,
    ) -> Result<Option<(ApiKey, colloquy_core_model::Account)>, StoreError> {
        accounts::authenticate(&self.db, secret, now).await
    }

    async fn api_keys_revoked_since(&self, since: Timestamp) -> Result<Vec<(ApiKeyId, Timestamp)>, StoreError> {
        accounts::revoked_since(&self.db, since).await
    }

    async fn create_account(&self, account: NewAccount) -> Result<colloquy_core_model::Account, StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let outcome = accounts::create(&txn, account).await;
        commit_or_abort(txn, outcome).await
    }

    async fn account(&self, id: colloquy_core_model::AccountId) -> Result<colloquy_core_model::Account, StoreError> {
        accounts::by_id(&self.db, id).await
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<colloquy_core_model::Account>, StoreError> {
        accounts::by_name(&self.db, name).await
    }

    async fn accounts(&self) -> Result<Vec<colloquy_core_model::Account>, StoreError> {
        accounts::all(&self.db).await
    }

    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError> {
        let (_writer, txn) = self.begin_write().await?;
        let Some(row) = api_keys::Entity::find_by_id(id.0).one(&txn).await? else {
            return abort(txn, StoreError::ApiKeyNotFound(id)).await;
        };
        if row.revoked_at.is_none() {
            let mut active = sea_orm::IntoActiveModel::into_active_model(row);
            active.revoked_at = sea_orm::ActiveValue::Set(Some(now()));
            sea_orm::ActiveModelTrait::update(active, &txn).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        Ok(api_keys::Entity::find()
            .order_by_asc(api_keys::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(api_keys::Model::into_domain)
            .collect())
    }
}

/// Rolls `txn` back and fails with `err`. An explicit rollback (rather than a dropped
/// transaction) frees SQLite's write lock before the caller releases the writer mutex.
/// Commits `txn` if `outcome` is a success, else rolls it back and returns the error.
async fn commit_or_abort<T>(txn: DatabaseTransaction, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
    match outcome {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(err) => abort(txn, err).await,
    }
}

async fn abort<T>(txn: DatabaseTransaction, err: StoreError) -> Result<T, StoreError> {
    txn.rollback().await?;
    Err(err)
}

/// `now + ttl`, or the far future for a TTL too long to add.
fn expiry(now: Timestamp, ttl: Duration) -> Timestamp {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
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
