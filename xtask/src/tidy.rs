//! `cargo xtask tidy`: the dependency direction of ARCHITECTURE.md and a few house rules,
//! checked from `cargo metadata` and the source tree.

use std::path::Path;

use anyhow::bail;
use cargo_metadata::{DependencyKind, MetadataCommand};

/// A workspace package, the internal crates it may depend on, and outside crates it must not.
struct Rule {
    package: &'static str,
    may_use: &'static [&'static str],
    must_not_use: &'static [&'static str],
}

/// Outside crates that mean IO, async runtimes, storage or the network.
const IO: &[&str] = &["tokio", "sea-orm", "sqlx", "reqwest", "axum", "hyper", "async-openai", "tokio-tungstenite"];
/// Outside crates that mean HTTP serving or WebSocket frames.
const SERVING: &[&str] = &["axum", "hyper", "tokio-tungstenite", "tower-http"];
/// Outside crates that mean SQL.
const SQL: &[&str] = &["sea-orm", "sea-orm-migration", "sqlx"];

/// Every library crate: what the gateway and the benches build on.
const ENGINE_AND_BELOW: &[&str] =
    &["colloquy-core-model", "colloquy-store", "colloquy-tools", "colloquy-llm-providers", "colloquy-engine"];

const RULES: &[Rule] = &[
    Rule { package: "colloquy-core-model", may_use: &[], must_not_use: IO },
    Rule { package: "colloquy-migrations", may_use: &[], must_not_use: SERVING },
    Rule { package: "colloquy-store", may_use: &["colloquy-core-model", "colloquy-migrations"], must_not_use: SERVING },
    Rule {
        package: "colloquy-tools",
        may_use: &["colloquy-core-model"],
        must_not_use: &["sea-orm", "sqlx", "axum", "hyper", "async-openai"],
    },
    Rule {
        package: "colloquy-llm-providers",
        may_use: &["colloquy-core-model"],
        must_not_use: &["sea-orm", "sqlx", "axum", "hyper", "tokio-tungstenite"],
    },
    Rule {
        package: "colloquy-engine",
        may_use: &["colloquy-core-model", "colloquy-store", "colloquy-tools", "colloquy-llm-providers"],
        must_not_use: &["axum", "hyper", "tokio-tungstenite", "tower-http", "sea-orm", "sqlx", "reqwest"],
    },
    Rule { package: "colloquy-gateway", may_use: ENGINE_AND_BELOW, must_not_use: SQL },
    Rule { package: "colloquy-tests", may_use: &[], must_not_use: SQL },
    Rule { package: "colloquy-benches", may_use: ENGINE_AND_BELOW, must_not_use: &[] },
    // The live check drives a real provider, so xtask may use the providers and their types.
    Rule { package: "xtask", may_use: &["colloquy-core-model", "colloquy-llm-providers"], must_not_use: &[] },
];

pub fn check() -> anyhow::Result<()> {
    let metadata = MetadataCommand::new().no_deps().exec()?;
    let mut problems = Vec::new();
    for package in metadata.workspace_packages() {
        let Some(rule) = RULES.iter().find(|rule| rule.package == package.name.as_str()) else {
            problems.push(format!(
                "{}: no layering rule in xtask/src/tidy.rs; add one (and to ARCHITECTURE.md)",
                package.name
            ));
            continue;
        };
        let folder = package.manifest_path.parent().and_then(|dir| dir.file_name()).unwrap_or_default();
        if package.name.as_str() != "xtask" && package.name.as_str() != format!("colloquy-{folder}") {
            problems.push(format!("{}: a package in `{folder}/` must be named `colloquy-{folder}`", package.name));
        }
        // Only what ships counts: dev-dependencies (test support) may reach further.
        for dependency in package.dependencies.iter().filter(|d| d.kind == DependencyKind::Normal) {
            let name = dependency.name.as_str();
            if name.starts_with("colloquy-") && !rule.may_use.contains(&name) {
                problems.push(format!("{}: must not depend on {name} (allowed: {:?})", package.name, rule.may_use));
            }
            if rule.must_not_use.contains(&name) {
                problems.push(format!("{}: must not depend on {name}; see ARCHITECTURE.md", package.name));
            }
        }
        let root = package.manifest_path.parent().map(|p| p.as_std_path().to_owned()).unwrap_or_default();
        check_module_docs(&root, &mut problems)?;
    }
    if problems.is_empty() {
        eprintln!("tidy: {} packages follow the layering rules", metadata.workspace_packages().len());
        return Ok(());
    }
    for problem in &problems {
        eprintln!("tidy: {problem}");
    }
    bail!("tidy found {} problem(s)", problems.len())
}

/// Every Rust file opens with a `//!` line saying what it is for.
fn check_module_docs(dir: &Path, problems: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if name != "target" && name != "snapshots" && !name.starts_with('.') {
                check_module_docs(&path, problems)?;
            }
        } else if name.ends_with(".rs") && !std::fs::read_to_string(&path)?.starts_with("//!") {
            problems.push(format!("{}: start the file with a `//!` line saying what it is for", path.display()));
        }
    }
    Ok(())
}
