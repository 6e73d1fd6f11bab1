//! The HTTP server: accepts connections (TCP_NODELAY on each, so no reply waits on Nagle's
//! algorithm), gives each a header read timeout (a client that sends headers slowly holds no
//! connection for long), and stops cleanly: no new connections, WebSocket clients told (1001),
//! running turns given their grace period and then cancelled, the store closed.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{AppState, app};

/// How long HTTP connections get to finish their requests once turns are done.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` completes, then stops cleanly (see the module docs).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app(state.clone());
    let header_timeout = Duration::from_millis(state.config.limits.header_read_timeout_ms);
    let connections = TaskTracker::new();
    let stop_http = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait a moment instead of spinning.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let stop = stop_http.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                outcome = connection.as_mut() => {
                    if let Err(error) = outcome {
                        tracing::debug!(%error, "http connection ended with an error");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("stopping: no new connections; telling clients, letting running turns finish");
    state.shutdown.cancel();
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let cancelled = state.engine.shutdown(grace).await;
    if cancelled > 0 {
        tracing::info!(cancelled, "cancelled turns still running after the grace period");
    }
    stop_http.cancel();
    connections.close();
    let _ = tokio::time::timeout(HTTP_DRAIN, connections.wait()).await;
    if let Err(error) = state.engine.close().await {
        tracing::warn!(%error, "could not close the store cleanly");
    }
    tracing::info!("stopped");
    Ok(())
}
