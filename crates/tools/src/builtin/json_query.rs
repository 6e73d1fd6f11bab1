//! `json_query`: looks up values in the conversation's context (`options.context`) with a
//! JSONPath query (RFC 9535, by serde_json_path) or a JSON Pointer (RFC 6901).

use async_trait::async_trait;
use serde_json::json;
use serde_json_path::JsonPath;

use crate::{Tool, ToolContext, ToolError};

/// Queries the JSON the application attached to the conversation.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonQuery;

#[async_trait]
impl Tool for JsonQuery {
    fn name(&self) -> &str {
        "json_query"
    }

    fn description(&self) -> &str {
        "Looks up values in this conversation's context, the JSON the application attached to it (user, tenant, \
         settings, data). Takes a JSONPath query such as \"$.orders[?@.total > 100].id\" or a JSON Pointer such \
         as \"/user/name\"; returns every value it selects as a list (empty if nothing matches)."
    }

    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "description": "A JSONPath query starting with \"$\" (e.g. \"$.user.name\", \"$..id\"), or a JSON Pointer starting with \"/\" (e.g. \"/user/name\"); \"\" selects the whole context",
                    "maxLength": 1000
                }
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }

    fn replay_safe(&self) -> bool {
        true
    }

    async fn execute(&self, arguments: serde_json::Value, ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        let query = arguments.get("query").and_then(serde_json::Value::as_str).unwrap_or_default();
        let matches: Vec<serde_json::Value> = if query.is_empty() || query.starts_with('/') {
            ctx.context.pointer(query).cloned().into_iter().collect()
        } else if query.starts_with('$') {
            let path = JsonPath::parse(query).map_err(|e| {
                ToolError::new(format!(
                    "`{query}` is not a valid JSONPath query ({e}): write it like \"$.user.name\" or \"$.items[0]\""
                ))
            })?;
            path.query(&ctx.context).all().into_iter().cloned().collect()
        } else {
            return Err(ToolError::new(format!(
                "`{query}` is neither a JSONPath query nor a JSON Pointer: start it with \"$\" (e.g. \"$.user.name\") \
                 or with \"/\" (e.g. \"/user/name\")"
            )));
        };
        Ok(json!({ "query": query, "matches": matches }))
    }
}
