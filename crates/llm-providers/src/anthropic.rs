//! The Anthropic Messages API provider: `POST {base_url}/v1/messages` with `stream: true`, sent
//! with reqwest and read with eventsource-stream.
//!
//! Anthropic's stream is a sequence of named events: `message_start` (the prompt's usage),
//! `content_block_start` / `content_block_delta` / `content_block_stop` for each text or
//! `tool_use` block (tool arguments arrive as `input_json_delta` pieces), `message_delta` (the
//! stop reason and output tokens), `message_stop`, with `ping`s anywhere and an `error` event
//! when the server fails mid-stream. Event and block types this module does not know (thinking,
//! citations, server tools) are skipped, as Anthropic's versioning policy asks of clients.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use colloquy_core_model::{ContentPart, MediaSource, MessageRole, ToolChoice, Usage};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::http::{self, ErrorDetails, classify, error_chain, excerpt};
use crate::{FinishReason, LlmProvider, LlmRequest, ProviderError, ProviderEvent, ProviderStream, RequestMessage};

/// The API version this module speaks (the `anthropic-version` header).
const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the Messages API; this is sent when the request sets none. Every
/// current Claude model allows at least this many output tokens.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// How long connecting may take; the reply itself may stream for as long as it needs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach the Anthropic API.
#[derive(Clone)]
pub struct AnthropicConfig {
    /// The provider's name in configuration and on stored replies.
    pub name: String,
    /// The API root, `https://api.anthropic.com` (a trailing `/v1` is accepted too).
    pub base_url: String,
    /// Sent as `x-api-key`.
    pub api_key: Option<SecretString>,
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// An [`LlmProvider`] over Anthropic's Messages API. It never retries: a failed request comes
/// back as one classified error (wrap it in [`crate::Retrying`] to retry).
#[derive(Clone)]
pub struct Anthropic {
    /// The configured name, reported by [`LlmProvider::name`] and in logs.
    name: String,
    /// `{base_url}/v1/messages`.
    endpoint: String,
    /// The HTTP client, with the key and version headers set on every request.
    client: reqwest::Client,
    /// Set when the key is missing or cannot be sent in a header: every request fails with it.
    key_problem: Option<ProviderError>,
}

impl fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anthropic").field("name", &self.name).field("endpoint", &self.endpoint).finish()
    }
}

impl Anthropic {
    /// A provider for the API `config` describes. Nothing is sent until the first request.
    pub fn new(config: AnthropicConfig) -> Self {
        let base_url = config.base_url.trim().trim_end_matches('/');
        let base_url = base_url.strip_suffix("/v1").unwrap_or(base_url);
        let endpoint = format!("{base_url}/v1/messages");
        let key = config.api_key.as_ref().map(|key| key.expose_secret().trim()).filter(|key| !key.is_empty());
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        let key_problem = match key.map(|key| (key, HeaderValue::from_str(key))) {
            None => Some(ProviderError::Auth {
                message: "no Anthropic API key is configured; set ANTHROPIC_API_KEY or the provider's api_key"
                    .to_owned(),
            }),
            Some((key, Err(_))) => http::key_problem(key),
            Some((_, Ok(mut value))) => {
                value.set_sensitive(true);
                headers.insert("x-api-key", value);
                None
            }
        };
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { name: config.name, endpoint, client, key_problem }
    }
}

impl LlmProvider for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        let body = messages_request(&request);
        tracing::debug!(
            provider = %self.name,
            endpoint = %self.endpoint,
            model = %request.model,
            messages = body.messages.len(),
            tools = body.tools.len(),
            "starting an Anthropic message"
        );
        let key_problem = self.key_problem.clone();
        let send = self.client.post(&self.endpoint).header("accept", "text/event-stream").json(&body).send();
        let opened = async move {
            if let Some(problem) = key_problem {
                return Err(problem);
            }
            let response = send.await.map_err(|error| ProviderError::Network { message: error_chain(&error) })?;
            if response.status().is_success() { Ok(response) } else { Err(http::refused(response).await) }
        };
        let provider = self.name.clone();
        Box::pin(futures::stream::once(opened).flat_map(move |opened| match opened {
            Ok(response) => {
                reply_events(Box::pin(response.bytes_stream().eventsource()), provider.clone()).left_stream()
            }
            Err(error) => {
                tracing::debug!(provider = %provider, %error, "Anthropic message failed before streaming");
                futures::stream::iter([Err(error)]).right_stream()
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Debug, Serialize)]
struct MessagesRequest {
    model: String,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum WireRole {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct WireMessage {
    role: WireRole,
    content: Vec<Block>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text { text: String },
    Image { source: Source },
    Document { source: Source, title: String },
    ToolUse { id: String, name: String, input: serde_json::Value },
    ToolResult { tool_use_id: String, content: String, is_error: bool },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
struct WireTool {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    input_schema: serde_json::Value,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireToolChoice {
    Auto,
    Any,
    None,
    Tool { name: String },
}

/// The Messages API request for `request`. Anthropic has no system or tool role: system
/// messages join the system prompt, tool results go in user messages (first, as the API
/// requires), and neighbouring messages of one role are merged. `Custom` parts are never sent.
fn messages_request(request: &LlmRequest) -> MessagesRequest {
    let mut system: Vec<String> = request.system_prompt.iter().filter(|s| !s.is_empty()).cloned().collect();
    let mut messages: Vec<WireMessage> = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        if message.role == MessageRole::System {
            system.extend(texts(message).filter(|text| !text.is_empty()).map(str::to_owned));
            continue;
        }
        let results: Vec<Block> = message.content.iter().filter_map(tool_result).collect();
        push(&mut messages, WireRole::User, results);
        let own = match message.role {
            MessageRole::User => Some((WireRole::User, message.content.iter().filter_map(user_block).collect())),
            MessageRole::Assistant => {
                Some((WireRole::Assistant, message.content.iter().filter_map(assistant_block).collect()))
            }
            MessageRole::Tool | MessageRole::Custom | MessageRole::System => None,
        };
        if let Some((role, blocks)) = own {
            push(&mut messages, role, blocks);
        }
    }
    let tools: Vec<WireTool> = request
        .tools
        .iter()
        .map(|spec| WireTool {
            name: spec.name.clone(),
            description: spec.description.clone(),
            input_schema: spec.parameters.clone(),
        })
        .collect();
    let tool_choice = (!tools.is_empty()).then(|| match &request.tool_choice {
        ToolChoice::Auto => WireToolChoice::Auto,
        ToolChoice::None => WireToolChoice::None,
        ToolChoice::Required => WireToolChoice::Any,
        ToolChoice::Function(name) => WireToolChoice::Tool { name: name.clone() },
    });
    MessagesRequest {
        model: request.model.clone(),
        max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        tools,
        tool_choice,
        temperature: request.temperature,
        stream: true,
    }
}

/// Appends `blocks` as a message of `role`, merged into the last message if it has that role;
/// tool results stay in front of a user message's other blocks.
fn push(messages: &mut Vec<WireMessage>, role: WireRole, blocks: Vec<Block>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => {
            last.content.extend(blocks);
            last.content.sort_by_key(|block| !matches!(block, Block::ToolResult { .. }));
        }
        _ => messages.push(WireMessage { role, content: blocks }),
    }
}

fn texts(message: &RequestMessage) -> impl Iterator<Item = &str> {
    message.content.iter().filter_map(|part| match part {
        ContentPart::Text { text } => Some(text.as_str()),
        _ => None,
    })
}

fn tool_result(part: &ContentPart) -> Option<Block> {
    match part {
        ContentPart::ToolResult { tool_call_id, content, is_error, .. } => Some(Block::ToolResult {
            tool_use_id: tool_call_id.to_string(),
            content: content.clone(),
            is_error: *is_error,
        }),
        _ => None,
    }
}

/// A text block, skipping empty ones, which the API rejects.
fn text_block(text: &str) -> Option<Block> {
    (!text.is_empty()).then(|| Block::Text { text: text.to_owned() })
}

fn user_block(part: &ContentPart) -> Option<Block> {
    match part {
        ContentPart::Text { text } => text_block(text),
        ContentPart::Image { source } => Some(Block::Image { source: source_of(source) }),
        ContentPart::File { name, source } => {
            let source = source_of(source);
            match &source {
                Source::Base64 { media_type, .. } if media_type == "application/pdf" => {
                    Some(Block::Document { source, title: name.clone() })
                }
                Source::Url { url } if url.to_ascii_lowercase().ends_with(".pdf") => {
                    Some(Block::Document { source, title: name.clone() })
                }
                // The Messages API takes PDFs as documents; any other file is named so the model
                // at least knows of it.
                Source::Base64 { media_type, .. } => {
                    text_block(&format!("[attached file {name} ({media_type}), not readable by this model]"))
                }
                Source::Url { url } => text_block(&format!("[attached file {name}: {url}]")),
            }
        }
        ContentPart::ToolCall { .. } | ContentPart::ToolResult { .. } | ContentPart::Custom { .. } => None,
    }
}

fn assistant_block(part: &ContentPart) -> Option<Block> {
    match part {
        ContentPart::Text { text } => text_block(text),
        ContentPart::ToolCall { id, name, arguments } => Some(Block::ToolUse {
            id: id.to_string(),
            name: name.clone(),
            input: match arguments {
                serde_json::Value::Object(_) => arguments.clone(),
                // `input` must be an object; arguments that were not one (text the model wrote
                // that is not JSON) are kept where the model can see what it sent.
                other => serde_json::json!({ "invalid_arguments": other }),
            },
        }),
        _ => None,
    }
}

/// Anthropic's image source; a `data:` URL is sent as base64, as the API takes only `https:`
/// URLs.
fn source_of(source: &MediaSource) -> Source {
    match source {
        MediaSource::Base64 { mime_type, data } => Source::Base64 { media_type: mime_type.clone(), data: data.clone() },
        MediaSource::Url { url } => match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
            Some((media_type, data)) => Source::Base64 { media_type: media_type.to_owned(), data: data.to_owned() },
            None => Source::Url { url: url.clone() },
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Reply

/// One server-sent event's data, by its `type`. Unknown types are skipped.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireMessageStart,
    },
    ContentBlockStart {
        index: u32,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: WireDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: WireMessageDelta,
        usage: Option<WireUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: serde_json::Value,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct WireMessageStart {
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: serde_json::Value,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct WireMessageDelta {
    stop_reason: Option<String>,
}

/// Token counts; `message_start` has them all, `message_delta` the running output count and,
/// on newer API versions, the others again.
#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

type EventResult = Result<ProviderEvent, ProviderError>;

/// The events of one streamed reply. The stream ends after `Finish` or after the first error,
/// which also drops (and so closes) the HTTP response.
fn reply_events<S, E>(events: S, provider: String) -> impl Stream<Item = EventResult> + Send + 'static
where
    S: Stream<Item = Result<Event, EventStreamError<E>>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    struct Reply<S> {
        events: S,
        translator: EventTranslator,
        pending: VecDeque<EventResult>,
        provider: String,
    }
    let reply = Reply { events, translator: EventTranslator::default(), pending: VecDeque::new(), provider };
    futures::stream::unfold(Some(reply), |reply| async move {
        let mut reply = reply?;
        loop {
            if let Some(item) = reply.pending.pop_front() {
                let next = match &item {
                    Ok(ProviderEvent::Finish(reason)) => {
                        tracing::debug!(provider = %reply.provider, ?reason, "Anthropic message finished");
                        None
                    }
                    Err(error) => {
                        tracing::debug!(provider = %reply.provider, %error, "Anthropic message failed");
                        None
                    }
                    Ok(_) => Some(reply),
                };
                return Some((item, next));
            }
            match reply.events.next().await {
                Some(Ok(event)) => reply.pending.extend(reply.translator.event(&event)),
                Some(Err(EventStreamError::Transport(error))) => {
                    reply.pending.push_back(Err(ProviderError::Network { message: error_chain(&error) }));
                }
                Some(Err(error)) => reply.pending.push_back(Err(ProviderError::MalformedResponse {
                    message: format!("the event stream is not valid server-sent events: {error}"),
                })),
                None => reply.pending.push_back(Err(ProviderError::MalformedResponse {
                    message: "the stream ended before message_stop; the connection may have been cut".to_owned(),
                })),
            }
        }
    })
}

/// Turns server-sent events into [`ProviderEvent`]s. Usage and the stop reason are held back to
/// `message_stop`, where they are complete.
#[derive(Debug, Default)]
struct EventTranslator {
    /// Tool calls by content block index: their position among the reply's tool calls.
    calls: HashMap<u32, u32>,
    usage: WireUsage,
    stop_reason: Option<String>,
}

impl EventTranslator {
    fn event(&mut self, event: &Event) -> Vec<EventResult> {
        let parsed = match serde_json::from_str::<WireEvent>(&event.data) {
            Ok(parsed) => parsed,
            Err(error) => {
                return vec![Err(ProviderError::MalformedResponse {
                    message: format!(
                        "a `{}` event is not in Anthropic's format ({error}): {}",
                        event.event,
                        excerpt(&event.data)
                    ),
                })];
            }
        };
        match parsed {
            WireEvent::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.update_usage(usage);
                }
                Vec::new()
            }
            WireEvent::ContentBlockStart { index, content_block } => match content_block {
                WireBlock::Text { text } if !text.is_empty() => vec![Ok(ProviderEvent::TextDelta(text))],
                WireBlock::ToolUse { id, name, input } => {
                    let position = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
                    let position = *self.calls.entry(index).or_insert(position);
                    // Anthropic sends `{}` here and the arguments as deltas; a server that sends
                    // them whole here is taken at its word.
                    let arguments = match input {
                        serde_json::Value::Object(map) if !map.is_empty() => serde_json::Value::Object(map).to_string(),
                        _ => String::new(),
                    };
                    vec![Ok(ProviderEvent::ToolCallDelta {
                        index: position,
                        id: Some(id),
                        name: Some(name),
                        arguments,
                    })]
                }
                WireBlock::Text { .. } | WireBlock::Unknown => Vec::new(),
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                WireDelta::TextDelta { text } if !text.is_empty() => vec![Ok(ProviderEvent::TextDelta(text))],
                WireDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    match self.calls.get(&index) {
                        Some(&position) => vec![Ok(ProviderEvent::ToolCallDelta {
                            index: position,
                            id: None,
                            name: None,
                            arguments: partial_json,
                        })],
                        None => vec![Err(ProviderError::MalformedResponse {
                            message: format!(
                                "tool arguments arrived for content block {index}, which is not a tool_use block"
                            ),
                        })],
                    }
                }
                WireDelta::TextDelta { .. } | WireDelta::InputJsonDelta { .. } | WireDelta::Unknown => Vec::new(),
            },
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = usage {
                    self.update_usage(usage);
                }
                Vec::new()
            }
            WireEvent::MessageStop {} => {
                let finish = match self.stop_reason.as_deref() {
                    Some(reason) => Ok(ProviderEvent::Finish(finish_reason(reason))),
                    None => Err(ProviderError::MalformedResponse {
                        message: "the message stopped without a stop_reason".to_owned(),
                    }),
                };
                vec![Ok(ProviderEvent::Usage(self.usage())), finish]
            }
            WireEvent::Error { error } => vec![Err(stream_error(&error))],
            WireEvent::ContentBlockStop {} | WireEvent::Ping {} | WireEvent::Unknown => Vec::new(),
        }
    }

    fn update_usage(&mut self, usage: WireUsage) {
        let keep = |new: Option<u64>, old: Option<u64>| new.or(old);
        self.usage = WireUsage {
            input_tokens: keep(usage.input_tokens, self.usage.input_tokens),
            output_tokens: keep(usage.output_tokens, self.usage.output_tokens),
            cache_creation_input_tokens: keep(
                usage.cache_creation_input_tokens,
                self.usage.cache_creation_input_tokens,
            ),
            cache_read_input_tokens: keep(usage.cache_read_input_tokens, self.usage.cache_read_input_tokens),
        };
    }

    /// The usage in Colloquy's terms, where input tokens include the cached ones (Anthropic
    /// counts those apart).
    fn usage(&self) -> Usage {
        let read = self.usage.cache_read_input_tokens.unwrap_or(0);
        let written = self.usage.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.usage.input_tokens.unwrap_or(0) + read + written,
            output_tokens: self.usage.output_tokens.unwrap_or(0),
            cache_read_tokens: read,
            cache_write_tokens: written,
            cost_usd: None,
            estimated: false,
        }
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::Refusal,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The error for an `error` event, classified by the status Anthropic gives its error type.
fn stream_error(error: &serde_json::Value) -> ProviderError {
    let details = ErrorDetails::from_json(&serde_json::json!({ "error": error }));
    let status = match details.kind.as_deref() {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("overloaded_error") => 529,
        _ => 500,
    };
    classify(status, None, details)
}

#[cfg(test)]
mod tests {
    use colloquy_core_model::ToolSpec;
    use serde_json::json;

    use super::*;

    fn events(data: &[serde_json::Value]) -> Vec<EventResult> {
        let mut translator = EventTranslator::default();
        data.iter()
            .flat_map(|data| {
                let event = Event {
                    event: data["type"].as_str().unwrap_or_default().to_owned(),
                    data: data.to_string(),
                    ..Event::default()
                };
                translator.event(&event)
            })
            .collect()
    }

    #[test]
    fn debug_never_shows_the_key() {
        let config = AnthropicConfig {
            name: "anthropic".into(),
            base_url: "https://api.anthropic.com".into(),
            api_key: Some(SecretString::from("sk-ant-very-secret")),
        };
        let shown = format!("{config:?} {:?}", Anthropic::new(config.clone()));
        assert!(!shown.contains("sk-ant-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_endpoint_is_the_same_with_or_without_v1_and_a_missing_key_is_an_auth_error() {
        for base_url in ["https://api.anthropic.com", "https://api.anthropic.com/", "https://api.anthropic.com/v1"] {
            let provider =
                Anthropic::new(AnthropicConfig { name: "a".into(), base_url: base_url.into(), api_key: None });
            assert_eq!(provider.endpoint, "https://api.anthropic.com/v1/messages");
            assert!(
                matches!(&provider.key_problem, Some(ProviderError::Auth { message }) if message.contains("ANTHROPIC_API_KEY"))
            );
        }
    }

    #[test]
    fn stop_reasons_map_and_unknown_ones_pass_through() {
        let finish = |reason: &str| {
            events(&[
                json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": 1}}),
                json!({"type": "message_stop"}),
            ])
            .pop()
            .unwrap()
        };
        assert_eq!(finish("end_turn"), Ok(ProviderEvent::Finish(FinishReason::Stop)));
        assert_eq!(finish("stop_sequence"), Ok(ProviderEvent::Finish(FinishReason::Stop)));
        assert_eq!(finish("max_tokens"), Ok(ProviderEvent::Finish(FinishReason::Length)));
        assert_eq!(finish("tool_use"), Ok(ProviderEvent::Finish(FinishReason::ToolCalls)));
        assert_eq!(finish("refusal"), Ok(ProviderEvent::Finish(FinishReason::Refusal)));
        assert_eq!(finish("pause_turn"), Ok(ProviderEvent::Finish(FinishReason::Other("pause_turn".into()))));
    }

    #[test]
    fn cache_tokens_count_as_input_and_are_reported_apart() {
        let events = events(&[
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 3000, "output_tokens": 1}}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
            json!({"type": "message_stop"}),
        ]);
        assert_eq!(
            events[0],
            Ok(ProviderEvent::Usage(Usage {
                input_tokens: 3210,
                output_tokens: 42,
                cache_read_tokens: 3000,
                cache_write_tokens: 200,
                cost_usd: None,
                estimated: false,
            }))
        );
    }

    #[test]
    fn thinking_blocks_and_unknown_events_are_skipped() {
        let events = events(&[
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "some_future_event", "payload": 1}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
        ]);
        assert_eq!(events, vec![Ok(ProviderEvent::TextDelta("Hi".into()))]);
    }

    #[test]
    fn an_overloaded_error_event_is_a_retryable_server_error() {
        let events =
            events(&[json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]);
        assert_eq!(events, vec![Err(ProviderError::Server { status: 529, message: "Overloaded".into() })]);
        assert!(events[0].as_ref().is_err_and(ProviderError::is_retryable));
    }

    #[test]
    fn history_is_sent_in_anthropic_form() {
        let request = LlmRequest {
            model: "claude-sonnet-4-5".into(),
            system_prompt: Some("Be terse.".into()),
            messages: vec![
                RequestMessage { role: MessageRole::System, content: vec![ContentPart::text("Use metric units.")] },
                RequestMessage {
                    role: MessageRole::User,
                    content: vec![
                        ContentPart::text("What is this?"),
                        ContentPart::Image { source: MediaSource::Url { url: "data:image/png;base64,AAAA".into() } },
                        ContentPart::Image { source: MediaSource::Url { url: "https://example.com/cat.jpg".into() } },
                        ContentPart::File {
                            name: "report.pdf".into(),
                            source: MediaSource::Base64 { mime_type: "application/pdf".into(), data: "JVBE".into() },
                        },
                    ],
                },
                RequestMessage {
                    role: MessageRole::Assistant,
                    content: vec![
                        ContentPart::text(""),
                        ContentPart::ToolCall {
                            id: "toolu_1".into(),
                            name: "calc".into(),
                            arguments: json!({"e": "1"}),
                        },
                        ContentPart::ToolCall { id: "toolu_2".into(), name: "calc".into(), arguments: json!("{oops") },
                    ],
                },
                RequestMessage {
                    role: MessageRole::Tool,
                    content: vec![ContentPart::ToolResult {
                        tool_call_id: "toolu_1".into(),
                        name: "calc".into(),
                        content: "1".into(),
                        is_error: false,
                    }],
                },
                RequestMessage {
                    role: MessageRole::Tool,
                    content: vec![ContentPart::ToolResult {
                        tool_call_id: "toolu_2".into(),
                        name: "calc".into(),
                        content: "invalid arguments".into(),
                        is_error: true,
                    }],
                },
                RequestMessage { role: MessageRole::User, content: vec![ContentPart::text("And now?")] },
            ],
            tools: vec![ToolSpec {
                name: "calc".into(),
                description: String::new(),
                parameters: json!({"type": "object"}),
            }],
            tool_choice: ToolChoice::Required,
            temperature: None,
            max_tokens: None,
            conversation: None,
            provider_state: None,
        };
        let body = serde_json::to_value(messages_request(&request)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 4096,
                "system": "Be terse.\n\nUse metric units.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                        {"type": "document", "title": "report.pdf",
                         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"e": "1"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "calc", "input": {"invalid_arguments": "{oops"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "1", "is_error": false},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "invalid arguments", "is_error": true},
                        {"type": "text", "text": "And now?"}
                    ]}
                ],
                "tools": [{"name": "calc", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any"},
                "stream": true
            })
        );
    }
}
