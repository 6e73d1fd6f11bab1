//! One engine turn as DESIGN §10 defines it (user message, LLM reply with 4 parallel tool calls,
//! second LLM request, answer) with the scripted provider and SQLite in a temp dir: the engine's
//! and store's own cost per turn, without any network.

use std::time::{Duration, Instant};

use colloquy_benches::TurnFixture;
use colloquy_engine::PostMessage;
use criterion::{Criterion, criterion_group, criterion_main};

fn engine_turn(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let Ok(runtime) = runtime else { return };
    let Ok(fixture) = runtime.block_on(TurnFixture::new()) else { return };
    c.bench_function("engine_turn/4_tools/sqlite", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let fixture = &fixture;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh conversation per turn keeps every turn's history the same size.
                    let Ok(conversation) = fixture.conversation().await else { continue };
                    let post = PostMessage::text("compute");
                    let start = Instant::now();
                    if fixture.engine.post_message(conversation, post).await.is_ok() {
                        fixture.engine.wait_for_idle(conversation).await;
                    }
                    total += start.elapsed();
                }
                total
            }
        });
    });
}

criterion_group!(benches, engine_turn);
criterion_main!(benches);
