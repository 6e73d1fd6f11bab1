//! Starting a gateway and talking to it as a client would.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use colloquy_gateway::{AppState, Config};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a client waits for a frame before the test fails instead of hanging. This is a
/// guard against a hang, not a speed check.
const FRAME_WAIT: Duration = Duration::from_secs(20);

/// A running gateway; stops when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway with `config` (JSON, layered over the defaults) and a fresh SQLite file.
    pub async fn start(mut config: Value) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        config["database_url"] = json!(format!("sqlite://{}?mode=rwc", dir.path().join("colloquy.db").display()));
        let config = Config::from_value(config)?;
        let (state, _banner) = AppState::build(config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(colloquy_gateway::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, http: reqwest::Client::new(), stop: Some(stop), _dir: dir })
    }

    /// `POST /v1/conversations`, returning the created conversation.
    pub async fn create_conversation(&self, body: Value) -> anyhow::Result<Value> {
        let response = self.http.post(format!("http://{}/v1/conversations", self.addr)).json(&body).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != reqwest::StatusCode::CREATED {
            bail!("create failed with {status}: {body}");
        }
        Ok(body)
    }

    /// `POST` a JSON body to a path, returning status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self.http.post(format!("http://{}{path}", self.addr)).json(body).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// The conversation's newest seq: how many durable events it has.
    pub async fn last_seq(&self, conversation: &str) -> anyhow::Result<u64> {
        let (status, body) = self.get(&format!("/v1/conversations/{conversation}")).await?;
        body["last_seq"].as_u64().with_context(|| format!("no last_seq in {status} {body}"))
    }

    /// `GET` a path, returning status and JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self.http.get(format!("http://{}{path}", self.addr)).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// A new WebSocket client.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", self.addr)).await?;
        Ok(Client { ws })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A WebSocket client of the gateway.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Sends one JSON frame.
    pub async fn send(&mut self, frame: Value) -> anyhow::Result<()> {
        self.send_text(frame.to_string()).await
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Sends a raw binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// The next JSON frame.
    pub async fn recv(&mut self) -> anyhow::Result<Value> {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .context("no frame arrived: the gateway hangs")?
                .context("the gateway closed the connection")??;
            match message {
                Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
                Message::Ping(_) | Message::Pong(_) => {}
                other => bail!("unexpected frame {other:?}"),
            }
        }
    }

    /// Frames up to and including the first for which `last` holds.
    pub async fn recv_until(&mut self, last: impl Fn(&Value) -> bool) -> anyhow::Result<Vec<Value>> {
        let mut frames = Vec::new();
        loop {
            let frame = self.recv().await?;
            let done = last(&frame);
            frames.push(frame);
            if done {
                return Ok(frames);
            }
        }
    }
}

impl Client {
    /// Subscribes from `after_seq` and returns the ack.
    pub async fn subscribe(&mut self, conversation: &str, after_seq: u64) -> anyhow::Result<Value> {
        self.send(json!({ "type": "subscribe", "conversation_id": conversation, "after_seq": after_seq })).await?;
        let ack = self.recv().await?;
        if ack["type"] != "ack" {
            bail!("subscribe failed: {ack}");
        }
        Ok(ack)
    }
}

/// Whether a frame is the `agent_end` event.
pub fn is_agent_end(frame: &Value) -> bool {
    frame["type"] == "event" && frame["event"]["type"] == "agent_end"
}

/// Replaces ids and times with stable placeholders (`[id-1]`, `[id-2]`, ... numbered by first
/// appearance, so equal ids stay equal) for snapshots.
pub fn redact(value: &Value) -> Value {
    fn walk(value: &Value, key: Option<&str>, ids: &mut Vec<String>) -> Value {
        match value {
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), walk(v, Some(k), ids))).collect()),
            Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, key, ids)).collect()),
            Value::String(s) if matches!(key, Some("created_at" | "joined_at" | "last_activity")) => {
                let _ = s;
                json!("[time]")
            }
            Value::Number(_) if key == Some("latency_ms") => json!("[ms]"),
            Value::String(s) if uuid_like(s) => {
                let n = ids.iter().position(|seen| seen == s).unwrap_or_else(|| {
                    ids.push(s.clone());
                    ids.len() - 1
                });
                json!(format!("[id-{}]", n + 1))
            }
            other => other.clone(),
        }
    }
    fn uuid_like(s: &str) -> bool {
        s.len() == 36
            && s.chars().filter(|c| *c == '-').count() == 4
            && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    }
    walk(value, None, &mut Vec::new())
}
