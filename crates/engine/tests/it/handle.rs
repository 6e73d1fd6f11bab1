//! The library surface: a conversation handle and a one-off generate_with_tools.

use std::sync::Arc;

use colloquy_core_model::{AgentSpec, ContentPart, MessageRole, Options, StopReason};
use colloquy_engine::generate_with_tools;
use colloquy_llm_providers::{ScriptStep, ScriptedProvider};
use colloquy_store::{ConversationFilter, ConversationStore, SeaStore, StoreOptions};
use colloquy_tools::{ToolExecutor, ToolRegistry};

use crate::support::Fixture;

fn spec() -> AgentSpec {
    AgentSpec {
        provider: "scripted".into(),
        model: "scripted-model".into(),
        system_prompt: None,
        tools: vec!["calculator".into()],
    }
}

#[tokio::test]
async fn a_handle_prompts_continues_changes_its_agent_and_resets() -> anyhow::Result<()> {
    let script = vec![
        ScriptStep::tool_calls(&[("call_1", "calculator", r#"{"expression": "2+2"}"#)]),
        ScriptStep::text("4."),
        ScriptStep::text("Continuing: still 4."),
        ScriptStep::text("Fresh start."),
    ];
    let fixture = Fixture::new(script, Options::default()).await?;
    let mut handle = fixture.engine.start(spec(), Options::default()).await?;

    let added = handle.prompt("2+2?", vec![]).await?;
    let roles: Vec<MessageRole> = added.iter().map(|m| m.role).collect();
    assert_eq!(roles, [MessageRole::User, MessageRole::Assistant, MessageRole::Tool, MessageRole::Assistant]);
    assert_eq!(added.last().map(|m| m.text()), Some("4.".to_owned()));

    handle.add_custom_message(serde_json::json!({"bookmark": 1})).await?;
    let continued = handle.continue_turn().await?;
    assert_eq!(continued.last().map(|m| m.text()), Some("Continuing: still 4.".to_owned()));
    // The custom message was stored but never sent to the model.
    let last_request = fixture.provider.requests().pop().unwrap_or_else(|| panic!("no request"));
    assert!(last_request.messages.iter().all(|m| m.content.iter().all(|p| !matches!(p, ContentPart::Custom { .. }))));

    handle.set_system_prompt(Some("Answer in French.".into())).await?;
    handle.set_tools(vec![]).await?;
    assert!(handle.set_tools(vec!["no_such_tool".into()]).await.is_err());
    let state = handle.state().await?;
    assert_eq!(state.agent.system_prompt.as_deref(), Some("Answer in French."));
    assert!(state.agent.tools.is_empty());
    assert!(!state.is_streaming && state.pending_tool_calls.is_empty());
    assert_eq!(state.totals.messages, 6);

    // Editing history: text can change, a tool result alone can neither change nor go, and an
    // assistant message with calls takes its results with it.
    let history = handle.history().await?;
    let prompt = &history[0];
    let edited = handle.update_message(prompt.id, vec![ContentPart::text("What is 2+2, exactly?")]).await?;
    assert_eq!((edited.seq, edited.text()), (prompt.seq, "What is 2+2, exactly?".to_owned()));
    let tool_result = history.iter().find(|m| m.role == MessageRole::Tool).map(|m| m.id).unwrap_or_default();
    assert!(matches!(handle.remove_message(tool_result).await, Err(colloquy_engine::EngineError::InvalidEdit(_))));
    assert!(matches!(
        handle.update_message(history[1].id, vec![ContentPart::text("no calls")]).await,
        Err(colloquy_engine::EngineError::InvalidEdit(_))
    ));
    let before = handle.state().await?.totals;
    handle.remove_message(history[1].id).await?;
    let after = handle.history().await?;
    assert_eq!(after.len(), history.len() - 2, "the call and its result are gone");
    assert!(after.iter().all(|m| m.role != MessageRole::Tool));
    let totals = handle.state().await?.totals;
    assert_eq!(totals.messages, before.messages - 2);
    assert_eq!(totals.input_tokens, before.input_tokens - 10);
    assert!(handle.state().await?.pending_tool_calls.is_empty());

    let fork = handle.fork(None).await?;
    assert_eq!(fork.history().await?.len(), handle.history().await?.len());
    assert_ne!(fork.id(), handle.id());
    fork.end().await?;
    let ended = fork.prompt("still there?", vec![]).await;
    assert!(
        matches!(ended, Err(colloquy_engine::EngineError::Store(colloquy_store::StoreError::ConversationNotActive(_)))),
        "{ended:?}"
    );

    let old = handle.id();
    handle.reset().await?;
    assert_ne!(handle.id(), old);
    assert!(handle.history().await?.is_empty());
    let fresh = handle.prompt("hello", vec![]).await?;
    assert_eq!(fresh.last().map(|m| m.text()), Some("Fresh start.".to_owned()));
    let request = fixture.provider.requests().pop().unwrap_or_else(|| panic!("no request"));
    assert_eq!(request.system_prompt.as_deref(), Some("Answer in French."), "reset keeps the agent as changed");
    Ok(())
}

#[tokio::test]
async fn generate_with_tools_runs_the_whole_loop_once() -> anyhow::Result<()> {
    let provider = ScriptedProvider::new(vec![
        ScriptStep::tool_calls(&[("call_1", "calculator", r#"{"expression": "6*7"}"#)]),
        ScriptStep::text("42"),
    ]);
    let tools = ToolExecutor::new(Arc::new(ToolRegistry::with_builtins()));
    let store: Arc<dyn ConversationStore> =
        Arc::new(SeaStore::connect("sqlite::memory:", StoreOptions::default()).await?);
    let generated = generate_with_tools(
        Arc::clone(&store),
        Arc::new(provider.clone()),
        tools,
        spec(),
        Options::default(),
        vec![ContentPart::text("6*7?")],
    )
    .await?;
    // Nothing is kept in the store it ran over.
    let left = store.list_conversations(ConversationFilter::default(), None, 10).await?;
    assert!(left.items.is_empty(), "{:?}", left.items);
    assert_eq!(generated.stop, StopReason::EndTurn);
    assert_eq!(generated.text(), "42");
    assert_eq!(generated.messages.len(), 3);
    assert_eq!(generated.usage.input_tokens, 20);
    assert_eq!(provider.requests().len(), 2);
    Ok(())
}
