//! A stateful conversation through the library: `cargo run -p colloquy-engine --example conversation`.
//!
//! Stores into `./example.db` (SQLite), streams the agent's words as they arrive, and shows the
//! handle's calls: prompt, state, set_system_prompt, continue, history.

use std::sync::Arc;

use colloquy_core_model::{AgentSpec, MessageDelta, Options, TurnEvent};
use colloquy_engine::{Engine, ProviderRegistry};
use colloquy_llm_providers::{ScriptStep, ScriptedProvider};
use colloquy_store::{SeaStore, StoreOptions};
use colloquy_tools::{ToolExecutor, ToolRegistry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = SeaStore::connect("sqlite://example.db?mode=rwc", StoreOptions::default()).await?;
    let script = vec![
        ScriptStep::text("Hello! Ask me anything."),
        ScriptStep::tool_calls(&[("call_1", "calculator", r#"{"expression": "2^10"}"#)]),
        ScriptStep::text("2^10 is 1024."),
        ScriptStep::text("Bonjour ! 2^10 fait 1024."),
    ];
    let mut providers = ProviderRegistry::new();
    providers.insert("scripted".into(), Arc::new(ScriptedProvider::new(script)));
    let engine = Engine::new(Arc::new(store), providers, ToolExecutor::new(Arc::new(ToolRegistry::with_builtins())));

    let spec = AgentSpec {
        provider: "scripted".into(),
        model: "demo".into(),
        system_prompt: None,
        tools: vec!["calculator".into()],
    };
    let conversation = engine.start(spec, Options::default()).await?;
    println!("conversation {}", conversation.id());

    // Print text deltas live, the way a chat client would.
    let mut events = conversation.subscribe().await?;
    tokio::spawn(async move {
        while let Ok(envelope) = events.next().await {
            match envelope.event {
                TurnEvent::MessageUpdate { delta: MessageDelta::Text { text }, .. } => print!("{text}"),
                TurnEvent::ToolExecutionStart { tool_name, arguments, .. } => {
                    println!("[running {tool_name} {arguments}]")
                }
                TurnEvent::AgentEnd { stop, .. } => println!("\n[{stop:?}]"),
                _ => {}
            }
        }
    });

    conversation.prompt("Hi!", vec![]).await?;
    conversation.prompt("What is 2^10?", vec![]).await?;
    let state = conversation.state().await?;
    println!(
        "messages: {}, tokens in/out: {}/{}",
        state.totals.messages, state.totals.input_tokens, state.totals.output_tokens
    );
    conversation.set_system_prompt(Some("Answer in French.".into())).await?;
    conversation.continue_turn().await?;
    println!("history has {} messages", conversation.history().await?.len());
    Ok(())
}
