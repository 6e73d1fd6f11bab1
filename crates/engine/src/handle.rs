//! The library surface of the seeds: a handle on one conversation (`prompt`, `continue`,
//! `abort`, `wait_for_idle`, ...) and a one-off [`generate_with_tools`].

use std::sync::Arc;

use colloquy_core_model::{
    AgentSpec, ContentPart, ConversationId, ConversationKind, Message, MessageId, MessageRole, NewMessage, Options,
    Participant, ParticipantId, ParticipantKind, ParticipantRole, StopReason, ToolCallId, Totals, TurnEvent, Usage,
};
use colloquy_llm_providers::LlmProvider;
use colloquy_store::{ConversationStore, MessageEvent, NewConversation, NewParticipant};
use colloquy_tools::ToolExecutor;

use crate::{Engine, EngineError, PostMessage, Posted, ProviderRegistry, QueuePolicy, Subscription};

/// What a conversation is doing and has spent.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationState {
    /// Tokens and cost over all its messages.
    pub totals: Totals,
    /// Whether an agent is answering (or a prompt is queued).
    pub is_streaming: bool,
    /// Tool calls that have no result yet.
    pub pending_tool_calls: Vec<ToolCallId>,
    /// The agent's current provider, model, prompt and tools.
    pub agent: AgentSpec,
}

/// A user-agent conversation, seen from its user: the seeds' `Conversation` class over the
/// engine. Every call goes through the store, so another handle (or the gateway) on the same
/// conversation sees the same state.
#[derive(Debug, Clone)]
pub struct ConversationHandle {
    engine: Engine,
    id: ConversationId,
    user: ParticipantId,
    agent: ParticipantId,
}

impl Engine {
    /// Starts a user-agent conversation with one user and one agent answering as `spec`.
    pub async fn start(&self, spec: AgentSpec, options: Options) -> Result<ConversationHandle, EngineError> {
        let (user, agent) = (ParticipantId::new(), ParticipantId::new());
        let participant = |id, kind, name: &str, agent| NewParticipant {
            account: None,
            a2a_url: None,
            a2a_key: None,
            id,
            kind,
            display_name: name.to_owned(),
            role: if kind == ParticipantKind::User { ParticipantRole::Owner } else { ParticipantRole::Member },
            agent,
        };
        let new = NewConversation {
            id: ConversationId::new(),
            kind: ConversationKind::UserAgent,
            title: None,
            tags: Vec::new(),
            options,
            participants: vec![
                participant(user, ParticipantKind::User, "user", None),
                participant(agent, ParticipantKind::Agent, "assistant", Some(spec)),
            ],
        };
        let (conversation, _) = self.create_conversation(new).await?;
        Ok(ConversationHandle { engine: self.clone(), id: conversation.id, user, agent })
    }

    /// A handle on an existing conversation, as its first user towards its first agent.
    pub async fn open(&self, id: ConversationId) -> Result<ConversationHandle, EngineError> {
        let participants = self.store().participants(id).await?;
        let first = |kind| participants.iter().find(|p: &&Participant| p.kind == kind).map(|p| p.id);
        let user = first(ParticipantKind::User).ok_or(EngineError::NoSender(id))?;
        let agent = first(ParticipantKind::Agent).ok_or(EngineError::NoAgent(id))?;
        Ok(ConversationHandle { engine: self.clone(), id, user, agent })
    }
}

impl ConversationHandle {
    /// The conversation's id.
    pub fn id(&self) -> ConversationId {
        self.id
    }

    /// Posts a prompt (text and attachments), waits for the agent to finish, and returns the
    /// messages added from the prompt on.
    pub async fn prompt(&self, text: &str, attachments: Vec<ContentPart>) -> Result<Vec<Message>, EngineError> {
        let mut content = vec![ContentPart::text(text)];
        content.extend(attachments);
        let post = PostMessage { sender: Some(self.user), content, client_msg_id: None, queue: QueuePolicy::Queue };
        let posted = self.engine.post_message(self.id, post).await?;
        self.engine.wait_for_idle(self.id).await;
        // A prompt that was queued joined the history with a new seq at the turn boundary.
        let history = self.history().await?;
        let start = history.iter().position(|m| m.id == posted.message.id).unwrap_or(history.len());
        Ok(history.into_iter().skip(start).collect())
    }

    /// Runs the agent again on the history as it is (after a stopped turn, or after messages
    /// were appended), waits, and returns the messages it added.
    pub async fn continue_turn(&self) -> Result<Vec<Message>, EngineError> {
        let before = self.engine.store().conversation(self.id).await?.last_seq;
        self.engine.continue_conversation(self.id).await?;
        self.engine.wait_for_idle(self.id).await;
        self.messages_from(before + 1).await
    }

    /// Cancels the running turn; returns whether one was running.
    pub fn abort(&self) -> bool {
        self.engine.cancel(self.id)
    }

    /// Waits until no turn runs or is queued.
    pub async fn wait_for_idle(&self) {
        self.engine.wait_for_idle(self.id).await;
    }

    /// Aborts any turn and starts over in a new, empty conversation with the same agent and
    /// options; the old one stays stored. The handle then refers to the new conversation.
    pub async fn reset(&mut self) -> Result<(), EngineError> {
        self.abort();
        self.wait_for_idle().await;
        let record = self.engine.store().conversation(self.id).await?;
        let spec = self.agent_spec().await?;
        *self = self.engine.start(spec, record.options).await?;
        Ok(())
    }

    /// Follows the conversation's events from now on.
    pub async fn subscribe(&self) -> Result<Subscription, EngineError> {
        let now = self.engine.store().conversation(self.id).await?.last_seq;
        self.engine.subscribe(self.id, now).await
    }

    /// Stores a message without starting a turn (e.g. to seed history). Refused while a turn runs,
    /// which would otherwise see history change under it.
    pub async fn append_message(&self, role: MessageRole, content: Vec<ContentPart>) -> Result<Message, EngineError> {
        if self.engine.is_busy(self.id) {
            return Err(EngineError::Busy(self.id));
        }
        let mut message = NewMessage::new(role, content);
        message.sender = Some(if role == MessageRole::Assistant { self.agent } else { self.user });
        let entry = colloquy_store::Append::Message(message, MessageEvent::Posted);
        let mut recorded = self.engine.inner().record(self.id, vec![entry], true).await?;
        match recorded.pop().map(|envelope| envelope.event) {
            Some(colloquy_core_model::TurnEvent::MessagePosted { message }) => Ok(message),
            _ => Err(EngineError::Store(colloquy_store::StoreError::Corrupt {
                what: "messages",
                detail: "an append of one message stored none".to_owned(),
            })),
        }
    }

    /// Replaces a stored message's content (same id and seq), for the following requests. An
    /// assistant message keeps exactly its tool calls; tool results cannot be edited. Refused
    /// while a turn runs.
    pub async fn update_message(&self, message: MessageId, content: Vec<ContentPart>) -> Result<Message, EngineError> {
        self.engine.update_message(self.id, message, content).await
    }

    /// Takes a message out of the history; an assistant message takes its tool results with it.
    /// A tool result alone cannot be removed (its call would be left unanswered). Refused while
    /// a turn runs.
    pub async fn remove_message(&self, message: MessageId) -> Result<(), EngineError> {
        self.engine.remove_message(self.id, message).await
    }

    /// Stores application data in history; it is streamed to clients but never sent to a model.
    pub async fn add_custom_message(&self, value: serde_json::Value) -> Result<Message, EngineError> {
        self.append_message(MessageRole::Custom, vec![ContentPart::Custom { value }]).await
    }

    /// Posts a prompt without waiting: it is answered now, or after the running turn.
    pub async fn queue_message(&self, text: &str) -> Result<Posted, EngineError> {
        let post = PostMessage { sender: Some(self.user), ..PostMessage::text(text) };
        self.engine.post_message(self.id, post).await
    }

    /// Changes the agent's system prompt for the following requests.
    pub async fn set_system_prompt(&self, prompt: Option<String>) -> Result<(), EngineError> {
        self.update_agent(|spec| spec.system_prompt = prompt).await
    }

    /// Changes the agent's provider and model for the following requests.
    pub async fn set_provider(&self, provider: &str, model: &str) -> Result<(), EngineError> {
        self.update_agent(|spec| {
            spec.provider = provider.to_owned();
            spec.model = model.to_owned();
        })
        .await
    }

    /// Changes the tools the agent is offered.
    pub async fn set_tools(&self, tools: Vec<String>) -> Result<(), EngineError> {
        if let Some(unknown) = tools.iter().find(|t| !self.engine.tools().registry().contains(t)) {
            return Err(EngineError::UnknownTool(unknown.clone()));
        }
        self.update_agent(|spec| spec.tools = tools).await
    }

    /// Totals, whether it is streaming, pending tool calls and the agent's spec.
    pub async fn state(&self) -> Result<ConversationState, EngineError> {
        let record = self.engine.store().conversation(self.id).await?;
        let history = self.history().await?;
        let answered: Vec<&ToolCallId> = history
            .iter()
            .flat_map(|m| &m.content)
            .filter_map(|p| match p {
                ContentPart::ToolResult { tool_call_id, .. } => Some(tool_call_id),
                _ => None,
            })
            .collect();
        let pending_tool_calls = history
            .iter()
            .flat_map(|m| m.tool_calls())
            .map(|(id, _, _)| id)
            .filter(|id| !answered.contains(id))
            .cloned()
            .collect();
        Ok(ConversationState {
            totals: record.totals,
            is_streaming: self.engine.is_busy(self.id),
            pending_tool_calls,
            agent: self.agent_spec().await?,
        })
    }

    /// A new conversation with this one's history, agent and options up to and including
    /// `at_seq` (the latest when `None`); this one is unchanged.
    pub async fn fork(&self, at_seq: Option<u64>) -> Result<ConversationHandle, EngineError> {
        let at = match at_seq {
            Some(seq) => seq,
            None => self.engine.store().conversation(self.id).await?.last_seq,
        };
        let fork = self.engine.fork(self.id, at).await?;
        self.engine.open(fork).await
    }

    /// Ends the conversation: any turn is cancelled and it is closed for good (read-only).
    pub async fn end(&self) -> Result<(), EngineError> {
        self.abort();
        self.wait_for_idle().await;
        let (_, event) = self.engine.store().close_conversation(self.id).await?;
        if let Some(event) = event {
            self.engine.inner().publish(event);
        }
        Ok(())
    }

    /// Every stored message, oldest first.
    pub async fn history(&self) -> Result<Vec<Message>, EngineError> {
        self.messages_from(0).await
    }

    async fn messages_from(&self, seq: u64) -> Result<Vec<Message>, EngineError> {
        let mut messages = Vec::new();
        let mut after = seq.saturating_sub(1);
        loop {
            let page = self.engine.store().messages_after(self.id, after, 1000).await?;
            let Some(last) = page.last() else { return Ok(messages) };
            after = last.seq;
            messages.extend(page);
        }
    }

    async fn agent_spec(&self) -> Result<AgentSpec, EngineError> {
        let participants = self.engine.store().participants(self.id).await?;
        participants.into_iter().find(|p| p.id == self.agent).and_then(|p| p.agent).ok_or(EngineError::NoAgent(self.id))
    }

    async fn update_agent(&self, change: impl FnOnce(&mut AgentSpec)) -> Result<(), EngineError> {
        let mut spec = self.agent_spec().await?;
        change(&mut spec);
        self.engine.update_agent(self.id, self.agent, spec).await?;
        Ok(())
    }
}

/// What [`generate_with_tools`] produced.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The assistant and tool messages, in order; the last is the answer.
    pub messages: Vec<Message>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Tokens and cost over all requests.
    pub usage: Usage,
}

impl Generated {
    /// The answer's text.
    pub fn text(&self) -> String {
        self.messages.iter().rev().find(|m| m.role == MessageRole::Assistant).map(Message::text).unwrap_or_default()
    }
}

/// One prompt, answered with tools, without keeping anything: the same turn loop as a
/// conversation (tool calls, results back to the model, limits), over `store`, in a conversation
/// deleted once it is answered. Open the store once and pass it to every call (an in-memory
/// `SeaStore::connect("sqlite::memory:", ..)` keeps nothing on disk); nothing is migrated or
/// opened per call.
pub async fn generate_with_tools(
    store: Arc<dyn ConversationStore>,
    provider: Arc<dyn LlmProvider>,
    tools: ToolExecutor,
    spec: AgentSpec,
    options: Options,
    prompt: Vec<ContentPart>,
) -> Result<Generated, EngineError> {
    let spec = AgentSpec { provider: provider.name().to_owned(), ..spec };
    let mut providers = ProviderRegistry::new();
    providers.insert(spec.provider.clone(), provider);
    let engine = Engine::new(store, providers, tools);
    let conversation = engine.start(spec, options).await?;
    let post = PostMessage {
        sender: Some(conversation.user),
        content: prompt,
        client_msg_id: None,
        queue: QueuePolicy::Queue,
    };
    engine.post_message(conversation.id, post).await?;
    engine.wait_for_idle(conversation.id).await;
    let events = engine.store().events_after(conversation.id, 0, u64::MAX).await?;
    let (stop, usage) = events
        .into_iter()
        .rev()
        .find_map(|e| match e.event {
            TurnEvent::AgentEnd { stop, usage, .. } => Some((stop, usage)),
            _ => None,
        })
        .ok_or(EngineError::NoAgent(conversation.id))?;
    let messages = conversation.history().await?.into_iter().filter(|m| m.role != MessageRole::User).collect();
    engine.store().delete_conversation(conversation.id).await?;
    Ok(Generated { messages, stop, usage })
}
