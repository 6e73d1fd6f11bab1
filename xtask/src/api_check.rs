//! `cargo xtask api-check`: schemathesis (from PyPI, in a venv under `target/`) against a real
//! `colloquy serve` on a free port, over every operation of its own `/openapi.json`: no
//! response may be a 5xx, and every response must match its documented status, content type
//! and schema.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

/// The schemathesis release the checks are known to work with.
const SCHEMATHESIS: &str = "4.32.5";

/// Test cases per operation and phase: enough to find the shape bugs, small enough to keep CI
/// short (about 20 s on 2 cores).
const MAX_EXAMPLES: &str = "15";

/// The seed, unless `COLLOQUY_SCHEMATHESIS_SEED` sets another: a red run reproduces exactly.
const SEED: &str = "20261202";

/// A running gateway, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let target = crate::target_dir(root);
    let st = install(&target.join("schemathesis"))?;
    eprintln!("==> api-check: building colloquy");
    crate::run(crate::cargo(&["build", "--package", "colloquy-gateway", "--bin", "colloquy"]))?;
    let dir = tempfile::tempdir()?;
    let (served, addr, key) = serve(&target.join("debug").join("colloquy"), dir.path())?;
    let seed = std::env::var("COLLOQUY_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    eprintln!("==> api-check: schemathesis {SCHEMATHESIS} against http://{addr}/openapi.json (seed {seed})");
    let schema = format!("http://{addr}/openapi.json");
    let auth = format!("Authorization: Bearer {key}");
    let common = [
        schema.as_str(),
        "--header",
        auth.as_str(),
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        seed.as_str(),
        "--request-timeout",
        "20",
        "--workers",
        "2",
        "--no-color",
    ];
    // Every operation but key revocation, in every phase; then revocation without the stateful
    // phase, which would find the key the check runs with (in `GET /v1/keys`) and revoke it.
    // Schemathesis keeps a cache in its working directory: keep it under target/.
    let workdir = target.join("schemathesis");
    let mut everything = Command::new(&st);
    everything.current_dir(&workdir);
    everything.arg("run").args(common).args(["--exclude-path", "/v1/keys/{id}"]);
    let mut revocation = Command::new(&st);
    revocation.current_dir(&workdir);
    revocation.arg("run").args(common).args(["--include-path", "/v1/keys/{id}", "--phases", "coverage,fuzzing"]);
    let outcome = run_schemathesis(everything).and_then(|()| run_schemathesis(revocation));
    drop(served);
    outcome.context("schemathesis found responses that break the OpenAPI document (reproduce with the seed above)")
}

/// CPython's own crash inside schemathesis' example generator (a RecursionError while it
/// compiles generated code), which has nothing to do with the API.
const INTERPRETER_CRASH: &str = "SystemError: AST constructor recursion depth mismatch";

/// Runs one schemathesis command, showing its output as it comes. A run whose only error is
/// [`INTERPRETER_CRASH`] (every test case passed) is run once more, with the same seed; any
/// other failure fails at once.
fn run_schemathesis(mut command: Command) -> anyhow::Result<()> {
    for attempt in 1..=2 {
        let mut child = command.stdout(Stdio::piped()).spawn().context("cannot start schemathesis")?;
        let mut output = String::new();
        for line in BufReader::new(child.stdout.take().context("no stdout")?).lines() {
            let line = line?;
            eprintln!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
        let status = child.wait()?;
        if status.success() {
            return Ok(());
        }
        let only_the_crash =
            output.contains(INTERPRETER_CRASH) && !output.contains("Failures:") && !output.contains("FAILURES");
        if !only_the_crash || attempt == 2 {
            bail!("schemathesis failed with {status}");
        }
        eprintln!("==> api-check: schemathesis crashed inside CPython ({INTERPRETER_CRASH}); running it once more");
    }
    Ok(())
}

/// The `st` executable of a venv with schemathesis, made on first use.
fn install(venv: &Path) -> anyhow::Result<PathBuf> {
    let st = venv.join("bin").join("st");
    let installed = Command::new(&st).arg("--version").output().ok().filter(|o| o.status.success());
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS)) {
        return Ok(st);
    }
    eprintln!("==> api-check: installing schemathesis {SCHEMATHESIS} into {}", venv.display());
    crate::run({
        let mut command = Command::new("python3");
        command.args(["-m", "venv"]).arg(venv);
        command
    })
    .context("python3 with venv is needed for the API check")?;
    crate::run({
        let mut command = Command::new(venv.join("bin").join("pip"));
        command.args(["install", "--quiet", &format!("schemathesis=={SCHEMATHESIS}")]);
        command
    })?;
    Ok(st)
}

/// Starts `colloquy serve` on a free port with a fresh SQLite file and an offline scripted
/// provider; returns it, its address and its first-start admin key.
fn serve(binary: &Path, dir: &Path) -> anyhow::Result<(Served, String, String)> {
    let mut child = Command::new(binary)
        .args(["--config", "/nonexistent/colloquy.toml", "serve", "--listen", "127.0.0.1:0"])
        .env("COLLOQUY_DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("colloquy.db").display()))
        .env("COLLOQUY_PROVIDERS__DEMO__KIND", "scripted")
        .env("COLLOQUY_PROVIDERS__DEMO__REPLIES", r#"["Hello from the API check."]"#)
        .env("COLLOQUY_AGENT__PROVIDER", "demo")
        // Thousands of requests in seconds: the rate limit would answer most of them 429.
        .env("COLLOQUY_LIMITS__REQUESTS_PER_SECOND_PER_KEY", "100000")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn,colloquy=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let (lines, found) = mpsc::channel::<(bool, String)>();
    for (is_stdout, stream) in [
        (true, child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)),
        (false, child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)),
    ] {
        let lines = lines.clone();
        let stream = stream.context("no pipe")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if !is_stdout {
                    eprintln!("colloquy: {line}");
                }
                let _ = lines.send((is_stdout, line));
            }
        });
    }
    let served = Served(child);
    let (mut addr, mut key) = (None, None);
    while addr.is_none() || key.is_none() {
        let (is_stdout, line) =
            found.recv_timeout(Duration::from_secs(60)).context("colloquy did not start listening within 60 s")?;
        if is_stdout && line.trim().starts_with("ck_") {
            key = Some(line.trim().to_owned());
        } else if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    match (addr, key) {
        (Some(addr), Some(key)) => Ok((served, addr, key)),
        _ => bail!("colloquy printed no address or key"),
    }
}
