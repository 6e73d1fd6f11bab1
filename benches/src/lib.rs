//! Fixtures shared by Colloquy's criterion benches (and, later, the load generator): a real
//! engine over SQLite in a temporary directory with the scripted provider.

use std::sync::Arc;

use colloquy_core_model::{
    AgentSpec, ConversationId, ConversationKind, Options, ParticipantId, ParticipantKind, ParticipantRole, StopReason,
    TurnEvent,
};
use colloquy_engine::{Engine, PostMessage, ProviderRegistry};
use colloquy_llm_providers::{ScriptStep, ScriptedProvider};
use colloquy_store::{Durability, NewConversation, NewParticipant, SeaStore, StoreError, StoreOptions};
use colloquy_tools::{ToolExecutor, ToolRegistry};

/// An engine whose scripted model answers every prompt like DESIGN §10's turn: one reply with
/// four parallel calculator calls, then a text answer.
pub struct TurnFixture {
    /// The engine under test.
    pub engine: Engine,
    /// Keeps the SQLite file alive.
    _dir: tempfile::TempDir,
}

impl TurnFixture {
    /// Opens a fresh SQLite store in a temporary directory, with the default durability (`Full`).
    pub async fn new() -> Result<Self, StoreError> {
        Self::with_durability(Durability::Full).await
    }

    /// Opens a fresh SQLite store in a temporary directory with this durability.
    pub async fn with_durability(durability: Durability) -> Result<Self, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::UnsupportedUrl(e.to_string()))?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        let store = SeaStore::connect(&url, StoreOptions { durability, ..StoreOptions::default() }).await?;
        let calls: Vec<(String, String)> =
            (0..4).map(|i| (format!("call_{i}"), format!("{{\"expression\": \"{i} * 7\"}}"))).collect();
        let call_refs: Vec<(&str, &str, &str)> =
            calls.iter().map(|(id, args)| (id.as_str(), "calculator", args.as_str())).collect();
        let provider = ScriptedProvider::cycling(vec![
            ScriptStep::tool_calls(&call_refs),
            ScriptStep::text("The results are 0, 7, 14 and 21."),
        ]);
        let mut providers = ProviderRegistry::new();
        providers.insert("scripted".to_owned(), Arc::new(provider));
        let tools = ToolExecutor::new(Arc::new(ToolRegistry::with_builtins()));
        Ok(Self { engine: Engine::new(Arc::new(store), providers, tools), _dir: dir })
    }

    /// A new user-agent conversation with the scripted agent.
    pub async fn conversation(&self) -> Result<ConversationId, StoreError> {
        let id = ConversationId::new();
        let participant = |kind, name: &str, agent| NewParticipant {
            account: None,
            a2a_url: None,
            a2a_key: None,
            id: ParticipantId::new(),
            kind,
            display_name: name.to_owned(),
            role: ParticipantRole::Member,
            agent,
        };
        let agent = AgentSpec {
            provider: "scripted".into(),
            model: "scripted".into(),
            system_prompt: None,
            tools: vec!["calculator".into()],
        };
        self.engine
            .store()
            .create_conversation(NewConversation {
                id,
                kind: ConversationKind::UserAgent,
                title: None,
                tags: Vec::new(),
                options: Options::default(),
                participants: vec![
                    participant(ParticipantKind::User, "user", None),
                    participant(ParticipantKind::Agent, "agent", Some(agent)),
                ],
            })
            .await?;
        Ok(id)
    }

    /// Runs one turn and checks it is the benched scenario: 2 LLM requests, 4 tool calls, and
    /// `end_turn`.
    pub async fn check_one_turn(&self) -> Result<(), String> {
        let conversation = self.conversation().await.map_err(|e| e.to_string())?;
        self.engine.post_message(conversation, PostMessage::text("compute")).await.map_err(|e| e.to_string())?;
        self.engine.wait_for_idle(conversation).await;
        let events = self.engine.store().events_after(conversation, 0, 1000).await.map_err(|e| e.to_string())?;
        let count = |kind: &str| events.iter().filter(|e| e.event.kind() == kind).count();
        let ended =
            events.last().is_some_and(|e| matches!(&e.event, TurnEvent::AgentEnd { stop: StopReason::EndTurn, .. }));
        match (count("turn_start"), count("tool_execution_end"), ended) {
            (2, 4, true) => Ok(()),
            other => Err(format!("(requests, tool results, ended with end_turn) = {other:?}")),
        }
    }
}

/// Registers a TrueType font as plotters' `sans-serif`, read at run time from
/// `COLLOQUY_BENCH_FONT` or the usual DejaVu / Liberation paths: plotters is built with its
/// ab_glyph text backend (no system font lookup library), which needs the font given to it. Used
/// by the bench driver's plots and by criterion's; `false` when no font was found.
pub fn register_plot_font() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let candidates = std::env::var("COLLOQUY_BENCH_FONT").into_iter().chain(
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
            ]
            .map(str::to_owned),
        );
        for candidate in candidates {
            if let Ok(bytes) = std::fs::read(&candidate) {
                // plotters keeps a reference to the font for the rest of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}
