//! The engine's turn loop against the scripted provider and a real SQLite store.

mod handle;
mod limits;
mod policies;
mod properties;
mod queueing;
mod recovery;
mod stop_reasons;
mod support;
mod turns;
