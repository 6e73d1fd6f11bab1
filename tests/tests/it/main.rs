//! End-to-end tests: the real gateway on port 0 with a temporary SQLite file, a local mock
//! OpenAI-compatible server, and WebSocket clients speaking the documented protocol.

mod a2a;
mod abuse;
mod authorization;
mod conversation;
mod correctness;
mod multi_party;
mod protocol_errors;
mod replay;
mod rest;
mod support;
