//! The store on its own (DESIGN §10): one append (p50), batched appends (rows/s) and reading a
//! 100-message history, on SQLite (a file in a temporary directory, WAL) always and on Postgres
//! when `COLLOQUY_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) is
//! reachable: the bench creates a database of its own there and drops it at the end.
//!
//! Besides criterion's figures it prints p50 and p99 of single appends measured one by one,
//! since DESIGN §10 states the append target as a p50.

use std::sync::Arc;
use std::time::{Duration, Instant};

use colloquy_core_model::{
    ContentPart, ConversationId, ConversationKind, MessageRole, NewMessage, Options, ParticipantId, ParticipantKind,
    ParticipantRole, Usage,
};
use colloquy_store::{
    ConversationStore, Durability, MessageEvent, NewConversation, NewParticipant, SeaStore, StoreError, StoreOptions,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sea_orm::{ConnectOptions, ConnectionTrait, Database};

/// Rows per batched append.
const BATCH: u64 = 100;
/// Appends timed one by one for the printed percentiles.
const PERCENTILE_SAMPLES: usize = 2_000;

/// A store to bench and what keeps it alive.
struct Target {
    /// `sqlite`, `sqlite_normal` or `postgres`.
    name: &'static str,
    store: Arc<SeaStore>,
    /// The SQLite file's directory.
    _dir: Option<tempfile::TempDir>,
}

async fn conversation(store: &SeaStore) -> Result<ConversationId, StoreError> {
    let id = ConversationId::new();
    let participant = |kind, name: &str| NewParticipant {
        account: None,
        a2a_url: None,
        a2a_key: None,
        id: ParticipantId::new(),
        kind,
        display_name: name.to_owned(),
        role: ParticipantRole::Member,
        agent: None,
    };
    store
        .create_conversation(NewConversation {
            id,
            kind: ConversationKind::UserAgent,
            title: Some("bench".to_owned()),
            tags: Vec::new(),
            options: Options::default(),
            participants: vec![
                participant(ParticipantKind::User, "user"),
                participant(ParticipantKind::Agent, "agent"),
            ],
        })
        .await?;
    Ok(id)
}

/// A typical chat message: a sentence of text, with usage as a reply has.
fn message(n: u64) -> NewMessage {
    NewMessage {
        usage: Some(Usage { input_tokens: 1_200, output_tokens: 60, cost_usd: Some(0.001), ..Usage::default() }),
        client_msg_id: Some(format!("bench-{n}-{}", uuid_suffix())),
        ..NewMessage::new(
            MessageRole::User,
            vec![ContentPart::text(format!("Message {n}: what is the weather in Paris tomorrow afternoon?"))],
        )
    }
}

/// Keeps client_msg_ids unique across criterion's repeated runs.
fn uuid_suffix() -> String {
    ParticipantId::new().to_string()
}

async fn sqlite(name: &'static str, durability: Durability) -> Option<Target> {
    let dir = tempfile::tempdir().ok()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let store = SeaStore::connect(&url, StoreOptions { durability, ..StoreOptions::default() }).await.ok()?;
    Some(Target { name, store: Arc::new(store), _dir: Some(dir) })
}

/// The bench's own Postgres database: its URL and name, and the admin URL to drop it with.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

async fn postgres() -> Option<(Target, PostgresDatabase)> {
    let admin_url = std::env::var("COLLOQUY_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut options = ConnectOptions::new(admin_url.clone());
    options.sqlx_logging(false).max_connections(1).connect_timeout(Duration::from_secs(3));
    let admin = match Database::connect(options).await {
        Ok(admin) => admin,
        Err(err) => {
            println!("postgres benches skipped: cannot connect to {admin_url}: {err}");
            return None;
        }
    };
    let name = format!("colloquy_bench_{}", ParticipantId::new().as_uuid().simple());
    if let Err(err) = admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await {
        println!("postgres benches skipped: cannot create a database: {err}");
        return None;
    }
    let _ = admin.close().await;
    let (path, query) = admin_url
        .split_once('?')
        .map_or((admin_url.as_str(), String::new()), |(path, query)| (path, format!("?{query}")));
    let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
    let url = format!("{base}/{name}{query}");
    match SeaStore::connect(&url, StoreOptions::default()).await {
        Ok(store) => Some((
            Target { name: "postgres", store: Arc::new(store), _dir: None },
            PostgresDatabase { admin_url, name },
        )),
        Err(err) => {
            println!("postgres benches skipped: cannot open the store: {err}");
            None
        }
    }
}

async fn drop_database(database: PostgresDatabase) {
    let mut options = ConnectOptions::new(database.admin_url);
    options.sqlx_logging(false).max_connections(1);
    if let Ok(admin) = Database::connect(options).await {
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", database.name)).await;
        let _ = admin.close().await;
    }
}

/// p50 of one trivial statement through the pool: the floor under every store call.
async fn print_statement_floor(target: &Target) {
    let db = target.store.connection();
    let backend = db.get_database_backend();
    let mut samples = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let start = Instant::now();
        if db.query_one_raw(sea_orm::Statement::from_string(backend, "SELECT 1".to_owned())).await.is_err() {
            return;
        }
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let p50 = samples.get(samples.len() / 2).copied().unwrap_or_default();
    println!("store_floor/{}: `SELECT 1` p50 {:.1} us", target.name, p50.as_secs_f64() * 1e6);
}

/// Times appends one by one and prints their p50 and p99.
async fn print_append_percentiles(target: &Target) {
    let Ok(id) = conversation(&target.store).await else { return };
    let mut samples = Vec::with_capacity(PERCENTILE_SAMPLES);
    for n in 0..PERCENTILE_SAMPLES as u64 + 100 {
        let message = message(n);
        let start = Instant::now();
        if target.store.append_message(id, message, MessageEvent::Posted).await.is_err() {
            return;
        }
        // The first hundred warm the caches and the pool.
        if n >= 100 {
            samples.push(start.elapsed());
        }
    }
    samples.sort_unstable();
    let at = |q: f64| samples.get(((samples.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    println!(
        "store_append/{}: p50 {:.1} us, p99 {:.1} us over {} single appends",
        target.name,
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}

fn bench_target(c: &mut Criterion, runtime: &tokio::runtime::Runtime, target: &Target) {
    runtime.block_on(print_statement_floor(target));
    runtime.block_on(print_append_percentiles(target));
    let store = &target.store;

    let Ok(single) = runtime.block_on(conversation(store)) else { return };
    let mut group = c.benchmark_group("store_append");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("single", target.name), |b| {
        let mut n = 0;
        b.to_async(runtime).iter(|| {
            n += 1;
            let message = message(n);
            async move { store.append_message(single, message, MessageEvent::Posted).await.map(|a| a.message.seq) }
        });
    });
    group.finish();

    let Ok(batched) = runtime.block_on(conversation(store)) else { return };
    let mut group = c.benchmark_group("store_append_batch");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function(BenchmarkId::new(format!("{BATCH}_rows"), target.name), |b| {
        b.to_async(runtime).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch: Vec<_> = (0..BATCH).map(|n| (message(n), MessageEvent::Posted)).collect();
                let start = Instant::now();
                let _ = store.append_messages(batched, batch, None).await;
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();

    let Ok(history) = runtime.block_on(async {
        let id = conversation(store).await?;
        let batch: Vec<_> = (0..100).map(|n| (message(n), MessageEvent::Posted)).collect();
        store.append_messages(id, batch, None).await?;
        Ok::<_, StoreError>(id)
    }) else {
        return;
    };
    let mut group = c.benchmark_group("store_history");
    group.bench_function(BenchmarkId::new("read_100", target.name), |b| {
        b.to_async(runtime).iter(|| async move { store.messages_after(history, 0, 100).await.map(|m| m.len()) });
    });
    group.finish();
}

fn store_benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let Ok(runtime) = runtime else { return };
    for (name, durability) in [("sqlite", Durability::Full), ("sqlite_normal", Durability::Normal)] {
        if let Some(target) = runtime.block_on(sqlite(name, durability)) {
            bench_target(c, &runtime, &target);
        }
    }
    if let Some((target, database)) = runtime.block_on(postgres()) {
        bench_target(c, &runtime, &target);
        runtime.block_on(target.store.connection().close_by_ref()).ok();
        drop(target);
        runtime.block_on(drop_database(database));
    }
}

/// Criterion draws its plots with plotters, whose text needs a registered font (see
/// [`colloquy_benches::register_plot_font`]); without one it runs without plots.
fn config() -> Criterion {
    if colloquy_benches::register_plot_font() { Criterion::default() } else { Criterion::default().without_plots() }
}

criterion_group! {
    name = benches;
    config = config();
    targets = store_benches
}
criterion_main!(benches);
