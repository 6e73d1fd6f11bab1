//! A provider that replays a script: the same replies every run, for tests, benches and demos.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use colloquy_core_model::Usage;
use futures::StreamExt;

use crate::{FinishReason, LlmProvider, LlmRequest, ProviderError, ProviderEvent, ProviderStream};

/// What the provider answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptStep {
    /// Stream these events.
    Reply(Vec<ProviderEvent>),
    /// Stream these events, then fail.
    ReplyThenFail(Vec<ProviderEvent>, ProviderError),
    /// Stream these events, then never finish (a provider that hangs; for cancellation and
    /// crash tests).
    Stall(Vec<ProviderEvent>),
}

impl ScriptStep {
    /// A text answer, streamed word by word, ending `stop`.
    pub fn text(text: &str) -> Self {
        let mut events: Vec<ProviderEvent> =
            text.split_inclusive(' ').map(|word| ProviderEvent::TextDelta(word.to_owned())).collect();
        events.push(ProviderEvent::Usage(Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() }));
        events.push(ProviderEvent::Finish(FinishReason::Stop));
        Self::Reply(events)
    }

    /// A reply that calls these tools `(id, name, arguments JSON)`, ending `tool_calls`.
    pub fn tool_calls(calls: &[(&str, &str, &str)]) -> Self {
        let mut events: Vec<ProviderEvent> = calls
            .iter()
            .zip(0u32..)
            .map(|((id, name, arguments), index)| ProviderEvent::ToolCallDelta {
                index,
                id: Some((*id).to_owned()),
                name: Some((*name).to_owned()),
                arguments: (*arguments).to_owned(),
            })
            .collect();
        events.push(ProviderEvent::Usage(Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() }));
        events.push(ProviderEvent::Finish(FinishReason::ToolCalls));
        Self::Reply(events)
    }
}

#[derive(Debug, Default)]
struct Script {
    steps: VecDeque<ScriptStep>,
    repeat: Option<Vec<ScriptStep>>,
    requests: Vec<LlmRequest>,
}

/// Replays [`ScriptStep`]s, one per request, and records the requests it got. When the script
/// runs out it fails with a clear error, or starts over if built with [`ScriptedProvider::cycling`].
#[derive(Debug, Clone)]
pub struct ScriptedProvider {
    name: String,
    script: Arc<Mutex<Script>>,
}

impl ScriptedProvider {
    /// Replays `steps` once.
    pub fn new(steps: impl IntoIterator<Item = ScriptStep>) -> Self {
        Self {
            name: "scripted".to_owned(),
            script: Arc::new(Mutex::new(Script { steps: steps.into_iter().collect(), ..Script::default() })),
        }
    }

    /// Replays `steps` over and over (benches, demos).
    pub fn cycling(steps: Vec<ScriptStep>) -> Self {
        let provider = Self::new(steps.clone());
        provider.lock().repeat = Some(steps);
        provider
    }

    /// Renames the provider (the name stored with its replies).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<LlmRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        // A panic while holding this lock cannot leave the script half-updated.
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LlmProvider for ScriptedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        let step = {
            let mut script = self.lock();
            script.requests.push(request);
            if script.steps.is_empty()
                && let Some(repeat) = script.repeat.clone()
            {
                script.steps.extend(repeat);
            }
            script.steps.pop_front()
        };
        if let Some(ScriptStep::Stall(events)) = step {
            return Box::pin(futures::stream::iter(events.into_iter().map(Ok)).chain(futures::stream::pending()));
        }
        let items: Vec<Result<ProviderEvent, ProviderError>> = match step {
            Some(ScriptStep::Reply(events)) => events.into_iter().map(Ok).collect(),
            Some(ScriptStep::ReplyThenFail(events, error)) => {
                events.into_iter().map(Ok).chain(std::iter::once(Err(error))).collect()
            }
            Some(ScriptStep::Stall(_)) | None => vec![Err(ProviderError::InvalidRequest {
                message: "the scripted provider's script is used up: add a step for every LLM request the test makes"
                    .to_owned(),
            })],
        };
        Box::pin(futures::stream::iter(items))
    }
}
