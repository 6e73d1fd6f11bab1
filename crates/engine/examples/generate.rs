//! One prompt answered with tools, nothing kept: `cargo run -p colloquy-engine --example generate`.
//!
//! Offline by default (a scripted model). With `OPENAI_BASE_URL` (and `OPENAI_API_KEY`,
//! `MODEL`) set, it asks that OpenAI-compatible server instead.

use std::sync::Arc;

use colloquy_core_model::{AgentSpec, ContentPart, Options};
use colloquy_engine::generate_with_tools;
use colloquy_llm_providers::{LlmProvider, OpenAiCompatible, OpenAiCompatibleConfig, ScriptStep, ScriptedProvider};
use colloquy_store::{SeaStore, StoreOptions};
use colloquy_tools::{ToolExecutor, ToolRegistry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (provider, model): (Arc<dyn LlmProvider>, String) = match std::env::var("OPENAI_BASE_URL") {
        Ok(base_url) => {
            let api_key = std::env::var("OPENAI_API_KEY").ok().map(Into::into);
            let config = OpenAiCompatibleConfig { name: "openai".into(), base_url, api_key, stream_tools: true };
            (Arc::new(OpenAiCompatible::new(config)), std::env::var("MODEL").unwrap_or_else(|_| "gpt-4o-mini".into()))
        }
        Err(_) => {
            let script = vec![
                ScriptStep::tool_calls(&[("call_1", "calculator", r#"{"expression": "17 * 23"}"#)]),
                ScriptStep::text("17 * 23 = 391."),
            ];
            (Arc::new(ScriptedProvider::new(script)), "scripted".into())
        }
    };
    let spec = AgentSpec {
        provider: provider.name().to_owned(),
        model,
        system_prompt: Some("Use the calculator for arithmetic.".into()),
        tools: vec!["calculator".into()],
    };
    let tools = ToolExecutor::new(Arc::new(ToolRegistry::with_builtins()));
    let prompt = vec![ContentPart::text("What is 17 * 23?")];
    // Opened once, reused by every call; in memory, so nothing is kept.
    let store = Arc::new(SeaStore::connect("sqlite::memory:", StoreOptions::default()).await?);
    let generated = generate_with_tools(store, provider, tools, spec, Options::default(), prompt).await?;
    for message in &generated.messages {
        println!("{:>9}: {}", message.role.as_str(), serde_json::to_string(&message.content)?);
    }
    println!("answer: {}\nstop: {:?}, usage: {:?}", generated.text(), generated.stop, generated.usage);
    Ok(())
}
