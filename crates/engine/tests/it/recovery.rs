//! A turn left open by a crash is closed or resumed when the engine starts again. The crash is
//! a real one for the engine: its runtime is shut down mid-turn, dropping every task, and a new
//! engine opens the same SQLite file.

use colloquy_core_model::{ContentPart, MessageDelta, Options, StopReason, TurnErrorKind, TurnEvent};
use colloquy_llm_providers::{ProviderEvent, ScriptStep};

use crate::support::{Fixture, assert_every_call_has_one_result, until_agent_end};
use crate::turns::stop_of;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Runs the first life of a conversation until `crash_at` holds for an event, then kills that
/// engine's runtime. Returns the conversation and the seq of its last event before the crash.
fn crash(
    url: &str,
    script: Vec<ScriptStep>,
    crash_at: fn(&TurnEvent) -> bool,
) -> anyhow::Result<(colloquy_core_model::ConversationId, colloquy_core_model::TurnId)> {
    let first_life = runtime()?;
    let outcome = first_life.block_on(async {
        let fixture = Fixture::open(url, script, Options::default(), None).await?;
        let mut events = fixture.subscribe().await?;
        fixture.prompt("please compute").await?;
        loop {
            let envelope = events.next().await?;
            if let TurnEvent::AgentStart { turn_id, .. } = envelope.event {
                loop {
                    if crash_at(&events.next().await?.event) {
                        return anyhow::Ok((fixture.conversation, turn_id));
                    }
                }
            }
        }
    });
    // Every task of the first engine dies here, mid-turn, as in a crash.
    first_life.shutdown_background();
    outcome
}

#[test]
fn a_turn_interrupted_in_a_tool_with_side_effects_is_closed_with_interrupted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("crash.db").display());
    let script = vec![ScriptStep::tool_calls(&[
        ("call_calc", "calculator", r#"{"expression": "2+2"}"#),
        ("call_wait", "wait", "{}"),
    ])];
    let (conversation, turn_id) = crash(
        &url,
        script,
        |e| matches!(e, TurnEvent::ToolExecutionEnd { tool_name, .. } if tool_name == "calculator"),
    )?;

    runtime()?.block_on(async {
        let fixture = Fixture::open(&url, vec![], Options::default(), Some(conversation)).await?;
        let mut events = fixture.subscribe().await?;
        assert_eq!(fixture.engine.recover().await?, 1);
        let events = until_agent_end(&mut events).await?;
        let Some(StopReason::Error { error }) = stop_of(&events) else { panic!("expected an error stop: {events:?}") };
        assert_eq!(error.kind, TurnErrorKind::Interrupted);
        assert!(events.iter().all(|e| match &e.event {
            TurnEvent::AgentEnd { turn_id: t, .. } => *t == turn_id,
            _ => true,
        }));
        let history = fixture.history().await?;
        assert_every_call_has_one_result(&history);
        let wait_result = history.iter().flat_map(|m| &m.content).find_map(|p| match p {
            ContentPart::ToolResult { tool_call_id, content, is_error, .. } if tool_call_id.as_str() == "call_wait" => {
                Some((content.clone(), *is_error))
            }
            _ => None,
        });
        let (content, is_error) = wait_result.unwrap_or_default();
        assert!(is_error && content.starts_with("interrupted: "), "{content}");
        // Nothing is left to recover.
        assert_eq!(fixture.engine.recover().await?, 0);
        anyhow::Ok(())
    })
}

#[test]
fn a_turn_interrupted_while_streaming_after_replay_safe_tools_is_resumed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("crash.db").display());
    let script = vec![
        ScriptStep::tool_calls(&[("call_calc", "calculator", r#"{"expression": "6*7"}"#)]),
        ScriptStep::Stall(vec![ProviderEvent::TextDelta("The answer is".into())]),
    ];
    let (conversation, turn_id) =
        crash(&url, script, |e| matches!(e, TurnEvent::MessageUpdate { delta: MessageDelta::Text { .. }, .. }))?;

    runtime()?.block_on(async {
        let fixture =
            Fixture::open(&url, vec![ScriptStep::text("42.")], Options::default(), Some(conversation)).await?;
        let mut events = fixture.subscribe().await?;
        assert_eq!(fixture.engine.recover().await?, 1);
        let events = until_agent_end(&mut events).await?;
        assert_eq!(stop_of(&events), Some(StopReason::EndTurn));
        // The resumed turn is the same turn, continuing with request 2 again.
        assert!(
            events.iter().any(|e| matches!(e.event, TurnEvent::TurnStart { turn_id: t, request: 2 } if t == turn_id))
        );
        let requests = fixture.provider.requests();
        assert_eq!(requests.len(), 1);
        let roles: Vec<_> = requests[0].messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool"]);
        let history = fixture.history().await?;
        assert_every_call_has_one_result(&history);
        assert_eq!(history.last().map(|m| m.text()), Some("42.".to_owned()));
        anyhow::Ok(())
    })
}

#[tokio::test]
async fn a_fork_taken_mid_turn_closes_the_turn_in_the_copy_only() -> anyhow::Result<()> {
    let fixture = Fixture::new(vec![ScriptStep::tool_calls(&[("call_w", "wait", "{}")])], Options::default()).await?;
    let mut events = fixture.subscribe().await?;
    fixture.prompt("wait").await?;
    while !matches!(events.next().await?.event, TurnEvent::ToolExecutionStart { .. }) {}
    let at = fixture.engine.store().conversation(fixture.conversation).await?.last_seq;
    let fork = fixture.engine.fork(fixture.conversation, at).await?;

    let copy = fixture.engine.store().messages_after(fork, 0, 100).await?;
    assert_every_call_has_one_result(&copy);
    let log = fixture.engine.store().events_after(fork, 0, 100).await?;
    let Some(StopReason::Error { error }) = stop_of(&log) else { panic!("the copy's turn must be closed: {log:?}") };
    assert_eq!(error.kind, TurnErrorKind::Interrupted);
    // The original turn is still running, untouched.
    assert!(fixture.engine.is_busy(fixture.conversation));
    fixture.engine.cancel(fixture.conversation);
    assert_eq!(stop_of(&until_agent_end(&mut events).await?), Some(StopReason::Cancelled));
    Ok(())
}

/// Prompts queued behind a turn when the process dies are answered after the restart, each
/// exactly once, in order; the prompt whose turn was closed is not answered again.
#[test]
fn prompts_queued_when_the_process_died_are_answered_once_after_the_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("crash.db").display());
    let first_life = runtime()?;
    let conversation = first_life.block_on(async {
        let script = vec![ScriptStep::tool_calls(&[("call_w", "wait", "{}")])];
        let fixture = Fixture::open(&url, script, Options::default(), None).await?;
        let mut events = fixture.subscribe().await?;
        fixture.prompt("first").await?;
        while !matches!(events.next().await?.event, TurnEvent::ToolExecutionStart { .. }) {}
        for text in ["second", "third"] {
            let posted =
                fixture.engine.post_message(fixture.conversation, colloquy_engine::PostMessage::text(text)).await?;
            assert!(posted.queued);
        }
        anyhow::Ok(fixture.conversation)
    })?;
    first_life.shutdown_background();

    runtime()?.block_on(async {
        let script = vec![ScriptStep::text("answer two"), ScriptStep::text("answer three")];
        let fixture = Fixture::open(&url, script, Options::default(), Some(conversation)).await?;
        assert_eq!(fixture.engine.recover().await?, 1);
        // The runner recovery started: the closed turn, then one turn per queued prompt.
        fixture.engine.wait_for_idle(conversation).await;
        let requests = fixture.provider.requests();
        assert_eq!(requests.len(), 2, "one request per queued prompt, none for the closed turn's");
        let last_texts: Vec<String> = requests
            .iter()
            .map(|r| {
                r.messages.last().map(|m| format!("{}: {}", m.role.as_str(), text_of(&m.content))).unwrap_or_default()
            })
            .collect();
        assert_eq!(last_texts, ["user: second", "user: third"]);
        let history = fixture.history().await?;
        assert_every_call_has_one_result(&history);
        let texts: Vec<String> = history.iter().map(colloquy_core_model::Message::text).collect();
        assert_eq!(texts, ["first", "", "", "second", "answer two", "third", "answer three"]);
        assert!(fixture.engine.store().queued_messages(conversation).await?.is_empty());
        // A second start finds nothing left to do.
        assert_eq!(fixture.engine.recover().await?, 0);
        fixture.engine.wait_for_idle(conversation).await;
        assert_eq!(fixture.provider.requests().len(), 2);
        anyhow::Ok(())
    })
}

fn text_of(content: &[ContentPart]) -> String {
    content
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}
