//! `colloquy-bench`: the driver `cargo xtask bench` runs after building the release gateway. It
//! starts the Rust mock provider, runs every scenario of DESIGN §10 against `colloquy serve`
//! processes (and the OpenAI Agents SDK peer on the same mock, in alternating rounds), and
//! writes `report.md` and PNG plots. Progress goes to stderr.

mod criterion;
mod fanout;
mod gateway;
mod load;
mod memory;
mod mock;
mod peer;
mod plot;
mod report;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::gateway::{Durability, Gateway};
use crate::load::{LoadResult, LoadSpec};
use crate::mock::Mock;
use crate::peer::Peer;

#[derive(Parser, Debug, Clone)]
#[command(name = "colloquy-bench", about = "Colloquy's benchmark driver (run by `cargo xtask bench`)")]
pub struct Args {
    /// About a minute: shorter windows, fewer connections and conversations.
    #[arg(long)]
    pub quick: bool,
    /// The release `colloquy` binary.
    #[arg(long)]
    pub gateway: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench-report")]
    pub out: PathBuf,
    /// Criterion's output directory (`target/criterion`), read for the store figures.
    #[arg(long)]
    pub criterion: Option<PathBuf>,
    /// Only criterion results written since then (Unix seconds) are reported.
    #[arg(long)]
    pub criterion_since: Option<u64>,
    /// The saved output of `cargo bench` (for the store bench's printed percentiles).
    #[arg(long)]
    pub criterion_log: Option<PathBuf>,
    /// The peer's virtualenv, created on first use.
    #[arg(long, default_value = "target/bench-peer")]
    pub peer_venv: PathBuf,
    /// The peer's script.
    #[arg(long, default_value = "benches/peer/agents_peer.py")]
    pub peer_script: PathBuf,
    /// Skip the peer (no Python, no PyPI).
    #[arg(long)]
    pub no_peer: bool,
    /// Extra latency the mock adds to each request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub mock_latency_ms: u64,
    /// A note on the conditions, for the report (e.g. "quiet machine").
    #[arg(long)]
    pub note: Option<String>,
}

/// Durations and sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub warmup: Duration,
    pub window: Duration,
    pub round_window: Duration,
    /// Rounds per system at 64 clients, alternating.
    pub rounds: usize,
    /// Concurrency levels for the throughput curve besides 1 and 64.
    pub extra_levels: &'static [usize],
    pub commit_turns: usize,
    pub fsync_samples: usize,
    pub fanout_subscribers: usize,
    pub fanout_rounds: usize,
    pub idle_connections: usize,
    pub idle_conversations: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(3),
                round_window: Duration::from_secs(3),
                rounds: 2,
                extra_levels: &[],
                commit_turns: 20,
                fsync_samples: 50,
                fanout_subscribers: 1_000,
                fanout_rounds: 10,
                idle_connections: 2_000,
                idle_conversations: 200,
            }
        } else {
            Self {
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(15),
                round_window: Duration::from_secs(12),
                rounds: 2,
                extra_levels: &[8],
                commit_turns: 100,
                fsync_samples: 200,
                fanout_subscribers: 1_000,
                fanout_rounds: 30,
                idle_connections: 10_000,
                idle_conversations: 2_000,
            }
        }
    }
}

/// Which system a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Colloquy,
    Peer,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            Self::Colloquy => "Colloquy",
            Self::Peer => "Agents SDK + SQLiteSession",
        }
    }
}

/// A 1-client latency run on one durability.
pub struct SingleClient {
    pub load: LoadResult,
    /// Commits per turn over `commit_turns` sequential turns: all, and fsynced.
    pub commits_per_turn: Option<(f64, f64)>,
}

/// Everything measured, for the report; a scenario that failed holds its error.
#[derive(Default)]
pub struct Results {
    pub fsync: Option<Duration>,
    pub normal: Option<Result<SingleClient, String>>,
    pub full: Option<Result<SingleClient, String>>,
    pub peer_single: Option<Result<LoadResult, String>>,
    /// The alternating rounds at 64 clients, in order.
    pub rounds: Vec<(System, Result<LoadResult, String>)>,
    /// (system, clients, turns/s) for the throughput curve.
    pub curve: Vec<(System, usize, f64)>,
    pub open_loop: Option<Result<(f64, LoadResult), String>>,
    pub fanout: Option<Result<fanout::FanoutResult, String>>,
    pub idle_connections: Option<Result<memory::MemoryResult, String>>,
    pub idle_conversations: Option<Result<memory::MemoryResult, String>>,
    pub criterion: std::collections::BTreeMap<String, f64>,
    pub criterion_log: String,
    pub peer_skipped: Option<String>,
    pub load_before: String,
    pub load_after: String,
    pub elapsed: Duration,
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// One progress line on stderr.
pub fn progress(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "[bench {:>6.1}s] {message}", started().elapsed().as_secs_f64());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    started();
    let args = Args::parse();
    let plan = Plan::new(args.quick);
    std::fs::create_dir_all(&args.out)?;
    let mut results = Results { load_before: loadavg(), ..Results::default() };

    progress("fsync: timing write + fdatasync of 4 KiB");
    results.fsync = fsync_time(&args.out, plan.fsync_samples).ok();
    if let Some(fsync) = results.fsync {
        progress(&format!("fsync: p50 {:.3} ms", fsync.as_secs_f64() * 1e3));
    }

    let mock = Mock::start(Duration::from_millis(args.mock_latency_ms))?;
    progress(&format!("mock provider on {}", mock.base_url()));
    let peer = if args.no_peer {
        results.peer_skipped = Some("--no-peer".to_owned());
        None
    } else {
        match Peer::prepare(&args.peer_venv, &args.peer_script).await {
            Ok(peer) => Some(peer),
            Err(error) => {
                progress(&format!("peer unavailable: {error:#}"));
                results.peer_skipped = Some(format!("{error:#}"));
                None
            }
        }
    };

    // (a) 1 client, durability normal.
    results.normal = Some(single_client(&args, &plan, &mock, Durability::Normal).await.map_err(|e| format!("{e:#}")));

    // (a) 1 client, durability full; the same gateway then carries (b), (c) and (d).
    match Gateway::start(&args.gateway, &mock.base_url(), Durability::Full).await {
        Ok(gateway) => {
            let gateway = Arc::new(gateway);
            results.full =
                Some(measure_single(&gateway, &mock, &plan, Durability::Full).await.map_err(|e| format!("{e:#}")));
            if let Some(Ok(full)) = &results.full {
                results.curve.push((System::Colloquy, 1, full.load.throughput()));
            }
            if let Some(peer) = &peer {
                progress("peer: 1 client");
                let single = peer.run(&mock.base_url(), &mock.stats, 1, plan.warmup, plan.window).await;
                if let Ok(single) = &single {
                    report_load("peer, 1 client", single);
                    results.curve.push((System::Peer, 1, single.throughput()));
                }
                results.peer_single = Some(single.map_err(|e| format!("{e:#}")));
            }
            throughput(&mut results, &gateway, &mock, peer.as_ref(), &plan).await;
            progress(&format!("fan-out: {} subscribers, {} rounds", plan.fanout_subscribers, plan.fanout_rounds));
            let fan = fanout::run(Arc::clone(&gateway), plan.fanout_subscribers, plan.fanout_rounds).await;
            if let Ok(fan) = &fan {
                progress(&format!(
                    "fan-out: {:.0} deliveries/s (median round), p99 {:.2} ms",
                    fan.deliveries_per_second,
                    fan.latency.value_at_quantile(0.99) as f64 / 1e3
                ));
            }
            results.fanout = Some(fan.map_err(|e| format!("{e:#}")));
            if let Ok(gateway) = Arc::try_unwrap(gateway) {
                gateway.stop().await;
            }
        }
        Err(error) => results.full = Some(Err(format!("{error:#}"))),
    }

    // (e) memory, each on a fresh gateway.
    progress(&format!("memory: {} idle subscribed connections", plan.idle_connections));
    results.idle_connections = Some(
        async {
            let gateway = Arc::new(Gateway::start(&args.gateway, &mock.base_url(), Durability::Full).await?);
            let measured = memory::connections(Arc::clone(&gateway), plan.idle_connections).await;
            if let Ok(gateway) = Arc::try_unwrap(gateway) {
                gateway.stop().await;
            }
            measured
        }
        .await
        .map_err(|e| format!("{e:#}")),
    );
    if let Some(Ok(m)) = &results.idle_connections {
        progress(&format!("memory: {:.0} bytes per idle connection", m.per_item()));
    }
    progress(&format!("memory: {} idle conversations, one turn each", plan.idle_conversations));
    results.idle_conversations = Some(
        async {
            let gateway = Arc::new(Gateway::start(&args.gateway, &mock.base_url(), Durability::Full).await?);
            let measured =
                memory::conversations(Arc::clone(&gateway), Arc::clone(&mock.stats), plan.idle_conversations).await;
            if let Ok(gateway) = Arc::try_unwrap(gateway) {
                gateway.stop().await;
            }
            measured
        }
        .await
        .map_err(|e| format!("{e:#}")),
    );
    if let Some(Ok(m)) = &results.idle_conversations {
        progress(&format!("memory: {:.0} bytes per idle conversation", m.per_item()));
    }

    // (f) criterion's figures.
    if let Some(dir) = &args.criterion {
        let since = args.criterion_since.map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s));
        results.criterion = criterion::estimates(dir, since);
    }
    if let Some(log) = &args.criterion_log {
        results.criterion_log = std::fs::read_to_string(log).unwrap_or_default();
    }
    results.load_after = loadavg();
    results.elapsed = started().elapsed();
    if mock.stats.bad_requests() > 0 {
        progress(&format!("warning: the mock refused {} malformed requests", mock.stats.bad_requests()));
    }
    let path = report::write(&args, &plan, &results)?;
    progress(&format!("report: {}", path.display()));
    Ok(())
}

/// Starts a gateway with `durability`, runs the 1-client scenario, stops it.
async fn single_client(args: &Args, plan: &Plan, mock: &Mock, durability: Durability) -> anyhow::Result<SingleClient> {
    let gateway = Arc::new(Gateway::start(&args.gateway, &mock.base_url(), durability).await?);
    let measured = measure_single(&gateway, mock, plan, durability).await;
    if let Ok(gateway) = Arc::try_unwrap(gateway) {
        gateway.stop().await;
    }
    measured
}

/// 1 client: commits per turn over sequential turns, then a closed-loop latency window.
async fn measure_single(
    gateway: &Arc<Gateway>,
    mock: &Mock,
    plan: &Plan,
    durability: Durability,
) -> anyhow::Result<SingleClient> {
    let label = format!("1 client, durability {}", durability.as_str());
    progress(&format!("{label}: {} turns counting store commits", plan.commit_turns));
    let commits_per_turn = commits_per_turn(gateway, mock, plan.commit_turns).await?;
    match commits_per_turn {
        Some((all, synced)) => progress(&format!("{label}: {all:.2} commits per turn, {synced:.2} fsynced")),
        None => progress(&format!("{label}: the gateway has no colloquy_store_commits_total (n/a)")),
    }
    progress(&format!("{label}: closed loop for {:.0} s", (plan.warmup + plan.window).as_secs_f64()));
    let spec = LoadSpec {
        clients: 1,
        warmup: plan.warmup,
        duration: plan.window,
        arrivals_per_second: None,
        turns_per_conversation: 20,
        measure_cpu: false,
    };
    let load = load::run(Arc::clone(gateway), Arc::clone(&mock.stats), spec).await?;
    report_load(&label, &load);
    Ok(SingleClient { load, commits_per_turn })
}

/// Runs `turns` turns one after another on one connection, reading the commit counter around.
async fn commits_per_turn(gateway: &Gateway, mock: &Mock, turns: usize) -> anyhow::Result<Option<(f64, f64)>> {
    let mut ws = load::connect(gateway, None).await?;
    let conversation = gateway.create_conversation(&serde_json::json!({})).await?;
    load::subscribe(&mut ws, &conversation, "s").await?;
    // One turn first, so that whatever a conversation's first turn does once is not counted.
    load::turn(&mut ws, &conversation, 0, &mock.stats).await?;
    let before = gateway.commits().await?;
    for n in 1..=turns {
        load::turn(&mut ws, &conversation, n as u64, &mock.stats).await?;
    }
    let after = gateway.commits().await?;
    Ok(before.zip(after).map(|(b, a)| ((a.total - b.total) / turns as f64, (a.synced - b.synced) / turns as f64)))
}

/// (b) and (c): alternating rounds at 64 clients, the concurrency curve, and an open-loop run.
async fn throughput(results: &mut Results, gateway: &Arc<Gateway>, mock: &Mock, peer: Option<&Peer>, plan: &Plan) {
    let spec = |clients, window, arrivals| LoadSpec {
        clients,
        warmup: plan.warmup,
        duration: window,
        arrivals_per_second: arrivals,
        turns_per_conversation: 20,
        measure_cpu: true,
    };
    for &clients in plan.extra_levels {
        progress(&format!("Colloquy: {clients} clients"));
        if let Ok(load) =
            load::run(Arc::clone(gateway), Arc::clone(&mock.stats), spec(clients, plan.window, None)).await
        {
            report_load(&format!("Colloquy, {clients} clients"), &load);
            results.curve.push((System::Colloquy, clients, load.throughput()));
        }
        if let Some(peer) = peer {
            progress(&format!("peer: {clients} clients"));
            if let Ok(load) = peer.run(&mock.base_url(), &mock.stats, clients, plan.warmup, plan.window).await {
                report_load(&format!("peer, {clients} clients"), &load);
                results.curve.push((System::Peer, clients, load.throughput()));
            }
        }
    }
    for round in 1..=plan.rounds {
        progress(&format!("round {round}/{}: Colloquy, 64 clients, durability full", plan.rounds));
        let load = load::run(Arc::clone(gateway), Arc::clone(&mock.stats), spec(64, plan.round_window, None)).await;
        if let Ok(load) = &load {
            report_load("Colloquy, 64 clients", load);
        }
        results.rounds.push((System::Colloquy, load.map_err(|e| format!("{e:#}"))));
        if let Some(peer) = peer {
            progress(&format!("round {round}/{}: peer, 64 clients", plan.rounds));
            let load = peer.run(&mock.base_url(), &mock.stats, 64, plan.warmup, plan.round_window).await;
            if let Ok(load) = &load {
                report_load("peer, 64 clients", load);
            }
            results.rounds.push((System::Peer, load.map_err(|e| format!("{e:#}"))));
        }
    }
    for system in [System::Colloquy, System::Peer] {
        let runs: Vec<&LoadResult> =
            results.rounds.iter().filter(|(s, _)| *s == system).filter_map(|(_, r)| r.as_ref().ok()).collect();
        if !runs.is_empty() {
            let mean = runs.iter().map(|r| r.throughput()).sum::<f64>() / runs.len() as f64;
            results.curve.push((system, 64, mean));
        }
    }
    // Open loop at half the measured closed-loop rate: latency under a load it can carry.
    let closed = results.curve.iter().find(|(s, c, _)| *s == System::Colloquy && *c == 64).map(|(_, _, t)| *t);
    if let Some(rate) = closed.map(|t| (t / 2.0).max(1.0)) {
        progress(&format!("open loop: {rate:.0} turns/s arriving over 64 clients"));
        let load = load::run(Arc::clone(gateway), Arc::clone(&mock.stats), spec(64, plan.window, Some(rate))).await;
        if let Ok(load) = &load {
            report_load("open loop, 64 clients", load);
        }
        results.open_loop = Some(load.map(|l| (rate, l)).map_err(|e| format!("{e:#}")));
    }
}

fn report_load(label: &str, load: &LoadResult) {
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let mut line = format!(
        "{label}: {:.0} turns/s ({} turns), p50 {:.2} ms, p99 {:.2} ms, added p50 {:.3} ms",
        load.throughput(),
        load.turns,
        ms(&load.latency, 0.5),
        ms(&load.latency, 0.99),
        ms(&load.added, 0.5),
    );
    if let Some(cpu) = load.cpu_seconds.filter(|_| load.turns > 0) {
        line.push_str(&format!(", gateway CPU {:.0} us/turn", cpu * 1e6 / load.turns as f64));
    }
    if load.errors > 0 {
        line.push_str(&format!(", {} errors (first: {})", load.errors, load.first_error.as_deref().unwrap_or("?")));
    }
    progress(&line);
}

/// p50 of `samples` write + fdatasync of 4 KiB to a file in `dir`.
fn fsync_time(dir: &std::path::Path, samples: usize) -> anyhow::Result<Duration> {
    let path = dir.join("fsync-probe.tmp");
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(start.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}
