//! Colloquy's gateway: the axum server that speaks the WebSocket protocol and REST API to
//! clients, over the engine.
//!
//! Architecture invariant: only this crate knows WebSocket frames, HTTP status codes and the
//! configuration file; it maps every error to a stable code and never leaks internals.
//! [`serve`] takes its listener and shutdown signal from the caller, so `main` and the tests run
//! the very same server.

mod body;
pub mod config;
mod error;
mod protocol;
mod providers;
mod rest;
mod ws;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use colloquy_core_model::AgentSpec;
use colloquy_engine::Engine;
use colloquy_store::{SeaStore, StoreOptions};
use colloquy_tools::{ToolExecutor, ToolRegistry};
use tokio::net::TcpListener;

pub use config::Config;
pub use error::ApiError;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Runs conversations.
    pub engine: Engine,
    /// The configuration it was started with.
    pub config: Arc<Config>,
    /// The agent a conversation gets when created without one.
    pub default_agent: AgentSpec,
}

impl AppState {
    /// Opens the store (migrating it), builds providers and tools. Returns the state and the
    /// lines to show at start.
    pub async fn build(config: Config) -> anyhow::Result<(Self, Vec<String>)> {
        let store = SeaStore::connect(&config.database_url, StoreOptions::default()).await?;
        let registry = ToolRegistry::with_builtins();
        let providers = providers::build(&config, registry.names()).await;
        let engine = Engine::new(Arc::new(store), providers.registry, ToolExecutor::new(Arc::new(registry)));
        let mut banner = providers.banner;
        let recovered = engine.recover().await?;
        if recovered > 0 {
            banner.push(format!("recovering {recovered} turn(s) left open by an earlier stop"));
        }
        let state = Self { engine, config: Arc::new(config), default_agent: providers.default_agent };
        Ok((state, banner))
    }
}

/// The gateway's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(rest::readyz))
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/conversations", post(rest::create_conversation))
        .route("/v1/conversations/{id}", get(rest::get_conversation))
        .route("/v1/conversations/{id}/messages", get(rest::list_messages))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}
