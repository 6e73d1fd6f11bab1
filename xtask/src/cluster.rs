//! `cargo xtask cluster`: three local gateway nodes on this machine's Postgres and NATS, as
//! docs/cluster.md deploys them (starting Postgres and NATS first when they are not running).
//! Ctrl-C stops them all.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The database the nodes share (created when missing).
const DATABASE: &str = "colloquy_cluster";
/// Where Postgres and NATS are expected.
const POSTGRES: &str = "127.0.0.1:5432";
const NATS: &str = "127.0.0.1:4222";

#[derive(clap::Args)]
pub struct Args {
    /// How many nodes (on ports 8081, 8082, ...).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// The Postgres server, as a URL without the database name.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    ensure_postgres()?;
    ensure_nats()?;
    create_database()?;
    crate::run(crate::cargo(&["build", "--package", "colloquy-gateway", "--bin", "colloquy"]))?;
    let binary = crate::target_dir(root).join("debug").join("colloquy");
    let database_url = format!("{}/{DATABASE}", args.postgres.trim_end_matches('/'));
    // Once, before the nodes start: migrations are not meant to run on several nodes at once.
    let migrated = Command::new(&binary).arg("migrate").env("COLLOQUY_DATABASE_URL", &database_url).status()?;
    if !migrated.success() {
        bail!("`colloquy migrate` on {database_url} failed");
    }
    let mut nodes: Vec<Child> = Vec::new();
    for n in 1..=args.nodes {
        let port = 8080 + n;
        let node = Command::new(&binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("COLLOQUY_DATABASE_URL", &database_url)
            .env("COLLOQUY_CLUSTER__NODE_ID", format!("node-{n}"))
            .env("COLLOQUY_CLUSTER__NATS_URL", format!("nats://{NATS}"))
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        nodes.push(node);
        // One after another: the first start of the database creates the admin key (printed once).
        wait_for(&format!("127.0.0.1:{port}"), Duration::from_secs(30))
            .with_context(|| format!("node-{n} did not listen on 127.0.0.1:{port}"))?;
    }
    eprintln!(
        "==> {} nodes: {} (one database, {DATABASE}; NATS on {NATS}); Ctrl-C stops them",
        args.nodes,
        (1..=args.nodes).map(|n| format!("http://127.0.0.1:{}", 8080 + n)).collect::<Vec<_>>().join(", ")
    );
    // Ctrl-C reaches every node (one process group); when one ends, stop the others too.
    loop {
        if let Some(ended) = nodes.iter_mut().position(|node| node.try_wait().ok().flatten().is_some()) {
            eprintln!("==> node-{} stopped; stopping the others", ended + 1);
            for node in &mut nodes {
                let _ = node.kill();
                let _ = node.wait();
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ensure_postgres() -> anyhow::Result<()> {
    if wait_for(POSTGRES, Duration::ZERO).is_ok() {
        return Ok(());
    }
    eprintln!("==> starting PostgreSQL");
    let version = std::fs::read_dir("/etc/postgresql")
        .context("PostgreSQL is not running on 127.0.0.1:5432 and not installed (/etc/postgresql)")?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .max()
        .context("no PostgreSQL version in /etc/postgresql")?;
    let mut start = Command::new("pg_ctlcluster");
    start.args(["--skip-systemctl-redirect", &version, "main", "start"]);
    crate::run(start)?;
    wait_for(POSTGRES, Duration::from_secs(30))
}

fn ensure_nats() -> anyhow::Result<()> {
    if wait_for(NATS, Duration::ZERO).is_ok() {
        return Ok(());
    }
    eprintln!("==> starting NATS (nats-server -js on {NATS})");
    let store = std::env::temp_dir().join("colloquy-nats");
    std::fs::create_dir_all(&store)?;
    Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", "4222", "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("NATS is not running on 127.0.0.1:4222 and nats-server is not installed (apt install nats-server)")?;
    wait_for(NATS, Duration::from_secs(30))
}

fn create_database() -> anyhow::Result<()> {
    let psql = |sql: &str| {
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc", sql])
            .output()
            .context("psql is needed to create the cluster's database")
    };
    let exists = psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"))?;
    if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
        return Ok(());
    }
    let created = psql(&format!("CREATE DATABASE {DATABASE}"))?;
    if !created.status.success() {
        bail!("could not create database {DATABASE}: {}", String::from_utf8_lossy(&created.stderr));
    }
    Ok(())
}

/// Waits until something listens on `addr` (one try when `patience` is zero).
fn wait_for(addr: &str, patience: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
