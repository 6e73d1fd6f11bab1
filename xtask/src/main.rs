//! `cargo xtask`: every piece of Colloquy's automation, so that "if `cargo xtask ci` passes
//! locally, CI is green".

mod api_check;
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
    /// What CI runs: fmt --check, clippy -D warnings, tidy, every test (Postgres required),
    /// then the API check.
    Ci,
    /// Schemathesis against a running `colloquy serve`, over every operation of its OpenAPI
    /// document: no 5xx, every response as documented (installs schemathesis into target/).
    ApiCheck,
    /// Criterion benches (extra arguments go to `cargo bench`).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        Task::Bench { args } => {
            let mut cargo = cargo(&["bench", "--package", "colloquy-benches"]);
            cargo.args(args);
            run(cargo)
        }
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

/// Runs every test; with `require_postgres`, the Postgres suites fail instead of skipping when
/// no server answers.
fn test(args: &[String], require_postgres: bool) -> anyhow::Result<()> {
    let mut cargo = cargo(&["test", "--workspace", "--all-targets"]);
    cargo.args(args);
    if require_postgres {
        cargo.env("COLLOQUY_REQUIRE_POSTGRES", "1");
    }
    step("test", cargo)
}

/// The workspace's root directory (where `target/` is).
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
