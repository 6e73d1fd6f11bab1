//! Several `colloquy` nodes on one Postgres database and one NATS server, as docs/cluster.md
//! deploys them: a turn running on one node streams live to clients of the others; prompts sent
//! through different nodes into one conversation are stored once each, in one gap-free order,
//! and each answered; the node running a conversation killed (SIGKILL) again and again while
//! clients keep sending loses nothing; and a node that lost its lease cannot write any more.
//!
//! Needs Postgres (`COLLOQUY_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and NATS (`COLLOQUY_TEST_NATS_URL`, default `nats://127.0.0.1:4222`): skipped without them,
//! failed instead with `COLLOQUY_REQUIRE_POSTGRES=1` (as `cargo xtask ci` sets).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colloquy_tests::mock_openai::{MockOpenAi, MockReply, chunks};
use futures::SinkExt;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::process::{Served, Socket, event_log, next_frame, subscribe};

/// Short, so that failover is quick to test; production's default is 10 s.
const LEASE_TTL_MS: &str = "1500";

/// A Postgres database of its own and a NATS subject prefix of its own, for one test.
struct Cluster {
    admin: DatabaseConnection,
    database: String,
    url: String,
    prefix: String,
    nats: String,
}

impl Cluster {
    /// `None` (the test is skipped) when Postgres or NATS does not answer and neither is required.
    async fn new(test: &str) -> anyhow::Result<Option<Self>> {
        let admin_url = std::env::var("COLLOQUY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let nats = std::env::var("COLLOQUY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let required = std::env::var("COLLOQUY_REQUIRE_POSTGRES").is_ok_and(|value| value == "1");
        let nats_addr = nats.trim_start_matches("nats://").to_owned();
        let admin = match (Database::connect(&admin_url).await, tokio::net::TcpStream::connect(&nats_addr).await) {
            (Ok(admin), Ok(_)) => admin,
            (postgres, nats) => {
                let why = format!("postgres: {:?}, nats: {:?}", postgres.err(), nats.err());
                anyhow::ensure!(
                    !required,
                    "the cluster tests need Postgres and NATS (COLLOQUY_REQUIRE_POSTGRES=1): {why}"
                );
                eprintln!("cluster test {test} skipped: {why}");
                return Ok(None);
            }
        };
        let unique = format!("{}_{}", std::process::id(), nanos() % 1_000_000_000);
        let database = format!("colloquy_cluster_{test}_{unique}");
        admin.execute_unprepared(&format!("CREATE DATABASE \"{database}\"")).await?;
        let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
        let url = format!("{base}/{database}");
        Ok(Some(Self { admin, database, url, prefix: format!("test_{test}_{unique}"), nats }))
    }

    /// Starts node `id`; the first start of a database migrates it, so start one node first.
    async fn node(&self, id: &str, model: &str) -> anyhow::Result<Served> {
        self.node_with(id, model, &[]).await
    }

    /// [`Cluster::node`] with more settings.
    async fn node_with(&self, id: &str, model: &str, more: &[(&str, &str)]) -> anyhow::Result<Served> {
        let mut env = vec![
            ("COLLOQUY_AUTH", "off"),
            ("COLLOQUY_DURABILITY", "normal"),
            ("COLLOQUY_CLUSTER__NODE_ID", id),
            ("COLLOQUY_CLUSTER__NATS_URL", &self.nats),
            ("COLLOQUY_CLUSTER__SUBJECT_PREFIX", &self.prefix),
            ("COLLOQUY_CLUSTER__LEASE_TTL_MS", LEASE_TTL_MS),
            ("COLLOQUY_CLUSTER__GAP_CHECK_MS", "200"),
        ];
        env.extend_from_slice(more);
        crate::process::start_on(&self.url, model, &env).await
    }

    /// The node that holds the conversation's lease now, if any.
    async fn holder(&self, conversation: &str) -> anyhow::Result<Option<String>> {
        let db = Database::connect(&self.url).await?;
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT holder FROM leases WHERE conversation_id = '{conversation}' AND expires_at > now()"),
            ))
            .await?;
        db.close().await?;
        Ok(row.and_then(|row| row.try_get::<Option<String>>("", "holder").ok().flatten()))
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        self.admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database)).await?;
        Ok(())
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

async fn connect(addr: &str) -> anyhow::Result<Socket> {
    Ok(tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws")).await?.0)
}

/// Sends a prompt and waits for its ack (or error), skipping events; `Err` when the node died.
async fn send(ws: &mut Socket, conversation: &str, id: &str, content: &str) -> anyhow::Result<Value> {
    let frame =
        json!({"type": "send", "id": id, "conversation_id": conversation, "client_msg_id": id, "content": content});
    ws.send(Message::Text(frame.to_string().into())).await?;
    loop {
        let frame = next_frame(ws).await?;
        if frame["id"] == id {
            return Ok(frame);
        }
    }
}

async fn create_conversation(addr: &str) -> anyhow::Result<String> {
    crate::process::create_conversation(addr, None).await
}

/// Waits until every turn of the conversation has ended, no prompt waits and the log is still;
/// returns the log.
async fn settled_log(addr: &str, conversation: &str) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + crate::process::WAIT;
    let mut log = event_log(addr, conversation).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = event_log(addr, conversation).await?;
        let count = |kind: &str| again.iter().filter(|e| e["event"]["type"] == kind).count();
        let queued: HashSet<&str> = again
            .iter()
            .filter(|e| e["event"]["type"] == "message_queued")
            .filter_map(|e| e["event"]["message"]["id"].as_str())
            .collect();
        let posted: HashSet<&str> = again
            .iter()
            .filter(|e| e["event"]["type"] == "message_posted")
            .filter_map(|e| e["event"]["message"]["id"].as_str())
            .collect();
        let settled = again.len() == log.len()
            && count("agent_start") == count("agent_end")
            && queued.iter().all(|id| posted.contains(id));
        log = again;
        if settled {
            return Ok(log);
        }
        anyhow::ensure!(Instant::now() < deadline, "the conversation never settled: {:?}", log.last());
    }
}

/// What every conversation's log must show, however its nodes died: seqs 1..n; every acked
/// prompt admitted into the history exactly once; every tool call with exactly one result (one
/// end, after a start); every turn ended.
fn check_log(log: &[Value], acked: &[String]) {
    let seqs: Vec<u64> = log.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "a gap-free log");
    let mut posted: BTreeMap<String, usize> = BTreeMap::new();
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    let (mut turns, mut ended) = (HashSet::new(), HashSet::new());
    for envelope in log {
        let event = &envelope["event"];
        let seq = envelope["seq"].as_u64();
        match event["type"].as_str() {
            Some("message_posted") => {
                if let Some(key) = event["message"]["client_msg_id"].as_str() {
                    *posted.entry(key.to_owned()).or_default() += 1;
                }
            }
            Some("tool_execution_start") => starts.push((event["tool_call_id"].clone(), seq)),
            Some("tool_execution_end") => ends.push((event["tool_call_id"].clone(), seq)),
            Some("agent_start") => {
                turns.insert(event["turn_id"].to_string());
            }
            Some("agent_end") => {
                assert!(ended.insert(event["turn_id"].to_string()), "a turn ended twice: {event}");
            }
            _ => {}
        }
    }
    for id in acked {
        assert_eq!(posted.get(id), Some(&1), "acked prompt {id} is in the history exactly once");
    }
    assert_eq!(turns, ended, "every turn ended");
    for (call, _) in &starts {
        assert_eq!(ends.iter().filter(|(id, _)| id == call).count(), 1, "{call} has exactly one result");
    }
    for (call, end) in &ends {
        assert!(starts.iter().any(|(id, start)| id == call && start < end), "{call} ended without a start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_stream_live_to_every_node_and_sends_through_any_node_are_stored_once_in_order() -> anyhow::Result<()> {
    let Some(cluster) = Cluster::new("live").await? else { return Ok(()) };
    // 16 prompts of one tool round each, then one long streamed answer.
    let mut replies = MockReply::tool_rounds(32);
    let pieces: Vec<String> = (0..STREAMED).map(|i| format!("t{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    replies.push(MockReply::Chunks(chunks::text("gpt-test", &pieces, None)));
    let model = MockOpenAi::start(replies).await?;
    let a = cluster.node("a", &model.base_url()).await?;
    let b = cluster.node("b", &model.base_url()).await?;
    let c = cluster.node("c", &model.base_url()).await?;
    let conversation = create_conversation(&a.addr).await?;

    // A client of node b watches a turn that node a runs: every durable event once, in seq
    // order, and the live token deltas.
    let mut watcher = subscribe(&b.addr, &conversation, 0).await?;
    let mut sender = subscribe(&a.addr, &conversation, 0).await?;
    let ack = send(&mut sender, &conversation, "first", "6*7?").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    let started = Instant::now();
    let (mut last, mut deltas, mut events) = (0, 0, 0);
    loop {
        let frame = next_frame(&mut watcher).await?;
        if frame["type"] != "event" {
            continue;
        }
        events += 1;
        match frame["seq"].as_u64() {
            Some(seq) => {
                assert_eq!(seq, last + 1, "in seq order, no gap, no duplicate: {frame}");
                last = seq;
            }
            None => deltas += 1,
        }
        if frame["event"]["type"] == "agent_end" {
            break;
        }
    }
    assert!(deltas > 0, "token deltas of node a's turn reach node b's client live");
    eprintln!("cross-node: {events} events of one turn in {:?}", started.elapsed());

    // Prompts through all three nodes at once.
    let mut senders = Vec::new();
    for (node, addr) in [("a", &a.addr), ("b", &b.addr), ("c", &c.addr)] {
        let (addr, conversation) = (addr.clone(), conversation.clone());
        senders.push(tokio::spawn(async move {
            let mut ws = connect(&addr).await?;
            let mut acked = Vec::new();
            for n in 0..5 {
                let id = format!("{node}-{n}");
                let ack = send(&mut ws, &conversation, &id, "6*7 again?").await?;
                anyhow::ensure!(ack["type"] == "ack", "{ack}");
                acked.push(id);
            }
            anyhow::Ok(acked)
        }));
    }
    let mut acked = vec!["first".to_owned()];
    for sender in senders {
        acked.extend(sender.await??);
    }
    let log = settled_log(&c.addr, &conversation).await?;
    check_log(&log, &acked);
    // The watcher on node b saw all of it, in order, from where it was.
    let durable = log.len() as u64;
    let started = Instant::now();
    while last < durable {
        let frame = next_frame(&mut watcher).await?;
        if let Some(seq) = frame["seq"].as_u64() {
            assert_eq!(seq, last + 1, "in seq order, no gap, no duplicate: {frame}");
            last = seq;
        }
    }
    eprintln!("cross-node: {durable} durable events in all, the last ones {:?} after settling", started.elapsed());

    // A long answer streamed by node a: its deltas reach node b's client live, in order, never
    // twice. Deltas are best effort (NATS at most once, a lagging subscriber skips some, on any
    // node); the stored answer is complete on both (figures for the note; no timing asserted).
    let mut local = subscribe(&a.addr, &conversation, last).await?;
    assert_eq!(send(&mut sender, &conversation, "long", "say a lot").await?["type"], "ack");
    let (remote_seen, local_seen) = tokio::join!(follow_stream(&mut watcher), follow_stream(&mut local));
    let ((remote_deltas, remote_answer, remote_took), (local_deltas, local_answer, local_took)) =
        (remote_seen?, local_seen?);
    assert!(remote_deltas > 0, "node a's deltas reached node b's client");
    let whole: String = (0..STREAMED).map(|i| format!("t{i} ")).collect();
    assert_eq!((remote_answer.as_str(), local_answer.as_str()), (whole.as_str(), whole.as_str()));
    eprintln!(
        "cross-node: {remote_deltas} of {STREAMED} deltas at {:.0}/s on node b, {local_deltas} at {:.0}/s on node a itself",
        remote_deltas as f64 / remote_took.as_secs_f64(),
        local_deltas as f64 / local_took.as_secs_f64()
    );
    drop((a, b, c));
    cluster.drop_database().await
}

/// Chunks in the long streamed answer.
const STREAMED: usize = 3000;

/// Reads one turn's events to its `agent_end`: how many text deltas came (each at most once,
/// in order), the stored answer's text, and the time from the first delta to the end.
async fn follow_stream(ws: &mut Socket) -> anyhow::Result<(usize, String, Duration)> {
    let (mut deltas, mut next, mut first, mut answer) = (0, 0, None, String::new());
    loop {
        let frame = next_frame(ws).await?;
        let event = &frame["event"];
        if event["type"] == "message_update" && event["delta"]["type"] == "text" {
            first.get_or_insert_with(Instant::now);
            let text = event["delta"]["text"].as_str().unwrap_or_default();
            let index: usize = text.trim().trim_start_matches('t').parse()?;
            anyhow::ensure!(index >= next, "delta {index} after {next}: out of order or repeated");
            (next, deltas) = (index + 1, deltas + 1);
        }
        if event["type"] == "message_end" {
            answer = event["message"]["content"][0]["text"].as_str().unwrap_or_default().to_owned();
        }
        if event["type"] == "agent_end" {
            return Ok((deltas, answer, first.map(|t| t.elapsed()).unwrap_or_default()));
        }
    }
}

/// Sends prompts as fast as they are acked through whichever node is alive, moving to another
/// node when its node dies, until `stop`; returns the acked `client_msg_id`s.
async fn keep_sending(
    nodes: Arc<Mutex<Vec<String>>>,
    conversation: String,
    name: &'static str,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<String> {
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.is_cancelled() {
        let addr = {
            let nodes = nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            nodes[(n + name.len()) % nodes.len()].clone()
        };
        let Ok(mut ws) = connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            n += 1;
            continue;
        };
        while !stop.is_cancelled() {
            let id = format!("{name}-{n}");
            n += 1;
            match send(&mut ws, &conversation, &id, "6*7?").await {
                Ok(ack) if ack["type"] == "ack" => acked.push(id),
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    acked
}

/// Follows the conversation from the start through whichever node is alive, subscribing again
/// with its last seq on another node when its node dies, until it has seen seq `until` (0: not
/// known yet). Fails on a gap or a duplicate; returns how often it had to reconnect.
async fn follow_across_failures(
    nodes: Arc<Mutex<Vec<String>>>,
    conversation: String,
    mut until: tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<usize> {
    let (mut last, mut reconnects, mut n) = (0, 0, 0);
    loop {
        let addr = {
            let nodes = nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            nodes[n % nodes.len()].clone()
        };
        n += 1;
        let Ok(mut ws) = subscribe(&addr, &conversation, last).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        loop {
            let target = *until.borrow();
            if target > 0 && last >= target {
                return Ok(reconnects);
            }
            let frame = tokio::select! {
                frame = next_frame(&mut ws) => frame,
                _ = until.changed() => continue,
            };
            match frame {
                Ok(frame) => {
                    if let Some(seq) = frame["seq"].as_u64() {
                        anyhow::ensure!(seq == last + 1, "after seq {last} came {seq} (from {addr})");
                        last = seq;
                    }
                }
                Err(_) => {
                    reconnects += 1;
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_that_runs_the_turn_twenty_times_loses_nothing() -> anyhow::Result<()> {
    let Some(cluster) = Cluster::new("failover").await? else { return Ok(()) };
    let model = MockOpenAi::start(MockReply::tool_rounds(20_000)).await?;
    let mut nodes: BTreeMap<String, Served> = BTreeMap::new();
    for id in ["n0", "n1", "n2"] {
        nodes.insert(id.to_owned(), cluster.node(id, &model.base_url()).await?);
    }
    let addrs = Arc::new(Mutex::new(nodes.values().map(|n| n.addr.clone()).collect::<Vec<_>>()));
    let conversation = create_conversation(&nodes["n0"].addr).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = ["ada", "grace"]
        .into_iter()
        .map(|name| tokio::spawn(keep_sending(Arc::clone(&addrs), conversation.clone(), name, stop.clone())))
        .collect();
    // A client of the dead nodes too: it moves to another node with its last seq.
    let (until, watched) = tokio::sync::watch::channel(0);
    let follower = tokio::spawn(follow_across_failures(Arc::clone(&addrs), conversation.clone(), watched));

    let mut failovers = Vec::new();
    let mut next_id = 3;
    let mut random = nanos() as u64 | 1;
    for _ in 0..20 {
        // A random point of the busy conversation's life.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        tokio::time::sleep(Duration::from_millis(100 + random % 400)).await;
        // The conversation is idle between prompts (and then nobody holds it): wait for a turn.
        let mut owner = None;
        for _ in 0..400 {
            owner = cluster.holder(&conversation).await?.filter(|holder| nodes.contains_key(holder));
            if owner.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let Some(owner) = owner else { continue };
        tokio::time::sleep(Duration::from_millis(random % 40)).await;
        let mut served = nodes.remove(&owner).expect("a live node");
        let before = Some(owner);
        served.child.kill().await?;
        let killed = Instant::now();
        addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|addr| *addr != served.addr);
        // Another node takes the conversation over once the dead node's lease has expired.
        loop {
            let now = cluster.holder(&conversation).await?;
            if now.is_some() && now != before {
                failovers.push(killed.elapsed());
                break;
            }
            anyhow::ensure!(killed.elapsed() < crate::process::WAIT, "no node took the conversation over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A new node (a new name: the dead one's lease is not its own) replaces it.
        let id = format!("n{next_id}");
        next_id += 1;
        let fresh = cluster.node(&id, &model.base_url()).await?;
        addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(fresh.addr.clone());
        nodes.insert(id, fresh);
    }
    stop.cancel();
    let mut acked = Vec::new();
    for client in clients {
        acked.extend(client.await?);
    }
    assert!(failovers.len() >= 10, "the conversation was busy at most kill points: {} failovers", failovers.len());
    assert!(acked.len() > 20, "the clients kept sending: {} acked", acked.len());
    let any = nodes.values().next().expect("a node").addr.clone();
    let log = settled_log(&any, &conversation).await?;
    check_log(&log, &acked);
    until.send_replace(log.len() as u64);
    let reconnects = follower.await??;
    assert!(reconnects > 0, "the follower's node died at least once");

    // A client that follows from the start sees the same log, once, in order.
    let mut late = subscribe(&any, &conversation, 0).await?;
    let mut last = 0;
    while last < log.len() as u64 {
        if let Some(seq) = next_frame(&mut late).await?["seq"].as_u64() {
            assert_eq!(seq, last + 1);
            last = seq;
        }
    }
    failovers.sort();
    eprintln!(
        "failover ({} kills, lease TTL {LEASE_TTL_MS} ms): p50 {:?}, max {:?}; {} prompts acked, {} events, \
         the follower moved {reconnects} times",
        failovers.len(),
        failovers[failovers.len() / 2],
        failovers.last().copied().unwrap_or_default(),
        acked.len(),
        log.len()
    );
    drop(nodes);
    cluster.drop_database().await
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_lease_cannot_write_any_more() -> anyhow::Result<()> {
    let Some(cluster) = Cluster::new("fence").await? else { return Ok(()) };
    let model = MockOpenAi::start(vec![
        MockReply::Held(Box::new(MockReply::Chunks(chunks::text("gpt-test", &["from ", "a"], None)))),
        MockReply::Chunks(chunks::text("gpt-test", &["from ", "b"], None)),
    ])
    .await?;
    let mut a = cluster.node("a", &model.base_url()).await?;
    let b = cluster.node("b", &model.base_url()).await?;
    let conversation = create_conversation(&b.addr).await?;
    let mut ws = connect(&a.addr).await?;
    assert_eq!(send(&mut ws, &conversation, "p", "who answers?").await?["type"], "ack");
    // Node a runs the turn; its LLM request is held. Then node a stops (SIGSTOP: a pause, a
    // partition) for longer than its lease.
    let deadline = Instant::now() + crate::process::WAIT;
    while model.requests().is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "node a never asked the model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.holder(&conversation).await?.as_deref(), Some("a"));
    let pid = a.child.id().expect("running").to_string();
    let signal = |name: &str| std::process::Command::new("kill").args([name, &pid]).status();
    assert!(signal("-STOP")?.success());
    // Node b takes the conversation over, recovers the turn and answers.
    let mut watcher = subscribe(&b.addr, &conversation, 0).await?;
    loop {
        let frame = next_frame(&mut watcher).await?;
        if frame["event"]["type"] == "agent_end" {
            break;
        }
    }
    let before = event_log(&b.addr, &conversation).await?;
    // Node a wakes up with its answer arriving: it finds its lease gone and writes nothing.
    model.release();
    assert!(signal("-CONT")?.success());
    a.logged_line(|line| line.contains("lost the conversation's lease")).await?;
    // It did try (the end of its turn), and the fence refused it.
    a.logged_line(|line| line.contains("was lost to another holder")).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = event_log(&b.addr, &conversation).await?;
    assert_eq!(after, before, "nothing of node a's late turn was written");
    let texts: Vec<String> = after
        .iter()
        .filter(|e| e["event"]["type"] == "message_end")
        .map(|e| e["event"]["message"]["content"][0]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts, ["from b"], "the answer is node b's alone");
    check_log(&after, &["p".to_owned()]);
    drop((a, b));
    cluster.drop_database().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_nodes_serve_from_the_database_and_lose_no_acked_message() -> anyhow::Result<()> {
    let Some(mut cluster) = Cluster::new("nonats").await? else { return Ok(()) };
    // Nothing listens here: NATS is down for the whole test.
    cluster.nats = "nats://127.0.0.1:9".to_owned();
    let model = MockOpenAi::start(MockReply::tool_rounds(100)).await?;
    let a = cluster.node("a", &model.base_url()).await?;
    let b = cluster.node("b", &model.base_url()).await?;
    let ready: Value = reqwest::get(format!("http://{}/readyz", a.addr)).await?.json().await?;
    assert_eq!(ready["cluster"], json!({"node_id": "a", "nats": "disconnected"}), "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    let metrics = reqwest::get(format!("http://{}/metrics", a.addr)).await?.text().await?;
    assert!(metrics.contains("colloquy_cluster_nats_connected 0"), "the metric says so too");

    let conversation = create_conversation(&a.addr).await?;
    let mut watcher = subscribe(&b.addr, &conversation, 0).await?;
    let mut acked = Vec::new();
    for (n, addr) in [&a.addr, &b.addr, &a.addr].into_iter().enumerate() {
        let mut ws = connect(addr).await?;
        let id = format!("m{n}");
        assert_eq!(send(&mut ws, &conversation, &id, "6*7?").await?["type"], "ack");
        acked.push(id);
    }
    let log = settled_log(&b.addr, &conversation).await?;
    check_log(&log, &acked);
    // Node b's client got every durable event, from the log, in order.
    let mut last = 0;
    while last < log.len() as u64 {
        if let Some(seq) = next_frame(&mut watcher).await?["seq"].as_u64() {
            assert_eq!(seq, last + 1);
            last = seq;
        }
    }
    drop((a, b));
    cluster.drop_database().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_and_approvals_sent_to_another_node_reach_the_turn() -> anyhow::Result<()> {
    let Some(cluster) = Cluster::new("forward").await? else { return Ok(()) };
    let model = MockOpenAi::start(vec![
        // A turn that hangs mid-answer, cancelled through the other node.
        MockReply::Stall(chunks::text("gpt-test", &["thinking "], None).into_iter().take(2).collect()),
        // A calculator call that waits for approval, allowed through the other node.
        MockReply::Chunks(chunks::tool_calls(
            "gpt-test",
            &[("call_1", "calculator", &["{\"expression\": \"6*7\"}"])],
            None,
        )),
        MockReply::Chunks(chunks::text("gpt-test", &["42"], None)),
    ])
    .await?;
    let approval = [("COLLOQUY_TOOLS__REQUIRE_APPROVAL", "[calculator]")];
    let a = cluster.node_with("a", &model.base_url(), &approval).await?;
    let b = cluster.node_with("b", &model.base_url(), &approval).await?;
    let conversation = create_conversation(&a.addr).await?;
    let mut sender = connect(&a.addr).await?;
    let mut other = subscribe(&b.addr, &conversation, 0).await?;
    assert_eq!(send(&mut sender, &conversation, "p1", "think").await?["type"], "ack");
    // Node a runs it (it took the lease); node b's client sees it streaming, and cancels it.
    loop {
        let frame = next_frame(&mut other).await?;
        if frame["event"]["type"] == "message_update" {
            break;
        }
    }
    let cancel = json!({"type": "cancel", "id": "c", "conversation_id": conversation});
    other.send(Message::Text(cancel.to_string().into())).await?;
    let mut stop_reason = Value::Null;
    let mut acked = false;
    while stop_reason.is_null() || !acked {
        let frame = next_frame(&mut other).await?;
        if frame["id"] == "c" {
            assert_eq!((&frame["type"], &frame["cancelled"]), (&json!("ack"), &json!(true)), "{frame}");
            acked = true;
        }
        if frame["event"]["type"] == "agent_end" {
            stop_reason = frame["event"]["stop_reason"].clone();
        }
    }
    assert_eq!(stop_reason, "cancelled");

    // The next turn's tool call waits for approval on node a; node b's client allows it.
    assert_eq!(send(&mut sender, &conversation, "p2", "6*7?").await?["type"], "ack");
    loop {
        let frame = next_frame(&mut other).await?;
        if frame["event"]["type"] == "approval_requested" {
            break;
        }
    }
    let allow = json!({"type": "approve", "id": "ok", "conversation_id": conversation, "tool_call_id": "call_1", "decision": "allow"});
    other.send(Message::Text(allow.to_string().into())).await?;
    let mut result = Value::Null;
    loop {
        let frame = next_frame(&mut other).await?;
        if frame["id"] == "ok" {
            assert_eq!(frame["type"], "ack", "{frame}");
        }
        if frame["event"]["type"] == "tool_execution_end" {
            result = frame["event"]["message"]["content"][0].clone();
        }
        if frame["event"]["type"] == "agent_end" {
            assert_eq!(frame["event"]["stop_reason"], "end_turn", "{frame}");
            break;
        }
    }
    assert_eq!(result["is_error"], false, "the approved call ran: {result}");
    assert!(result["content"].as_str().is_some_and(|c| c.contains("42")), "{result}");
    // Neither is answered for a conversation no node runs a turn of. The owner's runner is gone
    // a moment after it published `agent_end`, so ask until it is (a cancel sent in that moment
    // still reached it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    'asking: loop {
        other.send(Message::Text(cancel.to_string().into())).await?;
        loop {
            let frame = next_frame(&mut other).await?;
            if frame["id"] == "c" {
                if frame["cancelled"] == false {
                    break 'asking;
                }
                assert!(std::time::Instant::now() < deadline, "a turn still runs 5 s after agent_end: {frame}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue 'asking;
            }
        }
    }
    drop((a, b));
    cluster.drop_database().await
}
