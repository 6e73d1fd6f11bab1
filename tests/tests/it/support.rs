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
    /// The admin key made at first start; every helper sends it unless told otherwise.
    pub admin_key: String,
    /// Its database, for a second process's view (`colloquy keys revoke`, say).
    pub database_url: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway with `config` (JSON, layered over the defaults) and a fresh SQLite file;
    /// auth is on and [`Gateway::admin_key`] is its first-start admin key. Rate limits are off
    /// unless `config` sets them.
    pub async fn start(mut config: Value) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("colloquy.db").display());
        config["database_url"] = json!(database_url);
        // Tests go faster than people: rate limits only where a test sets them.
        for (limit, value) in [("requests_per_second_per_key", 100_000), ("frames_per_second", 100_000)] {
            if config["limits"].get(limit).is_none() {
                config["limits"][limit] = json!(value);
            }
        }
        let config = Config::from_value(config)?;
        let (state, _banner) = AppState::build(config).await?;
        let admin_key = state.first_run_admin_key().await?.unwrap_or_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(colloquy_gateway::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, admin_key, database_url, http: reqwest::Client::new(), stop: Some(stop), _dir: dir })
    }

    /// The REST client, for requests the helpers do not cover.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http://host:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /v1/conversations` as the admin, returning the created conversation.
    pub async fn create_conversation(&self, body: Value) -> anyhow::Result<Value> {
        let key = self.admin_key.clone();
        self.create_conversation_as(&key, body).await
    }

    /// `POST /v1/conversations` with `key`.
    pub async fn create_conversation_as(&self, key: &str, body: Value) -> anyhow::Result<Value> {
        let (status, body) = self.request_as(key, reqwest::Method::POST, "/v1/conversations", Some(&body)).await?;
        if status != 201 {
            bail!("create failed with {status}: {body}");
        }
        Ok(body)
    }

    /// `POST` a JSON body to a path as the admin, returning status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let key = self.admin_key.clone();
        self.request_as(&key, reqwest::Method::POST, path, Some(body)).await
    }

    /// Any request with `key` (empty: none), returning status and JSON body (`null` if none).
    pub async fn request_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, self.url(path));
        if !key.is_empty() {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok((status, body))
    }

    /// Creates an account of `kind` and a key for it (as the admin); returns the account's id and
    /// the key's secret.
    pub async fn account(&self, name: &str, kind: &str) -> anyhow::Result<(String, String)> {
        let (status, account) = self.post("/v1/accounts", &json!({ "name": name, "kind": kind })).await?;
        if status != 201 {
            bail!("account failed with {status}: {account}");
        }
        let id = account["id"].as_str().context("no account id")?.to_owned();
        let (status, key) = self.post(&format!("/v1/accounts/{id}/keys"), &json!({})).await?;
        if status != 201 {
            bail!("key failed with {status}: {key}");
        }
        Ok((id, key["secret"].as_str().context("no secret")?.to_owned()))
    }

    /// The conversation's newest seq: how many durable events it has.
    pub async fn last_seq(&self, conversation: &str) -> anyhow::Result<u64> {
        let (status, body) = self.get(&format!("/v1/conversations/{conversation}")).await?;
        body["last_seq"].as_u64().with_context(|| format!("no last_seq in {status} {body}"))
    }

    /// `GET` a path as the admin, returning status and JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let key = self.admin_key.clone();
        self.request_as(&key, reqwest::Method::GET, path, None).await
    }

    /// A new WebSocket client, as the admin.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let key = self.admin_key.clone();
        self.connect_as(&key).await
    }

    /// A new WebSocket client presenting `key` as a bearer header (none if empty).
    pub async fn connect_as(&self, key: &str) -> anyhow::Result<Client> {
        let mut request = self.ws_request()?;
        if !key.is_empty() {
            request.headers_mut().insert("authorization", format!("Bearer {key}").parse()?);
        }
        self.connect_with(request).await.map(|(client, _)| client)
    }

    /// A WebSocket client presenting `key` whose socket takes in at most a few KiB before the
    /// gateway must wait: a client that does not read fills up at once instead of after the
    /// megabytes of kernel buffers a normal socket has.
    pub async fn connect_tiny_window_as(&self, key: &str) -> anyhow::Result<Client> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(self.addr).await?;
        let mut request = self.ws_request()?;
        request.headers_mut().insert("authorization", format!("Bearer {key}").parse()?);
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
        Ok(Client { ws })
    }

    /// The upgrade request for `/v1/ws`, to add headers to.
    pub fn ws_request(&self) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        Ok(format!("ws://{}/v1/ws", self.addr).into_client_request()?)
    }

    /// Connects with a prepared upgrade request; returns the client and the upgrade response.
    pub async fn connect_with(
        &self,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> anyhow::Result<(Client, tokio_tungstenite::tungstenite::handshake::client::Response)> {
        let (ws, response) = tokio_tungstenite::connect_async(request).await?;
        Ok((Client { ws }, response))
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
    /// The socket itself, for tests of the wire (close frames, raw bytes).
    pub fn socket(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }

    /// Waits for the server to close the connection; returns the close code and reason.
    pub async fn closed(&mut self) -> anyhow::Result<(u16, String)> {
        loop {
            let message =
                tokio::time::timeout(FRAME_WAIT, self.ws.next()).await.context("the gateway did not close")?;
            match message {
                Some(Ok(Message::Close(Some(frame)))) => return Ok((u16::from(frame.code), frame.reason.to_string())),
                Some(Ok(Message::Close(None))) => return Ok((1005, String::new())),
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("the connection broke instead of closing: {error}"),
                None => bail!("the connection ended without a close frame"),
            }
        }
    }

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
    /// Subscribes from `after_seq`; returns the ack, after the presence frame that follows it.
    pub async fn subscribe(&mut self, conversation: &str, after_seq: u64) -> anyhow::Result<Value> {
        self.send(json!({ "type": "subscribe", "conversation_id": conversation, "after_seq": after_seq })).await?;
        let ack = self.recv().await?;
        if ack["type"] != "ack" {
            bail!("subscribe failed: {ack}");
        }
        let presence = self.recv().await?;
        if presence["type"] != "presence" {
            bail!("no presence after the subscription's ack: {presence}");
        }
        Ok(ack)
    }
}

/// The HTTP status and JSON body of a WebSocket upgrade: 101 and `null` when it connected.
pub fn upgrade_status<T>(connected: anyhow::Result<T>) -> (u16, Value) {
    match connected {
        Ok(_) => (101, Value::Null),
        Err(error) => match error.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            Some(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body =
                    response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
                (response.status().as_u16(), body)
            }
            _ => (0, Value::String(error.to_string())),
        },
    }
}

/// Whether a frame is the `agent_end` event.
pub fn is_agent_end(frame: &Value) -> bool {
    frame["type"] == "event" && frame["event"]["type"] == "agent_end"
}

/// Replaces ids and times with stable placeholders (`[id-1]`, `[id-2]`, ... numbered by first
/// appearance, keys in sorted order, so equal ids stay equal and the numbers do not depend on
/// the order serde_json keeps keys in) for snapshots.
pub fn redact(value: &Value) -> Value {
    fn walk(value: &Value, key: Option<&str>, ids: &mut Vec<String>) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), walk(v, Some(k), ids))).collect())
            }
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
