//! A runner's hold on its conversation in a cluster: the lease is taken before the runner's
//! first write, renewed every third of its TTL while the runner runs, and given up when it ends.
//! A runner whose lease is taken over (it was renewed too late: a pause, a partition) stops at
//! once, and the fence refuses whatever it still tries to write.

use std::sync::Arc;

use colloquy_core_model::ConversationId;
use colloquy_store::{Lease, StoreError};
use tokio::task::JoinHandle;

use crate::inner::Inner;

/// What a runner holds while it runs.
pub(crate) enum Hold {
    /// Not in a cluster: the runner table alone keeps turns one at a time.
    Solo,
    /// The conversation's lease, and the task that renews it.
    Leased { lease: Lease, renewer: JoinHandle<()> },
    /// Another node holds the lease: that node answers what is stored, this runner does nothing.
    Elsewhere,
}

/// Takes the conversation's lease for runner `id`, in a cluster.
pub(crate) async fn take(inner: &Arc<Inner>, conversation: ConversationId, id: u64) -> Result<Hold, StoreError> {
    let Some(options) = inner.cluster.get() else { return Ok(Hold::Solo) };
    let lease = match inner.store.acquire_lease(conversation, &options.node_id, options.lease_ttl).await {
        Ok(lease) => lease,
        Err(StoreError::LeaseHeld { .. }) => return Ok(Hold::Elsewhere),
        Err(error) => return Err(error),
    };
    inner.with_runner(conversation, |runner| {
        if runner.id == id {
            runner.lease = Some(lease.clone());
        }
    });
    crate::telemetry::lease("taken");
    let renewer = tokio::spawn(renew(Arc::clone(inner), conversation, id, options.lease_ttl));
    Ok(Hold::Leased { lease, renewer })
}

/// Gives the lease up (the runner has left the table). Returns whether it held one.
pub(crate) async fn release(inner: &Inner, conversation: ConversationId, hold: Hold) -> bool {
    let Hold::Leased { lease, renewer } = hold else { return false };
    renewer.abort();
    match inner.store.release_lease(&lease).await {
        // Stale: it expired and was taken, or this node took it again for a newer runner.
        Ok(()) | Err(StoreError::StaleLease(_)) => {}
        Err(error) => tracing::warn!(%conversation, %error, "could not give a lease up; it expires by itself"),
    }
    crate::telemetry::lease("released");
    true
}

async fn renew(inner: Arc<Inner>, conversation: ConversationId, id: u64, ttl: std::time::Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let current = inner.with_runner(conversation, |runner| runner.lease.clone().filter(|_| runner.id == id));
        let Some(Some(lease)) = current else { return };
        match inner.store.renew_lease(&lease, ttl).await {
            Ok(renewed) => {
                inner.with_runner(conversation, |runner| {
                    if runner.id == id {
                        runner.lease = Some(renewed);
                    }
                });
            }
            Err(StoreError::StaleLease(_)) => return lost(&inner, conversation, id),
            // Unknown (the database does not answer): once it has expired another node may
            // have it, so stop as if it was lost.
            Err(error) if chrono::Utc::now() >= lease.expires_at => {
                tracing::warn!(%conversation, %error, "could not renew the lease before it expired");
                return lost(&inner, conversation, id);
            }
            Err(error) => tracing::warn!(%conversation, %error, "could not renew the lease; trying again"),
        }
    }
}

/// Stops runner `id` at once: its turn is cancelled (its writes are refused by the fence from
/// now on) and it runs no further turn; the new holder recovers the turn.
fn lost(inner: &Inner, conversation: ConversationId, id: u64) {
    tracing::warn!(%conversation, "lost the conversation's lease to another node: its runner stops here");
    crate::telemetry::lease("lost");
    inner.with_runner(conversation, |runner| {
        if runner.id == id {
            runner.stopping = true;
            runner.cancel.cancel();
        }
    });
}
