//! Stop reasons from limits and options: refusal, budgets, max_tool_calls, tool_choice.

use colloquy_core_model::{BudgetLimit, ContentPart, Options, StopReason, ToolChoice, Usage};
use colloquy_llm_providers::{FinishReason, ProviderEvent, ScriptStep};

use crate::support::{Fixture, assert_every_call_has_one_result, kinds, until_agent_end};
use crate::turns::stop_of;

fn results(history: &[colloquy_core_model::Message]) -> Vec<(String, String, bool)> {
    history
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            ContentPart::ToolResult { tool_call_id, content, is_error, .. } => {
                Some((tool_call_id.to_string(), content.clone(), *is_error))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_refusal_ends_the_turn_with_refusal() -> anyhow::Result<()> {
    let step = ScriptStep::Reply(vec![
        ProviderEvent::TextDelta("I can't help with that.".into()),
        ProviderEvent::Finish(FinishReason::Refusal),
    ]);
    let fixture = Fixture::new(vec![step], Options::default()).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("something bad").await?;
    assert_eq!(stop_of(&until_agent_end(&mut events).await?), Some(StopReason::Refusal));
    Ok(())
}

#[tokio::test]
async fn the_cost_limit_is_checked_before_every_request_and_overshot_by_at_most_one() -> anyhow::Result<()> {
    let costly = ScriptStep::Reply(vec![
        ProviderEvent::ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("calculator".into()),
            arguments: r#"{"expression": "1+1"}"#.into(),
        },
        ProviderEvent::Usage(Usage { input_tokens: 100, output_tokens: 10, cost_usd: Some(0.02), ..Usage::default() }),
        ProviderEvent::Finish(FinishReason::ToolCalls),
    ]);
    let options = Options { cost_limit: Some(0.01), ..Options::default() };
    let fixture = Fixture::new(vec![costly, ScriptStep::text("never sent")], options).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("compute").await?;
    let events = until_agent_end(&mut events).await?;
    assert_eq!(stop_of(&events), Some(StopReason::BudgetExceeded { limit: BudgetLimit::Cost }));
    assert_eq!(fixture.provider.requests().len(), 1, "the second request must not be sent");
    assert_every_call_has_one_result(&fixture.history().await?);
    // The totals carry the spend into the next prompt, which stops before any request.
    fixture.prompt("again").await?;
    let mut more =
        fixture.engine.subscribe(fixture.conversation, events.last().and_then(|e| e.seq).unwrap_or(0)).await?;
    assert_eq!(
        stop_of(&until_agent_end(&mut more).await?),
        Some(StopReason::BudgetExceeded { limit: BudgetLimit::Cost })
    );
    assert_eq!(fixture.provider.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_prompt_that_cannot_fit_the_context_limit_stops_before_the_request() -> anyhow::Result<()> {
    let options = Options { context_limit: Some(20), ..Options::default() };
    let fixture = Fixture::new(vec![ScriptStep::text("never sent")], options).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt(&"a very long prompt ".repeat(40)).await?;
    let events = until_agent_end(&mut events).await?;
    assert_eq!(stop_of(&events), Some(StopReason::BudgetExceeded { limit: BudgetLimit::Context }));
    assert!(!kinds(&events).contains(&"turn_start".to_owned()), "no request was started");
    assert!(fixture.provider.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn the_context_window_drops_old_exchanges_to_fit_the_limit() -> anyhow::Result<()> {
    let options = Options { context_limit: Some(300), ..Options::default() };
    let script = vec![ScriptStep::text(&"long answer ".repeat(100)), ScriptStep::text("short")];
    let fixture = Fixture::new(script, options).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("first").await?;
    until_agent_end(&mut events).await?;
    fixture.prompt("second").await?;
    assert_eq!(stop_of(&until_agent_end(&mut events).await?), Some(StopReason::EndTurn));
    let second = &fixture.provider.requests()[1];
    let texts: Vec<String> = second
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["second"], "the long first exchange does not fit in 300 tokens");
    Ok(())
}

#[tokio::test]
async fn calls_beyond_max_tool_calls_get_a_not_executed_result() -> anyhow::Result<()> {
    let calls = ScriptStep::tool_calls(&[
        ("call_1", "calculator", r#"{"expression": "1"}"#),
        ("call_2", "calculator", r#"{"expression": "2"}"#),
        ("call_3", "calculator", r#"{"expression": "3"}"#),
    ]);
    let options = Options { max_tool_calls: Some(1), ..Options::default() };
    let fixture = Fixture::new(vec![calls, ScriptStep::text("done")], options).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("compute").await?;
    let events = until_agent_end(&mut events).await?;
    assert_eq!(stop_of(&events), Some(StopReason::EndTurn));
    assert_eq!(kinds(&events).iter().filter(|k| *k == "tool_execution_start").count(), 1);
    let history = fixture.history().await?;
    assert_every_call_has_one_result(&history);
    let results = results(&history);
    assert_eq!(results[0], ("call_1".into(), r#"{"expression":"1","result":1.0}"#.into(), false));
    for (id, content, is_error) in &results[1..] {
        assert!(*is_error && content.starts_with("not executed: limit of 1 tool calls per reply"), "{id}: {content}");
    }
    Ok(())
}

#[tokio::test]
async fn tool_choice_function_offers_only_that_tool_and_refuses_calls_to_others() -> anyhow::Result<()> {
    let calls = ScriptStep::tool_calls(&[("call_1", "wait", "{}"), ("call_2", "calculator", r#"{"expression": "2"}"#)]);
    let options = Options { tool_choice: ToolChoice::Function("calculator".into()), ..Options::default() };
    let fixture = Fixture::new(vec![calls, ScriptStep::text("done")], options).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("compute").await?;
    assert_eq!(stop_of(&until_agent_end(&mut events).await?), Some(StopReason::EndTurn));
    let request = &fixture.provider.requests()[0];
    assert_eq!(request.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["calculator"]);
    assert_eq!(request.tool_choice, ToolChoice::Function("calculator".into()));
    let results = results(&fixture.history().await?);
    assert!(results[0].2 && results[0].1.contains("was not offered"), "{results:?}");
    assert!(!results[1].2, "{results:?}");
    Ok(())
}

#[tokio::test]
async fn a_reply_records_the_model_provider_and_temperature_it_was_made_with() -> anyhow::Result<()> {
    let options = Options { temperature: Some(0.3), ..Options::default() };
    let fixture = Fixture::new(vec![ScriptStep::text("warm")], options).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("hi").await?;
    until_agent_end(&mut events).await?;
    let reply = fixture.history().await?.pop().unwrap_or_else(|| panic!("no reply"));
    assert_eq!(
        (reply.model.as_deref(), reply.provider.as_deref(), reply.temperature),
        (Some("scripted-model"), Some("scripted"), Some(0.3))
    );
    assert_eq!(fixture.provider.requests()[0].temperature, Some(0.3));
    Ok(())
}
