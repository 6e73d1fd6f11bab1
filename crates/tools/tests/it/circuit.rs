//! The circuit breaker: opens after consecutive failures, fails fast while open, lets one trial
//! through after the cool-down, and closes on its success. Time is tokio's paused clock.

use std::time::Duration;

use colloquy_tools::{CircuitBreakerConfig, CircuitState, ExecutionEvent, ExecutorConfig};
use futures::StreamExt;
use serde_json::json;

use crate::support::{Fixture, call, ctx, only_result, probe};

fn circuit_changes(events: &[ExecutionEvent]) -> Vec<CircuitState> {
    events
        .iter()
        .filter_map(|event| match event {
            ExecutionEvent::CircuitChanged { tool, state, .. } if tool == "probe" => Some(*state),
            _ => None,
        })
        .collect()
}

/// Fails the probe `n` times, one execution after another.
async fn fail(f: &Fixture, n: usize) -> Vec<ExecutionEvent> {
    let mut last = Vec::new();
    for i in 0..n {
        last = f.events(vec![probe(&format!("f{i}"), "fail")]).await;
    }
    last
}

#[tokio::test(start_paused = true)]
async fn opens_after_five_consecutive_failures_and_then_fails_fast_without_running() {
    let f = Fixture::new(None);
    let fourth = fail(&f, 4).await;
    assert_eq!(circuit_changes(&fourth), vec![]);
    assert_eq!(f.executor.circuit_state("probe"), CircuitState::Closed);

    let fifth = f.events(vec![probe("f5", "fail")]).await;
    assert_eq!(circuit_changes(&fifth), vec![CircuitState::Open]);
    let (is_error, content) = only_result(&fifth);
    assert!(is_error);
    assert_eq!(
        content,
        "failed as asked\n\n[circuit open for `probe` after 5 consecutive failures: calls to it fail fast for the next \
         30 s]"
    );
    assert_eq!(f.runs(), 5);

    // Another conversation meets the same open circuit; the tool does not run.
    let fast = f.events(vec![probe("later", "ok")]).await;
    let (is_error, content) = only_result(&fast);
    assert!(is_error);
    assert!(
        content.starts_with("circuit open for `probe` after 5 consecutive failures; retrying after 30 s"),
        "{content}"
    );
    assert_eq!(f.runs(), 5);

    tokio::time::advance(Duration::from_secs(20)).await;
    let (_, content) = only_result(&f.events(vec![probe("later2", "ok")]).await);
    assert!(content.contains("retrying after 10 s"), "{content}");
    assert_eq!(f.runs(), 5);
}

#[tokio::test(start_paused = true)]
async fn half_opens_after_the_cool_down_lets_one_trial_through_and_its_success_closes_it() {
    let f = Fixture::new(None);
    fail(&f, 5).await;
    tokio::time::advance(Duration::from_secs(30)).await;

    // The trial is slow; while it runs, other calls still fail fast.
    let mut trial = f.executor.execute(
        vec![probe("trial", "slow")],
        &["probe".to_owned()],
        ctx(json!(null)),
        ExecutorConfig::default(),
    );
    loop {
        match trial.next().await.unwrap() {
            ExecutionEvent::CircuitChanged { state, .. } => {
                assert_eq!(state, CircuitState::HalfOpen);
                break;
            }
            ExecutionEvent::Finished { result, .. } => panic!("the trial finished before half-opening: {result:?}"),
            _ => {}
        }
    }
    assert_eq!(f.executor.circuit_state("probe"), CircuitState::HalfOpen);
    let (is_error, content) = only_result(&f.events(vec![probe("meanwhile", "ok")]).await);
    assert!(is_error && content.starts_with("circuit half-open for `probe`"), "{content}");
    assert_eq!(f.runs(), 6, "only the trial ran");

    let rest: Vec<_> = trial.collect().await;
    assert_eq!(circuit_changes(&rest), vec![CircuitState::Closed]);
    assert_eq!(
        only_result(&rest),
        (false, "slow but fine\n\n[circuit for `probe` closed: the trial call succeeded]".to_owned())
    );
    assert_eq!(f.executor.circuit_state("probe"), CircuitState::Closed);

    let (is_error, _) = only_result(&f.events(vec![probe("after", "ok")]).await);
    assert!(!is_error);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_it_again_for_another_cool_down() {
    let f = Fixture::new(None);
    fail(&f, 5).await;
    tokio::time::advance(Duration::from_secs(31)).await;
    let trial = f.events(vec![probe("trial", "panic")]).await;
    assert_eq!(circuit_changes(&trial), vec![CircuitState::HalfOpen, CircuitState::Open]);
    let (_, content) = only_result(&trial);
    assert!(content.contains("panicked") && content.contains("after 6 consecutive failures"), "{content}");

    let (_, content) = only_result(&f.events(vec![probe("again", "ok")]).await);
    assert!(content.contains("retrying after 30 s"), "{content}");
    assert_eq!(f.runs(), 6);
}

#[tokio::test(start_paused = true)]
async fn timeouts_count_as_failures() {
    let f = Fixture::new(None)
        .with_breaker(CircuitBreakerConfig { failure_threshold: 2, cool_down: Duration::from_secs(5) });
    let config = ExecutorConfig { timeout: Duration::from_secs(1), ..ExecutorConfig::default() };
    let events = f.events_with(vec![probe("a", "slow"), probe("b", "slow")], ctx(json!(null)), config).await;
    assert_eq!(circuit_changes(&events), vec![CircuitState::Open]);
    assert_eq!(f.executor.circuit_state("probe"), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn refusals_do_not_count_and_a_success_resets_the_count() {
    let f = Fixture::new(None);
    // Invalid arguments are the model's mistake, not the tool's.
    for i in 0..10 {
        f.events(vec![call(&format!("bad{i}"), "probe", json!({"mode": "sideways"}))]).await;
    }
    // A success resets the count.
    fail(&f, 4).await;
    f.events(vec![probe("ok", "ok")]).await;
    fail(&f, 4).await;
    assert_eq!(f.executor.circuit_state("probe"), CircuitState::Closed);
    let (is_error, content) = only_result(&f.events(vec![probe("ok2", "ok")]).await);
    assert_eq!((is_error, content.as_str()), (false, "fine"));
}
