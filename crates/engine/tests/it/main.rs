//! The engine's turn loop against the scripted provider and a real SQLite store.

mod support;
mod turns;
