//! `target/bench-report/report.md`: every target of DESIGN §10 with what was measured, pass or
//! miss (and by how much) and the conditions; then the details, the criterion figures and the
//! plots (`latency.png`, `throughput.png`).

use std::fmt::Write as _;
use std::path::PathBuf;

use hdrhistogram::Histogram;

use crate::load::LoadResult;
use crate::{Args, Plan, Results, System};

/// Whether smaller or larger is better.
#[derive(Clone, Copy)]
enum Goal {
    AtMost,
    AtLeast,
}

/// One row of the targets table.
struct Row {
    metric: String,
    target: String,
    measured: String,
    verdict: String,
    conditions: String,
}

/// Compares `value` with `limit` (same unit) and says pass or how far off.
fn verdict(value: Option<f64>, limit: f64, goal: Goal, unit: &str) -> String {
    let Some(value) = value else { return "n/a".to_owned() };
    match goal {
        Goal::AtMost if value <= limit => "pass".to_owned(),
        Goal::AtLeast if value >= limit => "pass".to_owned(),
        Goal::AtMost => {
            format!("**miss** by {} ({:.1}x the target)", number(value - limit, unit), value / limit.max(1e-12))
        }
        Goal::AtLeast => {
            format!("**miss** by {} ({:.1}x short)", number(limit - value, unit), limit / value.max(1e-12))
        }
    }
}

fn number(value: f64, unit: &str) -> String {
    let digits = if value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else if value.abs() >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.digits$}");
    let text = if digits == 0 { thousands(&text) } else { text };
    if unit.is_empty() { text } else { format!("{text} {unit}") }
}

fn thousands(integer: &str) -> String {
    let (sign, digits) = integer.strip_prefix('-').map_or(("", integer), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

fn or_na(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| number(v, unit))
}

fn ok<T>(value: &Option<Result<T, String>>) -> Option<&T> {
    value.as_ref().and_then(|r| r.as_ref().ok())
}

fn error_of<T>(value: &Option<Result<T, String>>) -> Option<&str> {
    value.as_ref().and_then(|r| r.as_ref().err()).map(String::as_str)
}

/// Mean turns/s of a system's rounds at 64 clients, and the rounds' errors.
fn rounds_mean(results: &Results, system: System) -> Option<f64> {
    let runs: Vec<f64> = results
        .rounds
        .iter()
        .filter(|(s, _)| *s == system)
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(LoadResult::throughput)
        .collect();
    (!runs.is_empty()).then(|| runs.iter().sum::<f64>() / runs.len() as f64)
}

fn cpu_per_turn_us(results: &Results) -> Option<f64> {
    let (cpu, turns) = results
        .rounds
        .iter()
        .filter(|(s, _)| *s == System::Colloquy)
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter_map(|r| r.cpu_seconds.map(|c| (c, r.turns)))
        .fold((0.0, 0u64), |(c, t), (cpu, turns)| (c + cpu, t + turns));
    (turns > 0).then(|| cpu * 1e6 / turns as f64)
}

/// Writes the report and the plots; returns the report's path.
pub fn write(args: &Args, plan: &Plan, results: &Results) -> anyhow::Result<PathBuf> {
    let normal = ok(&results.normal);
    let full = ok(&results.full);
    let fsync_ms = results.fsync.map(|f| f.as_secs_f64() * 1e3);
    let colloquy_64 = rounds_mean(results, System::Colloquy);
    let peer_64 = rounds_mean(results, System::Peer);
    let ratio = colloquy_64.zip(peer_64).filter(|(_, p)| *p > 0.0).map(|(c, p)| c / p);
    let cpu = cpu_per_turn_us(results);
    let fan = ok(&results.fanout);
    let conns = ok(&results.idle_connections);
    let convs = ok(&results.idle_conversations);
    let log = &results.criterion_log;
    let estimate = |name: &str| results.criterion.get(name).copied();
    let append_p50 = crate::criterion::printed_append_p50(log, "sqlite_normal")
        .or_else(|| estimate("store_append/single/sqlite_normal").map(|ns| ns / 1e3));
    let batch_rows = estimate("store_append_batch/100_rows/sqlite_normal").map(|ns| 100.0 / (ns * 1e-9));
    let history_sqlite = estimate("store_history/read_100/sqlite").map(|ns| ns / 1e3);
    let history_postgres = estimate("store_history/read_100/postgres").map(|ns| ns / 1e3);
    let full_limit = fsync_ms.map(|f| 3.0 * f + 0.5);
    let window = |seconds: f64| format!("{seconds:.0} s window");

    let mut rows = Vec::new();
    let mut row = |metric: &str, target: String, measured: String, verdict: String, conditions: String| {
        rows.push(Row { metric: metric.to_owned(), target, measured, verdict, conditions });
    };
    let normal_added = |q| normal.filter(|n| !n.load.added.is_empty()).map(|n| ms(&n.load.added, q));
    let one_client = format!("1 client, closed loop, {}", window(plan.window.as_secs_f64()));
    row(
        "added latency per turn p50, durability `normal`",
        "<= 0.5 ms".into(),
        or_na(normal_added(0.5), "ms"),
        verdict(normal_added(0.5), 0.5, Goal::AtMost, "ms"),
        one_client.clone(),
    );
    row(
        "added latency per turn p99, durability `normal`",
        "<= 2 ms".into(),
        or_na(normal_added(0.99), "ms"),
        verdict(normal_added(0.99), 2.0, Goal::AtMost, "ms"),
        one_client.clone(),
    );
    let synced = full.and_then(|f| f.commits_per_turn.map(|c| c.1));
    row(
        "fsync'd commits per turn, durability `full`",
        "<= 3".into(),
        or_na(synced, ""),
        verdict(synced, 3.0, Goal::AtMost, ""),
        format!(
            "{} sequential turns, delta of `colloquy_store_commits_total{{synced=\"true\"}}`; all commits: {}",
            plan.commit_turns,
            or_na(full.and_then(|f| f.commits_per_turn.map(|c| c.0)), "")
        ),
    );
    let full_added = full.filter(|f| !f.load.added.is_empty()).map(|f| ms(&f.load.added, 0.5));
    row(
        "added latency per turn p50, durability `full`",
        format!("<= 3 x fsync + 0.5 ms = {}", or_na(full_limit, "ms")),
        or_na(full_added, "ms"),
        full_limit.map_or_else(|| "n/a".to_owned(), |limit| verdict(full_added, limit, Goal::AtMost, "ms")),
        format!("{one_client}; fsync p50 {} (4 KiB write + fdatasync in target/)", or_na(fsync_ms, "ms")),
    );
    let rounds_note = format!(
        "64 clients closed loop, durability `full`, mean of {} rounds of {}, alternating with the peer",
        plan.rounds,
        window(plan.round_window.as_secs_f64())
    );
    row(
        "turns/s, 64 clients",
        ">= 1,500".into(),
        or_na(colloquy_64, ""),
        verdict(colloquy_64, 1500.0, Goal::AtLeast, "turns/s"),
        rounds_note.clone(),
    );
    row(
        "turns/s vs the peer, 64 clients",
        ">= 40x".into(),
        ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.1}x (peer {})", or_na(peer_64, "turns/s"))),
        verdict(ratio, 40.0, Goal::AtLeast, "x"),
        format!("{rounds_note}; peer: {} with SQLiteSession (file), same mock", crate::peer::PACKAGE),
    );
    row(
        "gateway CPU per turn under load",
        "<= 200 us".into(),
        or_na(cpu, "us"),
        verdict(cpu, 200.0, Goal::AtMost, "us"),
        "user+sys of the gateway process over the 64-client rounds' windows / turns in them".into(),
    );
    let fan_rate = fan.map(|f| f.deliveries_per_second);
    let fan_p99 = fan.filter(|f| !f.latency.is_empty()).map(|f| ms(&f.latency, 0.99));
    let fan_note = fan.map_or_else(String::new, |f| {
        format!(
            "{} subscribers on one conversation{}, {} rounds of one `send` -> `message_posted`; rate = subscribers / (last delivery - send), median round; {} deliveries missing",
            f.subscribers,
            if f.with_agent { " (with an agent)" } else { " (no agent)" },
            f.rounds,
            f.missing
        )
    });
    row(
        "fan-out of one event to 1,000 subscribers",
        ">= 250,000 deliveries/s".into(),
        or_na(fan_rate, "/s"),
        verdict(fan_rate, 250_000.0, Goal::AtLeast, "/s"),
        fan_note.clone(),
    );
    row(
        "fan-out delivery latency p99",
        "<= 10 ms".into(),
        or_na(fan_p99, "ms"),
        verdict(fan_p99, 10.0, Goal::AtMost, "ms"),
        "send to arrival at each subscriber".into(),
    );
    let per_conn = conns.map(|m| m.per_item() / 1024.0);
    row(
        "memory per idle WebSocket connection",
        "<= 16 KiB".into(),
        or_na(per_conn, "KiB"),
        verdict(per_conn, 16.0, Goal::AtMost, "KiB"),
        conns.map_or_else(String::new, |m| {
            format!(
                "RSS {} -> {} over {} subscribed connections (fresh gateway)",
                mib(m.rss_before),
                mib(m.rss_after),
                m.count
            )
        }),
    );
    let per_conv = convs.map(|m| m.per_item() / 1024.0);
    row(
        "memory per idle conversation",
        "<= 2 KiB".into(),
        or_na(per_conv, "KiB"),
        verdict(per_conv, 2.0, Goal::AtMost, "KiB"),
        convs.map_or_else(String::new, |m| {
            format!(
                "RSS {} -> {} over {} conversations that ran one turn each (fresh gateway)",
                mib(m.rss_before),
                mib(m.rss_after),
                m.count
            )
        }),
    );
    row(
        "store append p50, SQLite `normal`",
        "<= 40 us".into(),
        or_na(append_p50, "us"),
        verdict(append_p50, 40.0, Goal::AtMost, "us"),
        "criterion store bench (single appends timed one by one)".into(),
    );
    row(
        "store batched append, SQLite `normal`",
        ">= 200,000 rows/s".into(),
        or_na(batch_rows, "rows/s"),
        verdict(batch_rows, 200_000.0, Goal::AtLeast, "rows/s"),
        "criterion store bench, batches of 100".into(),
    );
    row(
        "read 100-message history, SQLite",
        "<= 150 us".into(),
        or_na(history_sqlite, "us"),
        verdict(history_sqlite, 150.0, Goal::AtMost, "us"),
        "criterion median".into(),
    );
    row(
        "read 100-message history, Postgres",
        "<= 400 us".into(),
        or_na(history_postgres, "us"),
        verdict(history_postgres, 400.0, Goal::AtMost, "us"),
        "criterion median (n/a without a reachable Postgres)".into(),
    );

    let mut md = String::new();
    let _ = writeln!(md, "# Colloquy bench report\n");
    let _ = writeln!(
        md,
        "`cargo xtask bench{}`: {} run, {:.0} s. Machine: {} cores, {}; load average {} before, {} after. Gateway: `{}` (release), SQLite in a temporary directory; mock provider: Rust (hyper) on this machine, {} ms added latency per request.{}\n",
        if args.quick { " --quick" } else { "" },
        if args.quick { "quick" } else { "full" },
        results.elapsed.as_secs_f64(),
        std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        cpu_model(),
        results.load_before,
        results.load_after,
        args.gateway.display(),
        args.mock_latency_ms,
        args.note.as_ref().map_or_else(String::new, |n| format!(" Note: {n}.")),
    );
    let _ = writeln!(
        md,
        "*Added latency* is a turn's time (send to `agent_end`, over WebSocket) minus the mock's own service time for that turn's two requests, matched by a key in the prompt.\n"
    );
    let _ = writeln!(md, "## Targets (DESIGN §10)\n");
    let _ = writeln!(md, "| metric | target | measured | result | conditions |\n| --- | --- | --- | --- | --- |");
    for row in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            row.metric, row.target, row.measured, row.verdict, row.conditions
        );
    }

    let _ = writeln!(md, "\n## Turn latency\n");
    let _ = writeln!(
        md,
        "Milliseconds. `ttft`: send to the first streamed delta. `mock`: the mock's time for the turn's requests.\n"
    );
    let _ = writeln!(
        md,
        "| run | turns/s | errors | p50 | p90 | p99 | p99.9 | max | added p50 | added p99 | ttft p50 | mock p50 |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut line = |name: &str, load: &LoadResult| {
        let added = |q| if load.added.is_empty() { "n/a".to_owned() } else { format!("{:.3}", ms(&load.added, q)) };
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.2} | {:.3} |",
            load.throughput(),
            load.errors,
            ms(&load.latency, 0.5),
            ms(&load.latency, 0.9),
            ms(&load.latency, 0.99),
            ms(&load.latency, 0.999),
            load.latency.max() as f64 / 1e3,
            added(0.5),
            added(0.99),
            ms(&load.first_token, 0.5),
            ms(&load.mock, 0.5),
        );
    };
    if let Some(n) = normal {
        line("Colloquy, 1 client, `normal`", &n.load);
    }
    if let Some(f) = full {
        line("Colloquy, 1 client, `full`", &f.load);
    }
    if let Some(p) = ok(&results.peer_single) {
        line("peer, 1 client", p);
    }
    for (index, (system, run)) in results.rounds.iter().enumerate() {
        if let Ok(run) = run {
            let durability = if *system == System::Colloquy { ", `full`" } else { "" };
            line(&format!("round {}: {}, 64 clients{durability}", index + 1, system.name()), run);
        }
    }
    if let Some((rate, run)) = ok(&results.open_loop) {
        line(&format!("Colloquy, open loop {rate:.0} turns/s, 64 clients, `full`"), run);
    }

    let _ = writeln!(md, "\n## Throughput by concurrency\n\n| system | clients | turns/s |\n| --- | --- | --- |");
    for (system, clients, rate) in &results.curve {
        let _ = writeln!(md, "| {} | {clients} | {rate:.1} |", system.name());
    }

    let _ = writeln!(md, "\n## Criterion\n");
    if results.criterion.is_empty() {
        let _ = writeln!(md, "No criterion results were found (the benches were skipped or have not run).");
    } else {
        let _ = writeln!(md, "| bench | median per iteration |\n| --- | --- |");
        for (name, ns) in &results.criterion {
            let _ = writeln!(md, "| {name} | {} |", duration_text(*ns));
        }
    }
    let printed: Vec<&str> = log.lines().filter(|l| l.starts_with("store_") && l.contains(": ")).collect();
    if !printed.is_empty() {
        let _ = writeln!(md, "\nPrinted by the store bench:\n\n```text\n{}\n```", printed.join("\n"));
    }

    let mut problems = Vec::new();
    for (name, error) in [
        ("1 client, normal", error_of(&results.normal)),
        ("1 client, full", error_of(&results.full)),
        ("peer, 1 client", error_of(&results.peer_single)),
        ("open loop", error_of(&results.open_loop)),
        ("fan-out", error_of(&results.fanout)),
        ("idle connections", error_of(&results.idle_connections)),
        ("idle conversations", error_of(&results.idle_conversations)),
    ] {
        if let Some(error) = error {
            problems.push(format!("{name}: {error}"));
        }
    }
    for (system, run) in &results.rounds {
        match run {
            Err(error) => problems.push(format!("{} round: {error}", system.name())),
            Ok(run) if run.errors > 0 => problems.push(format!(
                "{} round: {} failed turns, first: {}",
                system.name(),
                run.errors,
                run.first_error.as_deref().unwrap_or("?")
            )),
            Ok(_) => {}
        }
    }
    if let Some(reason) = &results.peer_skipped {
        problems.push(format!("peer skipped: {reason}"));
    }
    if !problems.is_empty() {
        let _ = writeln!(md, "\n## Problems\n");
        for problem in problems {
            let _ = writeln!(md, "- {}", problem.replace('\n', " "));
        }
    }

    let plots = if crate::plot::load_font() {
        let mut series: Vec<(String, &Histogram<u64>)> = Vec::new();
        if let Some(n) = normal {
            series.push(("Colloquy, 1 client, normal".into(), &n.load.latency));
        }
        if let Some(f) = full {
            series.push(("Colloquy, 1 client, full".into(), &f.load.latency));
        }
        if let Some(p) = ok(&results.peer_single) {
            series.push(("Agents SDK, 1 client".into(), &p.latency));
        }
        let first_round =
            |system: System| results.rounds.iter().filter(|(s, _)| *s == system).find_map(|(_, r)| r.as_ref().ok());
        if let Some(run) = first_round(System::Colloquy) {
            series.push(("Colloquy, 64 clients, full".into(), &run.latency));
        }
        if let Some(run) = first_round(System::Peer) {
            series.push(("Agents SDK, 64 clients".into(), &run.latency));
        }
        let latency = crate::plot::latency(
            &args.out.join("latency.png"),
            "Turn latency by percentile (same mock, same run)",
            &series,
        );
        let curve: Vec<(String, Vec<(usize, f64)>)> = [System::Colloquy, System::Peer]
            .into_iter()
            .map(|system| {
                let mut points: Vec<(usize, f64)> =
                    results.curve.iter().filter(|(s, _, _)| *s == system).map(|(_, c, t)| (*c, *t)).collect();
                points.sort_by_key(|p| p.0);
                (system.name().to_owned(), points)
            })
            .collect();
        let throughput = crate::plot::throughput(&args.out.join("throughput.png"), &curve);
        match (latency, throughput) {
            (Ok(()), Ok(())) => "![turn latency](latency.png)\n\n![throughput](throughput.png)\n".to_owned(),
            (latency, throughput) => format!(
                "Plotting failed: {}\n",
                [latency.err(), throughput.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| format!("{e:#}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    } else {
        "No TrueType font was found (set COLLOQUY_BENCH_FONT to a .ttf file), so there are no plots.\n".to_owned()
    };
    let _ = writeln!(md, "\n## Plots\n\n{plots}");
    let path = args.out.join("report.md");
    std::fs::write(&path, md)?;
    Ok(path)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn duration_text(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_say_pass_or_by_how_much() {
        assert_eq!(verdict(Some(0.4), 0.5, Goal::AtMost, "ms"), "pass");
        assert_eq!(verdict(Some(1.5), 0.5, Goal::AtMost, "ms"), "**miss** by 1.00 ms (3.0x the target)");
        assert_eq!(verdict(Some(750.0), 1500.0, Goal::AtLeast, "turns/s"), "**miss** by 750 turns/s (2.0x short)");
        assert_eq!(verdict(None, 1.0, Goal::AtMost, ""), "n/a");
        assert_eq!(thousands("1234567"), "1,234,567");
    }
}
