//! `calculator`: evaluates an arithmetic expression (exmex, f64).

use async_trait::async_trait;
use serde_json::json;

use crate::{Tool, ToolContext, ToolError};

/// Evaluates expressions such as `(2 + 3) * 4 / 7`, `2^10` or `sqrt(2) * sin(0.5)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Calculator;

#[async_trait]
impl Tool for Calculator {
    fn name(&self) -> &str {
        "calculator"
    }

    fn description(&self) -> &str {
        "Evaluates an arithmetic expression and returns the number. Supports + - * / ^, parentheses, \
         and functions such as sqrt, sin, cos, tan, ln, exp, abs; the constants PI and E."
    }

    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "description": "The expression, e.g. \"(2 + 3) * 4\"",
                    "minLength": 1,
                    "maxLength": 1000
                }
            },
            "required": ["expression"],
            "additionalProperties": false
        })
    }

    fn replay_safe(&self) -> bool {
        true
    }

    async fn execute(&self, arguments: serde_json::Value, _ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        let expression = arguments.get("expression").and_then(serde_json::Value::as_str).unwrap_or_default();
        let value = exmex::eval_str::<f64>(expression).map_err(|e| {
            ToolError::new(format!("cannot evaluate `{expression}`: {e}; use numbers, + - * / ^ and parentheses"))
        })?;
        if !value.is_finite() {
            return Err(ToolError::new(format!("`{expression}` has no finite value (division by zero or overflow)")));
        }
        Ok(json!({ "expression": expression, "result": value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ToolContext {
        ToolContext::new(
            colloquy_core_model::ConversationId::new(),
            colloquy_core_model::ParticipantId::new(),
            serde_json::Value::Null,
            tokio_util::sync::CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn evaluates_with_float_division_and_precedence() {
        let out = Calculator.execute(json!({"expression": "(2 + 3) * 4 / 8"}), &ctx()).await;
        assert_eq!(out, Ok(json!({"expression": "(2 + 3) * 4 / 8", "result": 2.5})));
        let out = Calculator.execute(json!({"expression": "2^10"}), &ctx()).await;
        assert_eq!(out.map(|v| v["result"].clone()), Ok(json!(1024.0)));
    }

    #[tokio::test]
    async fn a_bad_expression_or_division_by_zero_is_a_clear_error() {
        let err = Calculator.execute(json!({"expression": "2 +* x("}), &ctx()).await;
        assert!(matches!(&err, Err(ToolError(m)) if m.starts_with("cannot evaluate")), "{err:?}");
        let err = Calculator.execute(json!({"expression": "1/0"}), &ctx()).await;
        assert!(matches!(&err, Err(ToolError(m)) if m.contains("no finite value")), "{err:?}");
    }
}
