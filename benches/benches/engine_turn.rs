//! One engine turn as DESIGN §10 defines it (user message, LLM reply with 4 parallel tool calls,
//! second LLM request, answer) with the scripted provider and SQLite in a temp dir: the engine's
//! and store's own cost per turn, without any network.

use std::time::{Duration, Instant};

use colloquy_benches::TurnFixture;
use colloquy_engine::PostMessage;
use colloquy_store::Durability;
use criterion::{Criterion, criterion_group, criterion_main};

fn engine_turn(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => panic!("cannot start a tokio runtime: {error}"),
    };
    for (name, durability) in [("full", Durability::Full), ("normal", Durability::Normal)] {
        let fixture = match runtime.block_on(TurnFixture::with_durability(durability)) {
            Ok(fixture) => fixture,
            Err(error) => panic!("cannot open the bench store: {error}"),
        };
        // Measure the right thing: one turn must run both requests and all four tools.
        if let Err(problem) = runtime.block_on(fixture.check_one_turn()) {
            panic!("the benched turn is not the one DESIGN §10 describes: {problem}");
        }
        c.bench_function(&format!("engine_turn/4_tools/sqlite_{name}"), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let fixture = &fixture;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // A fresh conversation per turn keeps every turn's history the same size.
                        let conversation = match fixture.conversation().await {
                            Ok(conversation) => conversation,
                            Err(error) => panic!("cannot create a conversation: {error}"),
                        };
                        let start = Instant::now();
                        if let Err(error) =
                            fixture.engine.post_message(conversation, PostMessage::text("compute")).await
                        {
                            panic!("the prompt was refused: {error}");
                        }
                        fixture.engine.wait_for_idle(conversation).await;
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
}

/// Criterion draws its plots with plotters, whose text needs a registered font (see
/// [`colloquy_benches::register_plot_font`]); without one it runs without plots.
fn config() -> Criterion {
    if colloquy_benches::register_plot_font() { Criterion::default() } else { Criterion::default().without_plots() }
}

criterion_group! {
    name = benches;
    config = config();
    targets = engine_turn
}
criterion_main!(benches);
