//! Built-in tools: small, useful, and without network access.

mod calculator;

pub use calculator::Calculator;

use std::sync::Arc;

use crate::Tool;

/// Every built-in tool.
pub(crate) fn all() -> Vec<Arc<dyn Tool>> {
    vec![Arc::new(Calculator)]
}
