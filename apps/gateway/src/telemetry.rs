//! The gateway's side of telemetry: the Prometheus recorder behind `/metrics` (installed once
//! per process), its own metrics (connections, subscriptions, slow readers), and logs.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's recorder; `None` if another one was installed first (an embedding program's).
fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).as_ref()
}

/// Installs the recorder, so that metrics are counted from the start; the gauges read 0 until
/// something happens (rather than being absent, which dashboards cannot tell from a failure).
pub fn install() {
    if handle().is_some() {
        for gauge in ["colloquy_ws_connections", "colloquy_ws_subscriptions", "colloquy_queued_prompts"] {
            metrics::gauge!(gauge).increment(0.0);
        }
        metrics::counter!("colloquy_ws_slow_readers_dropped_total").increment(0);
    }
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    handle().map_or_else(
        || "# metrics go to the recorder the embedding program installed\n".to_owned(),
        PrometheusHandle::render,
    )
}

/// A WebSocket connection opened (`+1`) or closed (`-1`).
pub fn connections(by: f64) {
    metrics::gauge!("colloquy_ws_connections").increment(by);
}

/// A subscription started (`+1`) or ended (`-1`).
pub fn subscriptions(by: f64) {
    metrics::gauge!("colloquy_ws_subscriptions").increment(by);
}

/// A client that did not read its events was disconnected.
pub fn slow_reader_dropped() {
    metrics::counter!("colloquy_ws_slow_readers_dropped_total").increment(1);
}
