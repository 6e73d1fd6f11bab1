//! Colloquy's engine: runs prompt turns (history, LLM request, tool calls, results back to the
//! LLM, repeat until done or a limit stops it), records every step in the store and fans every
//! event out live to the conversation's subscribers.
//!
//! Architecture invariant: the engine knows conversations, providers, tools and the store through
//! their crates' traits only; it never sees WebSocket frames, HTTP or SQL. Every event it emits
//! is stored before it is published, so a subscriber that reconnects with its last `seq` misses
//! nothing, and every tool call it persists gets exactly one persisted result.

mod accounts;
mod cluster;
mod context;
mod conversations;
mod engine;
mod error;
mod fanout;
mod handle;
mod inner;
mod lease;
mod post;
mod recorder;
mod responders;
mod runner;
mod state;
mod table;
mod telemetry;
mod turn;

pub use colloquy_llm_providers::count_tokens;
pub use context::{ContextWindow, MessageTransformer, TransformContext};
pub use engine::{Engine, PostMessage, Posted, Quarantined, QueuePolicy};
pub use error::EngineError;
pub use fanout::{Delivery, Relay, Subscription};
pub use handle::{ConversationHandle, ConversationState, Generated, generate_with_tools};
pub use inner::{ClusterOptions, ProviderRegistry};
