//! Opens a fresh store on each backend for one test and cleans up after it.

use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use colloquy_store::{Durability, SeaStore, StoreOptions};
use futures::FutureExt;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use tokio::sync::Mutex;

/// Where a test's store lives.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    SqliteFile,
    /// `sqlite::memory:`.
    SqliteMemory,
    /// A schema of its own, in a database created on the Postgres server for the test run.
    Postgres,
}

/// The tests check ordering and atomicity, not crash safety: without an fsync per commit the
/// concurrent cases take seconds instead of tens of seconds. (`Durability::Full` is checked by
/// `schema::sqlite_connections_get_the_configured_pragmas`.)
const TEST_OPTIONS: StoreOptions = StoreOptions { durability: Durability::Normal, max_connections: 8 };

/// Runs `case` against a new, empty store on `backend`.
pub async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Arc<SeaStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    match backend {
        Backend::SqliteFile => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store =
                SeaStore::connect(&sqlite_file_url(dir.path()), TEST_OPTIONS).await.expect("open sqlite file store");
            case(Arc::new(store)).await;
        }
        Backend::SqliteMemory => {
            let store = SeaStore::connect("sqlite::memory:", TEST_OPTIONS).await.expect("open in-memory sqlite store");
            case(Arc::new(store)).await;
        }
        Backend::Postgres => {
            let Some(schema) = TestSchema::create().await else {
                return;
            };
            let outcome = AssertUnwindSafe(async {
                let store = Arc::new(SeaStore::connect(&schema.url, TEST_OPTIONS).await.expect("open postgres store"));
                case(Arc::clone(&store)).await;
                store.connection().close_by_ref().await.expect("close the store");
            })
            .catch_unwind()
            .await;
            // Also after a failed case, so that neither the schema nor (with the last Postgres
            // test) the run's database outlives the run.
            schema.drop().await;
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// The URL of a SQLite database file in `dir`, created if missing.
pub fn sqlite_file_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("colloquy.db").display())
}

/// The database this test run uses on the Postgres server: created by the first Postgres test
/// that starts, dropped by the last one that ends, so nothing outlives the run.
struct RunDatabase {
    /// Its URL.
    url: String,
    /// Its name, to drop it.
    name: String,
    /// Postgres tests using it now.
    users: usize,
}

/// Tests run on their own runtimes, hence a runtime-agnostic tokio mutex; it is held while the
/// database is created or dropped, so no test sees it half made.
static RUN_DATABASE: Mutex<Option<RunDatabase>> = Mutex::const_new(None);

/// A schema of its own for one test, in the run's database: creating a schema and running the
/// migrations in it is much faster than creating a database per test.
struct TestSchema {
    /// The run database's URL with `search_path` set to the schema.
    url: String,
    /// The run database's URL.
    database_url: String,
    /// The schema's name.
    name: String,
}

impl TestSchema {
    /// Creates the schema, or returns `None` (after saying why) when Postgres is unreachable and
    /// not required.
    async fn create() -> Option<Self> {
        let database_url = match acquire_run_database().await {
            Ok(url) => url,
            Err(why) => {
                skip_postgres(&why);
                return None;
            }
        };
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let connection = connect_one(&database_url).await.expect("connect to the run database");
        connection.execute_unprepared(&format!("CREATE SCHEMA \"{name}\"")).await.expect("create the test schema");
        connection.close().await.expect("close");
        let separator = if database_url.contains('?') { '&' } else { '?' };
        let url = format!("{database_url}{separator}options=-c%20search_path%3D{name}");
        Some(Self { url, database_url, name })
    }

    async fn drop(self) {
        let connection = connect_one(&self.database_url).await.expect("connect to the run database");
        connection
            .execute_unprepared(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
            .await
            .expect("drop the test schema");
        connection.close().await.expect("close");
        release_run_database().await;
    }
}

/// The run database's URL, created if no Postgres test is using one.
async fn acquire_run_database() -> Result<String, String> {
    let mut run = RUN_DATABASE.lock().await;
    if let Some(run) = run.as_mut() {
        run.users += 1;
        return Ok(run.url.clone());
    }
    // Every Postgres test asks; only the first waits for the connect timeout.
    static UNAVAILABLE: OnceLock<String> = OnceLock::new();
    if let Some(why) = UNAVAILABLE.get() {
        return Err(why.clone());
    }
    let admin_url = admin_url();
    let admin = match connect_one(&admin_url).await {
        Ok(admin) => admin,
        Err(err) => return Err(UNAVAILABLE.get_or_init(|| format!("cannot connect to {admin_url}: {err}")).clone()),
    };
    let name = format!("colloquy_test_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .map_err(|err| format!("cannot create a test database on {admin_url}: {err}"))?;
    // The tests check ordering and atomicity, not crash safety: not waiting for the WAL flush
    // of every commit keeps the concurrent cases fast.
    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{name}\" SET synchronous_commit = off"))
        .await
        .map_err(|err| format!("cannot configure the test database: {err}"))?;
    admin.close().await.map_err(|err| err.to_string())?;
    let url = with_database(&admin_url, &name);
    *run = Some(RunDatabase { url: url.clone(), name, users: 1 });
    Ok(url)
}

/// Drops the run database when the last test using it is done.
async fn release_run_database() {
    let mut run = RUN_DATABASE.lock().await;
    let Some(database) = run.as_mut() else {
        return;
    };
    database.users -= 1;
    if database.users > 0 {
        return;
    }
    let admin = connect_one(&admin_url()).await.expect("connect to the admin database");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", database.name))
        .await
        .expect("drop the test database");
    admin.close().await.expect("close");
    *run = None;
}

fn admin_url() -> String {
    std::env::var("COLLOQUY_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A single, quiet connection.
async fn connect_one(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false).max_connections(1).connect_timeout(Duration::from_secs(3));
    Database::connect(options).await
}

/// Skips a Postgres test, or fails it when `COLLOQUY_REQUIRE_POSTGRES=1`.
fn skip_postgres(why: &str) {
    if std::env::var("COLLOQUY_REQUIRE_POSTGRES").is_ok_and(|value| value == "1") {
        panic!("postgres is required (COLLOQUY_REQUIRE_POSTGRES=1) but {why}");
    }
    // Said once per run, not once per test, and straight to stderr: the test harness captures
    // `eprintln!` of passing tests.
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "postgres suite skipped: {why}");
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (authority, _old) = base
        .rsplit_once('/')
        .filter(|(authority, _)| authority.contains("://") && !authority.ends_with('/'))
        .unwrap_or((base, ""));
    format!("{authority}/{database}{query}")
}

#[test]
fn with_database_replaces_only_the_database_name() {
    assert_eq!(with_database("postgres://postgres@127.0.0.1:5432/test", "x"), "postgres://postgres@127.0.0.1:5432/x");
    assert_eq!(with_database("postgres://u:p@h/test?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
