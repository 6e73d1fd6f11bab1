//! The approval hook: allow, deny with a reason, or ask and wait for an answer from outside
//! (with a timeout, on tokio's paused clock).

use std::time::Duration;

use async_trait::async_trait;
use colloquy_tools::{
    Approval, ApprovalAnswer, ApprovalError, ApprovalHook, ExecutionEvent, ExecutorConfig, ToolCallRequest, ToolContext,
};
use futures::StreamExt;
use serde_json::json;

use crate::support::{Fixture, ctx, only_result, probe};

/// Answers by the call's id: `allow…`, `deny…` or anything else asks.
struct ById;

#[async_trait]
impl ApprovalHook for ById {
    async fn review(&self, call: &ToolCallRequest, _ctx: &ToolContext) -> Approval {
        match call.id.as_str() {
            id if id.starts_with("allow") => Approval::Allow,
            id if id.starts_with("deny") => Approval::Deny("writing is not allowed on weekends".to_owned()),
            _ => Approval::Ask,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn allowed_calls_run_and_denied_calls_never_do() {
    let f = Fixture::new(None).with_approval(ById);
    assert_eq!(only_result(&f.events(vec![probe("allow-1", "ok")]).await), (false, "fine".to_owned()));
    assert_eq!(f.runs(), 1);
    assert_eq!(
        only_result(&f.events(vec![probe("deny-1", "ok")]).await),
        (true, "denied: writing is not allowed on weekends".to_owned())
    );
    assert_eq!(f.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_asked_call_waits_for_an_answer_from_outside_without_holding_a_slot() {
    let f = Fixture::new(None).with_approval(ById);
    let ctx = ctx(json!(null));
    let conversation = ctx.conversation_id;
    let config = ExecutorConfig { concurrency: 1, ..ExecutorConfig::default() };
    let mut stream = f.executor.execute(
        vec![probe("ask-1", "ok"), probe("allow-2", "ok"), probe("ask-2", "ok")],
        &["probe".to_owned()],
        ctx,
        config,
    );
    let mut asked = Vec::new();
    let mut finished = Vec::new();
    while asked.len() < 2 || finished.is_empty() {
        match stream.next().await.unwrap() {
            ExecutionEvent::ApprovalRequested { index } => asked.push(index),
            ExecutionEvent::Finished { index, result } => finished.push((index, result.content)),
            _ => {}
        }
    }
    asked.sort_unstable();
    assert_eq!(asked, vec![0, 2]);
    // With one slot, the allowed call ran while the others waited.
    assert_eq!(finished, vec![(1, "fine".to_owned())]);
    let pending: Vec<_> = f.executor.approvals().pending().into_iter().map(|p| p.call_id.as_str().to_owned()).collect();
    assert_eq!(pending.len(), 2);
    assert!(pending.contains(&"ask-1".to_owned()) && pending.contains(&"ask-2".to_owned()));
    assert_eq!(f.runs(), 1);

    f.executor.approvals().answer(conversation, &"ask-1".into(), ApprovalAnswer::Allow).unwrap();
    f.executor
        .approvals()
        .answer(conversation, &"ask-2".into(), ApprovalAnswer::Deny("the user said no".to_owned()))
        .unwrap();
    while let Some(event) = stream.next().await {
        if let ExecutionEvent::Finished { index, result } = event {
            finished.push((index, result.content));
        }
    }
    finished.sort();
    assert_eq!(
        finished,
        vec![(0, "fine".to_owned()), (1, "fine".to_owned()), (2, "denied: the user said no".to_owned())]
    );
    assert_eq!(f.runs(), 2);
    assert!(f.executor.approvals().pending().is_empty());

    let late = f.executor.approvals().answer(conversation, &"ask-1".into(), ApprovalAnswer::Allow);
    assert!(matches!(late, Err(ApprovalError::NotPending { .. })), "{late:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_is_denied_when_the_approval_timeout_passes() {
    let f = Fixture::new(None).with_approval(ById);
    let config = ExecutorConfig { approval_timeout: Duration::from_secs(90), ..ExecutorConfig::default() };
    let started = tokio::time::Instant::now();
    let events = f.events_with(vec![probe("ask-1", "ok")], ctx(json!(null)), config).await;
    assert_eq!(started.elapsed(), Duration::from_secs(90));
    assert!(events.contains(&ExecutionEvent::ApprovalRequested { index: 0 }), "{events:?}");
    let (is_error, content) = only_result(&events);
    assert!(is_error);
    assert!(content.starts_with("denied: no approval within 90s"), "{content}");
    assert_eq!(f.runs(), 0);
    assert!(f.executor.approvals().pending().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_turn_ends_the_wait() {
    let f = Fixture::new(None).with_approval(ById);
    let ctx = ctx(json!(null));
    let cancel = ctx.cancel.clone();
    let mut stream =
        f.executor.execute(vec![probe("ask-1", "ok")], &["probe".to_owned()], ctx, ExecutorConfig::default());
    loop {
        match stream.next().await {
            Some(ExecutionEvent::ApprovalRequested { .. }) => break,
            Some(_) => {}
            None => panic!("the call finished without asking for approval"),
        }
    }
    cancel.cancel();
    let rest: Vec<_> = stream.collect().await;
    let (is_error, content) = only_result(&rest);
    assert!(is_error && content.starts_with("cancelled"), "{content}");
    assert!(f.executor.approvals().pending().is_empty());
    assert_eq!(f.runs(), 0);
}
