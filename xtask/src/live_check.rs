//! `cargo xtask live-check`: talks to a real model server, on demand and never in CI, to show
//! that streaming and a tool-call round trip work against it: a short prompt, then a calculator
//! call whose result goes back to the model for the final answer. It prints what happened.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use colloquy_core_model::{ContentPart, MessageRole, ToolChoice, ToolSpec};
use colloquy_llm_providers::{
    Anthropic, AnthropicConfig, AssembledResponse, Counted, LlmProvider, LlmRequest, OpenAiCompatible,
    OpenAiCompatibleConfig, PriceTable, Priced, ProviderEvent, RequestMessage, ResponseAccumulator, RetryPolicy,
    Retrying,
};
use futures::StreamExt;
use secrecy::SecretString;

/// Which wire format the server speaks.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// OpenAI chat completions (OpenAI, Ollama, vLLM, llama.cpp, LM Studio, ...).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

/// How the model is asked to use the calculator.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ToolUse {
    /// Must call the calculator by name (works on small local models that support it).
    Forced,
    /// Must call some tool.
    Required,
    /// May call it.
    Auto,
}

/// `cargo xtask live-check` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's API root, e.g. `http://127.0.0.1:8000/v1` or `https://api.anthropic.com`.
    #[arg(long)]
    base_url: String,
    /// The model to ask; defaults to gpt-4o-mini, or claude-haiku-4-5 with `--kind anthropic`
    /// (servers that serve one model often accept any name).
    #[arg(long)]
    model: Option<String>,
    /// The API key, if the server needs one (also read from `LIVE_CHECK_API_KEY`); never printed.
    #[arg(long, env = "LIVE_CHECK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The server's wire format.
    #[arg(long, value_enum, default_value_t = Kind::Openai)]
    kind: Kind,
    /// How the model is asked to use the calculator.
    #[arg(long, value_enum, default_value_t = ToolUse::Forced)]
    tool_use: ToolUse,
    /// Ask for whole replies when tools are offered (the provider setting `stream_tools = false`,
    /// for servers that cannot stream tool calls, such as llama-cpp-python).
    #[arg(long)]
    no_stream_tools: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(check(args))
}

async fn check(args: Args) -> anyhow::Result<()> {
    let model = args.model.clone().unwrap_or_else(|| {
        match args.kind {
            Kind::Openai => "gpt-4o-mini",
            Kind::Anthropic => "claude-haiku-4-5",
        }
        .to_owned()
    });
    let api_key = args.api_key.map(SecretString::from);
    let provider: Arc<dyn LlmProvider> = match args.kind {
        Kind::Openai => Arc::new(OpenAiCompatible::new(OpenAiCompatibleConfig {
            name: "live".to_owned(),
            base_url: args.base_url.clone(),
            api_key,
            stream_tools: !args.no_stream_tools,
        })),
        Kind::Anthropic => Arc::new(Anthropic::new(AnthropicConfig {
            name: "live".to_owned(),
            base_url: args.base_url.clone(),
            api_key,
        })),
    };
    // The stack the gateway builds: retries before the first event, usage counted locally when
    // the server reports none, then prices.
    let provider =
        Priced::new(Counted::new(Retrying::new(provider, RetryPolicy::default())), Arc::new(PriceTable::builtin()));
    println!("live check: {:?} server at {}, model `{model}`", args.kind, args.base_url);

    println!("\n1. a short prompt, streamed");
    let request = LlmRequest {
        model: model.clone(),
        system_prompt: Some("You are a concise assistant.".to_owned()),
        messages: vec![user("Name the capital of France in one short sentence.")],
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
        temperature: Some(0.0),
        max_tokens: Some(64),
        conversation: None,
        provider_state: None,
    };
    let reply = stream(&provider, request).await.context("the short prompt failed")?;
    if text_of(&reply).trim().is_empty() {
        bail!("the model answered with no text");
    }

    println!("\n2. a calculator tool call and its result");
    let calculator = ToolSpec {
        name: "calculator".to_owned(),
        description: "Evaluates an arithmetic expression with + - * / and parentheses.".to_owned(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 12 * (3 + 4)"}},
            "required": ["expression"]
        }),
    };
    let mut request = LlmRequest {
        model: model.clone(),
        system_prompt: Some("Use the calculator tool for arithmetic.".to_owned()),
        messages: vec![user("What is 1234 * 5678? Use the calculator.")],
        tools: vec![calculator],
        tool_choice: match args.tool_use {
            ToolUse::Forced => ToolChoice::Function("calculator".to_owned()),
            ToolUse::Required => ToolChoice::Required,
            ToolUse::Auto => ToolChoice::Auto,
        },
        temperature: Some(0.0),
        max_tokens: Some(128),
        conversation: None,
        provider_state: None,
    };
    let reply = stream(&provider, request.clone())
        .await
        .context("the tool-call request failed (a server that cannot stream tool calls needs --no-stream-tools)")?;
    let results: Vec<ContentPart> = reply
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::ToolCall { id, name, arguments } => {
                let (content, is_error) = run_calculator(name, arguments);
                println!("   tool call {id}: {name}({arguments}) -> {content}");
                Some(ContentPart::ToolResult { tool_call_id: id.clone(), name: name.clone(), content, is_error })
            }
            _ => None,
        })
        .collect();
    if results.is_empty() {
        bail!("the model did not call the calculator; try --tool-use forced, or a model that supports tool calls");
    }
    request.messages.push(RequestMessage { role: MessageRole::Assistant, content: reply.content });
    request.messages.push(RequestMessage { role: MessageRole::Tool, content: results });
    // The answer, not another call.
    request.tool_choice = ToolChoice::None;

    println!("\n3. the answer from the tool result");
    let reply = stream(&provider, request).await.context("the request with the tool result failed")?;
    let answer = text_of(&reply);
    if answer.replace([',', ' ', '.'], "").contains("7006652") {
        println!("\nlive check passed: streaming text and a tool-call round trip work");
    } else {
        println!("\nlive check passed (the wire works), but the final answer does not quote 7006652: {answer:?}");
    }
    Ok(())
}

fn user(text: &str) -> RequestMessage {
    RequestMessage { role: MessageRole::User, content: vec![ContentPart::text(text)] }
}

/// Streams one reply, printing text as it comes and a summary after.
async fn stream(provider: &dyn LlmProvider, request: LlmRequest) -> anyhow::Result<AssembledResponse> {
    let started = Instant::now();
    let mut first_event: Option<Duration> = None;
    let mut events = 0usize;
    let mut accumulator = ResponseAccumulator::new();
    let mut replies = provider.stream(request);
    let mut texts = 0usize;
    while let Some(item) = replies.next().await {
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                if texts > 0 {
                    println!();
                }
                bail!("after {events} events: {error}");
            }
        };
        events += 1;
        first_event.get_or_insert_with(|| started.elapsed());
        if let ProviderEvent::TextDelta(text) = &event {
            if texts == 0 {
                print!("   ");
            }
            texts += 1;
            print!("{text}");
            std::io::stdout().flush()?;
        }
        accumulator.push(&event);
    }
    if texts > 0 {
        println!();
    }
    let reply = accumulator.finish();
    let cost = reply
        .usage
        .cost_usd
        .map_or_else(|| "unknown (model not in the price table)".to_owned(), |c| format!("${c:.6}"));
    println!(
        "   {events} events, first after {:?}, all in {:?}; finish {:?}; tokens{} in {} (cached {}), out {}; cost {cost}",
        first_event.unwrap_or_default(),
        started.elapsed(),
        reply.finish,
        if reply.usage.estimated { " (estimated: the server reported none)" } else { "" },
        reply.usage.input_tokens,
        reply.usage.cache_read_tokens,
        reply.usage.output_tokens,
    );
    if reply.finish.is_none() {
        bail!("the stream ended without a finish reason");
    }
    Ok(reply)
}

fn text_of(reply: &AssembledResponse) -> String {
    reply
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The calculator's result for a call: `(content, is_error)`.
fn run_calculator(name: &str, arguments: &serde_json::Value) -> (String, bool) {
    if name != "calculator" {
        return (format!("unknown tool `{name}`; the only tool is `calculator`"), true);
    }
    let Some(expression) = arguments.get("expression").and_then(serde_json::Value::as_str) else {
        return (format!("expected {{\"expression\": \"...\"}}, got {arguments}"), true);
    };
    match Arithmetic::new(expression).evaluate() {
        Some(value) => (format!("{value}"), false),
        None => (format!("cannot evaluate `{expression}`; use numbers, + - * / and parentheses"), true),
    }
}

/// A recursive-descent evaluator of `+ - * /`, parentheses and decimal numbers: enough for the
/// check, without pulling the tools crate into xtask.
struct Arithmetic<'a> {
    rest: &'a str,
}

impl<'a> Arithmetic<'a> {
    fn new(expression: &'a str) -> Self {
        Self { rest: expression }
    }

    fn evaluate(mut self) -> Option<f64> {
        let value = self.sum()?;
        self.rest.trim().is_empty().then_some(value)
    }

    fn eat(&mut self, symbol: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(symbol) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn sum(&mut self) -> Option<f64> {
        let mut value = self.product()?;
        loop {
            if self.eat('+') {
                value += self.product()?;
            } else if self.eat('-') {
                value -= self.product()?;
            } else {
                return Some(value);
            }
        }
    }

    fn product(&mut self) -> Option<f64> {
        let mut value = self.factor()?;
        loop {
            if self.eat('*') || self.eat('x') || self.eat('×') {
                value *= self.factor()?;
            } else if self.eat('/') {
                value /= self.factor()?;
            } else {
                return Some(value);
            }
        }
    }

    fn factor(&mut self) -> Option<f64> {
        if self.eat('-') {
            return self.factor().map(|value| -value);
        }
        if self.eat('(') {
            let value = self.sum()?;
            return self.eat(')').then_some(value);
        }
        self.rest = self.rest.trim_start();
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_' || c == ','))
            .unwrap_or(self.rest.len());
        let (number, rest) = self.rest.split_at(end);
        self.rest = rest;
        number.replace(['_', ','], "").parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calculator_evaluates_what_models_write() {
        let eval = |expression: &str| Arithmetic::new(expression).evaluate();
        assert_eq!(eval("1234 * 5678"), Some(7_006_652.0));
        assert_eq!(eval(" 2 + 3 * (4 - 1) / 3 "), Some(5.0));
        assert_eq!(eval("-(1,000 + 1)"), Some(-1001.0));
        assert_eq!(eval("2 +"), None);
        assert_eq!(eval("sqrt(2)"), None);
        assert_eq!(run_calculator("calculator", &serde_json::json!({"expression": "6*7"})), ("42".to_owned(), false));
        assert!(run_calculator("clock", &serde_json::json!({})).1);
    }
}
