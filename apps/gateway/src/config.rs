//! Gateway configuration: `colloquy.toml`, then `COLLOQUY_*` environment variables, then flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use colloquy_llm_providers::ModelPrice;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything `colloquy serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH?mode=rwc`, `sqlite::memory:` or `postgres://...`.
    pub database_url: String,
    /// Largest WebSocket text frame the gateway accepts, in bytes; larger ones get a
    /// `frame_too_large` error and the connection stays open.
    pub max_frame_bytes: usize,
    /// The agent a conversation gets when it is created without one.
    pub agent: AgentConfig,
    /// More agents, by name, each served as its own A2A agent (`/a2a/agents/NAME`, docs/a2a.md);
    /// unset fields are the default agent's.
    pub agents: BTreeMap<String, AgentConfig>,
    /// URL prefixes (`https://agents.example.com/`) of remote A2A agents that any conversation
    /// owner may add as a service participant (`a2a_url`). Admins may add any; others none
    /// unless listed here, since the gateway sends requests wherever `a2a_url` points.
    pub a2a_allowed_urls: Vec<String>,
    /// LLM providers by name; the default agent's `provider` names one of them.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// With no provider configured, look for an Ollama server on 127.0.0.1:11434 at start.
    pub discover_ollama: bool,
    /// Conversations without activity for this many hours are deleted (archived ones never
    /// are); 0 turns the sweeper off.
    pub conversation_ttl_hours: u64,
    /// `on` (default): every request and connection needs an API key. `off`: everyone is an
    /// admin, for local development only; refused unless `listen` is a loopback address.
    pub auth: AuthMode,
    /// Origins (`https://chat.example.com`) whose web pages may open WebSocket connections,
    /// beyond the gateway's own origin and loopback pages, which always may.
    pub allowed_origins: Vec<String>,
    /// How long running turns may go on after SIGTERM or Ctrl-C before they are cancelled.
    pub shutdown_grace_secs: u64,
    /// Abuse limits.
    pub limits: Limits,
    /// `text` (default) or `json` (one JSON object per line, for log collectors).
    pub log_format: LogFormat,
    /// How hard a commit works to reach the disk: `full` (default: what is acknowledged survives
    /// a power loss) or `normal` (survives a crash of the process; an OS crash or power loss may
    /// lose about the last second). See crates/store/README.md.
    pub durability: Durability,
    /// Tool policy.
    pub tools: ToolsConfig,
    /// Several nodes on one Postgres database (docs/cluster.md). Absent: one node, with
    /// in-process fan-out.
    pub cluster: Option<ClusterConfig>,
}

/// One node of a cluster: nodes share the Postgres database, hold a lease on each conversation
/// whose turns they run, and pass live events, cancels and approvals over NATS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (`COLLOQUY_CLUSTER__NODE_ID`).
    pub node_id: String,
    /// The NATS server (`nats://127.0.0.1:4222`).
    #[serde(default = "default_nats_url")]
    pub nats_url: String,
    /// Prefix of every NATS subject the cluster uses, so that several clusters can share one
    /// NATS server.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// How long a conversation's lease lasts unless renewed (every third of it while a turn
    /// runs): how long a dead node's conversations wait before another node takes them over.
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// How often a node reads the log for events of followed conversations that NATS did not
    /// bring (a lost message, NATS down).
    #[serde(default = "default_gap_check_ms")]
    pub gap_check_ms: u64,
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_subject_prefix() -> String {
    "colloquy".to_owned()
}

const fn default_lease_ttl_ms() -> u64 {
    10_000
}

const fn default_gap_check_ms() -> u64 {
    1_000
}

/// [`colloquy_store::Durability`], as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every acknowledged write is fsynced.
    Full,
    /// Commits survive a process crash, not necessarily a power loss.
    Normal,
}

impl From<Durability> for colloquy_store::Durability {
    fn from(value: Durability) -> Self {
        match value {
            Durability::Full => Self::Full,
            Durability::Normal => Self::Normal,
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Tool policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Tools whose every call waits for a conversation owner to allow or deny it (the
    /// `approval_requested` event; the `approve` frame or `POST .../approvals/{id}`); unanswered
    /// calls are denied after the conversation's `approval_timeout_ms`.
    pub require_approval: Vec<String>,
}

/// Whether requests must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// API keys required.
    On,
    /// Everyone is an admin (loopback only).
    Off,
}

/// Limits that keep one client from taking the server down. Every one is documented in
/// docs/protocol.md with its default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open WebSocket connections in all.
    pub max_connections: usize,
    /// Open WebSocket connections per API key.
    pub max_connections_per_key: usize,
    /// Conversations one connection may follow at once.
    pub max_subscriptions_per_connection: usize,
    /// Client frames per second per connection (sustained; bursts of twice that pass).
    pub frames_per_second: u32,
    /// Frames above `max_frame_bytes` but at most this get a `frame_too_large` error; larger
    /// ones are refused before they are read whole and the connection closes (1009).
    pub max_frame_hard_bytes: usize,
    /// Bytes queued for one connection that it has not read; a client that stays behind this
    /// for `slow_reader_timeout_ms` is disconnected (1013).
    pub outbound_queue_bytes: usize,
    /// See `outbound_queue_bytes`.
    pub slow_reader_timeout_ms: u64,
    /// REST requests per second per API key (sustained; bursts of twice that pass).
    pub requests_per_second_per_key: u32,
    /// Largest REST request body.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers (slow clients hold no connection longer).
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's body.
    pub body_read_timeout_ms: u64,
    /// Prompts that may wait behind a running turn in one conversation; more are refused
    /// (`queue_full`, 429).
    pub max_queued_prompts: usize,
    /// Seconds a model server (or remote A2A agent) may go silent in the middle of a reply
    /// before the turn ends with a provider error instead of waiting forever.
    pub provider_idle_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_key: 64,
            max_subscriptions_per_connection: 100,
            frames_per_second: 50,
            max_frame_hard_bytes: 1024 * 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            slow_reader_timeout_ms: 10_000,
            requests_per_second_per_key: 50,
            max_body_bytes: 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_queued_prompts: 32,
            provider_idle_secs: 300,
        }
    }
}

/// The default agent.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Provider name; unset means the first configured one (or the one discovered at start).
    pub provider: Option<String>,
    /// Model; unset means the provider's default.
    pub model: Option<String>,
    /// Instructions sent first in every request.
    pub system_prompt: Option<String>,
    /// Tool names; unset means every built-in tool.
    pub tools: Option<Vec<String>>,
    /// What the agent does, for its A2A agent card.
    pub description: Option<String>,
}

/// One LLM provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// OpenAI, or any server that speaks its chat completions API (Ollama, vLLM, llama.cpp).
    OpenaiCompatible {
        /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
        base_url: String,
        /// The API key, if the server needs one. Never logged.
        api_key: Option<SecretString>,
        /// The model agents use when they name none.
        default_model: Option<String>,
        /// Prices (USD per million tokens) by model, added to or replacing the built-in ones:
        /// `pricing."my-model" = { input = 0.5, output = 1.5, cache_read = 0.05 }`.
        #[serde(default)]
        pricing: BTreeMap<String, ModelPrice>,
        /// `false`: requests that offer tools ask for the whole reply at once instead of a stream,
        /// for servers that cannot stream tool calls (llama-cpp-python). Default `true`.
        #[serde(default = "yes")]
        stream_tools: bool,
    },
    /// Anthropic's Messages API.
    Anthropic {
        /// The API root.
        #[serde(default = "anthropic_base_url")]
        base_url: String,
        /// The API key; unset means `ANTHROPIC_API_KEY`. Never logged.
        api_key: Option<SecretString>,
        /// The model agents use when they name none.
        default_model: Option<String>,
        /// Prices (USD per million tokens) by model, added to or replacing the built-in ones.
        #[serde(default)]
        pricing: BTreeMap<String, ModelPrice>,
    },
    /// A remote A2A agent (another Colloquy, or any A2A 1.0 server; docs/a2a.md): agents with
    /// this provider send the conversation's newest message to it and stream its answer.
    A2a {
        /// The agent's base URL (where `/.well-known/agent-card.json` is) or its JSON-RPC URL.
        url: String,
        /// Sent as a bearer key, if the agent needs one. Never logged.
        api_key: Option<SecretString>,
    },
    /// Replays fixed text replies in a cycle: an offline demo and a test double.
    Scripted {
        /// The replies, in order.
        replies: Vec<String>,
    },
}

/// The top-level keys, so that other `COLLOQUY_*` variables (`COLLOQUY_CONFIG`, test settings)
/// are not mistaken for configuration.
const KEYS: [&str; 17] = [
    "listen",
    "database_url",
    "max_frame_bytes",
    "agent",
    "agents",
    "a2a_allowed_urls",
    "providers",
    "discover_ollama",
    "conversation_ttl_hours",
    "auth",
    "allowed_origins",
    "shutdown_grace_secs",
    "limits",
    "log_format",
    "tools",
    "durability",
    "cluster",
];

/// Where `OpenAI` itself lives.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Where Anthropic's API lives.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

const fn yes() -> bool {
    true
}

fn anthropic_base_url() -> String {
    ANTHROPIC_BASE_URL.to_owned()
}

impl Config {
    /// How the store opens its database.
    pub fn store_options(&self) -> colloquy_store::StoreOptions {
        colloquy_store::StoreOptions { durability: self.durability.into(), ..colloquy_store::StoreOptions::default() }
    }

    /// The defaults: 127.0.0.1:8080, `./colloquy.db`, 256 KiB frames, no providers.
    fn defaults() -> serde_json::Value {
        serde_json::json!({
            "listen": "127.0.0.1:8080",
            "database_url": "sqlite://colloquy.db?mode=rwc",
            "max_frame_bytes": 256 * 1024,
            "agent": {},
            "agents": {},
            "a2a_allowed_urls": [],
            "providers": {},
            "discover_ollama": true,
            "conversation_ttl_hours": 24,
            "auth": "on",
            "allowed_origins": [],
            "shutdown_grace_secs": 10,
            "limits": Limits::default(),
            "log_format": "text",
            "durability": "full",
            "tools": ToolsConfig::default(),
        })
    }

    /// Refuses settings that cannot be safe: `auth = "off"` on an address other machines reach.
    pub fn check(&self) -> Result<(), String> {
        if let Some(name) = self.agents.keys().find(|name| !crate::a2a::is_agent_name(name)) {
            return Err(format!(
                "agents.{name}: an agent's name is part of its A2A URL, so use 1-64 letters, digits, `-` or `_`"
            ));
        }
        if self.auth == AuthMode::Off && !self.listen.ip().is_loopback() {
            return Err(format!(
                "auth = \"off\" is for local development only, but listen = {} is reachable from other machines: \
                 listen on 127.0.0.1, or turn auth on and create keys with `colloquy keys create`",
                self.listen
            ));
        }
        if let Some(cluster) = &self.cluster {
            if !self.database_url.starts_with("postgres") {
                return Err(format!(
                    "cluster needs a database every node shares: set database_url to a postgres:// URL (it is {})",
                    self.database_url.split(':').next().unwrap_or_default()
                ));
            }
            let subject_safe = |text: &str| {
                !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            };
            if !subject_safe(&cluster.node_id) || !subject_safe(&cluster.subject_prefix) {
                return Err("cluster.node_id and cluster.subject_prefix must be non-empty and use only letters, \
                            digits, `-` and `_`"
                    .to_owned());
            }
            if cluster.lease_ttl_ms < 300 || cluster.gap_check_ms == 0 {
                return Err("cluster.lease_ttl_ms must be at least 300 and cluster.gap_check_ms above 0".to_owned());
            }
        }
        if self.limits.max_frame_hard_bytes < self.max_frame_bytes {
            return Err(format!(
                "limits.max_frame_hard_bytes ({}) is below max_frame_bytes ({}): raise it or lower max_frame_bytes",
                self.limits.max_frame_hard_bytes, self.max_frame_bytes
            ));
        }
        Ok(())
    }

    /// Layers the defaults, the TOML file (if it exists), `COLLOQUY_*` variables (`__` separates
    /// nested keys: `COLLOQUY_AGENT__MODEL`), and finally `overrides` (the command-line flags).
    /// With no provider configured, `OPENAI_API_KEY` / `OPENAI_BASE_URL` add an `openai` provider
    /// and `ANTHROPIC_API_KEY` an `anthropic` one; an `anthropic` provider without `api_key`
    /// takes `ANTHROPIC_API_KEY`.
    pub fn load(file: &Path, overrides: impl Serialize) -> Result<Self, Box<figment::Error>> {
        let mut config: Self = Figment::from(Serialized::defaults(Self::defaults()))
            .merge(Toml::file(file))
            .merge(
                Env::prefixed("COLLOQUY_")
                    .filter(|key| KEYS.iter().any(|k| key.as_str().to_ascii_lowercase().starts_with(k)))
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        let from_environment = config.providers.is_empty();
        if from_environment && let Ok(key) = std::env::var("OPENAI_API_KEY") {
            let base_url = std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| OPENAI_BASE_URL.to_owned());
            config.providers.insert(
                "openai".to_owned(),
                ProviderConfig::OpenaiCompatible {
                    base_url,
                    api_key: Some(SecretString::from(key)),
                    default_model: None,
                    pricing: BTreeMap::new(),
                    stream_tools: true,
                },
            );
        }
        if from_environment && std::env::var_os("ANTHROPIC_API_KEY").is_some() {
            config.providers.insert(
                "anthropic".to_owned(),
                ProviderConfig::Anthropic {
                    base_url: anthropic_base_url(),
                    api_key: None,
                    default_model: None,
                    pricing: BTreeMap::new(),
                },
            );
        }
        for provider in config.providers.values_mut() {
            if let ProviderConfig::Anthropic { api_key: api_key @ None, .. } = provider {
                *api_key = std::env::var("ANTHROPIC_API_KEY").ok().map(SecretString::from);
            }
        }
        Ok(config)
    }

    /// A configuration for tests and embedding: defaults plus these values.
    pub fn from_value(value: serde_json::Value) -> Result<Self, Box<figment::Error>> {
        Figment::from(Serialized::defaults(Self::defaults()))
            .merge(Serialized::defaults(value))
            .extract()
            .map_err(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    #[expect(clippy::result_large_err, reason = "figment's Jail fixes the closure's error type")]
    fn the_file_then_the_environment_then_flags_decide() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "colloquy.toml",
                r#"
                listen = "127.0.0.1:9000"
                [agent]
                model = "from-file"
                system_prompt = "file prompt"
                [providers.local]
                kind = "openai_compatible"
                base_url = "http://127.0.0.1:8000/v1"
                "#,
            )?;
            jail.set_env("COLLOQUY_AGENT__MODEL", "from-env");
            jail.set_env("COLLOQUY_PROVIDERS__DEMO__KIND", "scripted");
            jail.set_env("COLLOQUY_PROVIDERS__DEMO__REPLIES", "[hi]");
            // Not configuration: must not be rejected as an unknown key.
            jail.set_env("COLLOQUY_CONFIG", "colloquy.toml");
            jail.set_env("COLLOQUY_REQUIRE_POSTGRES", "1");
            let flags = serde_json::json!({ "listen": "127.0.0.1:9001" });
            let config = Config::load(Path::new("colloquy.toml"), flags).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
            assert_eq!(config.agent.model.as_deref(), Some("from-env"));
            assert_eq!(config.agent.system_prompt.as_deref(), Some("file prompt"));
            assert_eq!(config.providers.keys().collect::<Vec<_>>(), ["demo", "local"]);
            assert_eq!(config.database_url, "sqlite://colloquy.db?mode=rwc");
            Ok(())
        });
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment's Jail fixes the closure's error type")]
    fn anthropic_takes_its_key_from_the_environment_and_pricing_from_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "colloquy.toml",
                r#"
                [providers.claude]
                kind = "anthropic"
                [providers.claude.pricing.claude-next]
                input = 2.0
                output = 8.0
                cache_read = 0.2
                "#,
            )?;
            jail.set_env("ANTHROPIC_API_KEY", "sk-ant-from-env");
            let config = Config::load(Path::new("colloquy.toml"), serde_json::json!({})).map_err(|e| e.to_string())?;
            let Some(ProviderConfig::Anthropic { base_url, api_key, pricing, .. }) = config.providers.get("claude")
            else {
                return Err("expected the anthropic provider".into());
            };
            assert_eq!(base_url, ANTHROPIC_BASE_URL);
            assert_eq!(api_key.as_ref().map(|key| key.expose_secret().to_owned()).as_deref(), Some("sk-ant-from-env"));
            let expected = ModelPrice { input: 2.0, output: 8.0, cache_read: Some(0.2), cache_write: None };
            assert_eq!(pricing.get("claude-next"), Some(&expected));
            assert!(!format!("{config:?}").contains("sk-ant-from-env"));
            Ok(())
        });
    }

    #[test]
    fn auth_off_is_refused_on_an_address_other_machines_reach() {
        let local = Config::from_value(serde_json::json!({ "auth": "off" })).map_err(|e| e.to_string());
        assert_eq!(local.map(|c| c.check()), Ok(Ok(())));
        let open = Config::from_value(serde_json::json!({ "auth": "off", "listen": "0.0.0.0:8080" }));
        let refused = open.map_err(|e| e.to_string()).and_then(|c| c.check());
        assert!(refused.is_err_and(|e| e.contains("local development only")));
    }

    #[test]
    fn a_cluster_needs_postgres_and_names_nats_can_carry() {
        let checked = |value: serde_json::Value| {
            Config::from_value(value).map_err(|e| e.to_string()).and_then(|config| config.check())
        };
        let postgres = "postgres://postgres@127.0.0.1:5432/colloquy";
        let node = serde_json::json!({ "database_url": postgres, "cluster": { "node_id": "gw-1" } });
        assert_eq!(checked(node), Ok(()));
        let sqlite = checked(serde_json::json!({ "cluster": { "node_id": "gw-1" } })).unwrap_err();
        assert!(sqlite.contains("postgres://") && sqlite.contains("sqlite"), "{sqlite}");
        let dotted = checked(serde_json::json!({ "database_url": postgres, "cluster": { "node_id": "gw.1" } }));
        assert!(dotted.unwrap_err().contains("node_id"));
        let defaults = Config::from_value(serde_json::json!({ "cluster": { "node_id": "n" } })).map(|c| c.cluster);
        let defaults = defaults.ok().flatten().map(|c| (c.nats_url, c.subject_prefix, c.lease_ttl_ms, c.gap_check_ms));
        assert_eq!(defaults, Some(("nats://127.0.0.1:4222".to_owned(), "colloquy".to_owned(), 10_000, 1_000)));
        assert_eq!(Config::from_value(serde_json::json!({})).map(|c| c.cluster.is_none()).ok(), Some(true));
    }

    #[test]
    fn an_unknown_key_is_a_clear_error() {
        let error = Config::from_value(serde_json::json!({ "lisen": "127.0.0.1:1" })).map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
    }
}
