//! The group commit: every append of every conversation goes to one writer task, which gathers
//! the appends waiting for it into one transaction (each in its own savepoint, so one refused
//! append does not undo the others), commits once, and only then answers each caller.
//!
//! Under load this is how databases batch commits: while one commit is on its way to the disk,
//! the next appends queue, and they all share the next commit. With one caller nothing waits:
//! the writer takes what is there, never sleeps for more.
//!
//! A commit is fsynced only when one of its appends asks for it (`sync`: it acknowledges
//! something to someone outside, such as a client's `ack` or a turn's end) and the store's
//! durability is `Full`. The commits between are written without an fsync: they survive a crash
//! of the process, and since the write-ahead log is written in order, a power loss can lose only
//! a suffix of them (never one in the middle), which crash recovery handles like a crash at that
//! point. On SQLite the writer owns one connection so it can switch `synchronous` between
//! commits; on Postgres it uses `SET LOCAL synchronous_commit`.

use std::sync::Arc;

use colloquy_core_model::{ConversationId, EventEnvelope, NewMessage};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Durability, append};
use crate::{Append, AppendedMessage, FencingToken, MessageEvent, StoreError};

/// At most this many appends share one transaction, so one commit stays short.
const MAX_GROUP: usize = 256;

/// Appends waiting for the writer; callers wait when this many are queued (back-pressure).
const QUEUE: usize = 4096;

/// What one append asks to write.
enum Work {
    /// Posted messages, with `client_msg_id` deduplication.
    Messages(Vec<(NewMessage, MessageEvent)>),
    /// A turn's events and messages.
    Entries(Vec<Append>),
}

/// What one append wrote.
enum Done {
    Messages(Vec<AppendedMessage>),
    Events(Vec<EventEnvelope>),
}

struct Job {
    conversation: ConversationId,
    work: Work,
    fence: Option<FencingToken>,
    sync: bool,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The handle the store keeps; the writer task stops when it is dropped.
#[derive(Debug)]
pub(super) struct Committer {
    jobs: mpsc::Sender<Job>,
    /// The writer's own connection (file SQLite), closed with the store.
    connection: Option<DatabaseConnection>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("conversation", &self.conversation).finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the writer on `db` (its own connection for a SQLite file, else the store's pool),
    /// taking `writer` (the store's SQLite write lock) around each transaction.
    pub(super) fn start(
        db: DatabaseConnection,
        own_connection: bool,
        writer: Option<Arc<Mutex<()>>>,
        durability: Durability,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let connection = own_connection.then(|| db.clone());
        tokio::spawn(run(db, writer, durability, queue));
        Self { jobs, connection }
    }

    /// Closes the writer's own connection, if it has one.
    pub(super) async fn close(&self) -> Result<(), StoreError> {
        if let Some(connection) = &self.connection {
            connection.close_by_ref().await?;
        }
        Ok(())
    }

    pub(super) async fn messages(
        &self,
        conversation: ConversationId,
        batch: Vec<(NewMessage, MessageEvent)>,
        fence: Option<FencingToken>,
    ) -> Result<Vec<AppendedMessage>, StoreError> {
        match self.submit(conversation, Work::Messages(batch), fence, true).await? {
            Done::Messages(appended) => Ok(appended),
            Done::Events(_) => Err(mixed_up()),
        }
    }

    pub(super) async fn entries(
        &self,
        conversation: ConversationId,
        entries: Vec<Append>,
        fence: Option<FencingToken>,
        sync: bool,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        match self.submit(conversation, Work::Entries(entries), fence, sync).await? {
            Done::Events(events) => Ok(events),
            Done::Messages(_) => Err(mixed_up()),
        }
    }

    async fn submit(
        &self,
        conversation: ConversationId,
        work: Work,
        fence: Option<FencingToken>,
        sync: bool,
    ) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { conversation, work, fence, sync, reply };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn mixed_up() -> StoreError {
    StoreError::Corrupt { what: "group commit", detail: "an append was answered with another's result".to_owned() }
}

fn stopped() -> StoreError {
    StoreError::Database(DbErr::Custom("the store's writer has stopped (the store was closed)".to_owned()))
}

/// The writer task: one group of waiting appends per transaction, until the store is dropped.
async fn run(
    db: DatabaseConnection,
    writer: Option<Arc<Mutex<()>>>,
    durability: Durability,
    mut queue: mpsc::Receiver<Job>,
) {
    let sqlite = db.get_database_backend() == DbBackend::Sqlite;
    // What the SQLite connection's `synchronous` is now: it opens as the durability says.
    let mut synchronous_full = durability == Durability::Full;
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let sync = durability == Durability::Full && group.iter().any(|job| job.sync);
        let _guard = match &writer {
            Some(writer) => Some(writer.lock().await),
            None => None,
        };
        if sqlite && durability == Durability::Full && sync != synchronous_full {
            let pragma = if sync { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
            match db.execute_unprepared(pragma).await {
                Ok(_) => synchronous_full = sync,
                Err(err) => tracing::warn!(%err, "could not switch SQLite's synchronous mode"),
            }
        }
        let jobs = group.len();
        let outcomes = commit_group(&db, sqlite, durability, sync, &mut group).await;
        metrics::counter!("colloquy_store_commits_total", "synced" => if sync { "true" } else { "false" }).increment(1);
        metrics::histogram!("colloquy_store_commit_appends").record(jobs as f64);
        for (job, outcome) in group.drain(..).zip(outcomes) {
            // A caller that gave up (its task was cancelled) no longer listens.
            let _ = job.reply.send(outcome);
        }
    }
}

/// Writes every job of `group` in one transaction and commits it; the outcome of each, in order.
async fn commit_group(
    db: &DatabaseConnection,
    sqlite: bool,
    durability: Durability,
    sync: bool,
    group: &mut [Job],
) -> Vec<Result<Done, StoreError>> {
    let failed_all = |err: &DbErr, n: usize| -> Vec<Result<Done, StoreError>> {
        (0..n).map(|_| Err(StoreError::Database(DbErr::Custom(format!("the commit failed: {err}"))))).collect()
    };
    // IMMEDIATE takes SQLite's write lock up front, so another process's writer makes this one
    // wait (busy timeout) at BEGIN rather than fail halfway. Postgres ignores the mode.
    let txn = match db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await
    {
        Ok(txn) => txn,
        Err(err) => return failed_all(&err, group.len()),
    };
    if !sqlite
        && durability == Durability::Full
        && !sync
        && let Err(err) = txn.execute_unprepared("SET LOCAL synchronous_commit = off").await
    {
        tracing::warn!(%err, "could not relax synchronous_commit for an unsynced commit");
    }
    let mut outcomes = Vec::with_capacity(group.len());
    if let [job] = group {
        // Alone in its transaction: an error rolls the whole transaction back.
        let outcome = write(&txn, job).await;
        if let Err(err) = outcome {
            let _ = txn.rollback().await;
            return vec![Err(err)];
        }
        outcomes.push(outcome);
    } else {
        for job in group.iter_mut() {
            outcomes.push(in_savepoint(&txn, job).await);
        }
    }
    match txn.commit().await {
        Ok(()) => outcomes,
        Err(err) => failed_all(&err, outcomes.len()),
    }
}

/// One job inside a savepoint of `txn`: released when it succeeds, rolled back when it fails.
async fn in_savepoint(txn: &DatabaseTransaction, job: &mut Job) -> Result<Done, StoreError> {
    let savepoint = txn.begin().await?;
    match write(&savepoint, job).await {
        Ok(done) => {
            savepoint.commit().await?;
            Ok(done)
        }
        Err(err) => {
            savepoint.rollback().await?;
            Err(err)
        }
    }
}

async fn write(txn: &DatabaseTransaction, job: &mut Job) -> Result<Done, StoreError> {
    match std::mem::replace(&mut job.work, Work::Entries(Vec::new())) {
        Work::Messages(batch) => append::messages_in(txn, job.conversation, batch, job.fence).await.map(Done::Messages),
        Work::Entries(entries) => append::entries_in(txn, job.conversation, entries, job.fence).await.map(Done::Events),
    }
}
