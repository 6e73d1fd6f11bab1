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

/// Waits until the test opens it ([`Fixture::open_gate`]): holds a turn running for as long as
/// the test needs, without sleeps and without cancelling it.
pub struct Gate(pub Arc<tokio::sync::Semaphore>);

#[async_trait]
impl Tool for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn description(&self) -> &str {
        "waits until the test opens the gate"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: serde_json::Value, _: &ToolContext) -> Result<serde_json::Value, ToolError> {
        let permit = self.0.acquire().await.map_err(|_| ToolError::new("gate closed for good"))?;
        permit.forget();
        Ok(json!("passed"))
    }
}

/// Succeeds, fails, panics or outlasts its timeout, as its `mode` argument says.
pub struct Flaky;

#[async_trait]
impl Tool for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn description(&self) -> &str {
        "behaves as told"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {"mode": {"enum": ["ok", "fail", "slow", "panic"]}}, "required": ["mode"]})
    }
    async fn execute(&self, arguments: serde_json::Value, _: &ToolContext) -> Result<serde_json::Value, ToolError> {
        match arguments["mode"].as_str() {
            Some("fail") => Err(ToolError::new("failed as asked")),
            Some("slow") => {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                Ok(json!("late"))
            }
            Some("panic") => panic!("panicked as asked"),
            _ => Ok(json!("fine")),
        }
    }
}

/// Reports progress twice, then finishes.
pub struct Reporter;

#[async_trait]
impl Tool for Reporter {
    fn name(&self) -> &str {
        "report"
    }
    fn description(&self) -> &str {
        "reports progress"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: serde_json::Value, ctx: &ToolContext) -> Result<serde_json::Value, ToolError> {
        ctx.progress(json!({"percent": 50}));
        ctx.progress(json!({"percent": 100}));
        Ok(json!("reported"))
    }
}

pub struct Fixture {
    pub engine: Engine,
    pub provider: ScriptedProvider,
    pub conversation: ConversationId,
    /// Participant ids by display name.
    pub people: std::collections::HashMap<String, ParticipantId>,
    /// Permits for the `gate` tool.
    pub gate: Arc<tokio::sync::Semaphore>,
}

impl Fixture {
    pub async fn new(script: Vec<ScriptStep>, options: Options) -> anyhow::Result<Self> {
        Self::open("sqlite::memory:", script, options, None).await
    }

    /// A conversation of `kind` with these humans and agents (all agents on the one script).
    pub async fn party(
        kind: ConversationKind,
        options: Options,
        humans: &[&str],
        agents: &[&str],
        script: Vec<ScriptStep>,
    ) -> anyhow::Result<Self> {
        let mut fixture = Self::open("sqlite::memory:", script, options.clone(), Some(ConversationId::new())).await?;
        let spec = AgentSpec {
            provider: "scripted".into(),
            model: "scripted-model".into(),
            system_prompt: None,
            tools: vec!["calculator".into()],
        };
        let mut participants = Vec::new();
        for (name, agent) in humans.iter().map(|n| (n, None)).chain(agents.iter().map(|n| (n, Some(spec.clone())))) {
            let id = ParticipantId::new();
            fixture.people.insert((*name).to_owned(), id);
            let kind = if agent.is_some() { ParticipantKind::Agent } else { ParticipantKind::User };
            participants.push(NewParticipant {
                account: None,
                a2a_url: None,
                a2a_key: None,
                id,
                kind,
                display_name: (*name).to_owned(),
                role: ParticipantRole::Member,
                agent,
            });
        }
        fixture
            .engine
            .store()
            .create_conversation(NewConversation {
                id: fixture.conversation,
                kind,
                title: None,
                tags: Vec::new(),
                options,
                participants,
            })
            .await?;
        Ok(fixture)
    }

    /// Posts `text` as the named participant and waits until every answer is done.
    pub async fn say(&self, who: &str, text: &str) -> anyhow::Result<()> {
        let post = PostMessage { sender: self.people.get(who).copied(), ..PostMessage::text(text) };
        self.engine.post_message(self.conversation, post).await?;
        self.engine.wait_for_idle(self.conversation).await;
        Ok(())
    }

    /// The durable log as one line per event: who did what, for snapshots.
    pub async fn transcript(&self) -> anyhow::Result<String> {
        let names: std::collections::HashMap<ParticipantId, String> =
            self.people.iter().map(|(n, id)| (*id, n.clone())).collect();
        let name =
            |id: &Option<ParticipantId>| id.and_then(|id| names.get(&id).cloned()).unwrap_or_else(|| "?".to_owned());
        let events = self.engine.store().events_after(self.conversation, 0, 10_000).await?;
        Ok(events.iter().map(|e| transcript_line(&e.event, &name)).collect::<Vec<_>>().join("\n"))
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
        tools.register(Flaky)?;
        tools.register(Reporter)?;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        tools.register(Gate(Arc::clone(&gate)))?;
        let engine = Engine::new(Arc::new(store), providers, ToolExecutor::new(Arc::new(tools)));
        if let Some(conversation) = existing {
            return Ok(Self { engine, provider, conversation, people: std::collections::HashMap::new(), gate });
        }
        let conversation = ConversationId::new();
        let mut people = std::collections::HashMap::new();
        let mut participant = |kind, name: &str, agent| {
            let id = ParticipantId::new();
            people.insert(name.to_owned(), id);
            NewParticipant {
                account: None,
                a2a_url: None,
                a2a_key: None,
                id,
                kind,
                display_name: name.to_owned(),
                role: ParticipantRole::Member,
                agent,
            }
        };
        let agent = AgentSpec {
            provider: "scripted".into(),
            model: "scripted-model".into(),
            system_prompt: Some("Be brief.".into()),
            tools: vec!["calculator".into(), "wait".into(), "flaky".into(), "report".into(), "gate".into()],
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
        Ok(Self { engine, provider, conversation, people, gate })
    }

    /// Lets one `gate` call through.
    pub fn open_gate(&self) {
        self.gate.add_permits(1);
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

/// One line for a durable event, with names instead of ids.
fn transcript_line(event: &TurnEvent, name: &dyn Fn(&Option<ParticipantId>) -> String) -> String {
    let text = |m: &Message| {
        m.content
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => text.clone(),
                ContentPart::ToolCall { name, arguments, .. } => format!("<call {name} {arguments}>"),
                ContentPart::ToolResult { content, is_error, .. } => {
                    format!("<result{} {content}>", if *is_error { " error" } else { "" })
                }
                _ => "<part>".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    match event {
        TurnEvent::MessagePosted { message } => format!("posted      {}: {}", name(&message.sender), text(message)),
        TurnEvent::AgentStart { agent, .. } => format!("agent_start {}", name(&Some(*agent))),
        TurnEvent::TurnStart { request, .. } => format!("  turn_start {request}"),
        TurnEvent::MessageStart { .. } => "    message_start".to_owned(),
        TurnEvent::MessageEnd { message, .. } => {
            format!("    message_end {}: {}", name(&message.sender), text(message))
        }
        TurnEvent::ToolExecutionStart { tool_name, .. } => format!("    tool_start {tool_name}"),
        TurnEvent::ToolExecutionEnd { message, .. } => format!("    tool_end {}", text(message)),
        TurnEvent::TurnEnd { request, .. } => format!("  turn_end {request}"),
        TurnEvent::AgentEnd { stop, .. } => format!("agent_end   {}", serde_json::to_string(stop).unwrap_or_default()),
        other => other.kind().to_owned(),
    }
}
