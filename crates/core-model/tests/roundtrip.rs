//! Serde round-trips of the wire types over random values.

use chrono::{TimeZone, Utc};
use colloquy_core_model::*;
use proptest::prelude::*;

fn any_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _@.,!?-]{0,24}"
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any_text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_usage() -> impl Strategy<Value = Usage> {
    (any::<u32>(), any::<u32>(), any::<u16>(), proptest::option::of(0u32..1_000_000), any::<bool>()).prop_map(
        |(i, o, c, cost, estimated)| Usage {
            input_tokens: u64::from(i),
            output_tokens: u64::from(o),
            cache_read_tokens: u64::from(c),
            cache_write_tokens: 0,
            cost_usd: cost.map(|micros| f64::from(micros) / 1e6),
            estimated,
        },
    )
}

fn any_part() -> impl Strategy<Value = ContentPart> {
    prop_oneof![
        any_text().prop_map(|text| ContentPart::Text { text }),
        (any_text(), any_text())
            .prop_map(|(mime_type, data)| ContentPart::Image { source: MediaSource::Base64 { mime_type, data } }),
        (any_text(), any_text(), any_json()).prop_map(|(id, name, arguments)| ContentPart::ToolCall {
            id: id.into(),
            name,
            arguments
        }),
        (any_text(), any_text(), any_text(), any::<bool>()).prop_map(|(id, name, content, is_error)| {
            ContentPart::ToolResult { tool_call_id: id.into(), name, content, is_error }
        }),
        any_json().prop_map(|value| ContentPart::Custom { value }),
    ]
}

fn any_role() -> impl Strategy<Value = MessageRole> {
    prop_oneof![
        Just(MessageRole::System),
        Just(MessageRole::User),
        Just(MessageRole::Assistant),
        Just(MessageRole::Tool),
        Just(MessageRole::Custom),
    ]
}

fn any_message() -> impl Strategy<Value = Message> {
    (
        any::<u64>(),
        any_role(),
        prop::collection::vec(any_part(), 0..4),
        proptest::option::of(any_usage()),
        proptest::option::of(any_text()),
        0i64..4_000_000_000,
    )
        .prop_map(|(seq, role, content, usage, client_msg_id, secs)| {
            let mut message = NewMessage::new(role, content);
            message.usage = usage;
            message.client_msg_id = client_msg_id;
            message.sender = Some(ParticipantId::new());
            let created_at = Utc.timestamp_opt(secs, 0).single().unwrap_or_default();
            message.into_message(ConversationId::new(), seq, created_at)
        })
}

fn any_stop() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        Just(StopReason::EndTurn),
        Just(StopReason::MaxTokens),
        Just(StopReason::MaxTurnRequests),
        Just(StopReason::Refusal),
        Just(StopReason::Cancelled),
        Just(StopReason::BudgetExceeded { limit: BudgetLimit::Cost }),
        any_text()
            .prop_map(|message| StopReason::Error { error: TurnError { kind: TurnErrorKind::Provider, message } }),
    ]
}

fn any_event() -> impl Strategy<Value = TurnEvent> {
    let turn_id = TurnId::new();
    prop_oneof![
        Just(TurnEvent::AgentStart { turn_id, agent: ParticipantId::new() }),
        any::<u32>().prop_map(move |request| TurnEvent::TurnStart { turn_id, request }),
        any_text().prop_map(move |text| TurnEvent::MessageUpdate {
            turn_id,
            message_id: MessageId::new(),
            delta: MessageDelta::Text { text }
        }),
        any_message().prop_map(move |message| TurnEvent::MessageEnd { turn_id, message }),
        (any_text(), any_json()).prop_map(move |(tool_name, arguments)| TurnEvent::ToolExecutionStart {
            turn_id,
            tool_call_id: "call_1".into(),
            tool_name,
            arguments
        }),
        (any_stop(), any_usage()).prop_map(move |(stop, usage)| TurnEvent::AgentEnd { turn_id, stop, usage }),
        any_message().prop_map(|message| TurnEvent::MessagePosted { message }),
        any_message().prop_map(|message| TurnEvent::MessageQueued { message }),
        any_participant().prop_map(|participant| TurnEvent::ParticipantJoined { participant }),
        any_participant().prop_map(|participant| TurnEvent::ParticipantUpdated { participant }),
    ]
}

fn any_participant() -> impl Strategy<Value = Participant> {
    (any_text(), any::<bool>(), any::<bool>()).prop_map(|(display_name, bound, agent)| Participant {
        id: ParticipantId::new(),
        conversation_id: ConversationId::new(),
        kind: if agent { ParticipantKind::Agent } else { ParticipantKind::User },
        display_name,
        role: ParticipantRole::Observer,
        agent: agent.then(|| AgentSpec {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            system_prompt: None,
            tools: vec!["calculator".into()],
        }),
        account: bound.then(AccountId::new),
        a2a_url: None,
        joined_at: Utc.timestamp_opt(1_700_000_000, 0).single().unwrap_or_default(),
        left_at: None,
    })
}

fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

proptest! {
    #[test]
    fn messages_round_trip(message in any_message()) {
        round_trips(&message)?;
    }

    #[test]
    fn events_round_trip(event in any_event(), seq in proptest::option::of(any::<u64>())) {
        round_trips(&EventEnvelope { conversation_id: ConversationId::new(), seq, event })?;
    }

    #[test]
    fn options_round_trip(max_turn_requests in 1u32..100, tool_concurrency in 1usize..16, function in proptest::option::of("[a-z_]{1,12}")) {
        let options = Options {
            max_turn_requests,
            tool_concurrency,
            tool_choice: function.map_or(ToolChoice::Required, ToolChoice::Function),
            ..Options::default()
        };
        round_trips(&options)?;
    }
}

#[test]
fn wire_names_are_snake_case() {
    let stop = TurnEvent::AgentEnd {
        turn_id: TurnId::from_uuid(uuid::Uuid::nil()),
        stop: StopReason::BudgetExceeded { limit: BudgetLimit::Context },
        usage: Usage::default(),
    };
    let json = serde_json::to_value(&stop).unwrap_or_default();
    assert_eq!(json["type"], "agent_end");
    assert_eq!(json["stop_reason"], "budget_exceeded");
    assert_eq!(json["limit"], "context");
    assert_eq!(
        serde_json::to_value(ToolChoice::Function("calc".into())).unwrap_or_default(),
        serde_json::json!({"function": "calc"})
    );
    assert_eq!(serde_json::to_value(ToolChoice::Required).unwrap_or_default(), serde_json::json!("required"));
    let options: Options = serde_json::from_str("{}").unwrap_or_else(|e| panic!("empty options must parse: {e}"));
    assert_eq!(options, Options::default());
}

#[test]
fn ids_parse_with_a_clear_error() {
    let id = ConversationId::new();
    assert_eq!(id.to_string().parse::<ConversationId>(), Ok(id));
    let err = "nope".parse::<ConversationId>().map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("not a valid conversation id"), "{err}");
}

#[test]
fn content_parts_refuse_unknown_fields() {
    let misspelt = serde_json::json!({"type": "text", "txt": "hello"});
    assert!(serde_json::from_value::<ContentPart>(misspelt).is_err());
    let extra = serde_json::json!({"type": "text", "text": "hello", "role": "system"});
    assert!(serde_json::from_value::<ContentPart>(extra).is_err());
    let source = serde_json::json!({"type": "image", "source": {"type": "url", "url": "https://x", "x": 1}});
    assert!(serde_json::from_value::<ContentPart>(source).is_err());
    let fine = serde_json::json!({"type": "text", "text": "hello"});
    assert_eq!(serde_json::from_value::<ContentPart>(fine).ok(), Some(ContentPart::text("hello")));
}

#[test]
fn empty_parts_are_the_ones_that_say_nothing() {
    for empty in [
        ContentPart::text(""),
        ContentPart::text(" \n\t"),
        ContentPart::Custom { value: serde_json::Value::Null },
        ContentPart::Custom { value: serde_json::json!({}) },
        ContentPart::Custom { value: serde_json::json!([]) },
        ContentPart::Custom { value: serde_json::json!("  ") },
    ] {
        assert!(empty.is_empty(), "{empty:?}");
    }
    for full in [
        ContentPart::text(" a "),
        ContentPart::Custom { value: serde_json::json!(0) },
        ContentPart::Custom { value: serde_json::json!({"a": null}) },
    ] {
        assert!(!full.is_empty(), "{full:?}");
    }
}

/// A value nested `depth` arrays deep around a number.
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(serde_json::json!(1), |inner, _| serde_json::Value::Array(vec![inner]))
}

#[test]
fn json_depth_counts_nested_containers() {
    use colloquy_core_model::limits::json_depth;
    assert_eq!(json_depth(&serde_json::json!(1)), 0);
    assert_eq!(json_depth(&serde_json::json!([])), 1);
    assert_eq!(json_depth(&serde_json::json!({"a": [1, {"b": []}], "c": 2})), 4);
    assert_eq!(json_depth(&nested(1_000)), 1_000);
}

proptest! {
    #[test]
    fn json_depth_matches_serde_jsons_recursion_limit(depth in 0usize..200) {
        // serde_json refuses to parse 128 or more nested levels; json_depth agrees on where that
        // line is, so the limits below it are real.
        let text = serde_json::to_string(&nested(depth)).unwrap_or_default();
        let parsed = serde_json::from_str::<serde_json::Value>(&text);
        prop_assert_eq!(parsed.is_ok(), depth < 128);
        if let Ok(value) = parsed {
            prop_assert_eq!(colloquy_core_model::limits::json_depth(&value), depth);
        }
    }
}
