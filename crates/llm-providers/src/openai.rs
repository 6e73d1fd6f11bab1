//! The OpenAI chat completions provider, for OpenAI itself and for every server that speaks its
//! wire format (Ollama, vLLM, llama.cpp, LM Studio, ...).
//!
//! async-openai builds the request, sends it and splits the SSE body into events. Two pieces are
//! Colloquy's own, because OpenAI-compatible servers differ from OpenAI and from each other:
//!
//! - The HTTP transport handed to async-openai turns every non-2xx answer into a classified
//!   [`ProviderError`] itself. Left alone, async-openai retries 429 and 5xx answers on its own
//!   (retries belong to the caller, before the first streamed byte), drops `Retry-After`, and
//!   loses the status of error bodies that are not OpenAI's shape (Ollama's `{"error": "..."}`,
//!   llama.cpp's numeric `code`, a proxy's HTML page).
//! - Chunks are decoded into lenient private types rather than async-openai's: servers omit ids,
//!   tool-call indexes and the usage chunk, and send finish reasons OpenAI never does (`eos`,
//!   `abort`), none of which should turn a good reply into a decoding error.

use std::collections::VecDeque;
use std::fmt;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::{ApiError, OpenAIError, StreamError};
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionNamedToolChoice,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestAssistantMessageContentPart, ChatCompletionRequestMessage,
    ChatCompletionRequestMessageContentPartFile, ChatCompletionRequestMessageContentPartImage,
    ChatCompletionRequestMessageContentPartText, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionToolChoiceOption, ChatCompletionTools, CreateChatCompletionRequest, FileObject, FunctionCall,
    FunctionName, FunctionObject, ImageUrl, ToolChoiceOptions,
};
use async_openai::types::stream::StreamResponse;
use colloquy_core_model::{ContentPart, MediaSource, MessageRole, ToolChoice, ToolSpec, Usage};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower::ServiceExt;

use crate::http::{self, ErrorDetails, classify, error_chain, excerpt};
use crate::{FinishReason, LlmProvider, LlmRequest, ProviderError, ProviderEvent, ProviderStream, RequestMessage};

/// Where and how to reach one OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiCompatibleConfig {
    /// The provider's name in configuration and on stored replies (`openai`, `ollama`, ...).
    pub name: String,
    /// The API root that `/chat/completions` is appended to, such as `https://api.openai.com/v1`
    /// or `http://localhost:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`; local servers usually need none.
    pub api_key: Option<SecretString>,
    /// Whether requests that offer tools are streamed. `false` asks for the whole reply at once
    /// when tools are offered (text still streams when none are), for servers that cannot
    /// stream tool calls: llama-cpp-python fails a streamed `tool_choice: auto` after it has
    /// begun answering.
    pub stream_tools: bool,
}

impl fmt::Debug for OpenAiCompatibleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatibleConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("stream_tools", &self.stream_tools)
            .finish()
    }
}

/// An [`LlmProvider`] over the chat completions API (`POST {base_url}/chat/completions` with
/// `stream: true`). It never retries: a failed request comes back as one classified error (wrap
/// it in [`crate::Retrying`] to retry).
#[derive(Clone)]
pub struct OpenAiCompatible {
    /// The configured name, reported by [`LlmProvider::name`] and in logs.
    name: String,
    /// The normalized base URL, for logs.
    base_url: String,
    /// async-openai's client, with the key and the classifying transport.
    client: Client<OpenAIConfig>,
    /// Set when the configured key cannot be sent in a header at all (a line break from a key
    /// file, say): every request then fails with it, as async-openai would panic building the
    /// header.
    key_problem: Option<ProviderError>,
    /// [`OpenAiCompatibleConfig::stream_tools`].
    stream_tools: bool,
}

impl fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatible").field("name", &self.name).field("base_url", &self.base_url).finish()
    }
}

impl OpenAiCompatible {
    /// A provider for the server `config` describes. Nothing is sent until the first request.
    pub fn new(config: OpenAiCompatibleConfig) -> Self {
        let base_url = config.base_url.trim().trim_end_matches('/').to_owned();
        let key = config.api_key.as_ref().map(|key| key.expose_secret().trim()).filter(|key| !key.is_empty());
        let key_problem = key.and_then(http::key_problem);
        let key = if key_problem.is_some() { None } else { key };
        // Every field is set so that async-openai's defaults, read from OPENAI_* environment
        // variables, never leak into a provider configured to talk to some other server.
        let openai_config = OpenAIConfig::new()
            .with_api_base(base_url.clone())
            .with_api_key(key.unwrap_or_default())
            .with_org_id("")
            .with_project_id("");
        let client = Client::with_config(openai_config).with_http_service(classifying_transport(config.name.clone()));
        Self { name: config.name, base_url, client, key_problem, stream_tools: config.stream_tools }
    }
}

impl LlmProvider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    fn models(&self) -> crate::BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(async move {
            if self.key_problem.is_some() {
                return None;
            }
            // `GET /models`, which OpenAI, Ollama, vLLM, llama.cpp and LM Studio all serve.
            #[derive(Deserialize)]
            struct ModelList {
                data: Vec<ModelEntry>,
            }
            #[derive(Deserialize)]
            struct ModelEntry {
                id: String,
            }
            let listed: ModelList = self.client.models().list_byot().await.ok()?;
            Some(listed.data.into_iter().map(|model| model.id).collect())
        })
    }

    fn stream(&self, request: LlmRequest) -> ProviderStream {
        let streamed = self.stream_tools || request.tools.is_empty();
        let body = chat_request(&request, streamed);
        tracing::debug!(
            provider = %self.name,
            base_url = %self.base_url,
            model = %request.model,
            messages = body.messages.len(),
            tools = request.tools.len(),
            streamed,
            "starting a chat completion"
        );
        let client = self.client.clone();
        let provider = self.name.clone();
        if let Some(problem) = self.key_problem.clone() {
            return Box::pin(futures::stream::iter([Err(problem)]));
        }
        if !streamed {
            let whole = async move {
                match client.chat().create_byot::<_, WireCompletion>(body).await {
                    Ok(completion) => completion_events(completion),
                    Err(error) => vec![Err(provider_error(error))],
                }
            };
            return Box::pin(futures::stream::once(whole).flat_map(futures::stream::iter));
        }
        // A server that ends a streamed reply early says nothing about why; what helps depends
        // on whether the request offered tools.
        let hint = if request.tools.is_empty() { EndHint::Plain } else { EndHint::ToolsStreamed(self.name.clone()) };
        let opened =
            async move { client.chat().create_stream_byot::<_, WireChunk>(body).await.map_err(provider_error) };
        Box::pin(futures::stream::once(opened).flat_map(move |opened| match opened {
            Ok(chunks) => reply_events(chunks, provider.clone(), hint.clone()).left_stream(),
            Err(error) => {
                tracing::debug!(provider = %provider, %error, "chat completion failed before streaming");
                futures::stream::iter([Err(error)]).right_stream()
            }
        }))
    }
}

/// The HTTP transport given to async-openai: plain reqwest, without async-openai's retries, and
/// with every non-2xx answer turned into a [`ProviderError`] while its status, headers and body
/// are still at hand. The error travels through async-openai boxed in `OpenAIError::Boxed`.
fn classifying_transport(
    provider: String,
) -> impl tower::Service<HttpRequestFactory, Response = reqwest::Response, Error = OpenAIError, Future: Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    let transport = ReqwestService::default();
    tower::service_fn(move |request: HttpRequestFactory| {
        let transport = transport.clone();
        let provider = provider.clone();
        async move {
            let response = transport.oneshot(request).await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status().as_u16();
            let error = http::refused(response).await;
            tracing::debug!(provider = %provider, status, %error, "the provider refused the request");
            Err(OpenAIError::Boxed(Box::new(error)))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Request

/// The chat completions request for `request`, streamed or not.
fn chat_request(request: &LlmRequest, streamed: bool) -> CreateChatCompletionRequest {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = request.system_prompt.as_deref().filter(|system| !system.is_empty()) {
        messages.push(system_message(system.to_owned()));
    }
    for message in &request.messages {
        push_message(message, &mut messages);
    }
    let tools: Vec<ChatCompletionTools> = request.tools.iter().map(function_tool).collect();
    // OpenAI rejects `tool_choice` without `tools`, so both go or neither does.
    let (tools, tool_choice) =
        if tools.is_empty() { (None, None) } else { (Some(tools), Some(tool_choice(&request.tool_choice))) };
    let mut body = CreateChatCompletionRequest {
        model: request.model.clone(),
        messages,
        tools,
        tool_choice,
        temperature: request.temperature,
        stream: Some(streamed),
        stream_options: streamed
            .then_some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None }),
        ..CreateChatCompletionRequest::default()
    };
    set_max_tokens(&mut body, request.max_tokens);
    body
}

#[expect(
    deprecated,
    reason = "OpenAI prefers `max_completion_tokens`, but `max_tokens` is the field Ollama, llama.cpp and most \
              other OpenAI-compatible servers read"
)]
fn set_max_tokens(body: &mut CreateChatCompletionRequest, max_tokens: Option<u32>) {
    body.max_tokens = max_tokens;
}

/// Appends the chat messages for one of ours. Tool results become `tool` messages first,
/// whichever role carried them, because OpenAI wants them right after the assistant message that
/// made the calls. `Custom` parts and messages are never sent.
fn push_message(message: &RequestMessage, out: &mut Vec<ChatCompletionRequestMessage>) {
    for part in &message.content {
        if let ContentPart::ToolResult { tool_call_id, content, .. } = part {
            out.push(ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
                content: ChatCompletionRequestToolMessageContent::Text(content.clone()),
                tool_call_id: tool_call_id.to_string(),
            }));
        }
    }
    let own = match message.role {
        MessageRole::User => user_message(&message.content),
        MessageRole::Assistant => assistant_message(&message.content),
        MessageRole::System => {
            let text = texts(&message.content).collect::<Vec<_>>().join("\n\n");
            (!text.is_empty()).then(|| system_message(text))
        }
        MessageRole::Tool | MessageRole::Custom => None,
    };
    out.extend(own);
}

fn texts(parts: &[ContentPart]) -> impl Iterator<Item = &str> {
    parts.iter().filter_map(|part| match part {
        ContentPart::Text { text } => Some(text.as_str()),
        _ => None,
    })
}

fn system_message(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
        content: ChatCompletionRequestSystemMessageContent::Text(text),
        name: None,
    })
}

/// A user message, its content a plain string when it is one text (which every server accepts)
/// and an array of parts otherwise.
fn user_message(parts: &[ContentPart]) -> Option<ChatCompletionRequestMessage> {
    let parts: Vec<_> = parts.iter().filter_map(user_part).collect();
    let content = match <[_; 1]>::try_from(parts) {
        Ok([ChatCompletionRequestUserMessageContentPart::Text(text)]) => {
            ChatCompletionRequestUserMessageContent::Text(text.text)
        }
        Ok(one) => ChatCompletionRequestUserMessageContent::Array(one.into()),
        Err(parts) if parts.is_empty() => return None,
        Err(parts) => ChatCompletionRequestUserMessageContent::Array(parts),
    };
    Some(ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage { content, name: None }))
}

fn user_part(part: &ContentPart) -> Option<ChatCompletionRequestUserMessageContentPart> {
    match part {
        ContentPart::Text { text } => Some(text_part(text.clone())),
        ContentPart::Image { source } => {
            Some(ChatCompletionRequestUserMessageContentPart::ImageUrl(ChatCompletionRequestMessageContentPartImage {
                image_url: ImageUrl { url: media_url(source), detail: None },
                prompt_cache_breakpoint: None,
            }))
        }
        ContentPart::File { name, source } => {
            let url = media_url(source);
            // Chat completions take files inline only; a file elsewhere is named so the model
            // at least knows of it.
            if url.starts_with("data:") {
                Some(ChatCompletionRequestUserMessageContentPart::File(ChatCompletionRequestMessageContentPartFile {
                    file: FileObject { file_data: Some(url), file_id: None, filename: Some(name.clone()) },
                    prompt_cache_breakpoint: None,
                }))
            } else {
                Some(text_part(format!("[attached file {name}: {url}]")))
            }
        }
        ContentPart::ToolCall { .. } | ContentPart::ToolResult { .. } | ContentPart::Custom { .. } => None,
    }
}

fn text_part(text: String) -> ChatCompletionRequestUserMessageContentPart {
    ChatCompletionRequestUserMessageContentPart::Text(ChatCompletionRequestMessageContentPartText {
        text,
        prompt_cache_breakpoint: None,
    })
}

fn media_url(source: &MediaSource) -> String {
    match source {
        MediaSource::Base64 { mime_type, data } => format!("data:{mime_type};base64,{data}"),
        MediaSource::Url { url } => url.clone(),
    }
}

/// An assistant message: its text and tool calls (assistant messages cannot carry images).
fn assistant_message(parts: &[ContentPart]) -> Option<ChatCompletionRequestMessage> {
    let mut texts: Vec<String> = texts(parts).map(str::to_owned).collect();
    let tool_calls: Vec<_> = parts
        .iter()
        .filter_map(|part| match part {
            ContentPart::ToolCall { id, name, arguments } => {
                Some(ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                    id: id.to_string(),
                    function: FunctionCall { name: name.clone(), arguments: arguments_text(arguments) },
                }))
            }
            _ => None,
        })
        .collect();
    let content = match texts.len() {
        // The API allows no `content` beside tool calls, but many servers' chat templates read
        // it unconditionally (llama.cpp's fails the request); an empty string suits them all.
        0 if !tool_calls.is_empty() => Some(ChatCompletionRequestAssistantMessageContent::Text(String::new())),
        0 => None,
        1 => texts.pop().map(ChatCompletionRequestAssistantMessageContent::Text),
        _ => Some(ChatCompletionRequestAssistantMessageContent::Array(
            texts
                .into_iter()
                .map(|text| {
                    ChatCompletionRequestAssistantMessageContentPart::Text(
                        ChatCompletionRequestMessageContentPartText { text, prompt_cache_breakpoint: None },
                    )
                })
                .collect(),
        )),
    };
    if content.is_none() && tool_calls.is_empty() {
        return None;
    }
    Some(ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
        content,
        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        ..ChatCompletionRequestAssistantMessage::default()
    }))
}

/// The arguments as the model wrote them: JSON text, or the raw text the accumulator kept as a
/// JSON string because it was not JSON.
fn arguments_text(arguments: &serde_json::Value) -> String {
    match arguments {
        serde_json::Value::String(raw) => raw.clone(),
        json => json.to_string(),
    }
}

fn function_tool(spec: &ToolSpec) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: spec.name.clone(),
            description: (!spec.description.is_empty()).then(|| spec.description.clone()),
            parameters: Some(spec.parameters.clone()),
            strict: None,
        },
    })
}

fn tool_choice(choice: &ToolChoice) -> ChatCompletionToolChoiceOption {
    match choice {
        ToolChoice::Auto => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Auto),
        ToolChoice::None => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::None),
        ToolChoice::Required => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Required),
        ToolChoice::Function(name) => ChatCompletionToolChoiceOption::Function(ChatCompletionNamedToolChoice {
            function: FunctionName { name: name.clone() },
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Reply

/// One `chat.completion.chunk`, as leniently as the servers that send it need: every field may
/// be missing or null.
#[derive(Debug, Default, Deserialize)]
struct WireChunk {
    choices: Option<Vec<WireChoice>>,
    usage: Option<WireUsage>,
    /// An error reported inside a stream that started fine (OpenAI, vLLM and Ollama do this).
    error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct WireChoice {
    delta: Option<WireDelta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireDelta {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<WireToolCall>>,
    /// The deprecated single-function form, still sent by some older servers.
    function_call: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
struct WireToolCall {
    index: Option<u32>,
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
struct WireFunction {
    name: Option<String>,
    /// A string by the spec; some servers send the arguments object itself.
    arguments: Option<serde_json::Value>,
}

/// A whole `chat.completion` (not streamed), as leniently as [`WireChunk`].
#[derive(Debug, Default, Deserialize)]
struct WireCompletion {
    choices: Option<Vec<WireCompletionChoice>>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct WireCompletionChoice {
    /// The whole reply, in the same shape as a streamed delta.
    message: Option<WireDelta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<WirePromptTokensDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct WirePromptTokensDetails {
    cached_tokens: Option<u64>,
}

type EventResult = Result<ProviderEvent, ProviderError>;

/// The events of a reply that was not streamed: the same as the one chunk that would carry it
/// all.
fn completion_events(completion: WireCompletion) -> Vec<EventResult> {
    let chunk = WireChunk {
        choices: completion.choices.map(|choices| {
            choices
                .into_iter()
                .map(|choice| WireChoice { delta: choice.message, finish_reason: choice.finish_reason })
                .collect()
        }),
        usage: completion.usage,
        error: completion.error,
    };
    let mut translator = ChunkTranslator::new(EndHint::Plain);
    let mut events = translator.chunk(chunk);
    if events.iter().all(Result::is_ok) {
        events.push(translator.end());
    }
    events
}

/// What to tell the user when a streamed reply ends before its finish reason.
#[derive(Debug, Clone, Default)]
enum EndHint {
    /// No tools were offered: most likely a cut connection.
    #[default]
    Plain,
    /// The request streamed with tools offered, from the provider of this name: some servers
    /// cannot, and give up after the response has begun.
    ToolsStreamed(String),
}

/// The events of one streamed reply. The stream ends after `Finish` or after the first error,
/// which also drops (and so closes) the HTTP response.
fn reply_events(
    chunks: StreamResponse<WireChunk>,
    provider: String,
    hint: EndHint,
) -> impl futures::Stream<Item = EventResult> {
    struct Reply {
        chunks: StreamResponse<WireChunk>,
        translator: ChunkTranslator,
        pending: VecDeque<EventResult>,
        ended: bool,
        provider: String,
    }
    let reply =
        Reply { chunks, translator: ChunkTranslator::new(hint), pending: VecDeque::new(), ended: false, provider };
    futures::stream::unfold(Some(reply), |reply| async move {
        let mut reply = reply?;
        loop {
            if let Some(item) = reply.pending.pop_front() {
                match &item {
                    Ok(ProviderEvent::Finish(reason)) => {
                        tracing::debug!(provider = %reply.provider, ?reason, "chat completion finished");
                    }
                    Err(error) => tracing::debug!(provider = %reply.provider, %error, "chat completion failed"),
                    Ok(_) => {}
                }
                let next = item.is_ok().then_some(reply);
                return Some((item, next));
            }
            if reply.ended {
                return None;
            }
            match reply.chunks.next().await {
                Some(Ok(chunk)) => reply.pending.extend(reply.translator.chunk(chunk)),
                Some(Err(error)) => reply.pending.push_back(Err(provider_error(error))),
                None => {
                    reply.ended = true;
                    reply.pending.push_back(reply.translator.end());
                }
            }
        }
    })
}

/// Turns chunks into events. The finish reason is held back to the end of the stream, because
/// OpenAI sends the usage chunk after the chunk that carries it.
#[derive(Debug, Default)]
struct ChunkTranslator {
    /// What to say if the stream ends early.
    hint: EndHint,
    /// Chunks seen, for that message.
    chunks: usize,
    finish: Option<FinishReason>,
    refused: bool,
    /// The tool calls seen so far.
    calls: Vec<SeenCall>,
    /// The index of the call the last tool-call piece belonged to.
    last_call: Option<u32>,
}

/// What is known of one tool call: its id, to place pieces that come without an index, and the
/// name sent so far, to drop names that servers repeat on every piece.
#[derive(Debug)]
struct SeenCall {
    index: u32,
    id: Option<String>,
    name: String,
}

impl ChunkTranslator {
    fn new(hint: EndHint) -> Self {
        Self { hint, ..Self::default() }
    }

    fn chunk(&mut self, chunk: WireChunk) -> Vec<EventResult> {
        self.chunks += 1;
        if let Some(error) = chunk.error {
            return vec![Err(stream_error(&error))];
        }
        let mut events = Vec::new();
        for choice in chunk.choices.unwrap_or_default() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                    events.push(Ok(ProviderEvent::TextDelta(text)));
                }
                if let Some(refusal) = delta.refusal.filter(|refusal| !refusal.is_empty()) {
                    self.refused = true;
                    events.push(Ok(ProviderEvent::TextDelta(refusal)));
                }
                let tool_calls = delta.tool_calls.unwrap_or_default();
                // The deprecated single-function form only when there is nothing else:
                // llama-cpp-python sends every piece in both forms, which would double them.
                let legacy = delta.function_call.filter(|_| tool_calls.is_empty()).map(|function| WireToolCall {
                    index: Some(0),
                    id: None,
                    function: Some(function),
                });
                for call in tool_calls.into_iter().chain(legacy) {
                    events.extend(self.tool_call(call).map(Ok));
                }
            }
            if let Some(reason) = choice.finish_reason.filter(|reason| !reason.is_empty()) {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if let Some(usage) = chunk.usage {
            let cached = usage.prompt_tokens_details.and_then(|details| details.cached_tokens);
            events.push(Ok(ProviderEvent::Usage(Usage {
                input_tokens: usage.prompt_tokens.unwrap_or(0),
                output_tokens: usage.completion_tokens.unwrap_or(0),
                cache_read_tokens: cached.unwrap_or(0),
                ..Usage::default()
            })));
        }
        events
    }

    fn tool_call(&mut self, call: WireToolCall) -> Option<ProviderEvent> {
        let id = call.id.filter(|id| !id.is_empty());
        let (name, arguments) = match call.function {
            Some(function) => (
                function.name.filter(|name| !name.is_empty()),
                match function.arguments {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(text)) => text,
                    Some(json) => json.to_string(),
                },
            ),
            None => (None, String::new()),
        };
        let index = call.index.unwrap_or_else(|| self.place_unindexed(id.as_deref(), name.is_some()));
        self.last_call = Some(index);
        let position = match self.calls.iter().position(|seen| seen.index == index) {
            Some(position) => position,
            None => {
                self.calls.push(SeenCall { index, id: None, name: String::new() });
                self.calls.len() - 1
            }
        };
        let seen = &mut self.calls[position];
        // Servers that repeat the id on every piece of a call say nothing new after the first.
        let id = id.filter(|id| seen.id.as_deref() != Some(id.as_str()));
        if id.is_some() {
            seen.id.clone_from(&id);
        }
        let name = name.filter(|name| *name != seen.name);
        if let Some(name) = &name {
            seen.name.push_str(name);
        }
        if id.is_none() && name.is_none() && arguments.is_empty() {
            return None;
        }
        Some(ProviderEvent::ToolCallDelta { index, id, name, arguments })
    }

    /// The index for a piece that came without one: it continues the last call unless it starts
    /// a new one (a different id, or a name without an id).
    fn place_unindexed(&self, id: Option<&str>, has_name: bool) -> u32 {
        let Some(last) = self.last_call else { return 0 };
        let last_id = self.calls.iter().find(|seen| seen.index == last).and_then(|seen| seen.id.as_deref());
        let continues = match id {
            Some(id) => last_id == Some(id),
            None => !has_name,
        };
        if continues { last } else { self.calls.iter().map(|seen| seen.index).max().map_or(0, |max| max + 1) }
    }

    /// The last event: the finish reason, or an error if the stream ended without one (a cut
    /// connection, most likely).
    fn end(&self) -> EventResult {
        let reason = match &self.finish {
            _ if self.refused => FinishReason::Refusal,
            // Some servers (older Ollama among them) say `stop` after calling tools.
            Some(FinishReason::Stop) if !self.calls.is_empty() => FinishReason::ToolCalls,
            Some(reason) => reason.clone(),
            None => {
                let received = match self.chunks {
                    0 => "without sending a single chunk".to_owned(),
                    n => format!("after {n} chunk(s)"),
                };
                let message = match &self.hint {
                    EndHint::Plain => format!(
                        "the stream ended {received} before the provider said why it stopped (no finish_reason); \
                         the connection may have been cut"
                    ),
                    EndHint::ToolsStreamed(provider) => format!(
                        "the server ended the streamed reply {received}, without a finish_reason, to a request \
                         that offered tools: some servers (llama-cpp-python with tool_choice auto) cannot stream \
                         tool calls and give up after answering 200; set `stream_tools = false` on provider \
                         `{provider}` ([providers.{provider}] in colloquy.toml, or \
                         COLLOQUY_PROVIDERS__{}__STREAM_TOOLS=false), and see the server's log",
                        provider.to_uppercase()
                    ),
                };
                return Err(ProviderError::MalformedResponse { message });
            }
        };
        Ok(ProviderEvent::Finish(reason))
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::Refusal,
        other => FinishReason::Other(other.to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The error for an error object inside a stream, classified by its numeric `code` when it has
/// one and as a server failure (500) otherwise, since the HTTP status was already 200.
fn stream_error(error: &serde_json::Value) -> ProviderError {
    let details = ErrorDetails::from_json(&serde_json::json!({ "error": error }));
    let status =
        details.code.as_deref().and_then(|code| code.parse::<u16>().ok()).filter(|code| (400..600).contains(code));
    let status = match status {
        Some(status) => status,
        None if details.is("rate_limit_exceeded") || details.is("rate_limit_error") => 429,
        None if details.is_context_length() => 400,
        None => 500,
    };
    classify(status, None, details)
}

fn api_error_details(error: ApiError) -> ErrorDetails {
    ErrorDetails { message: excerpt(&error.message), code: error.code, kind: error.r#type }
}

/// Classifies whatever async-openai reports.
fn provider_error(error: OpenAIError) -> ProviderError {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<ProviderError>() {
            Ok(error) => *error,
            Err(other) => ProviderError::Network { message: error_chain(other.as_ref()) },
        },
        OpenAIError::Reqwest(error) => ProviderError::Network { message: error_chain(&error) },
        OpenAIError::ApiError(response) => {
            classify(response.status_code.as_u16(), None, api_error_details(response.api_error))
        }
        OpenAIError::JSONDeserialize(error, content) => ProviderError::MalformedResponse {
            message: format!("a chunk is not a chat completion chunk ({error}): {}", excerpt(&content)),
        },
        OpenAIError::StreamError(error) => match *error {
            // eventsource-stream's transport errors are the connection breaking mid-stream.
            StreamError::EventStream(message) if message.starts_with("Transport error") => {
                ProviderError::Network { message }
            }
            StreamError::EventStream(message) => ProviderError::MalformedResponse { message },
            StreamError::UnknownEvent(event) => {
                ProviderError::MalformedResponse { message: format!("unexpected server-sent event `{}`", event.event) }
            }
        },
        OpenAIError::InvalidArgument(message) => ProviderError::InvalidRequest { message },
        other => ProviderError::Network { message: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chunk(json: serde_json::Value) -> WireChunk {
        serde_json::from_value(json).unwrap()
    }

    fn events(chunks: Vec<serde_json::Value>) -> Vec<EventResult> {
        let mut translator = ChunkTranslator::new(EndHint::Plain);
        let mut events: Vec<EventResult> = chunks.into_iter().flat_map(|json| translator.chunk(chunk(json))).collect();
        events.push(translator.end());
        events
    }

    #[test]
    fn debug_never_shows_the_key() {
        let config = OpenAiCompatibleConfig {
            name: "openai".into(),
            base_url: "https://api.openai.com/v1".into(),
            api_key: Some(SecretString::from("sk-very-secret")),
            stream_tools: true,
        };
        let shown = format!("{config:?} {:?}", OpenAiCompatible::new(config.clone()));
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn finish_reasons_map_and_unknown_ones_pass_through() {
        let finish = |reason: &str| {
            events(vec![json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})]).pop().unwrap()
        };
        assert_eq!(finish("stop"), Ok(ProviderEvent::Finish(FinishReason::Stop)));
        assert_eq!(finish("length"), Ok(ProviderEvent::Finish(FinishReason::Length)));
        assert_eq!(finish("tool_calls"), Ok(ProviderEvent::Finish(FinishReason::ToolCalls)));
        assert_eq!(finish("function_call"), Ok(ProviderEvent::Finish(FinishReason::ToolCalls)));
        assert_eq!(finish("content_filter"), Ok(ProviderEvent::Finish(FinishReason::Refusal)));
        assert_eq!(finish("eos"), Ok(ProviderEvent::Finish(FinishReason::Other("eos".into()))));
    }

    #[test]
    fn a_refusal_is_text_and_finishes_as_refusal() {
        let events = events(vec![
            json!({"choices": [{"index": 0, "delta": {"refusal": "I can't help with that."}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ]);
        assert_eq!(
            events,
            vec![
                Ok(ProviderEvent::TextDelta("I can't help with that.".into())),
                Ok(ProviderEvent::Finish(FinishReason::Refusal))
            ]
        );
    }

    #[test]
    fn calls_without_indexes_are_placed_and_repeated_ids_and_names_dropped() {
        let events = events(vec![
            // No index, the id and name repeated on every piece, arguments as an object.
            json!({"choices": [{"delta": {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{\"x\":"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "1}"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"function": {"name": "g", "arguments": {"y": 2}}}]}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
        ]);
        let delta = |index, id: Option<&str>, name: Option<&str>, arguments: &str| {
            Ok(ProviderEvent::ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: arguments.to_owned(),
            })
        };
        assert_eq!(
            events,
            vec![
                delta(0, Some("a"), Some("f"), "{\"x\":"),
                // The repeated id says nothing new.
                delta(0, None, None, "1}"),
                delta(1, None, Some("g"), "{\"y\":2}"),
                // `stop` after tool calls is read as `tool_calls`.
                Ok(ProviderEvent::Finish(FinishReason::ToolCalls)),
            ]
        );
    }

    #[test]
    fn cached_tokens_are_read_from_the_usage_details() {
        let events = events(vec![json!({
            "choices": [],
            "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                      "prompt_tokens_details": {"cached_tokens": 64}}
        })]);
        assert_eq!(
            events[0],
            Ok(ProviderEvent::Usage(Usage {
                input_tokens: 100,
                output_tokens: 7,
                cache_read_tokens: 64,
                ..Usage::default()
            }))
        );
    }

    #[test]
    fn an_error_inside_the_stream_is_classified() {
        let events = events(vec![json!({"error": {"message": "The server had an error", "type": "server_error"}})]);
        assert_eq!(events[0], Err(ProviderError::Server { status: 500, message: "The server had an error".into() }));
    }

    #[test]
    fn a_key_that_cannot_be_a_header_fails_requests_instead_of_panicking() {
        let provider = OpenAiCompatible::new(OpenAiCompatibleConfig {
            name: "openai".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: Some(SecretString::from("sk-one\nsk-two")),
            stream_tools: true,
        });
        assert!(matches!(provider.key_problem, Some(ProviderError::Auth { .. })));
    }
}
