//! Prompts that arrive while a turn runs: queued one at a time, all together, or refused.

use colloquy_core_model::{ContentPart, Options, QueueMode, StopReason, TurnEvent};
use colloquy_engine::{EngineError, PostMessage, QueuePolicy};
use colloquy_llm_providers::ScriptStep;

use crate::support::{Fixture, until_agent_end};
use crate::turns::stop_of;

/// Starts a turn that waits in a tool until cancelled, posts two more prompts meanwhile, then
/// cancels it, and returns the fixture once everything queued has been answered.
async fn two_prompts_during_a_turn(queue_mode: QueueMode, script: Vec<ScriptStep>) -> anyhow::Result<Fixture> {
    let mut steps = vec![ScriptStep::tool_calls(&[("call_w", "wait", "{}")])];
    steps.extend(script);
    let fixture = Fixture::new(steps, Options { queue_mode, ..Options::default() }).await?;
    let mut subscription = fixture.subscribe().await?;
    fixture.prompt("first").await?;
    while !matches!(subscription.next().await?.event, TurnEvent::ToolExecutionStart { .. }) {}
    fixture.prompt("second").await?;
    fixture.prompt("third").await?;
    fixture.engine.cancel(fixture.conversation);
    assert_eq!(stop_of(&until_agent_end(&mut subscription).await?), Some(StopReason::Cancelled));
    fixture.engine.wait_for_idle(fixture.conversation).await;
    Ok(fixture)
}

fn user_texts(request: &colloquy_llm_providers::LlmRequest) -> Vec<String> {
    request
        .messages
        .iter()
        .filter(|m| m.role == colloquy_core_model::MessageRole::User)
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn one_at_a_time_gives_each_queued_prompt_its_own_turn() -> anyhow::Result<()> {
    let script = vec![ScriptStep::text("answer two"), ScriptStep::text("answer three")];
    let fixture = two_prompts_during_a_turn(QueueMode::OneAtATime, script).await?;
    let requests = fixture.provider.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(user_texts(&requests[1]), ["first", "second"]);
    assert_eq!(user_texts(&requests[2]), ["first", "second", "third"]);
    let texts: Vec<String> =
        fixture.history().await?.iter().map(|m| m.text()).filter(|t| t.starts_with("answer")).collect();
    assert_eq!(texts, ["answer two", "answer three"]);
    Ok(())
}

#[tokio::test]
async fn all_answers_every_queued_prompt_in_one_turn() -> anyhow::Result<()> {
    let fixture = two_prompts_during_a_turn(QueueMode::All, vec![ScriptStep::text("both answered")]).await?;
    let requests = fixture.provider.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(user_texts(&requests[1]), ["first", "second", "third"]);
    Ok(())
}

#[tokio::test]
async fn a_prompt_that_may_not_queue_is_refused_while_busy_and_nothing_is_stored() -> anyhow::Result<()> {
    let fixture = Fixture::new(vec![ScriptStep::tool_calls(&[("call_w", "wait", "{}")])], Options::default()).await?;
    let mut subscription = fixture.subscribe().await?;
    fixture.prompt("first").await?;
    while !matches!(subscription.next().await?.event, TurnEvent::ToolExecutionStart { .. }) {}
    let before = fixture.history().await?.len();
    let post = PostMessage { queue: QueuePolicy::Reject, ..PostMessage::text("impatient") };
    let refused = fixture.engine.post_message(fixture.conversation, post).await;
    assert!(matches!(refused, Err(EngineError::Busy(id)) if id == fixture.conversation), "{refused:?}");
    assert_eq!(fixture.history().await?.len(), before);
    fixture.engine.cancel(fixture.conversation);
    until_agent_end(&mut subscription).await?;
    Ok(())
}
