//! Invariants over random scripted runs: random replies and chunking, tools that succeed, fail,
//! panic or time out, provider failures, and a cancel at any point.

use std::collections::HashMap;

use colloquy_core_model::{ContentPart, EventEnvelope, MessageRole, Options, TurnEvent, TurnId, Usage};
use colloquy_llm_providers::{FinishReason, ProviderError, ProviderEvent, ScriptStep};
use proptest::prelude::*;

use crate::support::{Fixture, assert_every_call_has_one_result};

/// One scripted reply.
#[derive(Debug, Clone)]
enum Reply {
    Text(String, Vec<usize>),
    Calls(Vec<&'static str>, Vec<usize>),
    FailMidway(String),
}

fn pieces(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut points: Vec<usize> =
        cuts.iter().map(|c| c % (text.len() + 1)).filter(|c| text.is_char_boundary(*c)).collect();
    points.extend([0, text.len()]);
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| text[w[0]..w[1]].to_owned()).collect()
}

fn usage(n: usize) -> ProviderEvent {
    ProviderEvent::Usage(Usage {
        input_tokens: 10 + n as u64,
        output_tokens: 3,
        cost_usd: Some(0.001),
        ..Usage::default()
    })
}

fn step(reply: &Reply, n: usize) -> ScriptStep {
    match reply {
        Reply::Text(text, cuts) => {
            let mut events: Vec<ProviderEvent> = pieces(text, cuts).into_iter().map(ProviderEvent::TextDelta).collect();
            events.extend([usage(n), ProviderEvent::Finish(FinishReason::Stop)]);
            ScriptStep::Reply(events)
        }
        Reply::Calls(modes, cuts) => {
            let mut events = Vec::new();
            for (index, mode) in modes.iter().enumerate() {
                let arguments = format!(r#"{{"mode": "{mode}"}}"#);
                for (k, piece) in pieces(&arguments, cuts).into_iter().enumerate() {
                    events.push(ProviderEvent::ToolCallDelta {
                        index: index as u32,
                        id: (k == 0).then(|| format!("call_{n}_{index}")),
                        name: (k == 0).then(|| "flaky".to_owned()),
                        arguments: piece,
                    });
                }
            }
            events.extend([usage(n), ProviderEvent::Finish(FinishReason::ToolCalls)]);
            ScriptStep::Reply(events)
        }
        Reply::FailMidway(text) => ScriptStep::ReplyThenFail(
            vec![ProviderEvent::TextDelta(text.clone())],
            ProviderError::Network { message: "connection reset".into() },
        ),
    }
}

fn any_reply() -> impl Strategy<Value = Reply> {
    let cuts = prop::collection::vec(0usize..64, 0..5);
    prop_oneof![
        3 => ("[a-z ]{1,30}", cuts.clone()).prop_map(|(t, c)| Reply::Text(t, c)),
        4 => (prop::collection::vec(prop::sample::select(vec!["ok", "fail", "slow", "panic"]), 1..4), cuts)
            .prop_map(|(m, c)| Reply::Calls(m, c)),
        1 => "[a-z ]{1,10}".prop_map(Reply::FailMidway),
    ]
}

/// Checks nesting: message_posted, then agent_start ... agent_end per turn, turn_start/turn_end
/// and message_start/message_end and tool_execution_start/end pairs inside.
fn assert_well_nested(events: &[EventEnvelope]) -> Result<(), TestCaseError> {
    let mut open_turn: Option<TurnId> = None;
    let (mut requests, mut messages, mut tools) = (0i32, 0i32, HashMap::new());
    for envelope in events {
        match &envelope.event {
            TurnEvent::AgentStart { turn_id, .. } => {
                prop_assert!(open_turn.is_none(), "agent_start inside a turn");
                open_turn = Some(*turn_id);
            }
            TurnEvent::AgentEnd { turn_id, .. } => {
                prop_assert_eq!(open_turn.take(), Some(*turn_id));
                prop_assert_eq!((requests, messages), (0, 0), "agent_end with an open request or message");
                prop_assert!(tools.values().all(|n| *n == 0), "agent_end with a running tool");
            }
            TurnEvent::TurnStart { .. } => requests += 1,
            TurnEvent::TurnEnd { .. } => requests -= 1,
            TurnEvent::MessageStart { .. } => messages += 1,
            TurnEvent::MessageEnd { .. } => messages -= 1,
            TurnEvent::ToolExecutionStart { tool_call_id, .. } => *tools.entry(tool_call_id.clone()).or_insert(0) += 1,
            TurnEvent::ToolExecutionEnd { tool_call_id, .. } => *tools.entry(tool_call_id.clone()).or_insert(0) -= 1,
            _ => {}
        }
        prop_assert!((0..=1).contains(&requests) && (0..=1).contains(&messages), "overlapping requests or messages");
    }
    prop_assert!(open_turn.is_none(), "a turn never ended");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_run_leaves_a_valid_history_and_well_nested_events(
        replies in prop::collection::vec(any_reply(), 1..5),
        cancel_after in prop::option::of(0usize..40),
        max_turn_requests in 1u32..5,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let outcome: anyhow::Result<Result<(), TestCaseError>> = runtime.block_on(async {
            let script: Vec<ScriptStep> = replies.iter().enumerate().map(|(n, r)| step(r, n)).collect();
            let options = Options { max_turn_requests, tool_timeout_ms: 20, ..Options::default() };
            let fixture = Fixture::new(script, options).await?;
            let mut live = fixture.subscribe().await?;
            fixture.prompt("go").await?;
            if let Some(after) = cancel_after {
                for _ in 0..after {
                    if matches!(live.next().await?.event, TurnEvent::AgentEnd { .. }) {
                        break;
                    }
                }
                fixture.engine.cancel(fixture.conversation);
            }
            fixture.engine.wait_for_idle(fixture.conversation).await;

            let events = fixture.engine.store().events_after(fixture.conversation, 0, 10_000).await?;
            let history = fixture.history().await?;
            assert_every_call_has_one_result(&history);
            Ok((|| {
                assert_well_nested(&events)?;
                let first_is_the_prompt = matches!(events.first().map(|e| &e.event), Some(TurnEvent::MessagePosted { .. }));
                let last_is_agent_end = matches!(events.last().map(|e| &e.event), Some(TurnEvent::AgentEnd { .. }));
                prop_assert!(first_is_the_prompt, "the log starts with the prompt");
                prop_assert!(last_is_agent_end, "the log ends with agent_end");
                // Usage totals equal the sum over the turn's requests.
                let summed = history.iter().filter(|m| m.role == MessageRole::Assistant).fold(Usage::default(), |mut sum, m| {
                    sum.add(&m.usage.unwrap_or_default());
                    sum
                });
                let reported = events.iter().find_map(|e| match &e.event {
                    TurnEvent::AgentEnd { usage, .. } => Some(*usage),
                    _ => None,
                });
                prop_assert_eq!(reported.map(|u| (u.input_tokens, u.output_tokens)), Some((summed.input_tokens, summed.output_tokens)));
                // The next request to any provider is valid: each tool result right after the call.
                let mut expecting: Vec<String> = Vec::new();
                for message in history.iter().filter(|m| m.role != MessageRole::User) {
                    for part in &message.content {
                        match part {
                            ContentPart::ToolCall { id, .. } => expecting.push(id.to_string()),
                            ContentPart::ToolResult { tool_call_id, .. } => {
                                prop_assert!(expecting.contains(&tool_call_id.to_string()));
                                expecting.retain(|id| id != tool_call_id.as_str());
                            }
                            _ => {}
                        }
                    }
                    if message.role == MessageRole::Assistant {
                        prop_assert!(expecting.iter().all(|id| message.tool_calls().any(|(c, _, _)| c.as_str() == id)),
                            "an assistant message came before earlier calls were answered");
                    }
                }
                Ok(())
            })())
        });
        outcome.map_err(|e| TestCaseError::fail(e.to_string()))??;
    }
}
