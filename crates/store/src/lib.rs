//! Colloquy's conversation store: the durable truth of conversations, participants, messages and
//! the per-conversation event log.
//!
//! [`ConversationStore`] is the API every other crate uses; [`SeaStore`] implements it once with
//! SeaORM for SQLite (the embedded default, WAL, one writer) and Postgres, chosen by the URL.
//!
//! Architecture invariant: every durable event of a conversation gets the next `seq` of that
//! conversation, gap-free and strictly increasing, in the same transaction as the rows it
//! describes. A message's `seq` is the `seq` of the event that recorded it.

mod api_key;
mod error;
mod lease;
mod query;
mod sea;
mod sweeper;

use std::time::Duration;

use async_trait::async_trait;
use colloquy_core_model::{
    Account, AccountId, AgentSpec, ContentPart, Conversation, ConversationId, ConversationKind, ConversationStatus,
    EventEnvelope, Message, MessageId, NewMessage, Options, Participant, ParticipantId, ParticipantKind,
    ParticipantRole, Timestamp, ToolCallId, TurnEvent, TurnId,
};

pub use api_key::{ApiKey, ApiKeyId, NewAccount, NewApiKey};
pub use error::StoreError;
pub use lease::{FencingToken, Lease};
pub use query::{ConversationCursor, ConversationFilter, ConversationUpdate, History, MessageCursor, Page};
pub use sea::{Durability, SeaStore, StoreOptions};
pub use sweeper::{SweepPolicy, spawn_sweeper};

/// A conversation to create, with its first participants.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Chosen by the caller.
    pub id: ConversationId,
    /// Who answers whom.
    pub kind: ConversationKind,
    /// Optional title.
    pub title: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// How turns run.
    pub options: Options,
    /// The first participants (no `participant_joined` events are written for them).
    pub participants: Vec<NewParticipant>,
}

/// A participant to add.
#[derive(Debug, Clone)]
pub struct NewParticipant {
    /// Chosen by the caller.
    pub id: ParticipantId,
    /// Human, agent or service.
    pub kind: ParticipantKind,
    /// Shown to others.
    pub display_name: String,
    /// What it may do.
    pub role: ParticipantRole,
    /// How it answers, for agents.
    pub agent: Option<AgentSpec>,
    /// The account behind it (see [`Participant::account`]).
    pub account: Option<AccountId>,
    /// A remote A2A agent's URL, for services (see [`Participant::a2a_url`]).
    pub a2a_url: Option<String>,
    /// The bearer key sent to that agent: stored, read back only by
    /// [`ConversationStore::a2a_key`], never part of a [`Participant`].
    pub a2a_key: Option<colloquy_core_model::WriteOnly>,
}

/// Which event records an appended message; the store builds it around the stored message.
#[derive(Debug, Clone)]
pub enum MessageEvent {
    /// `message_posted`: a participant posted it and it is part of the history.
    Posted,
    /// `message_queued`: a participant posted it while a turn was running; it waits outside the
    /// history until [`ConversationStore::admit_messages`] brings it in at the turn boundary.
    Queued,
    /// `message_end`: an agent's streamed message is complete.
    End {
        /// The prompt turn.
        turn_id: TurnId,
    },
    /// `tool_execution_end`: the message holds one tool call's result.
    ToolExecutionEnd {
        /// The prompt turn.
        turn_id: TurnId,
        /// The call it answers.
        tool_call_id: ToolCallId,
        /// The tool.
        tool_name: String,
        /// Whether the call failed.
        is_error: bool,
    },
}

impl MessageEvent {
    /// The event, once the message is stored.
    pub fn into_event(self, message: Message) -> TurnEvent {
        match self {
            Self::Posted => TurnEvent::MessagePosted { message },
            Self::Queued => TurnEvent::MessageQueued { message },
            Self::End { turn_id } => TurnEvent::MessageEnd { turn_id, message },
            Self::ToolExecutionEnd { turn_id, tool_call_id, tool_name, is_error } => {
                TurnEvent::ToolExecutionEnd { turn_id, tool_call_id, tool_name, is_error, message }
            }
        }
    }
}

/// One entry of [`ConversationStore::append_batch`]: a message with the event that records it, or
/// an event that records no message.
#[derive(Debug, Clone)]
pub enum Append {
    /// A message (without `client_msg_id`: posts go through `append_messages`) and its event.
    Message(NewMessage, MessageEvent),
    /// A durable event that records no message (`turn_start`, `tool_execution_start`, ...).
    Event(TurnEvent),
}

/// How [`ConversationStore::append_batch`] commits.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendOptions {
    /// Refuse the batch with [`StoreError::StaleLease`] unless this is the conversation's
    /// current lease.
    pub fence: Option<FencingToken>,
    /// The commit acknowledges something to someone outside (an `ack`, a turn's end, a tool
    /// about to act on the world): with [`Durability::Full`] it is fsynced before the call
    /// returns. Without it the batch is committed (it survives a crash of the process) and
    /// reaches the disk with the next synced commit; a power loss can lose only a suffix of the
    /// log, which crash recovery closes like a crash at that point.
    pub sync: bool,
}

/// The outcome of [`ConversationStore::append_message`].
#[derive(Debug, Clone)]
pub struct AppendedMessage {
    /// The stored message (the earlier one, for a duplicate).
    pub message: Message,
    /// The event that recorded it; `None` for a duplicate, which writes nothing.
    pub event: Option<EventEnvelope>,
    /// Whether a message with the same `client_msg_id` was already stored.
    pub duplicate: bool,
    /// Whether the message waits in the queue (`message_queued`) rather than being part of the
    /// history; for a duplicate, whether the stored one still does.
    pub queued: bool,
}

/// The durable record of conversations. One implementation per process, shared by `Arc`.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Checks that the database answers and its schema is current.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connections cleanly (SQLite checkpoints its WAL), for a clean stop. Nothing
    /// works afterwards.
    async fn close(&self) -> Result<(), StoreError>;

    /// Creates a conversation and its first participants in one transaction.
    async fn create_conversation(&self, new: NewConversation) -> Result<(Conversation, Vec<Participant>), StoreError>;

    /// Reads a conversation; [`StoreError::ConversationNotFound`] if there is none.
    async fn conversation(&self, id: ConversationId) -> Result<Conversation, StoreError>;

    /// Lists a conversation's participants, in the order they joined.
    async fn participants(&self, id: ConversationId) -> Result<Vec<Participant>, StoreError>;

    /// The bearer key of a remote A2A agent participant ([`NewParticipant::a2a_key`]), if it
    /// has one.
    async fn a2a_key(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
    ) -> Result<Option<secrecy::SecretString>, StoreError>;

    /// The participants of several conversations in one query, each conversation's in the order
    /// they joined (for a page of a list).
    async fn participants_of(&self, ids: &[ConversationId]) -> Result<Vec<Participant>, StoreError>;

    /// Appends a message and the event that records it under the next `seq`, and updates the
    /// conversation's totals, all in one transaction. With a `client_msg_id` that is already
    /// stored for this conversation, writes nothing and returns the stored message as a duplicate.
    async fn append_message(
        &self,
        conversation: ConversationId,
        message: NewMessage,
        event: MessageEvent,
    ) -> Result<AppendedMessage, StoreError>;

    /// Appends a durable event that records no message (e.g. `turn_start`) under the next `seq`.
    async fn append_event(&self, conversation: ConversationId, event: TurnEvent) -> Result<EventEnvelope, StoreError>;

    /// Messages of the history with `seq > after_seq`, oldest first, at most `limit` (queued
    /// messages are not part of the history until they are admitted).
    async fn messages_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError>;

    /// One message of the history (not a queued one), or `MessageNotFound`.
    async fn message(&self, conversation: ConversationId, message: MessageId) -> Result<Message, StoreError>;

    /// Replaces the content of a stored message, keeping its id, seq and usage, and writes
    /// `message_updated` under the next seq, in one transaction.
    async fn update_message(
        &self,
        conversation: ConversationId,
        message: MessageId,
        content: Vec<ContentPart>,
    ) -> Result<(Message, EventEnvelope), StoreError>;

    /// Deletes stored messages and writes one `message_removed` per message, lowering the
    /// conversation's totals, in one transaction. Nothing is deleted if one is missing.
    async fn remove_messages(
        &self,
        conversation: ConversationId,
        messages: &[MessageId],
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// Replaces how an agent participant answers (provider, model, system prompt, tools) and
    /// writes `participant_updated`, in one transaction.
    async fn update_agent(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
        spec: AgentSpec,
    ) -> Result<(Participant, EventEnvelope), StoreError>;

    /// Changes an active participant's role and writes `participant_updated`, in one
    /// transaction.
    async fn update_participant_role(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
        role: ParticipantRole,
    ) -> Result<(Participant, EventEnvelope), StoreError>;

    /// Prompt turns a crash left open: each conversation whose newest `agent_start` has no
    /// `agent_end` after it, with that `agent_start`'s seq. Read once at start, for recovery.
    async fn unfinished_turns(&self) -> Result<Vec<(ConversationId, u64)>, StoreError>;

    /// Brings queued messages (stored with [`MessageEvent::Queued`]) into the history at a turn
    /// boundary, in the order given: each gets the conversation's next seq and a
    /// `message_posted` event, all in one transaction. Nothing is written if one of them is not
    /// a queued message of this conversation ([`StoreError::MessageNotFound`]). With a `fence`,
    /// refused with [`StoreError::StaleLease`] unless it is the conversation's current lease.
    async fn admit_messages(
        &self,
        conversation: ConversationId,
        messages: &[MessageId],
        fence: Option<FencingToken>,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// The conversation's queued messages, oldest first.
    async fn queued_messages(&self, conversation: ConversationId) -> Result<Vec<Message>, StoreError>;

    /// Conversations that may have a prompt waiting for an answer: those with queued messages,
    /// and those whose newest `message_posted` is newer than their newest `agent_start`. Read
    /// once at start, for recovery.
    async fn conversations_with_pending_prompts(&self) -> Result<Vec<ConversationId>, StoreError>;

    /// The seq of the conversation's newest `agent_start`: every message before it has been
    /// considered for an answer.
    async fn last_turn_start(&self, conversation: ConversationId) -> Result<Option<u64>, StoreError>;

    /// Durable events with `seq > after_seq`, in seq order, at most `limit`.
    async fn events_after(
        &self,
        conversation: ConversationId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    // ---- Added with the full conversation records (issue 5). ----

    /// Appends several messages, each with the event that records it, in one transaction: they
    /// get consecutive seqs in the order given, and the totals move once. Entries whose
    /// `client_msg_id` is already stored (or repeats an earlier entry of the batch) come back as
    /// duplicates and take no seq. With a `fence`, the batch is refused with
    /// [`StoreError::StaleLease`] unless the token is the conversation's current lease.
    async fn append_messages(
        &self,
        conversation: ConversationId,
        batch: Vec<(NewMessage, MessageEvent)>,
        fence: Option<FencingToken>,
    ) -> Result<Vec<AppendedMessage>, StoreError>;

    /// Appends a turn's entries in one transaction under consecutive seqs, in the order given,
    /// moving the totals once: the events of one step of a turn (`turn_start` with
    /// `message_start`; a reply's `message_end` with its `tool_execution_start`s; results with
    /// `turn_end`). Every append of the process shares its commit with the appends waiting at the
    /// same time (group commit). Returns the stored events, each message inside its event.
    async fn append_batch(
        &self,
        conversation: ConversationId,
        entries: Vec<Append>,
        options: AppendOptions,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// [`ConversationStore::append_event`] for the holder of the conversation's lease: refused with
    /// [`StoreError::StaleLease`] unless `fence` is the current lease's token.
    async fn append_event_fenced(
        &self,
        conversation: ConversationId,
        event: TurnEvent,
        fence: FencingToken,
    ) -> Result<EventEnvelope, StoreError>;

    /// Changes a conversation's title, summary, tags, options, tools, expiry or status. Fields
    /// that differ from the stored ones are written together with a `conversation_updated`
    /// event naming them; when nothing differs, nothing is written and the event is `None`.
    /// A closed conversation cannot become active again ([`StoreError::InvalidStatusChange`]).
    async fn update_conversation(
        &self,
        id: ConversationId,
        update: ConversationUpdate,
    ) -> Result<(Conversation, Option<EventEnvelope>), StoreError>;

    /// Archives a conversation: read-only, and never swept.
    async fn archive_conversation(
        &self,
        id: ConversationId,
    ) -> Result<(Conversation, Option<EventEnvelope>), StoreError> {
        self.update_conversation(id, ConversationUpdate::status(ConversationStatus::Archived)).await
    }

    /// Closes a conversation: read-only, for good.
    async fn close_conversation(
        &self,
        id: ConversationId,
    ) -> Result<(Conversation, Option<EventEnvelope>), StoreError> {
        self.update_conversation(id, ConversationUpdate::status(ConversationStatus::Closed)).await
    }

    /// Deletes a conversation with everything in it; [`StoreError::ConversationNotFound`] if
    /// there is none.
    async fn delete_conversation(&self, id: ConversationId) -> Result<(), StoreError>;

    /// The names of the tools a conversation offers its agents (empty until set).
    async fn conversation_tools(&self, id: ConversationId) -> Result<Vec<String>, StoreError>;

    /// Conversations matching `filter`, newest first, `limit` at a time; pass the page's `next`
    /// as `after` for the following page.
    async fn list_conversations(
        &self,
        filter: ConversationFilter,
        after: Option<ConversationCursor>,
        limit: u64,
    ) -> Result<Page<Conversation, ConversationCursor>, StoreError>;

    /// One page of messages next to the cursor (forwards for `After`, backwards for `Before`),
    /// always oldest first within the page; `next` continues in the same direction.
    async fn messages_page(
        &self,
        conversation: ConversationId,
        cursor: MessageCursor,
        limit: u64,
    ) -> Result<Page<Message, MessageCursor>, StoreError>;

    /// The newest messages whose stored token sizes add up to at most `budget`, oldest first.
    /// A message's size is its output tokens for a reply with usage, else an estimate of about
    /// four bytes of content per token.
    async fn history_within_tokens(&self, conversation: ConversationId, budget: u64) -> Result<History, StoreError>;

    /// Adds a participant (or brings back one that left) and writes `participant_joined`.
    async fn add_participant(
        &self,
        conversation: ConversationId,
        participant: NewParticipant,
    ) -> Result<(Participant, EventEnvelope), StoreError>;

    /// Marks a participant as gone (`left_at`) and writes `participant_left`; the row stays so
    /// that its messages keep a sender.
    async fn remove_participant(
        &self,
        conversation: ConversationId,
        participant: ParticipantId,
    ) -> Result<EventEnvelope, StoreError>;

    /// A new conversation `new_id` holding a copy of `source` up to and including `at_seq`: its
    /// configuration, participants, messages (new ids) and events, with `forked_from` set.
    async fn fork_conversation(
        &self,
        source: ConversationId,
        at_seq: u64,
        new_id: ConversationId,
    ) -> Result<Conversation, StoreError>;

    /// Messages whose text contains every word of `query`, newest first, only in conversations
    /// `participant` takes part in (and has not left). FTS5 on SQLite, `tsvector` on Postgres.
    async fn search_messages(
        &self,
        participant: ParticipantId,
        query: &str,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError>;

    /// [`ConversationStore::search_messages`] over the conversations `account` takes part in
    /// (through any of its participants); every conversation when `account` is `None`.
    async fn search_messages_of_account(
        &self,
        account: Option<AccountId>,
        query: &str,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError>;

    /// Deletes every conversation that is not archived and either has had no activity for
    /// `inactivity` before `now` or whose `expires_at` is past. Returns their ids.
    async fn sweep_expired(&self, now: Timestamp, inactivity: Duration) -> Result<Vec<ConversationId>, StoreError>;

    /// Takes the conversation's lease for `holder` for `ttl`, with a new fencing token, unless
    /// another holder has a lease that has not expired ([`StoreError::LeaseHeld`]).
    async fn acquire_lease(
        &self,
        conversation: ConversationId,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError>;

    /// Extends a lease that is still the current one; [`StoreError::StaleLease`] otherwise.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError>;

    /// Gives a lease up; its token stops fencing appends. [`StoreError::StaleLease`] if it was
    /// no longer the current one.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Creates an account; [`StoreError::AccountExists`] if its name is taken.
    async fn create_account(&self, account: NewAccount) -> Result<Account, StoreError>;

    /// The account with this id; [`StoreError::AccountNotFound`] if there is none.
    async fn account(&self, id: AccountId) -> Result<Account, StoreError>;

    /// The account with this name, if there is one.
    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError>;

    /// Every account, oldest first.
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// Stores an API key for an existing account (only its SHA-256 hash is kept).
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError>;

    /// The key whose secret is `secret` and its account, if the key authenticates at `now`: not
    /// unknown, revoked or expired, and bound to an account.
    async fn authenticate_api_key(&self, secret: &str, now: Timestamp)
    -> Result<Option<(ApiKey, Account)>, StoreError>;

    /// Keys revoked at or after `since`, with when: a server polls this to close the
    /// connections of keys revoked by another process (`colloquy keys revoke`).
    async fn api_keys_revoked_since(&self, since: Timestamp) -> Result<Vec<(ApiKeyId, Timestamp)>, StoreError>;

    /// Revokes a key; [`StoreError::ApiKeyNotFound`] if there is none.
    async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError>;

    /// Every key, revoked ones included, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
}
