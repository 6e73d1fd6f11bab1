//! An engine over in-memory SQLite with a scripted provider and test tools.

use std::sync::Arc;

use async_trait::async_trait;
use colloquy_core_model::{
    AgentSpec, ContentPart, ConversationId, ConversationKind, EventEnvelope, Message, Options, ParticipantId,
    ParticipantKind, ParticipantRole, TurnEvent,
};
use colloquy_engine::{Engine, PostMessage, ProviderRegistry, Subscription};
use colloquy_llm_providers::{ScriptStep, ScriptedProvider};
use colloquy_store::{NewConversation, NewParticipant, SeaStore, StoreOptions};
use colloquy_tools::{Tool, ToolContext, ToolError, ToolExecutor, ToolRegistry};
use serde_json::json;

/// Waits until the turn is cancelled; never finishes on its own.
pub struct WaitForCancel;

#[async_trait]
impl Tool for WaitForCancel {
    fn name(&self) -> &str {
        "wait"
    }
    fn description(&self) -> &str {
        "waits until cancelled"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: serde_json::Value, ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        ctx.cancel.cancelled().await;
        Err(ToolError::new("stopped"))
    }
}

pub struct Fixture {
    pub engine: Engine,
    pub provider: ScriptedProvider,
    pub conversation: ConversationId,
}

impl Fixture {
    pub async fn new(script: Vec<ScriptStep>, options: Options) -> anyhow::Result<Self> {
        Self::open("sqlite::memory:", script, options, None).await
    }

    /// An engine over the database at `url`; with `existing`, on that conversation instead of a
    /// new one (a restart after a crash).
    pub async fn open(
        url: &str,
        script: Vec<ScriptStep>,
        options: Options,
        existing: Option<ConversationId>,
    ) -> anyhow::Result<Self> {
        let store = SeaStore::connect(url, StoreOptions::default()).await?;
        let provider = ScriptedProvider::new(script);
        let mut providers = ProviderRegistry::new();
        providers.insert("scripted".to_owned(), Arc::new(provider.clone()));
        let mut tools = ToolRegistry::with_builtins();
        tools.register(WaitForCancel)?;
        let engine = Engine::new(Arc::new(store), providers, ToolExecutor::new(Arc::new(tools)));
        if let Some(conversation) = existing {
            return Ok(Self { engine, provider, conversation });
        }
        let conversation = ConversationId::new();
        let participant = |kind, name: &str, agent| NewParticipant {
            id: ParticipantId::new(),
            kind,
            display_name: name.to_owned(),
            role: ParticipantRole::Member,
            agent,
        };
        let agent = AgentSpec {
            provider: "scripted".into(),
            model: "scripted-model".into(),
            system_prompt: Some("Be brief.".into()),
            tools: vec!["calculator".into(), "wait".into()],
        };
        engine
            .store()
            .create_conversation(NewConversation {
                id: conversation,
                kind: ConversationKind::UserAgent,
                title: None,
                tags: Vec::new(),
                options,
                participants: vec![
                    participant(ParticipantKind::User, "ada", None),
                    participant(ParticipantKind::Agent, "assistant", Some(agent)),
                ],
            })
            .await?;
        Ok(Self { engine, provider, conversation })
    }

    pub async fn subscribe(&self) -> anyhow::Result<Subscription> {
        Ok(self.engine.subscribe(self.conversation, 0).await?)
    }

    pub async fn prompt(&self, text: &str) -> anyhow::Result<()> {
        self.engine.post_message(self.conversation, PostMessage::text(text)).await?;
        Ok(())
    }

    pub async fn history(&self) -> anyhow::Result<Vec<Message>> {
        Ok(self.engine.store().messages_after(self.conversation, 0, 1000).await?)
    }
}

/// Events up to and including `agent_end`.
pub async fn until_agent_end(subscription: &mut Subscription) -> anyhow::Result<Vec<EventEnvelope>> {
    let mut events = Vec::new();
    loop {
        let envelope = subscription.next().await?;
        let done = matches!(envelope.event, TurnEvent::AgentEnd { .. });
        events.push(envelope);
        if done {
            return Ok(events);
        }
    }
}

/// The `type` names of events, ephemeral ones marked with `~`.
pub fn kinds(events: &[EventEnvelope]) -> Vec<String> {
    events
        .iter()
        .map(|e| if e.seq.is_some() { e.event.kind().to_owned() } else { format!("~{}", e.event.kind()) })
        .collect()
}

/// Every tool call in history has exactly one result, and each result answers an earlier call.
pub fn assert_every_call_has_one_result(history: &[Message]) {
    let mut open: Vec<String> = Vec::new();
    for message in history {
        for part in &message.content {
            match part {
                ContentPart::ToolCall { id, .. } => open.push(id.to_string()),
                ContentPart::ToolResult { tool_call_id, .. } => {
                    let position = open.iter().position(|id| id == tool_call_id.as_str());
                    assert!(position.is_some(), "result for unknown or already answered call {tool_call_id}");
                    if let Some(position) = position {
                        open.remove(position);
                    }
                }
                _ => {}
            }
        }
    }
    assert!(open.is_empty(), "calls without a result: {open:?}");
}
