//! What requests cost: a table of model prices in USD per million tokens, the common OpenAI and
//! Anthropic models built in and more added by the caller, and [`Priced`], which writes the cost
//! into every reply's usage.

use std::collections::HashMap;
use std::sync::Arc;

use colloquy_core_model::Usage;
use futures::StreamExt;
use serde::Deserialize;

use crate::{LlmProvider, LlmRequest, ProviderEvent, ProviderStream};

/// One model's prices, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Prompt tokens that were not cached.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens read from the provider's cache; unset means the input price.
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Prompt tokens written to the provider's cache (Anthropic charges extra); unset means the
    /// input price.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl ModelPrice {
    /// Input and output prices, with cached tokens at the input price.
    pub const fn new(input: f64, output: f64) -> Self {
        Self { input, output, cache_read: None, cache_write: None }
    }

    /// These prices with cache reads at `cache_read` and cache writes at `cache_write`.
    #[must_use]
    pub const fn with_cache(mut self, cache_read: f64, cache_write: f64) -> Self {
        self.cache_read = Some(cache_read);
        self.cache_write = Some(cache_write);
        self
    }

    /// What `usage` costs. Its `input_tokens` include the cached ones, which are priced apart.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cache_read_tokens.saturating_add(usage.cache_write_tokens);
        let uncached = usage.input_tokens.saturating_sub(cached);
        let per_token = |tokens: u64, per_million: f64| tokens as f64 * per_million / 1_000_000.0;
        per_token(uncached, self.input)
            + per_token(usage.cache_read_tokens, self.cache_read.unwrap_or(self.input))
            + per_token(usage.cache_write_tokens, self.cache_write.unwrap_or(self.input))
            + per_token(usage.output_tokens, self.output)
    }
}

/// Prices by model name. A dated or `-latest` name (`gpt-4o-2024-08-06`,
/// `claude-sonnet-4-5-20250929`) finds the price of its family (`gpt-4o`, `claude-sonnet-4-5`)
/// unless it has one of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    /// USD per million tokens by model name.
    prices: HashMap<String, ModelPrice>,
}

/// The built-in prices: `(model, input, cached input, output)` for OpenAI, whose cache writes
/// cost the input price.
const OPENAI: &[(&str, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 0.125, 10.0),
    ("gpt-5-mini", 0.25, 0.025, 2.0),
    ("gpt-5-nano", 0.05, 0.005, 0.40),
    ("gpt-4.1", 2.0, 0.50, 8.0),
    ("gpt-4.1-mini", 0.40, 0.10, 1.60),
    ("gpt-4.1-nano", 0.10, 0.025, 0.40),
    ("gpt-4o", 2.50, 1.25, 10.0),
    ("gpt-4o-mini", 0.15, 0.075, 0.60),
    ("o1", 15.0, 7.50, 60.0),
    ("o3", 2.0, 0.50, 8.0),
    ("o3-mini", 1.10, 0.55, 4.40),
    ("o4-mini", 1.10, 0.275, 4.40),
    ("gpt-4-turbo", 10.0, 10.0, 30.0),
    ("gpt-3.5-turbo", 0.50, 0.50, 1.50),
];

/// `(model, input, output, cache read, cache write)` for Anthropic (five-minute cache writes).
const ANTHROPIC: &[(&str, f64, f64, f64, f64)] = &[
    ("claude-opus-4-5", 5.0, 25.0, 0.50, 6.25),
    ("claude-opus-4-1", 15.0, 75.0, 1.50, 18.75),
    ("claude-opus-4-0", 15.0, 75.0, 1.50, 18.75),
    ("claude-opus-4", 15.0, 75.0, 1.50, 18.75),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75),
    ("claude-sonnet-4-0", 3.0, 15.0, 0.30, 3.75),
    ("claude-sonnet-4", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.30, 3.75),
    ("claude-3-5-sonnet", 3.0, 15.0, 0.30, 3.75),
    ("claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25),
    ("claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0),
    ("claude-3-haiku", 0.25, 1.25, 0.03, 0.30),
    ("claude-3-opus", 15.0, 75.0, 1.50, 18.75),
];

impl PriceTable {
    /// An empty table: no cost is known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The list prices of the common OpenAI and Anthropic models (standard tier, as published
    /// in 2025); [`PriceTable::insert`] adds or corrects others.
    pub fn builtin() -> Self {
        let openai = OPENAI
            .iter()
            .map(|&(model, input, cached, output)| (model, ModelPrice::new(input, output).with_cache(cached, input)));
        let anthropic = ANTHROPIC.iter().map(|&(model, input, output, read, write)| {
            (model, ModelPrice::new(input, output).with_cache(read, write))
        });
        Self { prices: openai.chain(anthropic).map(|(model, price)| (model.to_owned(), price)).collect() }
    }

    /// Sets `model`'s price, replacing any it had.
    pub fn insert(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model.into(), price);
    }

    /// `model`'s price: its own, or its family's for a dated or `-latest` name.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(price) = self.prices.get(model) {
            return Some(price);
        }
        // Strip version-like suffixes one `-` at a time: `gpt-4o-2024-08-06` tries
        // `gpt-4o-2024-08`, `gpt-4o-2024`, then finds `gpt-4o`.
        let mut family = model;
        while let Some((head, tail)) = family.rsplit_once('-') {
            if !(tail == "latest" || (!tail.is_empty() && tail.bytes().all(|byte| byte.is_ascii_digit()))) {
                return None;
            }
            if let Some(price) = self.prices.get(head) {
                return Some(price);
            }
            family = head;
        }
        None
    }

    /// What `usage` on `model` costs, if its price is known.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|price| price.cost(usage))
    }
}

/// Writes each reply's cost into its [`Usage`] events when the request's model is in the table
/// (leaving any cost the provider itself reported alone).
#[derive(Debug, Clone)]
pub struct Priced<P> {
    /// The provider that does the work.
    inner: P,
    /// The prices, shared by every request.
    prices: Arc<PriceTable>,
}

impl<P: LlmProvider> Priced<P> {
    /// `inner`, its replies priced from `prices`.
    pub fn new(inner: P, prices: Arc<PriceTable>) -> Self {
        Self { inner, prices }
    }
}

impl<P: LlmProvider> LlmProvider for Priced<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn models(&self) -> crate::BoxFuture<'_, Option<Vec<String>>> {
        self.inner.models()
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        let Some(price) = self.prices.price(&request.model).copied() else {
            return self.inner.stream(request);
        };
        Box::pin(self.inner.stream(request).map(move |item| match item {
            Ok(ProviderEvent::Usage(mut usage)) => {
                usage.cost_usd = usage.cost_usd.or_else(|| Some(price.cost(&usage)));
                Ok(ProviderEvent::Usage(usage))
            }
            other => other,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn cached_tokens_are_priced_apart_from_the_rest_of_the_prompt() {
        let table = PriceTable::builtin();
        let usage = Usage {
            input_tokens: 1_000_000 + 2_000_000 + 4_000_000,
            output_tokens: 1_000_000,
            cache_read_tokens: 2_000_000,
            cache_write_tokens: 4_000_000,
            cost_usd: None,
            estimated: false,
        };
        // 1M uncached at 3 + 2M read at 0.30 + 4M written at 3.75 + 1M out at 15.
        let cost = table.cost("claude-sonnet-4-5", &usage).unwrap();
        assert!(close(cost, 3.0 + 0.6 + 15.0 + 15.0), "{cost}");
        // OpenAI: cache writes cost the input price.
        let cost = table.cost("gpt-4o-mini", &usage).unwrap();
        assert!(close(cost, 0.15 + 2.0 * 0.075 + 4.0 * 0.15 + 0.60), "{cost}");
    }

    #[test]
    fn dated_and_latest_names_find_their_family_but_other_variants_do_not() {
        let table = PriceTable::builtin();
        let price = |model| table.price(model).map(|price| price.input);
        assert_eq!(price("gpt-4o-2024-08-06"), Some(2.5));
        assert_eq!(price("gpt-4o-mini-2024-07-18"), Some(0.15));
        assert_eq!(price("claude-sonnet-4-5-20250929"), Some(3.0));
        assert_eq!(price("claude-3-5-haiku-latest"), Some(0.8));
        assert_eq!(price("gpt-4o-audio-preview"), None);
        assert_eq!(price("llama3.2"), None);
    }

    #[test]
    fn the_caller_adds_and_corrects_prices() {
        let mut table = PriceTable::builtin();
        table.insert("smollm2", ModelPrice::new(0.0, 0.0));
        table.insert("gpt-4o", ModelPrice::new(1.0, 2.0));
        let usage = Usage { input_tokens: 500_000, output_tokens: 500_000, ..Usage::default() };
        assert_eq!(table.cost("smollm2", &usage), Some(0.0));
        assert!(close(table.cost("gpt-4o", &usage).unwrap_or_default(), 1.5));
        assert_eq!(PriceTable::new().cost("gpt-4o", &usage), None);
    }

    #[test]
    fn prices_read_from_configuration_default_cached_tokens_to_the_input_price() {
        let price: ModelPrice = serde_json::from_value(serde_json::json!({"input": 1.0, "output": 2.0})).unwrap();
        assert_eq!(price, ModelPrice::new(1.0, 2.0));
        let unknown = serde_json::from_value::<ModelPrice>(serde_json::json!({"input": 1, "output": 2, "x": 3}));
        assert!(unknown.is_err());
    }
}
