//! Built-in tools: small, useful, and without network access.

mod calculator;
mod clock;
mod json_query;

pub use calculator::Calculator;
pub use clock::Clock;
pub use json_query::JsonQuery;

use std::sync::Arc;

use crate::Tool;

/// Every built-in tool.
pub(crate) fn all() -> Vec<Arc<dyn Tool>> {
    vec![Arc::new(Calculator), Arc::new(Clock), Arc::new(JsonQuery)]
}
