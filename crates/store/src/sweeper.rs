//! The TTL sweeper: a background task that deletes conversations nobody has used for a while.

use std::sync::Arc;
use std::time::Duration;

use crate::ConversationStore;

/// When conversations are swept and how often the sweeper looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepPolicy {
    /// A conversation without activity for this long is deleted (archived ones never are).
    pub inactivity: Duration,
    /// How often the sweeper runs.
    pub every: Duration,
}

impl SweepPolicy {
    /// The default inactivity: 24 hours.
    pub const DEFAULT_INACTIVITY: Duration = Duration::from_secs(24 * 60 * 60);
    /// The default interval: one minute.
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);
}

impl Default for SweepPolicy {
    fn default() -> Self {
        Self { inactivity: Self::DEFAULT_INACTIVITY, every: Self::DEFAULT_EVERY }
    }
}

/// Runs [`ConversationStore::sweep_expired`] every `policy.every` until the task is aborted. A
/// failed sweep is logged and tried again at the next tick.
pub fn spawn_sweeper(store: Arc<dyn ConversationStore>, policy: SweepPolicy) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(policy.every.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match store.sweep_expired(chrono::Utc::now(), policy.inactivity).await {
                Ok(swept) if swept.is_empty() => {}
                Ok(swept) => tracing::info!(count = swept.len(), "swept inactive conversations"),
                Err(err) => tracing::warn!(error = %err, "sweeping inactive conversations failed; retrying later"),
            }
        }
    })
}
