//! Managing conversations between and around turns, for the REST surface and library callers:
//! listing, changing and archiving them, editing history, participants and agents. Every
//! change is stored with the event that says so, then published.

use std::collections::HashMap;

use colloquy_core_model::limits::{MAX_JSON_DEPTH, json_depth};
use colloquy_core_model::{
    Account, AccountId, AccountKind, AgentSpec, ContentPart, Conversation, ConversationId, ConversationRequest,
    ConversationStatus, EventEnvelope, Message, MessageId, MessageRole, Participant, ParticipantId, ParticipantKind,
    ParticipantRole, ToolCallId, ToolSpec,
};
use colloquy_store::{
    ConversationCursor, ConversationFilter, ConversationUpdate, History, MessageCursor, NewConversation,
    NewParticipant, Page, StoreError,
};

use crate::{Engine, EngineError};

impl Engine {
    /// Creates a conversation `creator` asked for: it takes part as its owner (a user, or a
    /// service for a service account) unless it is an admin who left itself out of an explicit
    /// participant list; the first user or service without an account is the creator; agents
    /// belong to the creator and get `default_agent` when they name none; everyone else must name
    /// an existing account. Then [`Engine::create_conversation`] checks and stores it.
    pub async fn create_conversation_for(
        &self,
        creator: &Account,
        request: ConversationRequest,
        default_agent: &AgentSpec,
    ) -> Result<(Conversation, Vec<Participant>), EngineError> {
        let me = creator.id;
        let agent_spec = |spec: Option<AgentSpec>| spec.unwrap_or_else(|| default_agent.clone());
        let creator_as = |display_name: String| NewParticipant {
            id: ParticipantId::new(),
            kind: creator.kind.participant_kind(),
            display_name,
            role: ParticipantRole::Owner,
            agent: None,
            account: Some(me),
            a2a_url: None,
            a2a_key: None,
        };
        let mut participants: Vec<NewParticipant> = match request.participants {
            Some(list) => {
                let mut creator_placed = false;
                let mut out = Vec::with_capacity(list.len() + 1);
                for (index, p) in list.into_iter().enumerate() {
                    let remote = p.a2a_url.is_some();
                    colloquy_core_model::check_remote_agent(p.kind, p.a2a_url.as_deref(), p.a2a_key.as_ref())
                        .map_err(|error| EngineError::InvalidConversation(format!("participant {index}: {error}")))?;
                    let account = match (p.kind, p.account_id) {
                        (ParticipantKind::Agent, _) => Some(me),
                        (_, Some(account)) => {
                            if account != me {
                                self.account(account).await.map_err(|_| {
                                    EngineError::InvalidConversation(format!(
                                        "participant {index}: there is no account {account}"
                                    ))
                                })?;
                            }
                            Some(account)
                        }
                        // A remote agent speaks for nobody here.
                        (_, None) if remote => None,
                        (_, None) if !creator_placed => Some(me),
                        (kind, None) => {
                            return Err(EngineError::InvalidConversation(format!(
                                "participant {index} ({kind:?}) has no account_id: only the first user or service may \
                                 leave it out (that one is you); bind the others to their accounts"
                            )));
                        }
                    };
                    creator_placed |= p.kind != ParticipantKind::Agent && account == Some(me);
                    let agent = (p.kind == ParticipantKind::Agent).then(|| agent_spec(p.agent));
                    out.push(NewParticipant {
                        id: ParticipantId::new(),
                        kind: p.kind,
                        display_name: p.display_name,
                        role: p.role,
                        agent,
                        account,
                        a2a_url: p.a2a_url,
                        a2a_key: p.a2a_key,
                    });
                }
                if !creator_placed && creator.kind != AccountKind::Admin {
                    // Whoever creates a conversation takes part in it.
                    out.insert(0, creator_as(creator.display_name.clone()));
                }
                out
            }
            None => vec![
                creator_as(request.user_name.unwrap_or_else(|| creator.display_name.clone())),
                NewParticipant {
                    id: ParticipantId::new(),
                    kind: ParticipantKind::Agent,
                    display_name: request.agent_name.unwrap_or_else(|| "assistant".to_owned()),
                    role: ParticipantRole::Member,
                    agent: Some(agent_spec(request.agent)),
                    account: Some(me),
                    a2a_url: None,
                    a2a_key: None,
                },
            ],
        };
        // The creator owns it.
        for p in &mut participants {
            if p.kind != ParticipantKind::Agent && p.account == Some(me) {
                p.role = ParticipantRole::Owner;
            }
        }
        self.create_conversation(NewConversation {
            id: ConversationId::new(),
            kind: request.kind,
            title: request.title,
            tags: request.tags,
            options: request.options,
            participants,
        })
        .await
    }

    /// Conversations that match `filter`, newest activity first.
    pub async fn list_conversations(
        &self,
        filter: ConversationFilter,
        after: Option<ConversationCursor>,
        limit: u64,
    ) -> Result<Page<Conversation, ConversationCursor>, EngineError> {
        Ok(self.inner().store.list_conversations(filter, after, limit).await?)
    }

    /// Changes a conversation's title, summary, tags or options (not its status: see
    /// [`Engine::set_status`]); publishes `conversation_updated` when something changed.
    pub async fn update_conversation(
        &self,
        id: ConversationId,
        update: ConversationUpdate,
    ) -> Result<Conversation, EngineError> {
        if let Some(options) = &update.options {
            let depth = json_depth(&options.context);
            if depth > MAX_JSON_DEPTH {
                return Err(EngineError::InvalidConversation(format!(
                    "options.context nests {depth} levels deep, more than the limit of {MAX_JSON_DEPTH}: send flatter JSON"
                )));
            }
        }
        let update = ConversationUpdate { status: None, ..update };
        self.apply_update(id, update).await
    }

    /// Archives (read-only, never swept), unarchives (active again) or closes (read-only for
    /// good) a conversation. A running turn is cancelled first.
    pub async fn set_status(
        &self,
        id: ConversationId,
        status: ConversationStatus,
    ) -> Result<Conversation, EngineError> {
        if status != ConversationStatus::Active {
            self.cancel(id);
            self.wait_for_idle(id).await;
        }
        self.apply_update(id, ConversationUpdate::status(status)).await
    }

    async fn apply_update(&self, id: ConversationId, update: ConversationUpdate) -> Result<Conversation, EngineError> {
        let (conversation, event) = self.inner().store.update_conversation(id, update).await?;
        if let Some(event) = event {
            self.inner().publish(event);
        }
        Ok(conversation)
    }

    /// Deletes a conversation with everything in it, after cancelling its turn.
    pub async fn delete_conversation(&self, id: ConversationId) -> Result<(), EngineError> {
        self.cancel(id);
        self.wait_for_idle(id).await;
        Ok(self.inner().store.delete_conversation(id).await?)
    }

    /// One page of history next to `cursor`, oldest first within the page.
    pub async fn messages_page(
        &self,
        id: ConversationId,
        cursor: MessageCursor,
        limit: u64,
    ) -> Result<Page<Message, MessageCursor>, EngineError> {
        Ok(self.inner().store.messages_page(id, cursor, limit).await?)
    }

    /// The newest history that fits `budget` tokens.
    pub async fn history_within(&self, id: ConversationId, budget: u64) -> Result<History, EngineError> {
        Ok(self.inner().store.history_within_tokens(id, budget).await?)
    }

    /// Durable events after `after_seq`, at most `limit`.
    pub async fn events_after(
        &self,
        id: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<EventEnvelope>, EngineError> {
        Ok(self.inner().store.events_after(id, after_seq, limit).await?)
    }

    /// A message of the history, if no turn runs (edits under a running turn would race it).
    /// One message of the history.
    pub async fn message(&self, id: ConversationId, message: MessageId) -> Result<Message, EngineError> {
        Ok(self.inner().store.message(id, message).await?)
    }

    /// A message of the conversation, or one still queued behind a running turn (it joins the
    /// history when its turn begins).
    pub async fn message_or_queued(&self, id: ConversationId, message: MessageId) -> Result<Message, EngineError> {
        match self.inner().store.message(id, message).await {
            Err(StoreError::MessageNotFound { .. }) => {
                let queued = self.inner().store.queued_messages(id).await?;
                queued
                    .into_iter()
                    .find(|m| m.id == message)
                    .ok_or(EngineError::Store(StoreError::MessageNotFound { conversation: id, message }))
            }
            other => Ok(other?),
        }
    }

    async fn editable(&self, id: ConversationId, message: MessageId) -> Result<Message, EngineError> {
        if self.is_busy(id) {
            return Err(EngineError::Busy(id));
        }
        self.message(id, message).await
    }

    /// Replaces a stored message's content (same id and seq) for the following requests
    /// (`message_updated`). An assistant message keeps exactly its tool calls; tool results and
    /// content that a post may not contain are refused; refused while a turn runs.
    pub async fn update_message(
        &self,
        id: ConversationId,
        message: MessageId,
        content: Vec<ContentPart>,
    ) -> Result<Message, EngineError> {
        let current = self.editable(id, message).await?;
        let calls = |content: &[ContentPart]| -> Vec<ToolCallId> {
            content
                .iter()
                .filter_map(|p| match p {
                    ContentPart::ToolCall { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect()
        };
        match current.role {
            MessageRole::Tool => {
                return Err(EngineError::InvalidEdit(
                    "a tool result cannot be edited: remove the assistant message that made the call instead".into(),
                ));
            }
            MessageRole::Assistant if calls(&current.content) != calls(&content) => {
                return Err(EngineError::InvalidEdit(
                    "an edited assistant message must keep exactly its tool calls, so each keeps its result".into(),
                ));
            }
            MessageRole::Assistant => {}
            _ => crate::post::check(&content, None)?,
        }
        let (updated, event) = self.inner().store.update_message(id, message, content).await?;
        self.inner().publish(event);
        Ok(updated)
    }

    /// Takes a message out of the history (`message_removed`); an assistant message takes its
    /// tool results with it. A tool result alone cannot be removed (its call would be left
    /// unanswered). Refused while a turn runs.
    pub async fn remove_message(&self, id: ConversationId, message: MessageId) -> Result<(), EngineError> {
        let current = self.editable(id, message).await?;
        if current.role == MessageRole::Tool {
            return Err(EngineError::InvalidEdit(
                "a tool result cannot be removed alone: remove the assistant message that made the call".into(),
            ));
        }
        let calls: Vec<&ToolCallId> = current.tool_calls().map(|(id, _, _)| id).collect();
        let mut doomed = vec![message];
        if !calls.is_empty() {
            let history = self.inner().store.messages_after(id, current.seq, u64::MAX).await?;
            doomed.extend(history.iter().filter_map(|m| {
                let answers = m.content.iter().any(
                    |p| matches!(p, ContentPart::ToolResult { tool_call_id, .. } if calls.contains(&tool_call_id)),
                );
                answers.then_some(m.id)
            }));
        }
        for event in self.inner().store.remove_messages(id, &doomed).await? {
            self.inner().publish(event);
        }
        Ok(())
    }

    /// Checks an agent spec against what this engine runs: a configured provider, a model that
    /// provider serves (when it can say which it serves), registered tools.
    pub async fn check_agent(&self, spec: &AgentSpec) -> Result<(), EngineError> {
        let registry = self.tools().registry();
        if let Some(unknown) = spec.tools.iter().find(|name| !registry.contains(name)) {
            return Err(EngineError::UnknownTool(unknown.clone()));
        }
        let Some(provider) = self.inner().providers.get(&spec.provider) else {
            let mut known: Vec<String> = self.inner().providers.keys().cloned().collect();
            known.sort();
            return Err(EngineError::UnknownProvider { provider: spec.provider.clone(), known });
        };
        let serves = |models: &Option<Vec<String>>| models.as_ref().is_none_or(|m| m.contains(&spec.model));
        let mut models = self.inner().models(&spec.provider, provider, false).await;
        if !serves(&models) {
            models = self.inner().models(&spec.provider, provider, true).await;
        }
        if let Some(models) = models.filter(|m| !m.contains(&spec.model)) {
            return Err(EngineError::UnknownModel {
                provider: spec.provider.clone(),
                model: spec.model.clone(),
                known: models.into_iter().take(20).collect(),
            });
        }
        Ok(())
    }

    /// Adds a participant (`participant_joined`): a person or service bound to its account, or
    /// an agent with a checked spec.
    pub async fn add_participant(&self, id: ConversationId, new: NewParticipant) -> Result<Participant, EngineError> {
        if new.display_name.trim().is_empty() {
            return Err(EngineError::InvalidConversation("a participant needs a display_name".to_owned()));
        }
        match (&new.kind, &new.agent) {
            (ParticipantKind::Agent, Some(spec)) => self.check_agent(spec).await?,
            (ParticipantKind::Agent, None) => {
                return Err(EngineError::InvalidConversation("an agent needs an agent spec (provider, model)".into()));
            }
            (_, Some(_)) => {
                return Err(EngineError::InvalidConversation("only agents have an agent spec".to_owned()));
            }
            (_, None) => {}
        }
        let (participant, event) = self.inner().store.add_participant(id, new).await?;
        self.inner().publish(event);
        Ok(participant)
    }

    /// Changes a participant's role (`participant_updated`).
    pub async fn set_participant_role(
        &self,
        id: ConversationId,
        participant: ParticipantId,
        role: ParticipantRole,
    ) -> Result<Participant, EngineError> {
        let (participant, event) = self.inner().store.update_participant_role(id, participant, role).await?;
        self.inner().publish(event);
        Ok(participant)
    }

    /// Changes how an agent participant answers (`participant_updated`); the next request sees
    /// it. The spec is checked first ([`Engine::check_agent`]).
    pub async fn update_agent(
        &self,
        id: ConversationId,
        participant: ParticipantId,
        spec: AgentSpec,
    ) -> Result<Participant, EngineError> {
        self.check_agent(&spec).await?;
        let (participant, event) = self.inner().store.update_agent(id, participant, spec).await?;
        self.inner().publish(event);
        Ok(participant)
    }

    /// Messages containing every word of `query` in the conversations `account` takes part in
    /// (every conversation for `None`), newest first.
    pub async fn search_messages(
        &self,
        account: Option<AccountId>,
        query: &str,
        limit: u64,
    ) -> Result<Vec<Message>, EngineError> {
        Ok(self.inner().store.search_messages_of_account(account, query, limit).await?)
    }

    /// The registered tools, as models see them.
    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        let registry = self.tools().registry();
        registry.specs(&registry.names())
    }

    /// The configured providers and the models each serves, when it can tell.
    pub async fn providers(&self) -> Vec<(String, Option<Vec<String>>)> {
        let mut names: Vec<&String> = self.inner().providers.keys().collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(provider) = self.inner().providers.get(name) {
                out.push((name.clone(), self.inner().models(name, provider, false).await));
            }
        }
        out
    }
}

/// What providers said they serve, asked once per provider.
pub(crate) type ModelCache = tokio::sync::Mutex<HashMap<String, Option<Vec<String>>>>;
