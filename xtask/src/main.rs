//! `cargo xtask`: every piece of Colloquy's automation, so that "if `cargo xtask ci` passes
//! locally, CI is green".

mod api_check;
mod bench;
mod cluster;
mod live_check;
mod tidy;

use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Colloquy's automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Migrate ./colloquy.db and serve on 127.0.0.1:8080 (extra arguments go to `colloquy serve`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test of the workspace (extra arguments go to `cargo test`).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// What CI runs: fmt --check, clippy -D warnings, tidy, every test (Postgres and the
    /// browser tests of the chat page required), then the API check.
    Ci,
    /// Schemathesis against a running `colloquy serve`, over every operation of its OpenAPI
    /// document: no 5xx, every response as documented (installs schemathesis into target/).
    ApiCheck,
    /// The benchmark harness: criterion benches, then every DESIGN §10 scenario against the
    /// release gateway and the Agents SDK peer; writes target/bench-report/ (`--quick`: ~1 min).
    Bench(bench::Args),
    /// Three local nodes of a cluster on 127.0.0.1:8081-8083, sharing the machine's Postgres
    /// (database `colloquy_cluster`) and NATS, each started first if absent (docs/cluster.md).
    Cluster(cluster::Args),
    /// Checks the layering rules of ARCHITECTURE.md and the house rules.
    Tidy,
    /// Migrate the database named by the configuration and exit.
    Migrate,
    /// Manage API keys in the configured database: `create --account NAME [--kind user|service|admin]
    /// [--expires 30d]`, `list`, `revoke ID` (arguments go to `colloquy keys`).
    Keys {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Stream a prompt and a calculator tool-call round trip from a real model server (on
    /// demand, never in CI): `--base-url URL [--model M] [--api-key K] [--kind anthropic]`.
    LiveCheck(live_check::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Run { args } => {
            let mut cargo = cargo(&["run", "--package", "colloquy-gateway", "--bin", "colloquy", "--", "serve"]);
            cargo.args(args);
            run(cargo)
        }
        Task::Test { args } => test(&args, false),
        Task::Ci => {
            step("fmt", cargo(&["fmt", "--all", "--check"]))?;
            step("clippy", cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
            eprintln!("==> tidy");
            tidy::check()?;
            test(&[], true)?;
            api_check::run(&workspace_root()?)
        }
        Task::ApiCheck => api_check::run(&workspace_root()?),
        Task::Bench(args) => bench::run(&workspace_root()?, args),
        Task::Cluster(args) => cluster::run(&workspace_root()?, args),
        Task::Tidy => tidy::check(),
        Task::Migrate => run(cargo(&["run", "--package", "colloquy-gateway", "--bin", "colloquy", "--", "migrate"])),
        Task::Keys { args } => {
            let mut cargo =
                cargo(&["run", "--quiet", "--package", "colloquy-gateway", "--bin", "colloquy", "--", "keys"]);
            cargo.args(args);
            run(cargo)
        }
        Task::LiveCheck(args) => live_check::run(args),
    }
}

/// Runs every test; with `required` (CI), the Postgres suites fail instead of skipping when no
/// server answers, and the chat page's browser tests fail instead of skipping without Chromium
/// or Node.js.
fn test(args: &[String], required: bool) -> anyhow::Result<()> {
    let mut cargo = cargo(&["test", "--workspace", "--all-targets"]);
    cargo.args(args);
    if required {
        cargo.env("COLLOQUY_REQUIRE_POSTGRES", "1");
        cargo.env("COLLOQUY_REQUIRE_BROWSER", "1");
        cargo.env("COLLOQUY_REQUIRE_PYTHON", "1");
    } else if let Some(missing) = ["chromium", "node", "npm"].into_iter().find(|tool| !on_path(tool)) {
        eprintln!(
            "note: `{missing}` is not installed, so the chat page's browser tests (apps/gateway/tests/it/browser.rs) \
             will be SKIPPED; install chromium and Node.js to run them (`cargo xtask ci` requires them)"
        );
    }
    step("test", cargo)
}

/// Whether `program` is on PATH (or `COLLOQUY_CHROMIUM` names a Chromium).
fn on_path(program: &str) -> bool {
    if program == "chromium" && std::env::var_os("COLLOQUY_CHROMIUM").is_some() {
        return true;
    }
    let candidates: &[&str] = if program == "chromium" { &["chromium", "chromium-browser"] } else { &[program] };
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| candidates.iter().any(|name| dir.join(name).is_file()))
    })
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to `root`) when set, else
/// `root/target`.
fn target_dir(root: &std::path::Path) -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(std::path::PathBuf::from(dir)),
        None => root.join("target"),
    }
}

/// The workspace's root directory (where `target/` is by default).
fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec()?;
    Ok(metadata.workspace_root.into_std_path_buf())
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(args);
    command
}

fn step(name: &str, command: Command) -> anyhow::Result<()> {
    eprintln!("==> {name}");
    run(command)
}

fn run(mut command: Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
