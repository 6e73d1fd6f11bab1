//! The engine's turn loop against the scripted provider and a real SQLite store.

mod limits;
mod queueing;
mod recovery;
mod support;
mod turns;
