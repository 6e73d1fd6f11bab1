//! The executor: validation, bounded parallelism, timeouts, isolation, cancellation, order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use colloquy_core_model::{ConversationId, ParticipantId};
use colloquy_tools::{
    Calculator, ExecutionEvent, ExecutorConfig, Tool, ToolCallRequest, ToolContext, ToolError, ToolExecutor,
    ToolRegistry, ToolResult,
};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Sleeps for `ms` (virtual time in these tests), counting how many run at once.
struct Sleeper {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[async_trait]
impl Tool for Sleeper {
    fn name(&self) -> &str {
        "sleep"
    }
    fn description(&self) -> &str {
        "sleeps"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}, "required": ["ms"]})
    }
    async fn execute(&self, arguments: serde_json::Value, _ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(arguments["ms"].as_u64().unwrap_or(0))).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(json!("slept"))
    }
}

struct Panicker;

#[async_trait]
impl Tool for Panicker {
    fn name(&self) -> &str {
        "panics"
    }
    fn description(&self) -> &str {
        "always panics"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _arguments: serde_json::Value, _ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        panic!("boom")
    }
}

struct Fixture {
    executor: ToolExecutor,
    peak: Arc<AtomicUsize>,
    offered: Vec<String>,
}

fn fixture() -> Fixture {
    let peak = Arc::new(AtomicUsize::new(0));
    let mut registry = ToolRegistry::with_builtins();
    registry.register(Sleeper { running: Arc::new(AtomicUsize::new(0)), peak: Arc::clone(&peak) }).unwrap();
    registry.register(Panicker).unwrap();
    let offered = registry.names();
    Fixture { executor: ToolExecutor::new(Arc::new(registry)), peak, offered }
}

fn ctx() -> ToolContext {
    ToolContext::new(ConversationId::new(), ParticipantId::new(), serde_json::Value::Null, CancellationToken::new())
}

fn call(id: &str, name: &str, arguments: serde_json::Value) -> ToolCallRequest {
    ToolCallRequest { id: id.into(), name: name.into(), arguments }
}

#[tokio::test(start_paused = true)]
async fn runs_at_most_the_configured_number_at_once_and_returns_results_in_call_order() {
    let f = fixture();
    let calls: Vec<_> = (0..10).map(|i| call(&format!("c{i}"), "sleep", json!({"ms": 100 - i * 10}))).collect();
    let config = ExecutorConfig { concurrency: 3, timeout: Duration::from_secs(5), ..ExecutorConfig::default() };
    let results = f.executor.execute(calls, &f.offered, ctx(), config).results_in_order().await;
    assert_eq!(f.peak.load(Ordering::SeqCst), 3);
    let ids: Vec<_> = results.iter().map(|r| r.id.as_str().to_owned()).collect();
    assert_eq!(ids, (0..10).map(|i| format!("c{i}")).collect::<Vec<_>>());
    assert!(results.iter().all(|r| !r.is_error && r.content == "slept"));
}

#[tokio::test(start_paused = true)]
async fn one_failure_never_stops_the_others() {
    let f = fixture();
    let calls = vec![
        call("a", "calculator", json!({"expression": "6*7"})),
        call("b", "panics", json!({})),
        call("c", "sleep", json!({"ms": 60_000})),
        call("d", "calculator", json!({"expression": 42})),
        call("e", "nope", json!({})),
        call("f", "calculator", json!("{\"expression\": ")),
    ];
    let config = ExecutorConfig { concurrency: 4, timeout: Duration::from_millis(500), ..ExecutorConfig::default() };
    let results = f.executor.execute(calls, &f.offered, ctx(), config).results_in_order().await;
    let summary: Vec<(bool, &str)> = results.iter().map(|r| (r.is_error, r.content.as_str())).collect();
    assert_eq!(summary[0], (false, r#"{"expression":"6*7","result":42.0}"#));
    assert!(summary[1].0 && summary[1].1.contains("panicked"), "{:?}", summary[1]);
    assert_eq!(summary[2], (true, "timed out after 500 ms: the tool did not finish in time"));
    assert!(
        summary[3].0 && summary[3].1.starts_with("invalid arguments for `calculator`: /expression:"),
        "{:?}",
        summary[3]
    );
    assert!(summary[4].0 && summary[4].1.contains("was not offered"), "{:?}", summary[4]);
    assert!(summary[5].0 && summary[5].1.starts_with("the arguments are not valid JSON"), "{:?}", summary[5]);
}

#[tokio::test(start_paused = true)]
async fn a_tool_that_exists_but_was_not_offered_is_refused_without_running() {
    let f = fixture();
    let results = f
        .executor
        .execute(
            vec![call("a", "sleep", json!({"ms": 1}))],
            &["calculator".to_owned()],
            ctx(),
            ExecutorConfig::default(),
        )
        .results_in_order()
        .await;
    assert_eq!(
        results,
        vec![ToolResult {
            id: "a".into(),
            name: "sleep".into(),
            content: "tool `sleep` was not offered in this request: call one of the tools you were given".into(),
            is_error: true
        }]
    );
    assert_eq!(f.peak.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn cancellation_gives_every_running_call_a_cancelled_result() {
    let f = fixture();
    let ctx = ctx();
    let calls = vec![call("a", "sleep", json!({"ms": 10_000})), call("b", "sleep", json!({"ms": 10_000}))];
    let mut stream = f.executor.execute(calls, &f.offered, ctx.clone(), ExecutorConfig::default());
    let mut started = 0;
    let mut finished = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            ExecutionEvent::Started { .. } => {
                started += 1;
                if started == 2 {
                    ctx.cancel.cancel();
                }
            }
            ExecutionEvent::Finished { index, result } => finished.push((index, result)),
            _ => {}
        }
    }
    assert_eq!(finished.len(), 2);
    assert!(finished.iter().all(|(_, r)| r.is_error && r.content.starts_with("cancelled")));
}

#[test]
fn registry_rejects_bad_names_duplicates_and_invalid_schemas() {
    let mut registry = ToolRegistry::new();
    registry.register(Calculator).unwrap();
    let dup = registry.register(Calculator).unwrap_err();
    assert_eq!(dup.to_string(), "a tool named `calculator` is already registered: give the new one another name");

    struct Bad(&'static str, serde_json::Value);
    #[async_trait]
    impl Tool for Bad {
        fn name(&self) -> &str {
            self.0
        }
        fn description(&self) -> &str {
            "bad"
        }
        fn parameters(&self) -> serde_json::Value {
            self.1.clone()
        }
        async fn execute(&self, _: serde_json::Value, _: &ToolContext) -> Result<serde_json::Value, ToolError> {
            Ok(json!(null))
        }
    }
    assert!(registry.register(Bad("has space", json!({}))).unwrap_err().to_string().contains("is invalid"));
    let schema = registry.register(Bad("bad_schema", json!({"type": 12}))).unwrap_err();
    assert!(schema.to_string().starts_with("tool `bad_schema` has an invalid parameters schema"), "{schema}");
    assert_eq!(registry.specs(&["calculator".to_owned(), "missing".to_owned()]).len(), 1);
}
