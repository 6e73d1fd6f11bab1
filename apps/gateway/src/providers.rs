//! Builds the configured LLM providers and the default agent, discovering a local Ollama server
//! when nothing is configured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use colloquy_core_model::AgentSpec;
use colloquy_engine::ProviderRegistry;
use colloquy_llm_providers::{
    A2aAgent, A2aConfig, Anthropic, AnthropicConfig, Counted, LlmProvider, ModelPrice, OpenAiCompatible,
    OpenAiCompatibleConfig, PriceTable, Priced, RetryPolicy, Retrying, ScriptStep, ScriptedProvider, Unconfigured,
};

use crate::config::{Config, ProviderConfig};

/// Where Ollama listens by default.
const OLLAMA_URL: &str = "http://127.0.0.1:11434";
/// The name of the stand-in provider that answers every prompt with setup instructions.
const UNCONFIGURED: &str = "unconfigured";
/// What to do when no provider is set up; shown at start and in every prompt's error.
pub const SETUP_HINT: &str = "set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server) or ANTHROPIC_API_KEY, \
     start Ollama on 127.0.0.1:11434, or declare [providers.NAME] in colloquy.toml (see the README)";

/// The providers and the agent that new conversations get.
pub struct Providers {
    /// By name.
    pub registry: ProviderRegistry,
    /// The default agent.
    pub default_agent: AgentSpec,
    /// The named agents (`[agents.NAME]`).
    pub agents: BTreeMap<String, AgentSpec>,
    /// Lines to print at start, saying what is in use.
    pub banner: Vec<String>,
}

/// Builds the providers of `config`; with none configured, asks a local Ollama server.
pub async fn build(config: &Config, builtin_tools: Vec<String>) -> Providers {
    let mut registry = ProviderRegistry::new();
    let mut default_models = Vec::new();
    let mut banner = Vec::new();
    for (name, provider) in &config.providers {
        let (provider, model): (Arc<dyn LlmProvider>, String) = match provider {
            ProviderConfig::OpenaiCompatible { base_url, api_key, default_model, pricing, stream_tools } => {
                let streaming = if *stream_tools { "" } else { " (replies with tools offered are not streamed)" };
                banner.push(format!("provider `{name}`: OpenAI-compatible at {base_url}{streaming}"));
                let config = OpenAiCompatibleConfig {
                    name: name.clone(),
                    base_url: base_url.clone(),
                    api_key: api_key.clone(),
                    stream_tools: *stream_tools,
                };
                (
                    production(OpenAiCompatible::new(config), pricing),
                    default_model.clone().unwrap_or_else(|| "gpt-4o-mini".to_owned()),
                )
            }
            ProviderConfig::Anthropic { base_url, api_key, default_model, pricing } => {
                banner.push(format!("provider `{name}`: Anthropic at {base_url}"));
                if api_key.is_none() {
                    banner.push(format!("provider `{name}`: no API key; set ANTHROPIC_API_KEY or its api_key"));
                }
                let config =
                    AnthropicConfig { name: name.clone(), base_url: base_url.clone(), api_key: api_key.clone() };
                (
                    production(Anthropic::new(config), pricing),
                    default_model.clone().unwrap_or_else(|| "claude-sonnet-4-5".to_owned()),
                )
            }
            ProviderConfig::A2a { url, api_key } => {
                banner.push(format!("provider `{name}`: the A2A agent at {url}"));
                let config = A2aConfig { name: name.clone(), url: url.clone(), api_key: api_key.clone() };
                // Not retried: a retry would send the message to the remote agent twice. A2A
                // reports no tokens: they are counted here and marked estimated.
                (Arc::new(Counted::new(A2aAgent::new(config))), "a2a".to_owned())
            }
            ProviderConfig::Scripted { replies } => {
                banner.push(format!("provider `{name}`: scripted ({} replies, cycling)", replies.len()));
                let steps = replies.iter().map(|reply| ScriptStep::text(reply)).collect();
                (Arc::new(ScriptedProvider::cycling(steps).named(name.clone())), "scripted".to_owned())
            }
        };
        registry.insert(name.clone(), provider);
        default_models.push((name.clone(), model));
    }

    if registry.is_empty() {
        let discovered = if config.discover_ollama { discover_ollama().await } else { None };
        match discovered {
            Some(first_model) => {
                banner.push(format!("provider `ollama`: found a local Ollama server at {OLLAMA_URL}"));
                let config = OpenAiCompatibleConfig {
                    name: "ollama".to_owned(),
                    base_url: format!("{OLLAMA_URL}/v1"),
                    api_key: None,
                    stream_tools: true,
                };
                registry.insert("ollama".to_owned(), production(OpenAiCompatible::new(config), &BTreeMap::new()));
                default_models.push(("ollama".to_owned(), first_model.unwrap_or_else(|| "llama3.2".to_owned())));
            }
            None => {
                banner.push(format!("no LLM provider is configured: {SETUP_HINT}"));
                banner.push("until then, every prompt is answered with an error event".to_owned());
                registry.insert(UNCONFIGURED.to_owned(), Arc::new(Unconfigured::new(UNCONFIGURED, SETUP_HINT)));
                default_models.push((UNCONFIGURED.to_owned(), "none".to_owned()));
            }
        }
    }

    // A named agent's unset fields are the default agent's.
    let resolve = |agent: &crate::config::AgentConfig, base: Option<&AgentSpec>| {
        let provider = agent
            .provider
            .clone()
            .or_else(|| base.map(|b| b.provider.clone()))
            .or_else(|| default_models.first().map(|(name, _)| name.clone()))
            .unwrap_or_else(|| UNCONFIGURED.to_owned());
        let model = agent.model.clone().or_else(|| base.filter(|b| b.provider == provider).map(|b| b.model.clone()));
        let model = model.unwrap_or_else(|| {
            default_models
                .iter()
                .find(|(name, _)| *name == provider)
                .map_or_else(|| "none".to_owned(), |(_, m)| m.clone())
        });
        AgentSpec {
            provider,
            model,
            system_prompt: agent.system_prompt.clone().or_else(|| base.and_then(|b| b.system_prompt.clone())),
            tools: agent
                .tools
                .clone()
                .or_else(|| base.map(|b| b.tools.clone()))
                .unwrap_or_else(|| builtin_tools.clone()),
        }
    };
    let default_agent = resolve(&config.agent, None);
    banner.push(format!("default agent: provider `{}`, model `{}`", default_agent.provider, default_agent.model));
    let agents: BTreeMap<String, AgentSpec> =
        config.agents.iter().map(|(name, agent)| (name.clone(), resolve(agent, Some(&default_agent)))).collect();
    for (name, agent) in &agents {
        banner.push(format!("agent `{name}`: provider `{}`, model `{}`", agent.provider, agent.model));
    }
    Providers { registry, default_agent, agents, banner }
}

/// An HTTP provider as the engine gets it: retried before its first event (default policy),
/// its usage counted locally when the server reports none, and priced from the built-in table
/// plus the configuration's `pricing`.
fn production(provider: impl LlmProvider, pricing: &BTreeMap<String, ModelPrice>) -> Arc<dyn LlmProvider> {
    let mut prices = PriceTable::builtin();
    for (model, price) in pricing {
        prices.insert(model.clone(), *price);
    }
    Arc::new(Priced::new(Counted::new(Retrying::new(provider, RetryPolicy::default())), Arc::new(prices)))
}

/// Asks Ollama for its models; `Some(first model)` when it answers.
async fn discover_ollama() -> Option<Option<String>> {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().ok()?;
    let response = client.get(format!("{OLLAMA_URL}/api/tags")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let tags: serde_json::Value = response.json().await.ok()?;
    let first = tags["models"].get(0).and_then(|m| m["name"].as_str()).map(str::to_owned);
    Some(first)
}
