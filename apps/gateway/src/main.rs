//! `colloquy`: serve the gateway, or migrate its database.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use colloquy_gateway::{AppState, Config, serve};
use serde::Serialize;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "colloquy", version, about = "Stateful, multi-turn, tool-using LLM conversations over WebSocket")]
struct Cli {
    /// Configuration file (optional; missing is fine).
    #[arg(long, global = true, default_value = "colloquy.toml", env = "COLLOQUY_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database, then serve WebSocket and REST clients.
    Serve(Flags),
    /// Migrate the database and exit.
    Migrate(Flags),
}

/// Flags override the file and the environment.
#[derive(clap::Args, Serialize)]
struct Flags {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Database URL [default: sqlite://colloquy.db?mode=rwc].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (flags, serve_after) = match cli.command {
        Command::Serve(flags) => (flags, true),
        Command::Migrate(flags) => (flags, false),
    };
    let config = Config::load(&cli.config, flags).context("invalid configuration")?;
    let listen = config.listen;
    if !serve_after {
        colloquy_store::SeaStore::connect(&config.database_url, colloquy_store::StoreOptions::default()).await?;
        tracing::info!(database = %redact(&config.database_url), "database migrated");
        return Ok(());
    }
    let ttl_hours = config.conversation_ttl_hours;
    let (state, banner) = AppState::build(config).await?;
    if ttl_hours > 0 {
        let inactivity = std::time::Duration::from_secs(ttl_hours * 3600);
        let policy = colloquy_store::SweepPolicy { inactivity, ..colloquy_store::SweepPolicy::default() };
        colloquy_store::spawn_sweeper(std::sync::Arc::clone(state.engine.store()), policy);
    }
    for line in banner {
        tracing::info!("{line}");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    // The bound address, which differs from the configured one for port 0.
    let listen = listener.local_addr()?;
    tracing::info!("colloquy listening on http://{listen} (WebSocket ws://{listen}/v1/ws)");
    serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}

/// The URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}
