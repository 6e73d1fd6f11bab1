//! Turns from prompt to stop reason.

use colloquy_core_model::{ContentPart, Options, StopReason, TurnEvent};
use colloquy_llm_providers::{FinishReason, ProviderError, ProviderEvent, ScriptStep};

use crate::support::{Fixture, assert_every_call_has_one_result, kinds, until_agent_end};

pub fn stop_of(events: &[colloquy_core_model::EventEnvelope]) -> Option<StopReason> {
    events.iter().rev().find_map(|e| match &e.event {
        TurnEvent::AgentEnd { stop, .. } => Some(stop.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn a_tool_call_round_trip_emits_well_nested_events_and_ends_the_turn() -> anyhow::Result<()> {
    let fixture = Fixture::new(
        vec![
            ScriptStep::tool_calls(&[
                ("call_a", "calculator", r#"{"expression": "6*7"}"#),
                ("call_b", "calculator", r#"{"expression": "1/0"}"#),
            ]),
            ScriptStep::text("It is 42."),
        ],
        Options::default(),
    )
    .await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("what is 6*7?").await?;
    let events = until_agent_end(&mut events).await?;
    let kinds = kinds(&events);
    assert_eq!(kinds.first().map(String::as_str), Some("message_posted"));
    assert_eq!(kinds.last().map(String::as_str), Some("agent_end"));
    assert_eq!(kinds.iter().filter(|k| *k == "tool_execution_start").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "tool_execution_end").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "turn_start").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "turn_end").count(), 2);
    assert!(kinds.contains(&"~message_update".to_owned()));
    assert_eq!(stop_of(&events), Some(StopReason::EndTurn));
    let durable: Vec<u64> = events.iter().filter_map(|e| e.seq).collect();
    assert_eq!(durable, (1..=durable.len() as u64).collect::<Vec<_>>());

    let history = fixture.history().await?;
    assert_every_call_has_one_result(&history);
    let results: Vec<(String, bool)> = history
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|p| match p {
            ContentPart::ToolResult { content, is_error, .. } => Some((content.clone(), *is_error)),
            _ => None,
        })
        .collect();
    assert!(results.contains(&(r#"{"expression":"6*7","result":42.0}"#.to_owned(), false)), "{results:?}");
    assert!(results.iter().any(|(content, is_error)| *is_error && content.contains("no finite value")), "{results:?}");
    assert_eq!(history.last().map(|m| m.text()), Some("It is 42.".to_owned()));

    // The second request sent the results back after the call, with the system prompt.
    let requests = fixture.provider.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].system_prompt.as_deref(), Some("Be brief."));
    let roles: Vec<_> = requests[1].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool"]);
    assert_eq!(
        requests[1].tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["calculator", "wait", "flaky", "report", "gate"]
    );
    Ok(())
}

#[tokio::test]
async fn a_model_that_keeps_calling_tools_stops_at_max_turn_requests() -> anyhow::Result<()> {
    let call = || ScriptStep::tool_calls(&[("call_x", "calculator", r#"{"expression": "1+1"}"#)]);
    let options = Options { max_turn_requests: 3, ..Options::default() };
    let fixture = Fixture::new(vec![call(), call(), call(), call()], options).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("loop").await?;
    let events = until_agent_end(&mut events).await?;
    assert_eq!(stop_of(&events), Some(StopReason::MaxTurnRequests));
    assert_eq!(fixture.provider.requests().len(), 3);
    assert_every_call_has_one_result(&fixture.history().await?);
    Ok(())
}

#[tokio::test]
async fn a_provider_failure_mid_stream_keeps_the_partial_text_and_ends_with_a_provider_error() -> anyhow::Result<()> {
    let step = ScriptStep::ReplyThenFail(
        vec![ProviderEvent::TextDelta("Half an ans".into())],
        ProviderError::Network { message: "connection reset".into() },
    );
    let fixture = Fixture::new(vec![step], Options::default()).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("hi").await?;
    let events = until_agent_end(&mut events).await?;
    let Some(StopReason::Error { error }) = stop_of(&events) else { panic!("expected an error stop: {events:?}") };
    assert_eq!(error.kind, colloquy_core_model::TurnErrorKind::Provider);
    assert!(error.message.contains("connection reset"), "{}", error.message);
    let history = fixture.history().await?;
    let last = history.last().map(|m| (m.text(), m.metadata.clone()));
    assert_eq!(last, Some(("Half an ans".to_owned(), serde_json::json!({"incomplete": true}))));
    Ok(())
}

#[tokio::test]
async fn a_reply_cut_off_at_max_tokens_answers_its_calls_without_running_them() -> anyhow::Result<()> {
    let step = ScriptStep::Reply(vec![
        ProviderEvent::ToolCallDelta {
            index: 0,
            id: Some("call_cut".into()),
            name: Some("calculator".into()),
            arguments: "{\"expr".into(),
        },
        ProviderEvent::Finish(FinishReason::Length),
    ]);
    let fixture = Fixture::new(vec![step], Options::default()).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("hi").await?;
    let events = until_agent_end(&mut events).await?;
    assert_eq!(stop_of(&events), Some(StopReason::MaxTokens));
    assert!(!kinds(&events).contains(&"tool_execution_start".to_owned()));
    let history = fixture.history().await?;
    assert_every_call_has_one_result(&history);
    assert!(history.last().is_some_and(|m| matches!(&m.content[0], ContentPart::ToolResult { content, is_error: true, .. } if content.starts_with("not executed"))));
    Ok(())
}

#[tokio::test]
async fn cancelling_a_turn_while_a_tool_runs_gives_the_call_a_result_and_ends_cancelled() -> anyhow::Result<()> {
    let fixture = Fixture::new(vec![ScriptStep::tool_calls(&[("call_w", "wait", "{}")])], Options::default()).await?;
    let mut subscription = fixture.subscribe().await?;
    fixture.prompt("wait for it").await?;
    let mut events = Vec::new();
    loop {
        let envelope = subscription.next().await?;
        let started = matches!(envelope.event, TurnEvent::ToolExecutionStart { .. });
        events.push(envelope);
        if started {
            assert!(fixture.engine.cancel(fixture.conversation));
            break;
        }
    }
    events.extend(until_agent_end(&mut subscription).await?);
    assert_eq!(stop_of(&events), Some(StopReason::Cancelled));
    fixture.engine.wait_for_idle(fixture.conversation).await;
    assert!(!fixture.engine.is_busy(fixture.conversation));
    assert_every_call_has_one_result(&fixture.history().await?);
    Ok(())
}

#[tokio::test]
async fn a_prompt_during_a_turn_is_answered_by_the_next_turn_even_after_a_cancel() -> anyhow::Result<()> {
    let fixture = Fixture::new(
        vec![ScriptStep::tool_calls(&[("call_w", "wait", "{}")]), ScriptStep::text("second answer")],
        Options::default(),
    )
    .await?;
    let mut subscription = fixture.subscribe().await?;
    fixture.prompt("first").await?;
    loop {
        if matches!(subscription.next().await?.event, TurnEvent::ToolExecutionStart { .. }) {
            break;
        }
    }
    fixture.prompt("second").await?;
    fixture.engine.cancel(fixture.conversation);
    let first = until_agent_end(&mut subscription).await?;
    assert_eq!(stop_of(&first), Some(StopReason::Cancelled));
    let next = until_agent_end(&mut subscription).await?;
    assert_eq!(stop_of(&next), Some(StopReason::EndTurn));
    fixture.engine.wait_for_idle(fixture.conversation).await;

    let history = fixture.history().await?;
    assert_every_call_has_one_result(&history);
    assert_eq!(history.last().map(|m| m.text()), Some("second answer".to_owned()));
    // The second request saw both prompts, with the call and its result kept together.
    let roles: Vec<_> = fixture.provider.requests()[1].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "user"]);
    Ok(())
}

#[tokio::test]
async fn tool_progress_streams_as_ephemeral_tool_execution_updates() -> anyhow::Result<()> {
    let fixture = Fixture::new(
        vec![ScriptStep::tool_calls(&[("call_r", "report", "{}")]), ScriptStep::text("done")],
        Options::default(),
    )
    .await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("report").await?;
    let events = until_agent_end(&mut events).await?;
    let updates: Vec<(Option<u64>, serde_json::Value)> = events
        .iter()
        .filter_map(|e| match &e.event {
            TurnEvent::ToolExecutionUpdate { progress, .. } => Some((e.seq, progress.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(updates, [(None, serde_json::json!({"percent": 50})), (None, serde_json::json!({"percent": 100}))]);
    let order: Vec<String> = kinds(&events).into_iter().filter(|k| k.contains("tool_execution")).collect();
    assert_eq!(
        order,
        ["tool_execution_start", "~tool_execution_update", "~tool_execution_update", "tool_execution_end"]
    );
    Ok(())
}

/// A runner that goes idle leaves what it knew to the next prompt's runner: whatever changed in
/// between, written to the store by someone else or through the engine, reaches the next request.
#[tokio::test]
async fn what_changed_while_a_conversation_was_idle_reaches_its_next_request() -> anyhow::Result<()> {
    let script = vec![ScriptStep::text("one"), ScriptStep::text("two"), ScriptStep::text("three")];
    let fixture = Fixture::new(script, Options::default()).await?;
    let texts = |request: &colloquy_llm_providers::LlmRequest| -> Vec<String> {
        let text = |part: &ContentPart| match part {
            ContentPart::Text { text } => Some(text.clone()),
            _ => None,
        };
        request.messages.iter().flat_map(|m| m.content.iter().filter_map(text)).collect()
    };
    fixture.say("ada", "first").await?;
    let history = fixture.history().await?;

    // Another writer (REST on another handle, another process) changes the store directly.
    let store = fixture.engine.store();
    store.update_message(fixture.conversation, history[0].id, vec![ContentPart::text("first, edited")]).await?;
    let agent = colloquy_core_model::AgentSpec {
        provider: "scripted".into(),
        model: "scripted-model".into(),
        system_prompt: Some("Be verbose.".into()),
        tools: Vec::new(),
    };
    store.update_agent(fixture.conversation, fixture.people["assistant"], agent).await?;
    fixture.say("ada", "second").await?;
    let requests = fixture.provider.requests();
    assert_eq!(requests[1].system_prompt.as_deref(), Some("Be verbose."));
    assert!(requests[1].tools.is_empty(), "the tools as changed");
    assert_eq!(texts(&requests[1]), ["first, edited", "one", "second"]);

    // Through the engine: the first answer removed.
    fixture.engine.remove_message(fixture.conversation, history[1].id).await?;
    fixture.say("ada", "third").await?;
    let requests = fixture.provider.requests();
    assert_eq!(texts(&requests[2]), ["first, edited", "second", "two", "third"]);
    Ok(())
}

/// Live subscribers of a conversation share each event and one encoding of it; an event
/// replayed from the log is the subscriber's own.
#[tokio::test]
async fn live_subscribers_share_each_event_and_its_encoding() -> anyhow::Result<()> {
    let fixture = Fixture::new(vec![ScriptStep::text("one"), ScriptStep::text("two")], Options::default()).await?;
    fixture.say("ada", "first").await?;
    let (mut a, mut b) = (fixture.subscribe().await?, fixture.subscribe().await?);
    // The first turn comes from the log: each subscriber reads its own copy.
    let logged = fixture.engine.store().events_after(fixture.conversation, 0, 1000).await?.len();
    for _ in 0..logged {
        let (x, y) = (a.next_shared().await?, b.next_shared().await?);
        assert_eq!(x.envelope(), y.envelope());
        assert!(!std::sync::Arc::ptr_eq(&x, &y));
    }
    fixture.prompt("second").await?;
    let encodings = std::sync::atomic::AtomicUsize::new(0);
    let encode = |envelope: &colloquy_core_model::EventEnvelope| {
        encodings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        serde_json::to_string(envelope).unwrap_or_default()
    };
    let (x, y) = (a.next_shared().await?, b.next_shared().await?);
    assert!(std::sync::Arc::ptr_eq(&x, &y), "a live event is one value for both");
    assert_eq!(x.encoded(encode), y.encoded(encode));
    assert_eq!(encodings.load(std::sync::atomic::Ordering::Relaxed), 1, "encoded once");
    Ok(())
}
