//! The built-in `clock` and `json_query` tools, run through the executor as a model would.

use std::sync::Arc;

use colloquy_tools::{ExecutorConfig, ToolExecutor, ToolRegistry};
use serde_json::json;

use crate::support::{call, ctx};

async fn run(name: &str, arguments: serde_json::Value, context: serde_json::Value) -> (bool, serde_json::Value) {
    let registry = ToolRegistry::with_builtins();
    let offered = registry.names();
    let executor = ToolExecutor::new(Arc::new(registry));
    let results = executor
        .execute(vec![call("c", name, arguments)], &offered, ctx(context), ExecutorConfig::default())
        .results_in_order()
        .await;
    let result = &results[0];
    let content = serde_json::from_str(&result.content).unwrap_or(json!(result.content));
    (result.is_error, content)
}

#[test]
fn the_builtins_are_registered_and_replay_safe() {
    let registry = ToolRegistry::with_builtins();
    assert_eq!(registry.names(), vec!["calculator", "clock", "json_query"]);
    assert!(registry.names().iter().all(|name| registry.is_replay_safe(name)));
}

#[tokio::test]
async fn clock_converts_a_given_time_to_a_time_zone() {
    let (is_error, out) =
        run("clock", json!({"time_zone": "Europe/Paris", "time": "2024-03-10T12:00:00Z"}), json!(null)).await;
    assert!(!is_error, "{out}");
    assert_eq!(
        out,
        json!({
            "time_zone": "Europe/Paris",
            "time": "2024-03-10T13:00:00+01:00",
            "utc_offset": "+01:00",
            "abbreviation": "CET",
            "weekday": "Sunday",
            "unix": 1_710_072_000
        })
    );
    // Summer time, and an input given with its own offset.
    let (_, out) =
        run("clock", json!({"time_zone": "America/New_York", "time": "2024-07-01T14:30:00+02:00"}), json!(null)).await;
    assert_eq!((out["time"].as_str(), out["abbreviation"].as_str()), (Some("2024-07-01T08:30:00-04:00"), Some("EDT")));
}

#[tokio::test]
async fn clock_defaults_to_utc_now_and_explains_bad_input() {
    let (is_error, out) = run("clock", json!({}), json!(null)).await;
    assert!(!is_error);
    assert_eq!(out["time_zone"], "UTC");
    assert!(out["unix"].as_i64().unwrap() > 1_700_000_000);

    let (is_error, out) = run("clock", json!({"time_zone": "Mars/Olympus"}), json!(null)).await;
    assert!(is_error && out.as_str().unwrap().starts_with("unknown time zone `Mars/Olympus`"), "{out}");
    let (is_error, out) = run("clock", json!({"time": "yesterday"}), json!(null)).await;
    assert!(is_error && out.as_str().unwrap().starts_with("`yesterday` is not an RFC 3339 time"), "{out}");
}

#[tokio::test]
async fn json_query_selects_from_the_context_by_json_path_or_pointer() {
    let context = json!({
        "user": "ann",
        "orders": [{"id": 1, "total": 50}, {"id": 2, "total": 150}, {"id": 3, "total": 300}]
    });
    let query = |q: &str| run("json_query", json!({ "query": q }), context.clone());

    let (is_error, out) = query("$.orders[?@.total > 100].id").await;
    assert!(!is_error, "{out}");
    assert_eq!(out, json!({"query": "$.orders[?@.total > 100].id", "matches": [2, 3]}));
    assert_eq!(query("/user").await.1["matches"], json!(["ann"]));
    assert_eq!(query("/orders/0/total").await.1["matches"], json!([50]));
    assert_eq!(query("/missing").await.1["matches"], json!([]));
    assert_eq!(query("").await.1["matches"], json!([context.clone()]));

    let (is_error, out) = query("$.orders[").await;
    assert!(is_error && out.as_str().unwrap().starts_with("`$.orders[` is not a valid JSONPath query"), "{out}");
    let (is_error, out) = query("user.name").await;
    assert!(is_error && out.as_str().unwrap().contains("neither a JSONPath query nor a JSON Pointer"), "{out}");
}
