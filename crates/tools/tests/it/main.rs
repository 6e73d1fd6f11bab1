//! Behaviour of the tool registry and executor as the engine sees it.

#![expect(clippy::unwrap_used, reason = "a failed fixture set-up should fail the test loudly")]

mod approval;
mod authorization;
mod builtins;
mod circuit;
mod executor;
mod output;
mod support;
