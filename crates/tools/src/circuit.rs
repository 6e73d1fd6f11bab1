//! A circuit breaker per tool, shared by every conversation the executor serves: after repeated
//! failures a tool is not called for a while, then one trial call decides whether it is back.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Where a tool's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls run.
    Closed,
    /// Calls fail fast without running, until the cool-down has passed.
    Open,
    /// The cool-down has passed: one trial call runs, the others fail fast; its success closes
    /// the circuit, its failure opens it again.
    HalfOpen,
}

/// When circuits open and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures (the tool's errors, timeouts, panics) that open a tool's circuit;
    /// refusals (invalid arguments, authorization, approval) do not count. `0` never opens it.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before letting a trial call through.
    pub cool_down: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cool_down: Duration::from_secs(30) }
    }
}

/// One tool's breaker. `failures` counts consecutive failures across every state, so messages
/// can say how many there were.
#[derive(Debug, Clone, Copy)]
enum Circuit {
    Closed { failures: u32 },
    Open { failures: u32, until: Instant },
    HalfOpen { failures: u32, trial_running: bool },
}

/// Every tool's breaker, by tool name (only registered tools get here, so the map stays small).
#[derive(Debug, Default)]
pub(crate) struct Circuits {
    config: CircuitBreakerConfig,
    circuits: Mutex<HashMap<String, Circuit>>,
}

/// How one run of a tool ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
}

/// Leave to run one call; dropped without [`Permit::record`] (the call was cancelled), it frees
/// the trial slot of a half-open circuit without deciding anything.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    circuits: &'a Circuits,
    tool: String,
    trial: bool,
}

impl Circuits {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        Self { config, circuits: Mutex::default() }
    }

    pub(crate) fn state(&self, tool: &str) -> CircuitState {
        match self.lock().get(tool) {
            None | Some(Circuit::Closed { .. }) => CircuitState::Closed,
            Some(Circuit::Open { .. }) => CircuitState::Open,
            Some(Circuit::HalfOpen { .. }) => CircuitState::HalfOpen,
        }
    }

    /// Fails fast if the call certainly may not run now, without taking the trial slot; used
    /// before asking for approval, so nobody is asked about a call that would not run.
    pub(crate) fn check(&self, tool: &str) -> Result<(), String> {
        match self.lock().get(tool) {
            Some(&Circuit::Open { failures, until }) if Instant::now() < until => {
                Err(open_message(tool, failures, until))
            }
            Some(&Circuit::HalfOpen { failures, trial_running: true }) => Err(trial_message(tool, failures)),
            _ => Ok(()),
        }
    }

    /// Lets a call run or fails it fast; also says if letting it run half-opened the circuit.
    pub(crate) fn admit(&self, tool: &str) -> Result<(Permit<'_>, Option<CircuitState>), String> {
        let mut circuits = self.lock();
        let circuit = circuits.entry(tool.to_owned()).or_insert(Circuit::Closed { failures: 0 });
        let (trial, changed) = match *circuit {
            Circuit::Closed { .. } => (false, None),
            Circuit::Open { failures, until } if Instant::now() < until => {
                return Err(open_message(tool, failures, until));
            }
            Circuit::Open { failures, .. } => {
                *circuit = Circuit::HalfOpen { failures, trial_running: true };
                (true, Some(CircuitState::HalfOpen))
            }
            Circuit::HalfOpen { failures, trial_running: true } => return Err(trial_message(tool, failures)),
            Circuit::HalfOpen { failures, trial_running: false } => {
                *circuit = Circuit::HalfOpen { failures, trial_running: true };
                (true, None)
            }
        };
        Ok((Permit { circuits: self, tool: tool.to_owned(), trial }, changed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Circuit>> {
        // A panic while holding the lock cannot leave a circuit half-written (every update is
        // one assignment), so a poisoned map is still sound.
        self.circuits.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Permit<'_> {
    /// Counts the call's outcome; returns the circuit's new state and a note for the model if it
    /// changed. Outcomes of ordinary calls that finish while the circuit is open or half-open
    /// (they were let in before it opened) change nothing: only the trial decides.
    pub(crate) fn record(mut self, outcome: Outcome) -> Option<(CircuitState, String)> {
        let config = self.circuits.config;
        let mut circuits = self.circuits.lock();
        let circuit = circuits.entry(self.tool.clone()).or_insert(Circuit::Closed { failures: 0 });
        let trial = std::mem::take(&mut self.trial);
        match (*circuit, outcome, trial) {
            (Circuit::HalfOpen { .. }, Outcome::Success, true) => {
                *circuit = Circuit::Closed { failures: 0 };
                Some((CircuitState::Closed, format!("circuit for `{}` closed: the trial call succeeded", self.tool)))
            }
            (Circuit::HalfOpen { failures, .. }, Outcome::Failure, true) => {
                let failures = failures.saturating_add(1);
                *circuit = Circuit::Open { failures, until: Instant::now() + config.cool_down };
                Some((CircuitState::Open, opened_note(&self.tool, failures, config.cool_down)))
            }
            (Circuit::Closed { .. }, Outcome::Success, _) => {
                *circuit = Circuit::Closed { failures: 0 };
                None
            }
            (Circuit::Closed { failures }, Outcome::Failure, _) => {
                let failures = failures.saturating_add(1);
                if config.failure_threshold > 0 && failures >= config.failure_threshold {
                    *circuit = Circuit::Open { failures, until: Instant::now() + config.cool_down };
                    Some((CircuitState::Open, opened_note(&self.tool, failures, config.cool_down)))
                } else {
                    *circuit = Circuit::Closed { failures };
                    None
                }
            }
            _ => None,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial {
            let mut circuits = self.circuits.lock();
            if let Some(Circuit::HalfOpen { trial_running, .. }) = circuits.get_mut(&self.tool) {
                *trial_running = false;
            }
        }
    }
}

fn open_message(tool: &str, failures: u32, until: Instant) -> String {
    let left = until.saturating_duration_since(Instant::now());
    format!(
        "circuit open for `{tool}` after {failures} consecutive failures; retrying after {} s: answer without \
         this tool for now, or call it again later",
        seconds(left)
    )
}

fn trial_message(tool: &str, failures: u32) -> String {
    format!(
        "circuit half-open for `{tool}` after {failures} consecutive failures: one trial call is running; \
         call it again once that call has finished"
    )
}

fn opened_note(tool: &str, failures: u32, cool_down: Duration) -> String {
    format!(
        "circuit open for `{tool}` after {failures} consecutive failures: calls to it fail fast for the next {} s",
        seconds(cool_down)
    )
}

/// Whole seconds, rounded up so "0 s" never appears while time is left.
fn seconds(duration: Duration) -> u128 {
    duration.as_millis().div_ceil(1000)
}
