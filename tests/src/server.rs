//! The part every mock provider shares: a local axum server on a free port whose handler sees
//! a script of replies, stopped when the mock is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::routing::MethodRouter;
use tokio::sync::oneshot;

/// The state a mock's handler and its test share.
pub(crate) type Shared<S> = Arc<Mutex<S>>;

/// A running server on `127.0.0.1`; it shuts down when dropped.
#[derive(Debug)]
pub(crate) struct Server<S> {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// What the handler and the test share (replies left, requests seen).
    state: Shared<S>,
    /// Dropping it (with the server) stops the server.
    _shutdown: oneshot::Sender<()>,
}

impl<S: Send + 'static> Server<S> {
    /// Serves each handler at its path on a free port, with `state` shared.
    pub(crate) async fn start(state: S, routes: Vec<(&str, MethodRouter<Shared<S>>)>) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = routes.into_iter().fold(Router::new(), |app, (path, handler)| app.route(path, handler));
        let app = app.with_state(Arc::clone(&state));
        tokio::spawn(async move {
            // The only failure is the listener breaking, which the test sees as a network error.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { addr, state, _shutdown: shutdown })
    }

    /// The shared state; a panic in a handler cannot leave it half-updated.
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        lock(&self.state)
    }
}

/// Locks shared state, ignoring poisoning (every update is a single push or pop).
pub(crate) fn lock<S>(state: &Shared<S>) -> MutexGuard<'_, S> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
