//! Colloquy's gateway: the axum server that speaks the WebSocket protocol and REST API to
//! clients, over the engine.
//!
//! Architecture invariant: only this crate knows WebSocket frames, HTTP status codes and the
//! configuration file; it maps every error to a stable code and never leaks internals. Every
//! route and frame is authorized by the one function in [`policy`]. [`serve`] takes its
//! listener and shutdown signal from the caller, so `main` and the tests run the very same
//! server.

mod a2a;
mod acp;
mod answer;
mod approval;
mod auth;
mod cluster;
pub mod config;
mod error;
mod extract;
mod limits;
mod openapi;
mod policy;
mod presence;
mod protocol;
mod providers;
mod request_id;
mod rest;
mod server;
mod telemetry;
mod web;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use colloquy_core_model::{AccountId, AccountKind, AgentSpec};
use colloquy_engine::Engine;
use colloquy_store::{ApiKeyId, NewAccount, NewApiKey, SeaStore};
use colloquy_tools::{ToolExecutor, ToolRegistry};
use tokio_util::sync::CancellationToken;

pub use acp::serve_stdio as serve_acp;
pub use auth::{KEY_SUBPROTOCOL_PREFIX, SUBPROTOCOL, new_secret};
pub use config::Config;
pub use error::{ApiError, ErrorCode};
pub use server::serve;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Runs conversations.
    pub engine: Engine,
    /// The configuration it was started with.
    pub config: Arc<Config>,
    /// The agent a conversation gets when created without one.
    pub default_agent: AgentSpec,
    /// The named agents (`[agents.NAME]`), each an A2A agent of its own.
    pub agents: Arc<std::collections::BTreeMap<String, AgentSpec>>,
    /// Checks API keys.
    auth: Arc<auth::Auth>,
    /// Connection and rate counters.
    limits: Arc<limits::Counters>,
    /// Who is connected to which conversation.
    presence: Arc<presence::Presence>,
    /// Cancelled when the server starts to stop: connections close (1001), new ones are refused.
    shutdown: CancellationToken,
    /// This node's link to the others, in a cluster.
    cluster: Option<Arc<cluster::Cluster>>,
}

impl AppState {
    /// Opens the store (migrating it), builds providers and tools, and starts recovery. Returns
    /// the state and the lines to show at start.
    pub async fn build(config: Config) -> anyhow::Result<(Self, Vec<String>)> {
        config.check().map_err(anyhow::Error::msg)?;
        telemetry::install();
        let store = SeaStore::connect(&config.database_url, config.store_options()).await?;
        let registry = ToolRegistry::with_builtins();
        if let Some(unknown) = config.tools.require_approval.iter().find(|tool| !registry.contains(tool)) {
            anyhow::bail!(
                "tools.require_approval names `{unknown}`, which is not a tool: use some of {}",
                registry.names().join(", ")
            );
        }
        let providers = providers::build(&config, registry.names()).await;
        let mut executor = ToolExecutor::new(Arc::new(registry));
        if !config.tools.require_approval.is_empty() {
            executor = executor.with_approval(approval::RequireApproval::new(&config.tools.require_approval));
        }
        let engine = Engine::new(Arc::new(store), providers.registry, executor);
        engine.set_max_queued_prompts(config.limits.max_queued_prompts);
        engine.set_provider_idle_timeout(std::time::Duration::from_secs(config.limits.provider_idle_secs));
        let mut banner = providers.banner;
        let shutdown = CancellationToken::new();
        // Before recovery: in a cluster, recovery takes leases and leaves other nodes' turns alone.
        let cluster = match &config.cluster {
            Some(settings) => {
                let cluster = cluster::Cluster::join(settings, &engine, shutdown.clone()).await?;
                banner.push(format!(
                    "cluster node `{}`: NATS {} ({}), lease TTL {} ms",
                    settings.node_id,
                    settings.nats_url,
                    if cluster.nats_connected() { "connected" } else { "not connected yet: serving from the database" },
                    settings.lease_ttl_ms
                ));
                Some(cluster)
            }
            None => None,
        };
        if config.auth == config::AuthMode::Off {
            banner.push("auth is OFF: everyone who can reach this address is an admin (local development only)".into());
        }
        let recovered = engine.recover().await?;
        if recovered > 0 {
            banner.push(format!("recovering {recovered} turn(s) left open by an earlier stop"));
        }
        let quarantined = engine.quarantined();
        if !quarantined.is_empty() {
            banner.push(format!(
                "{} conversation(s) quarantined (stored data unreadable, see /readyz): {}",
                quarantined.len(),
                quarantined.iter().map(|q| q.conversation.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        let auth = Arc::new(auth::Auth::new(config.auth, engine.clone()));
        auth.watch_revocations();
        let limits = Arc::new(limits::Counters::new(config.limits.clone()));
        let state = Self {
            engine,
            config: Arc::new(config),
            default_agent: providers.default_agent,
            agents: Arc::new(providers.agents),
            auth,
            limits,
            presence: Arc::default(),
            shutdown,
            cluster,
        };
        Ok((state, banner))
    }

    /// Cancels the conversation's running turn, on this node or (in a cluster) on the one that
    /// runs it; returns whether one was running.
    pub(crate) async fn cancel(&self, conversation: colloquy_core_model::ConversationId) -> bool {
        if self.engine.cancel(conversation) {
            return true;
        }
        match &self.cluster {
            Some(cluster) => cluster.cancel(conversation).await,
            None => false,
        }
    }

    /// Answers a tool call waiting for approval, on this node or (in a cluster) on the one
    /// whose turn waits for it.
    pub(crate) async fn answer_approval(
        &self,
        conversation: colloquy_core_model::ConversationId,
        call: &colloquy_core_model::ToolCallId,
        answer: colloquy_tools::ApprovalAnswer,
    ) -> Result<(), ApiError> {
        match self.engine.answer_approval(conversation, call, answer.clone()) {
            Err(error @ colloquy_engine::EngineError::ApprovalNotPending { .. }) => match &self.cluster {
                Some(cluster) if cluster.answer_approval(conversation, call, &answer).await => Ok(()),
                _ => Err(error.into()),
            },
            other => Ok(other?),
        }
    }

    /// Whether requests must present an API key.
    pub(crate) fn auth_is_on(&self) -> bool {
        self.auth.is_on()
    }

    /// This node's cluster status for `/readyz`: its name and whether NATS is connected.
    pub(crate) fn cluster_status(&self) -> Option<(String, bool)> {
        self.cluster.as_ref().map(|cluster| (cluster.node_id().to_owned(), cluster.nats_connected()))
    }

    /// On a database with no account yet, creates the admin account `admin` and a key for it,
    /// and returns the key's secret (to be shown once). `None` when there are accounts already
    /// or auth is off.
    pub async fn first_run_admin_key(&self) -> anyhow::Result<Option<String>> {
        if !self.auth.is_on() || !self.engine.accounts().await?.is_empty() {
            return Ok(None);
        }
        let account = self
            .engine
            .create_account(NewAccount {
                id: AccountId::new(),
                name: "admin".to_owned(),
                kind: AccountKind::Admin,
                display_name: "admin".to_owned(),
            })
            .await?;
        let secret = new_secret()?;
        let key = NewApiKey {
            id: ApiKeyId::new(),
            secret: secret.clone(),
            label: Some("created at first start".to_owned()),
            account: account.id,
            expires_at: None,
        };
        self.engine.create_api_key(key).await?;
        Ok(Some(secret))
    }
}

/// Every route, as `(method, path)`: those of the OpenAPI description, and beside it the A2A
/// ones and the chat page's. The authorization test checks that its table has a row for each,
/// so a new route cannot go untested.
pub fn routes() -> Vec<(String, String)> {
    let (_, document) = openapi::routes().split_for_parts();
    let mut routes = Vec::new();
    for (path, item) in document.paths.paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PATCH", item.patch.is_some()),
            ("PUT", item.put.is_some()),
            ("DELETE", item.delete.is_some()),
        ];
        routes.extend(methods.into_iter().filter(|(_, has)| *has).map(|(method, _)| (method.to_owned(), path.clone())));
    }
    let beside = a2a::ROUTES.iter().chain(web::ROUTES.iter());
    routes.extend(beside.map(|(method, path)| ((*method).to_owned(), (*path).to_owned())));
    routes
}

/// The OpenAPI description, as `GET /openapi.json` serves it.
pub fn openapi_json() -> &'static str {
    openapi::json()
}

/// Every client frame type: the authorization test has a row for each.
pub const FRAMES: [&str; 8] = protocol::CLIENT_FRAME_TYPES;

/// The gateway's routes, with the documented error body for everything they refuse.
pub fn app(state: AppState) -> Router {
    let limits = &state.config.limits;
    let body_timeout = Duration::from_millis(limits.body_read_timeout_ms);
    let body_limit = limits.max_body_bytes;
    let (router, _) = openapi::routes().split_for_parts();
    // The chat page is a client, not part of the API: public assets outside the document.
    router
        .merge(web::router())
        .merge(a2a::router())
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
        .layer(axum::middleware::from_fn(request_id::errors_carry_it))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_id::span))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(tower_http::request_id::MakeRequestUuid))
        .with_state(state)
}
