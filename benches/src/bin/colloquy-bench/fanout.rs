//! Fan-out: `subscribers` WebSocket connections follow one conversation (a multi-party one with
//! no agent, so nothing but the posted message happens); another connection posts a message per
//! round, and every subscriber notes when its `message_posted` arrives. Per round, deliveries/s
//! is the subscribers over the time from the send to the last delivery; the latency of each
//! delivery is its arrival minus the send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::gateway::Gateway;
use crate::load::{connect, histogram, micros, request, subscribe};

/// What the fan-out scenario measured.
pub struct FanoutResult {
    pub subscribers: usize,
    pub rounds: usize,
    /// Median over rounds of subscribers / (last delivery - send).
    pub deliveries_per_second: f64,
    /// Per delivery, microseconds.
    pub latency: Histogram<u64>,
    /// Deliveries that never came within 10 s.
    pub missing: u64,
    /// Whether the conversation had to have an agent (the multi-party one could not be made).
    pub with_agent: bool,
}

pub async fn run(gateway: Arc<Gateway>, subscribers: usize, rounds: usize) -> anyhow::Result<FanoutResult> {
    let quiet = serde_json::json!({"kind": "multi_party", "participants": [{"kind": "user", "display_name": "bench"}]});
    let (conversation, with_agent) = match gateway.create_conversation(&quiet).await {
        Ok(id) => (id, false),
        Err(error) => {
            crate::progress(&format!(
                "fan-out: a conversation without agent was refused ({error:#}); using the default one"
            ));
            (gateway.create_conversation(&serde_json::json!({})).await?, true)
        }
    };
    let (deliveries, mut received) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut readers = Vec::with_capacity(subscribers);
    let opened = futures::stream::iter(0..subscribers)
        .map(|index| {
            let (gateway, conversation) = (Arc::clone(&gateway), conversation.clone());
            async move {
                let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % 8) as u8);
                let mut ws = connect(&gateway, Some(source)).await?;
                subscribe(&mut ws, &conversation, "s").await?;
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for ws in opened {
        let mut ws = ws.context("a fan-out subscriber could not connect")?;
        let deliveries = deliveries.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                if !text.contains(r#""type":"message_posted""#) {
                    continue;
                }
                let at = Instant::now();
                if let Some(round) = round_of(&text) {
                    let _ = deliveries.send((round, at));
                }
            }
        }));
    }
    drop(deliveries);
    let mut sender = connect(&gateway, None).await?;
    let mut latency = histogram();
    let mut rates = Vec::with_capacity(rounds);
    let mut missing = 0;
    for round in 0..rounds {
        let frame = serde_json::json!({
            "type": "send",
            "id": format!("f{round}"),
            "conversation_id": conversation,
            "content": format!("bench-fanout-{round}-end"),
        });
        let sent = Instant::now();
        sender.send(Message::text(frame.to_string())).await?;
        let mut got = 0;
        let mut last = sent;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < subscribers {
            match tokio::time::timeout_at(deadline, received.recv()).await {
                Ok(Some((r, at))) if r == round => {
                    got += 1;
                    last = last.max(at);
                    let _ = latency.record(micros(at - sent));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        missing += (subscribers - got) as u64;
        rates.push(got as f64 / (last - sent).as_secs_f64().max(1e-9));
        // The sender's own ack (and, with an agent, the turn) must be over before the next round.
        drain_until_ack(&mut sender, &format!("f{round}")).await?;
        if with_agent {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let _ = request(&mut sender, serde_json::json!({"type": "ping", "id": "bye"})).await;
    for reader in &readers {
        reader.abort();
    }
    rates.sort_by(f64::total_cmp);
    let deliveries_per_second = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    Ok(FanoutResult { subscribers, rounds, deliveries_per_second, latency, missing, with_agent })
}

fn round_of(text: &str) -> Option<usize> {
    let at = text.find("bench-fanout-")? + "bench-fanout-".len();
    let rest = &text[at..];
    rest[..rest.find("-end")?].parse().ok()
}

async fn drain_until_ack(ws: &mut crate::load::Ws, id: &str) -> anyhow::Result<()> {
    let wanted = format!(r#""id":"{id}""#);
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no ack for a fan-out send")?
            .context("the sender's connection closed")??;
        if let Message::Text(text) = message
            && text.contains(&wanted)
        {
            return Ok(());
        }
    }
}
