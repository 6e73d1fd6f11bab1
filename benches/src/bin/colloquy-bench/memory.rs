//! Memory: the gateway's RSS before and after `n` idle WebSocket connections, each subscribed to
//! one of a few conversations (bytes per connection); and before and after `n` conversations
//! that each ran one turn and went idle, with their clients gone (bytes per conversation). Each
//! is measured on a fresh gateway, so neither reuses memory the other freed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;

use crate::gateway::Gateway;
use crate::load::{Ws, connect, subscribe, turn};
use crate::mock::MockStats;

/// RSS before and after, and over how many.
pub struct MemoryResult {
    pub count: usize,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl MemoryResult {
    /// The growth per connection or conversation, in bytes.
    pub fn per_item(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.count.max(1) as f64
    }
}

/// Lets the gateway settle (freed buffers returned, tasks parked) before reading its RSS.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1_000)).await;
}

async fn open_subscribed(gateway: &Arc<Gateway>, conversations: &[String], count: usize) -> anyhow::Result<Vec<Ws>> {
    let opened = futures::stream::iter(0..count)
        .map(|index| {
            let gateway = Arc::clone(gateway);
            let conversation = conversations[index % conversations.len()].clone();
            async move {
                // Several loopback source addresses, so that source ports cannot run short.
                let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % 8) as u8);
                let mut ws = connect(&gateway, Some(source)).await?;
                subscribe(&mut ws, &conversation, "s").await?;
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

/// Bytes per idle subscribed connection, over `count` of them.
pub async fn connections(gateway: Arc<Gateway>, count: usize) -> anyhow::Result<MemoryResult> {
    let mut conversations = Vec::new();
    for _ in 0..(count / 100).clamp(1, 100) {
        conversations.push(gateway.create_conversation(&serde_json::json!({})).await?);
    }
    // Warm up: the first connections allocate what every later one shares.
    drop(open_subscribed(&gateway, &conversations, 64).await?);
    settle().await;
    let rss_before = gateway.rss_bytes()?;
    let mut held = Vec::with_capacity(count);
    let mut step = 0;
    while held.len() < count {
        let batch = (count - held.len()).min(1_000);
        held.extend(open_subscribed(&gateway, &conversations, batch).await.context("opening idle connections")?);
        step += 1;
        if step % 5 == 0 {
            crate::progress(&format!("memory: {} idle connections open", held.len()));
        }
    }
    settle().await;
    let rss_after = gateway.rss_bytes()?;
    drop(held);
    Ok(MemoryResult { count, rss_before, rss_after })
}

/// Bytes per idle conversation that ran one turn, over `count` of them.
pub async fn conversations(gateway: Arc<Gateway>, mock: Arc<MockStats>, count: usize) -> anyhow::Result<MemoryResult> {
    const WORKERS: usize = 16;
    let run = |count: usize| {
        let (gateway, mock) = (Arc::clone(&gateway), Arc::clone(&mock));
        async move {
            let mut workers = Vec::new();
            for worker in 0..WORKERS {
                let (gateway, mock) = (Arc::clone(&gateway), Arc::clone(&mock));
                let share = count / WORKERS + usize::from(worker < count % WORKERS);
                workers.push(tokio::spawn(async move {
                    for n in 0..share {
                        let mut ws = connect(&gateway, None).await?;
                        let conversation = gateway.create_conversation(&serde_json::json!({})).await?;
                        subscribe(&mut ws, &conversation, "s").await?;
                        turn(&mut ws, &conversation, n as u64, &mock).await?;
                        let _ = futures::SinkExt::close(&mut ws).await;
                    }
                    anyhow::Ok(())
                }));
            }
            for worker in workers {
                worker.await??;
            }
            anyhow::Ok(())
        }
    };
    run(2 * WORKERS).await?;
    settle().await;
    let rss_before = gateway.rss_bytes()?;
    run(count).await?;
    settle().await;
    let rss_after = gateway.rss_bytes()?;
    Ok(MemoryResult { count, rss_before, rss_after })
}
