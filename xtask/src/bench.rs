//! `cargo xtask bench [--quick]`: builds the release gateway and the bench driver, runs the
//! criterion benches (short ones with `--quick`), then the driver (benches/src/bin/colloquy-bench),
//! which runs every scenario of DESIGN §10 and writes `target/bench-report/report.md` and its
//! plots. Respects `CARGO_TARGET_DIR`. Never part of `cargo xtask ci` (which only compiles it).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// `cargo xtask bench` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run of about a minute (plus builds): short windows, the store bench only, briefly.
    #[arg(long)]
    quick: bool,
    /// Do not run the criterion benches (the report then has no store figures).
    #[arg(long)]
    skip_criterion: bool,
    /// Do not run the peer (no Python virtualenv, no PyPI).
    #[arg(long)]
    no_peer: bool,
    /// A note on the conditions, written into the report.
    #[arg(long)]
    note: Option<String>,
}

pub fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    let target = crate::target_dir(root);
    let report = target.join("bench-report");
    std::fs::create_dir_all(&report)?;

    eprintln!("==> bench: build (release gateway and bench driver)");
    let mut build = crate::cargo(&[
        "build",
        "--release",
        "--package",
        "colloquy-gateway",
        "--package",
        "colloquy-benches",
        "--bin",
        "colloquy",
        "--bin",
        "colloquy-bench",
    ]);
    build.current_dir(root);
    crate::run(build)?;

    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let log = report.join("criterion.txt");
    if args.skip_criterion {
        std::fs::write(&log, "")?;
    } else {
        // Criterion's flags go to the bench binaries only, so the targets are named.
        let mut bench = if args.quick {
            eprintln!("==> bench: criterion (store only, short: --quick)");
            crate::cargo(&["bench", "--package", "colloquy-benches", "--bench", "store", "--"])
        } else {
            eprintln!("==> bench: criterion (engine_turn, store)");
            crate::cargo(&[
                "bench",
                "--package",
                "colloquy-benches",
                "--bench",
                "engine_turn",
                "--bench",
                "store",
                "--",
            ])
        };
        let flags: &[&str] = if args.quick {
            &["--warm-up-time", "0.3", "--measurement-time", "1", "--sample-size", "10"]
        } else {
            &["--warm-up-time", "1", "--measurement-time", "3"]
        };
        bench.args(flags).current_dir(root);
        tee(bench, &log)?;
    }

    eprintln!("==> bench: scenarios (progress below; report in {})", report.display());
    let mut driver = Command::new(target.join("release/colloquy-bench"));
    driver
        .arg("--gateway")
        .arg(target.join("release/colloquy"))
        .arg("--out")
        .arg(&report)
        .arg("--criterion")
        .arg(target.join("criterion"))
        .arg("--criterion-since")
        .arg(since.to_string())
        .arg("--criterion-log")
        .arg(&log)
        .arg("--peer-venv")
        .arg(target.join("bench-peer"))
        .arg("--peer-script")
        .arg(root.join("benches/peer/agents_peer.py"))
        .current_dir(root);
    if args.quick {
        driver.arg("--quick");
    }
    if args.no_peer {
        driver.arg("--no-peer");
    }
    if let Some(note) = &args.note {
        driver.arg("--note").arg(note);
    }
    crate::run(driver)?;
    eprintln!("==> bench: {}", report.join("report.md").display());
    Ok(())
}

/// Runs `command`, copying its stdout to stderr (to show progress) and to `path`.
fn tee(mut command: Command, path: &Path) -> anyhow::Result<()> {
    let mut child = command.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot start {command:?}"))?;
    let mut file = std::fs::File::create(path)?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            eprintln!("{line}");
            writeln!(file, "{line}")?;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
