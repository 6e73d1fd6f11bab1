//! Running the `colloquy` binary as a process, as an operator would, and talking to it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// A guard against hangs, not a speed check.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running `colloquy serve`.
pub struct Served {
    pub child: Child,
    /// `host:port`, read from its own "listening on" line.
    pub addr: String,
    /// What it logged before it listened.
    pub startup_log: Vec<String>,
    /// What it printed on stdout (the first-start key), as it arrives.
    pub stdout: tokio::sync::watch::Receiver<Vec<String>>,
    /// Everything it logged (stderr), as it arrives.
    pub log: tokio::sync::watch::Receiver<Vec<String>>,
}

impl Served {
    /// Stdout so far.
    pub fn printed(&self) -> Vec<String> {
        self.stdout.borrow().clone()
    }

    /// Waits until stdout has a line for which `wanted` holds, and returns it.
    pub async fn printed_line(&mut self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let lines = tokio::time::timeout(WAIT, self.stdout.wait_for(|lines| lines.iter().any(|l| wanted(l))))
            .await
            .context("nothing like it was printed")??
            .clone();
        lines.into_iter().find(|l| wanted(l)).context("gone")
    }

    /// Waits until it has logged a line for which `wanted` holds, and returns it.
    pub async fn logged_line(&mut self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let lines = tokio::time::timeout(WAIT, self.log.wait_for(|lines| lines.iter().any(|l| wanted(l))))
            .await
            .context("nothing like it was logged")??
            .clone();
        lines.into_iter().find(|l| wanted(l)).context("gone")
    }
}

/// Starts `colloquy serve` on port 0 against `database` and the mock at `base_url`, with
/// `env` on top.
pub async fn start(database: &Path, base_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Served> {
    start_with(&["--config", "/nonexistent/colloquy.toml", "serve", "--listen", "127.0.0.1:0"], database, base_url, env)
        .await
}

/// Like [`start`], with these command-line arguments (a configuration file, a fixed address).
pub async fn start_with(
    args: &[&str],
    database: &Path,
    base_url: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Served> {
    let url = format!("sqlite://{}?mode=rwc", database.display());
    spawn(args, &url, base_url, env).await
}

/// Like [`start`] on any database URL (a cluster node's Postgres).
pub async fn start_on(database_url: &str, base_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Served> {
    let args = ["--config", "/nonexistent/colloquy.toml", "serve", "--listen", "127.0.0.1:0"];
    spawn(&args, database_url, base_url, env).await
}

async fn spawn(args: &[&str], database_url: &str, base_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Served> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_colloquy"));
    command
        .args(args)
        .env("COLLOQUY_DATABASE_URL", database_url)
        .env("COLLOQUY_PROVIDERS__MOCK__KIND", "openai_compatible")
        .env("COLLOQUY_PROVIDERS__MOCK__BASE_URL", base_url)
        .env("COLLOQUY_AGENT__PROVIDER", "mock")
        .env("COLLOQUY_AGENT__MODEL", "gpt-test")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn()?;
    let (printed, stdout) = tokio::sync::watch::channel(Vec::new());
    let mut out_lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = out_lines.next_line().await {
            println!("colloquy stdout: {line}");
            printed.send_modify(|lines| lines.push(line));
        }
    });
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut startup_log = Vec::new();
    let (logged, log) = tokio::sync::watch::channel(Vec::new());
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            eprintln!("colloquy: {line}");
            logged.send_modify(|lines| lines.push(line.clone()));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return anyhow::Ok(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
            startup_log.push(line);
        }
        bail!("colloquy exited before listening: {startup_log:?}")
    })
    .await??;
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("colloquy: {line}");
            logged.send_modify(|lines| lines.push(line));
        }
    });
    Ok(Served { child, addr, startup_log, stdout, log })
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON frame.
pub async fn next_frame(ws: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await?.context("connection closed")??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(text.as_str())?);
        }
    }
}

/// `POST /v1/conversations` with `{}` (presenting `key` when auth is on); the new id.
pub async fn create_conversation(addr: &str, key: Option<&str>) -> anyhow::Result<String> {
    let mut request =
        reqwest::Client::new().post(format!("http://{addr}/v1/conversations")).json(&serde_json::json!({}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let created: Value = request.send().await?.json().await?;
    Ok(created["id"].as_str().context("no id")?.to_owned())
}

/// The whole durable log of a conversation, through the REST pages of `addr`.
pub async fn event_log(addr: &str, conversation: &str) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = reqwest::Client::new()
            .get(format!("http://{addr}/v1/conversations/{conversation}/events?after_seq={after}&limit=500"))
            .send()
            .await?
            .json()
            .await?;
        let batch = page["events"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            return Ok(events);
        }
        after = batch.last().and_then(|e| e["seq"].as_u64()).unwrap_or(after);
        events.extend(batch);
    }
}

/// A WebSocket connection subscribed to `conversation` after `after_seq` (auth off).
pub async fn subscribe(addr: &str, conversation: &str, after_seq: u64) -> anyhow::Result<Socket> {
    use futures::SinkExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await?;
    let frame =
        serde_json::json!({"type": "subscribe", "id": "sub", "conversation_id": conversation, "after_seq": after_seq});
    ws.send(Message::Text(frame.to_string().into())).await?;
    Ok(ws)
}
