//! What a running tool shows: progress reports on the way, and output cut to the limit.

use colloquy_tools::{ExecutionEvent, ExecutorConfig};
use serde_json::json;

use crate::support::{Fixture, call, ctx, only_result, probe};

#[tokio::test(start_paused = true)]
async fn progress_reports_arrive_between_start_and_finish() {
    let f = Fixture::new(None);
    let events = f.events(vec![probe("a", "progress")]).await;
    let kinds: Vec<String> = events
        .iter()
        .map(|event| match event {
            ExecutionEvent::Started { index } => format!("started {index}"),
            ExecutionEvent::Progress { index, progress } => format!("progress {index} {progress}"),
            ExecutionEvent::Finished { index, result } => format!("finished {index} {}", result.content),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, vec!["started 0", r#"progress 0 {"step":1}"#, r#"progress 0 {"step":2}"#, "finished 0 done"]);
}

#[tokio::test(start_paused = true)]
async fn oversized_output_is_cut_on_a_character_boundary_with_a_note() {
    let f = Fixture::new(None);
    let config = ExecutorConfig { max_output_bytes: 51, ..ExecutorConfig::default() };
    // 100 two-byte characters: 200 bytes; byte 51 is inside the 26th character.
    let events =
        f.events_with(vec![call("a", "probe", json!({"mode": "big", "size": 100}))], ctx(json!(null)), config).await;
    let (is_error, content) = only_result(&events);
    assert!(!is_error);
    assert_eq!(
        content,
        format!(
            "{}\n\n[output truncated: showing the first 50 of 200 bytes; ask for less (a narrower query or a smaller \
             range) to see the rest]",
            "é".repeat(25)
        )
    );

    let events =
        f.events_with(vec![call("b", "probe", json!({"mode": "big", "size": 25}))], ctx(json!(null)), config).await;
    assert_eq!(only_result(&events), (false, "é".repeat(25)));
    assert_eq!(ExecutorConfig::default().max_output_bytes, 64 * 1024);
}
