//! The peer: the OpenAI Agents SDK (`openai-agents` from PyPI, pinned) with `SQLiteSession`, in a
//! virtualenv the bench creates, running `benches/peer/agents_peer.py` against the same mock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::load::{LoadResult, histogram, micros};
use crate::mock::MockStats;

/// The SDK the peer's figures are for.
pub const PACKAGE: &str = "openai-agents==0.24.0";

/// The peer's Python and script.
pub struct Peer {
    python: PathBuf,
    script: PathBuf,
}

/// What the script prints.
#[derive(Deserialize)]
struct Output {
    turns: u64,
    errors: u64,
    window_s: f64,
    first_error: Option<String>,
    /// `[key, turn_us, ttft_us]` per turn started in the window.
    samples: Vec<(String, u64, u64)>,
}

impl Peer {
    /// Makes the virtualenv at `venv` with the pinned SDK unless it is there already.
    pub async fn prepare(venv: &Path, script: &Path) -> anyhow::Result<Self> {
        let python = venv.join("bin/python");
        let marker = venv.join(format!(".installed-{PACKAGE}"));
        if !marker.exists() {
            crate::progress(&format!("peer: creating a virtualenv at {} with {PACKAGE} (PyPI)", venv.display()));
            run(tokio::process::Command::new("python3").args(["-m", "venv"]).arg(venv)).await?;
            run(tokio::process::Command::new(&python).args(["-m", "pip", "install", "--quiet", PACKAGE])).await?;
            std::fs::write(&marker, PACKAGE)?;
        }
        if !script.exists() {
            bail!("the peer script {} is missing", script.display());
        }
        Ok(Self { python, script: script.to_owned() })
    }

    /// Runs `clients` concurrent turn loops for `warmup + duration` against `base_url`.
    pub async fn run(
        &self,
        base_url: &str,
        mock: &MockStats,
        clients: usize,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<LoadResult> {
        let dir = tempfile::Builder::new().prefix("colloquy-bench-peer-").tempdir()?;
        let output = tokio::process::Command::new(&self.python)
            .arg(&self.script)
            .args(["--base-url", base_url, "--model", crate::mock::MODEL])
            .args(["--clients", &clients.to_string()])
            .args(["--warmup", &warmup.as_secs_f64().to_string()])
            .args(["--duration", &duration.as_secs_f64().to_string()])
            .arg("--db")
            .arg(dir.path().join("sessions.db"))
            .env("OPENAI_AGENTS_DISABLE_TRACING", "1")
            .kill_on_drop(true)
            .output()
            .await
            .context("cannot run the peer script")?;
        if !output.status.success() {
            bail!(
                "the peer script failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).lines().rev().take(10).collect::<Vec<_>>().join(" | ")
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('{')).context("the peer script printed no result")?;
        let parsed: Output = serde_json::from_str(line).context("the peer script's result")?;
        let mut result = LoadResult {
            turns: parsed.turns,
            window: Duration::from_secs_f64(parsed.window_s),
            errors: parsed.errors,
            first_error: parsed.first_error,
            latency: histogram(),
            first_token: histogram(),
            added: histogram(),
            mock: histogram(),
            cpu_seconds: None,
        };
        for (key, turn_us, ttft_us) in parsed.samples {
            let _ = result.latency.record(turn_us.max(1));
            let _ = result.first_token.record(ttft_us.max(1));
            if let Some((mock_time, _)) = mock.take(&key) {
                let _ = result.mock.record(micros(mock_time));
                let _ = result.added.record(turn_us.saturating_sub(micros(mock_time)).max(1));
            }
        }
        Ok(result)
    }
}

async fn run(command: &mut tokio::process::Command) -> anyhow::Result<()> {
    let status = command.status().await.with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
