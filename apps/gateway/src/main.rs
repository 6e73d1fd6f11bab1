//! `colloquy`: serve the gateway, migrate its database, or manage API keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use colloquy_core_model::{AccountId, AccountKind};
use colloquy_gateway::config::LogFormat;
use colloquy_gateway::{AppState, Config, new_secret, serve};
use colloquy_store::{ApiKeyId, ConversationStore, NewAccount, NewApiKey, SeaStore};
use serde::Serialize;
use tracing_subscriber::EnvFilter;

/// jemalloc rather than the system allocator: a turn makes many small, short-lived allocations
/// (frames, events, rows), and glibc's malloc and free were about a tenth of the gateway's CPU.
/// (mimalloc was as fast but held 17.1 KiB per idle WebSocket to jemalloc's 15.4 KiB, in
/// `cargo xtask bench` over 10,000 connections.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Run the default agent as an ACP agent on stdin and stdout, for editors (docs/acp.md).
    Acp(Flags),
    /// Manage accounts' API keys in the configured database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        flags: Flags,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates a key for an account (creating the account if it is new) and prints its secret,
    /// which is shown this once.
    Create {
        /// The account's name.
        #[arg(long)]
        account: String,
        /// The kind of a new account.
        #[arg(long, value_enum, default_value_t = Kind::User)]
        kind: Kind,
        /// How long the key works, e.g. `30d`, `12h`, `90m`; forever if left out.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<chrono::Duration>,
        /// A note on what the key is for.
        #[arg(long)]
        label: Option<String>,
    },
    /// Lists every key (never their secrets).
    List,
    /// Revokes a key; the gateway closes its connections within a second.
    Revoke {
        /// The key's id, from `keys list`.
        id: ApiKeyId,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    User,
    Service,
    Admin,
}

/// `30d`, `12h`, `90m`, `45s`.
fn parse_duration(text: &str) -> Result<chrono::Duration, String> {
    let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
    let n: i64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 30d, 12h or 90m"))?;
    match unit {
        "d" => Ok(chrono::Duration::days(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "m" => Ok(chrono::Duration::minutes(n)),
        "s" => Ok(chrono::Duration::seconds(n)),
        _ => Err(format!("`{text}`: use d, h, m or s, as in 30d")),
    }
}

/// Flags override the file and the environment.
#[derive(clap::Args, Serialize)]
struct Flags {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Database URL [default: sqlite://colloquy.db?mode=rwc].
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
}

/// Logs to stderr, as text or JSON lines (`log_format`); `RUST_LOG` filters.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().with_current_span(true).init(),
        LogFormat::Text => logs.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (flags, command) = match cli.command {
        Command::Acp(flags) => {
            let config = Config::load(&cli.config, flags).context("invalid configuration")?;
            // Stdout carries the protocol: logs go to stderr, as always.
            init_logging(config.log_format);
            return colloquy_gateway::serve_acp(config).await;
        }
        Command::Serve(flags) => (flags, None),
        Command::Migrate(flags) => (flags, Some(None)),
        Command::Keys { command, flags } => (flags, Some(Some(command))),
    };
    let config = Config::load(&cli.config, flags).context("invalid configuration")?;
    init_logging(config.log_format);
    match command {
        None => run_server(config).await,
        Some(None) => {
            SeaStore::connect(&config.database_url, config.store_options()).await?;
            tracing::info!(database = %redact(&config.database_url), "database migrated");
            Ok(())
        }
        Some(Some(command)) => {
            let store = SeaStore::connect(&config.database_url, config.store_options()).await?;
            let result = keys(&store, command).await;
            store.close().await?;
            result
        }
    }
}

async fn run_server(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let ttl_hours = config.conversation_ttl_hours;
    let (state, banner) = AppState::build(config).await?;
    if ttl_hours > 0 {
        let inactivity = std::time::Duration::from_secs(ttl_hours * 3600);
        let policy = colloquy_store::SweepPolicy { inactivity, ..colloquy_store::SweepPolicy::default() };
        state.engine.spawn_sweeper(policy);
    }
    for line in banner {
        tracing::info!("{line}");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    // The bound address, which differs from the configured one for port 0.
    let listen = listener.local_addr()?;
    if let Some(secret) = state.first_run_admin_key().await? {
        // Shown once, on the terminal only: never logged.
        println!();
        println!("First start: created the admin account `admin` with this API key (it is not shown again):");
        println!();
        println!("    {secret}");
        println!();
        println!("Use it as `Authorization: Bearer <key>`, or open http://{listen}/#key={secret}");
        println!("More keys: `colloquy keys create --account NAME` (or `cargo xtask keys create --account NAME`).");
        println!();
    }
    tracing::info!("colloquy listening on http://{listen} (WebSocket ws://{listen}/v1/ws)");
    serve(listener, state, stop_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

async fn keys(store: &SeaStore, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { account, kind, expires, label } => {
            let kind = match kind {
                Kind::User => AccountKind::User,
                Kind::Service => AccountKind::Service,
                Kind::Admin => AccountKind::Admin,
            };
            let account = match store.account_by_name(&account).await? {
                Some(existing) => {
                    if existing.kind != kind {
                        eprintln!("note: account `{}` exists and is a {:?} account", existing.name, existing.kind);
                    }
                    existing
                }
                None => {
                    let new = NewAccount { id: AccountId::new(), name: account.clone(), kind, display_name: account };
                    store.create_account(new).await?
                }
            };
            let secret = new_secret()?;
            let expires_at = expires.map(|left| chrono::Utc::now() + left);
            let key = NewApiKey { id: ApiKeyId::new(), secret: secret.clone(), label, account: account.id, expires_at };
            let key = store.create_api_key(key).await?;
            println!("created key {} for account `{}` ({:?})", key.id, account.name, account.kind);
            if let Some(at) = key.expires_at {
                println!("it expires at {}", at.to_rfc3339());
            }
            println!("secret (shown this once): {secret}");
            Ok(())
        }
        KeysCommand::List => {
            let accounts: std::collections::HashMap<AccountId, _> =
                store.accounts().await?.into_iter().map(|a| (a.id, a)).collect();
            println!(
                "{:<36}  {:<16}  {:<7}  {:<20}  {:<20}  {:<20}",
                "id", "account", "kind", "created", "expires", "revoked"
            );
            for key in store.api_keys().await? {
                let account = key.account.and_then(|id| accounts.get(&id));
                let when = |at: Option<colloquy_core_model::Timestamp>| {
                    at.map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                };
                println!(
                    "{:<36}  {:<16}  {:<7}  {:<20}  {:<20}  {:<20}",
                    key.id,
                    account.map_or("(none)", |a| a.name.as_str()),
                    account.map_or("-", |a| a.kind.as_str()),
                    when(Some(key.created_at)),
                    when(key.expires_at),
                    when(key.revoked_at),
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            if store.api_keys().await?.iter().any(|key| key.id == id && key.revoked_at.is_some()) {
                bail!("key {id} was revoked already");
            }
            store.revoke_api_key(id).await?;
            println!("revoked key {id}; running gateways close its connections within a second");
            Ok(())
        }
    }
}

/// The URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("30d"), Ok(chrono::Duration::days(30)));
        assert_eq!(parse_duration("12h"), Ok(chrono::Duration::hours(12)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("30y").is_err());
    }
}
