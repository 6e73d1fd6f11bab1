//! One snapshot of the durable event log per stop reason.

use colloquy_core_model::{Options, TurnEvent, Usage};
use colloquy_llm_providers::{FinishReason, ProviderError, ProviderEvent, ScriptStep};

use crate::support::{Fixture, until_agent_end};

async fn transcript_of(script: Vec<ScriptStep>, options: Options, prompt: &str) -> anyhow::Result<String> {
    let fixture = Fixture::new(script, options).await?;
    fixture.prompt(prompt).await?;
    fixture.engine.wait_for_idle(fixture.conversation).await;
    fixture.transcript().await
}

fn calc(id: &str) -> ScriptStep {
    ScriptStep::tool_calls(&[(id, "calculator", r#"{"expression": "6*7"}"#)])
}

#[tokio::test]
async fn end_turn() -> anyhow::Result<()> {
    let log = transcript_of(vec![calc("call_1"), ScriptStep::text("It is 42.")], Options::default(), "6*7?").await?;
    insta::assert_snapshot!("stop_end_turn", log);
    Ok(())
}

#[tokio::test]
async fn max_tokens() -> anyhow::Result<()> {
    let cut =
        ScriptStep::Reply(vec![ProviderEvent::TextDelta("It is".into()), ProviderEvent::Finish(FinishReason::Length)]);
    insta::assert_snapshot!("stop_max_tokens", transcript_of(vec![cut], Options::default(), "6*7?").await?);
    Ok(())
}

#[tokio::test]
async fn max_turn_requests() -> anyhow::Result<()> {
    let options = Options { max_turn_requests: 2, ..Options::default() };
    let log = transcript_of(vec![calc("call_1"), calc("call_2")], options, "6*7?").await?;
    insta::assert_snapshot!("stop_max_turn_requests", log);
    Ok(())
}

#[tokio::test]
async fn refusal() -> anyhow::Result<()> {
    let refusal = ScriptStep::Reply(vec![
        ProviderEvent::TextDelta("I can't.".into()),
        ProviderEvent::Finish(FinishReason::Refusal),
    ]);
    insta::assert_snapshot!("stop_refusal", transcript_of(vec![refusal], Options::default(), "bad").await?);
    Ok(())
}

#[tokio::test]
async fn budget_exceeded_cost() -> anyhow::Result<()> {
    let costly = ScriptStep::Reply(vec![
        ProviderEvent::ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("calculator".into()),
            arguments: r#"{"expression": "1"}"#.into(),
        },
        ProviderEvent::Usage(Usage { input_tokens: 10, output_tokens: 2, cost_usd: Some(1.0), ..Usage::default() }),
        ProviderEvent::Finish(FinishReason::ToolCalls),
    ]);
    let options = Options { cost_limit: Some(0.5), ..Options::default() };
    insta::assert_snapshot!("stop_budget_cost", transcript_of(vec![costly], options, "1").await?);
    Ok(())
}

#[tokio::test]
async fn budget_exceeded_context() -> anyhow::Result<()> {
    let options = Options { context_limit: Some(8), ..Options::default() };
    let log = transcript_of(vec![], options, "a prompt far longer than eight tokens can hold").await?;
    insta::assert_snapshot!("stop_budget_context", log);
    Ok(())
}

#[tokio::test]
async fn error() -> anyhow::Result<()> {
    let failing = ScriptStep::ReplyThenFail(vec![], ProviderError::Auth { message: "invalid api key".into() });
    insta::assert_snapshot!("stop_error", transcript_of(vec![failing], Options::default(), "hi").await?);
    Ok(())
}

#[tokio::test]
async fn cancelled() -> anyhow::Result<()> {
    let fixture = Fixture::new(vec![ScriptStep::tool_calls(&[("call_w", "wait", "{}")])], Options::default()).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("wait").await?;
    while !matches!(events.next().await?.event, TurnEvent::ToolExecutionStart { .. }) {}
    fixture.engine.cancel(fixture.conversation);
    until_agent_end(&mut events).await?;
    insta::assert_snapshot!("stop_cancelled", fixture.transcript().await?);
    Ok(())
}
