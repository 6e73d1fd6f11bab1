//! Python virtualenvs for the tests that run a protocol's own Python SDK (`tests/<name>/`, with
//! the pinned `requirements.txt` and the test script), made under `target/`, never in the
//! repository.

use std::path::{Path, PathBuf};

use std::process::Stdio;

use anyhow::{Context, bail};

/// The test files of `tests/<name>`.
pub fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

/// `target/<name>-venv` with `tests/<name>/requirements.txt` installed (once; again when the
/// pins change); returns its python. `None` (the test is skipped) without `python3 -m venv`,
/// unless `COLLOQUY_REQUIRE_PYTHON=1` (`cargo xtask ci`), which fails instead.
///
/// Tests that share a venv run at the same time (all in this test binary): one makes it while
/// the others wait and then find it made. On a clean checkout two tests creating one venv at
/// once failed with "File exists".
pub async fn venv(name: &str) -> anyhow::Result<Option<PathBuf>> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().unwrap_or(tmp);
    let dir = target.join(format!("{name}-venv"));
    let requirements = source(name).join("requirements.txt");
    let pins = std::fs::read_to_string(&requirements)?;
    let marker = dir.join("installed-requirements.txt");
    let python = dir.join("bin").join("python");
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _making = MAKING.lock().await;
    if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == pins) {
        return Ok(Some(python));
    }
    if dir.exists() {
        // Left half-made (or with other pins) by an earlier run: start over.
        std::fs::remove_dir_all(&dir)?;
    }
    let made = tokio::process::Command::new("python3").args(["-m", "venv"]).arg(&dir).status().await;
    if !made.is_ok_and(|status| status.success()) {
        if std::env::var("COLLOQUY_REQUIRE_PYTHON").is_ok_and(|value| value == "1") {
            bail!("`python3 -m venv` failed; COLLOQUY_REQUIRE_PYTHON=1 requires the {name} SDK test");
        }
        eprintln!("SKIPPED the {name} SDK test: `python3 -m venv` is not available (install python3-venv to run it)");
        return Ok(None);
    }
    let installed = tokio::process::Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status()
        .await?;
    anyhow::ensure!(installed.success(), "pip could not install {}", requirements.display());
    std::fs::write(&marker, pins)?;
    Ok(Some(python))
}

/// Runs `tests/<name>/client_test.py` with `args` and `env` in the venv's `python` and fails,
/// with everything it printed, unless it ends with the line `OK`.
pub async fn run_client_test(python: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(python);
    command.arg(source(name).join("client_test.py")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(crate::process::WAIT, command.output())
        .await
        .with_context(|| format!("the {name} client hung"))??;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{stdout}");
    if !output.status.success() || !stdout.trim_end().ends_with("OK") {
        bail!("the {name} client failed:\n{stdout}\n{stderr}");
    }
    Ok(())
}
