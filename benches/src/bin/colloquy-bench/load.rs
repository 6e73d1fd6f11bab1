//! The WebSocket load generator: clients that each hold one connection and one conversation at a
//! time, send a prompt and wait for its `agent_end`, closed-loop (the next prompt as soon as the
//! last turn ended) or open-loop (prompts arrive at a fixed rate, Poisson, whether or not the
//! clients keep up; a turn's latency counts from its arrival, so a backlog shows instead of
//! being hidden). Latency, time to first token and added latency go into HDR histograms.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::gateway::Gateway;
use crate::mock::{MockStats, TURN_KEY_PREFIX};

/// One client's connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Latencies in microseconds, from 1 us to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(histogram) => histogram,
        Err(error) => unreachable!("constant histogram bounds are valid: {error}"),
    }
}

/// Microseconds, at least 1 (the histogram's floor).
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Opens a WebSocket to the gateway with its key, from `source` (a loopback address, so that
/// many connections do not run out of source ports on one).
pub async fn connect(gateway: &Gateway, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
    let addr: SocketAddr = gateway.addr.parse().context("the gateway's address")?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = gateway.ws_url().into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {}", gateway.key).parse()?);
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// The next message, as text (`None` for a ping, pong or binary message); an error after 60 s
/// without one, waiting for `what`, or when the connection closed.
async fn next_text(ws: &mut Ws, what: &str) -> anyhow::Result<Option<tokio_tungstenite::tungstenite::Utf8Bytes>> {
    let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
        .await
        .with_context(|| format!("no message within 60 s while waiting for {what}"))?
        .with_context(|| format!("the connection closed while waiting for {what}"))??;
    Ok(match message {
        Message::Text(text) => Some(text),
        _ => None,
    })
}

/// Sends `frame` and reads until the reply with its `id` (events before it are skipped).
pub async fn request(ws: &mut Ws, frame: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let id = frame["id"].as_str().context("a frame without id")?.to_owned();
    ws.send(Message::text(frame.to_string())).await?;
    loop {
        let Some(text) = next_text(ws, "a reply").await? else { continue };
        if text.starts_with(r#"{"type":"event""#) {
            continue;
        }
        let reply: serde_json::Value = serde_json::from_str(&text)?;
        if reply["id"].as_str() == Some(id.as_str()) {
            if reply["type"] == "error" {
                bail!("the gateway refused {frame}: {reply}");
            }
            return Ok(reply);
        }
    }
}

/// Subscribes to a conversation (from its start) and waits for the ack.
pub async fn subscribe(ws: &mut Ws, conversation: &str, id: &str) -> anyhow::Result<()> {
    request(ws, serde_json::json!({"type": "subscribe", "id": id, "conversation_id": conversation})).await.map(drop)
}

/// What one turn took.
pub struct TurnSample {
    /// From the send (or the arrival, open-loop) to `agent_end`.
    pub total: Duration,
    /// From the send to the first `message_update`.
    pub first_token: Duration,
    /// The mock's own time for the turn's requests, and how many there were.
    pub mock: Option<(Duration, u32)>,
}

/// Runs one bench turn in `conversation` on `ws`: sends the prompt, reads to its `agent_end`.
pub async fn turn(ws: &mut Ws, conversation: &str, number: u64, mock: &MockStats) -> anyhow::Result<TurnSample> {
    let key = uuid::Uuid::now_v7().simple().to_string();
    let frame = serde_json::json!({
        "type": "send",
        "id": format!("m{number}"),
        "conversation_id": conversation,
        "content": format!("{TURN_KEY_PREFIX}{key}: what is 6 * 7?"),
    });
    let sent = Instant::now();
    ws.send(Message::text(frame.to_string())).await?;
    let mut first_token = None;
    loop {
        let Some(text) = next_text(ws, "the end of the turn").await? else { continue };
        if first_token.is_none() && text.contains(r#""type":"message_update""#) {
            first_token = Some(sent.elapsed());
        }
        if text.contains(r#""type":"agent_end""#) {
            let total = sent.elapsed();
            if !text.contains(r#""stop_reason":"end_turn""#) {
                bail!("the turn did not end normally: {text}");
            }
            let mut mock_time = mock.take(&key);
            // The mock records its second request as it hands over the last event; allow it a
            // moment in the rare case the gateway was quicker than that bookkeeping.
            for _ in 0..50 {
                if mock_time.is_some_and(|(_, n)| n >= 2) {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
                let more = mock.take(&key);
                mock_time = match (mock_time, more) {
                    (Some((a, n)), Some((b, m))) => Some((a + b, n + m)),
                    (a, b) => a.or(b),
                };
            }
            return Ok(TurnSample { total, first_token: first_token.unwrap_or(total), mock: mock_time });
        }
        if text.starts_with(r#"{"type":"error""#) {
            bail!("the gateway refused the prompt: {text}");
        }
    }
}

/// A load to put on the gateway.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// Clients, each with its own connection and conversation.
    pub clients: usize,
    /// Turns started before this are not counted.
    pub warmup: Duration,
    /// The measured window, after the warm-up.
    pub duration: Duration,
    /// Open-loop arrival rate (turns/s over all clients); `None` for closed-loop.
    pub arrivals_per_second: Option<f64>,
    /// A client starts a new conversation after this many turns, so histories stay realistic.
    pub turns_per_conversation: u64,
    /// Read the gateway's CPU time at the window's start and end.
    pub measure_cpu: bool,
}

/// What a load measured.
pub struct LoadResult {
    /// Turns that ended inside the measured window.
    pub turns: u64,
    /// The window's length.
    pub window: Duration,
    /// Turns that failed, and the first failure.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Per turn, microseconds.
    pub latency: Histogram<u64>,
    pub first_token: Histogram<u64>,
    /// Turn time minus the mock's time for the turn's two requests.
    pub added: Histogram<u64>,
    /// The mock's time per turn.
    pub mock: Histogram<u64>,
    /// The gateway's user + system CPU seconds over the window, when asked for.
    pub cpu_seconds: Option<f64>,
}

impl LoadResult {
    /// Turns per second over the window.
    pub fn throughput(&self) -> f64 {
        self.turns as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// Runs the load and returns what it measured.
pub async fn run(gateway: Arc<Gateway>, mock: Arc<MockStats>, spec: LoadSpec) -> anyhow::Result<LoadResult> {
    // Every client connects and subscribes first; the clock starts once all are ready.
    let mut setups = Vec::with_capacity(spec.clients);
    for index in 0..spec.clients {
        let gateway = Arc::clone(&gateway);
        setups.push(tokio::spawn(async move { Client::open(&gateway, index).await }));
    }
    let mut clients = Vec::with_capacity(spec.clients);
    for setup in setups {
        clients.push(setup.await??);
    }
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.duration;
    let arrivals = spec.arrivals_per_second.map(|rate| {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        tokio::spawn(poisson_arrivals(sender, rate, start, window_end));
        Arc::new(tokio::sync::Mutex::new(receiver))
    });
    let cpu = spec.measure_cpu.then(|| {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let before = gateway.cpu_seconds().ok()?;
            tokio::time::sleep_until(window_end.into()).await;
            Some(gateway.cpu_seconds().ok()? - before)
        })
    });
    let counted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let (gateway, mock, counted, arrivals) =
            (Arc::clone(&gateway), Arc::clone(&mock), Arc::clone(&counted), arrivals.clone());
        tasks.push(tokio::spawn(async move {
            client.drive(&gateway, &mock, spec, window_start, window_end, arrivals, &counted).await
        }));
    }
    let mut result = LoadResult {
        turns: 0,
        window: spec.duration,
        errors: 0,
        first_error: None,
        latency: histogram(),
        first_token: histogram(),
        added: histogram(),
        mock: histogram(),
        cpu_seconds: None,
    };
    if let Some(cpu) = cpu {
        result.cpu_seconds = cpu.await?;
    }
    for task in tasks {
        let part = task.await?;
        result.errors += part.errors;
        result.first_error = result.first_error.or(part.first_error);
        result.latency.add(&part.latency)?;
        result.first_token.add(&part.first_token)?;
        result.added.add(&part.added)?;
        result.mock.add(&part.mock)?;
    }
    result.turns = counted.load(Ordering::Relaxed);
    Ok(result)
}

/// Arrival times at `rate` per second, exponentially spaced, until `end`.
async fn poisson_arrivals(
    sender: tokio::sync::mpsc::UnboundedSender<Instant>,
    rate: f64,
    start: Instant,
    end: Instant,
) {
    let mut random = Xorshift(uuid::Uuid::now_v7().as_u64_pair().1 | 1);
    let mut next = start;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        if sender.send(next).is_err() {
            return;
        }
        let gap = -random.unit().ln() / rate;
        next += Duration::from_secs_f64(gap);
    }
}

/// A small, good-enough random source for arrival gaps.
struct Xorshift(u64);

impl Xorshift {
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// One client's connection and conversation.
struct Client {
    ws: Ws,
    conversation: String,
    turns_here: u64,
    frames: u64,
}

/// What one client measured.
struct ClientResult {
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    first_token: Histogram<u64>,
    added: Histogram<u64>,
    mock: Histogram<u64>,
}

impl Client {
    async fn open(gateway: &Gateway, index: usize) -> anyhow::Result<Self> {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index % 8) as u8);
        let mut ws = connect(gateway, Some(source)).await?;
        let conversation = gateway.create_conversation(&serde_json::json!({})).await?;
        subscribe(&mut ws, &conversation, "s0").await?;
        Ok(Self { ws, conversation, turns_here: 0, frames: 1 })
    }

    /// Moves to a fresh conversation.
    async fn rotate(&mut self, gateway: &Gateway) -> anyhow::Result<()> {
        self.frames += 1;
        let frame = serde_json::json!({"type": "unsubscribe", "id": format!("u{}", self.frames), "conversation_id": self.conversation});
        request(&mut self.ws, frame).await?;
        self.conversation = gateway.create_conversation(&serde_json::json!({})).await?;
        self.frames += 1;
        subscribe(&mut self.ws, &self.conversation, &format!("s{}", self.frames)).await?;
        self.turns_here = 0;
        Ok(())
    }

    #[expect(clippy::too_many_arguments, reason = "one client's whole run, called from one place")]
    async fn drive(
        mut self,
        gateway: &Gateway,
        mock: &MockStats,
        spec: LoadSpec,
        window_start: Instant,
        window_end: Instant,
        arrivals: Option<Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>>,
        counted: &AtomicU64,
    ) -> ClientResult {
        let mut result = ClientResult {
            errors: 0,
            first_error: None,
            latency: histogram(),
            first_token: histogram(),
            added: histogram(),
            mock: histogram(),
        };
        loop {
            let arrived = match &arrivals {
                Some(arrivals) => match arrivals.lock().await.recv().await {
                    Some(at) => at,
                    None => break,
                },
                None => Instant::now(),
            };
            if arrived >= window_end {
                break;
            }
            if self.turns_here >= spec.turns_per_conversation
                && let Err(error) = self.rotate(gateway).await
            {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| format!("{error:#}"));
                break;
            }
            self.turns_here += 1;
            self.frames += 1;
            let waited = arrived.elapsed();
            match turn(&mut self.ws, &self.conversation, self.frames, mock).await {
                Ok(sample) => {
                    let ended = Instant::now();
                    if ended > window_start && ended <= window_end {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    if arrived >= window_start {
                        let total = sample.total + waited;
                        let _ = result.latency.record(micros(total));
                        let _ = result.first_token.record(micros(sample.first_token + waited));
                        if let Some((mock_time, _)) = sample.mock {
                            let _ = result.mock.record(micros(mock_time));
                            let _ = result.added.record(micros(total.saturating_sub(mock_time)));
                        }
                    }
                }
                Err(error) => {
                    result.errors += 1;
                    result.first_error.get_or_insert_with(|| format!("{error:#}"));
                    // A broken connection cannot go on; anything else may.
                    if self.ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = self.ws.close(None).await;
        result
    }
}
