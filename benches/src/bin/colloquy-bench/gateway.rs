//! The gateway under test: the release `colloquy` binary as its own process, on a fresh SQLite
//! file in a temporary directory, with the bench mock as its model and the abuse limits raised
//! out of the way; its RSS and CPU time read from `/proc/<pid>`, its store commits from
//! `/metrics`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How a gateway is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every acknowledged write is fsynced (the default).
    Full,
    /// Commits survive a process crash, not a power loss.
    Normal,
}

impl Durability {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Normal => "normal",
        }
    }
}

/// Store commits counted by `colloquy_store_commits_total`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Commits {
    /// Every committed write transaction.
    pub total: f64,
    /// Those that were fsynced (`synced="true"`; all of them when the label is absent).
    pub synced: f64,
}

/// A running gateway; killed when dropped.
pub struct Gateway {
    child: Child,
    /// Its process id, for `/proc`.
    pub pid: u32,
    /// `127.0.0.1:PORT`, from its own "listening on" line.
    pub addr: String,
    /// The admin key it printed on its first start.
    pub key: String,
    /// For REST calls, with the key.
    pub http: reqwest::Client,
    /// Holds the database and the logs; removed with the gateway.
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `binary serve` on port 0 with this durability, talking to the mock at `model_url`.
    pub async fn start(binary: &Path, model_url: &str, durability: Durability) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("colloquy-bench-").tempdir()?;
        let stdout = std::fs::File::create(dir.path().join("stdout.log"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        let mut command = Command::new(binary);
        command
            .args(["--config", "/nonexistent/colloquy.toml", "serve", "--listen", "127.0.0.1:0"])
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env("COLLOQUY_DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.path().join("colloquy.db").display()))
            .env("COLLOQUY_DURABILITY", durability.as_str())
            .env("COLLOQUY_PROVIDERS__MOCK__KIND", "openai_compatible")
            .env("COLLOQUY_PROVIDERS__MOCK__BASE_URL", model_url)
            .env("COLLOQUY_PROVIDERS__MOCK__API_KEY", "unused")
            .env("COLLOQUY_AGENT__PROVIDER", "mock")
            .env("COLLOQUY_AGENT__MODEL", crate::mock::MODEL)
            .env("COLLOQUY_AGENT__TOOLS", r#"["calculator"]"#)
            .env("COLLOQUY_DISCOVER_OLLAMA", "false")
            .env("COLLOQUY_CONVERSATION_TTL_HOURS", "0")
            .env("COLLOQUY_LIMITS__MAX_CONNECTIONS", "30000")
            .env("COLLOQUY_LIMITS__MAX_CONNECTIONS_PER_KEY", "30000")
            .env("COLLOQUY_LIMITS__FRAMES_PER_SECOND", "1000000")
            .env("COLLOQUY_LIMITS__REQUESTS_PER_SECOND_PER_KEY", "1000000")
            .env("COLLOQUY_LIMITS__MAX_QUEUED_PROMPTS", "100000")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("the gateway exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (addr, key) = loop {
            let printed = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default();
            let logged = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            let key = printed.lines().map(str::trim).find(|line| line.starts_with("ck_")).map(str::to_owned);
            let addr = logged.lines().find_map(|line| {
                let at = line.find("colloquy listening on http://")? + "colloquy listening on http://".len();
                line[at..].split_whitespace().next().map(str::to_owned)
            });
            if let (Some(addr), Some(key)) = (addr, key) {
                break (addr, key);
            }
            if let Some(status) = child.try_wait()? {
                bail!("the gateway exited with {status} before it listened; its log:\n{}", tail(&logged));
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway did not say where it listens (and print its key) within 60 s; its log:\n{}",
                    tail(&logged)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse()?);
        let http = reqwest::Client::builder().default_headers(headers).tcp_nodelay(true).build()?;
        Ok(Self { child, pid, addr, key, http, _dir: dir })
    }

    /// `ws://ADDR/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Creates a conversation (`body` as `POST /v1/conversations` takes it) and returns its id.
    pub async fn create_conversation(&self, body: &serde_json::Value) -> anyhow::Result<String> {
        let response = self.http.post(format!("http://{}/v1/conversations", self.addr)).json(body).send().await?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST /v1/conversations answered {status}: {answer}");
        }
        answer["id"].as_str().map(str::to_owned).context("the created conversation has no id")
    }

    /// `colloquy_store_commits_total` from `/metrics`; `None` when the gateway does not count them.
    pub async fn commits(&self) -> anyhow::Result<Option<Commits>> {
        let text = self.http.get(format!("http://{}/metrics", self.addr)).send().await?.text().await?;
        let mut commits = Commits::default();
        let mut found = false;
        let mut labelled = false;
        for line in text.lines().filter(|l| l.starts_with("colloquy_store_commits_total")) {
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
            found = true;
            commits.total += value;
            if line.contains("synced=") {
                labelled = true;
                if line.contains("synced=\"true\"") {
                    commits.synced += value;
                }
            }
        }
        if !labelled {
            commits.synced = commits.total;
        }
        Ok(found.then_some(commits))
    }

    /// User plus system CPU seconds the process has used.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').context("malformed /proc stat")?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line; here, after pid and comm, 11 and 12.
        let ticks: u64 =
            fields.get(11..13).context("short /proc stat")?.iter().filter_map(|f| f.parse::<u64>().ok()).sum();
        Ok(ticks as f64 / clock_ticks())
    }

    /// Resident memory, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS in /proc status")?;
        let kib: u64 = line.split_whitespace().nth(1).context("malformed VmRSS")?.parse()?;
        Ok(kib * 1024)
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 almost everywhere).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
