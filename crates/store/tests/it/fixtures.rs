//! Conversations and messages the cases build on.

use colloquy_core_model::{
    AgentSpec, ContentPart, Conversation, ConversationId, ConversationKind, MessageRole, NewMessage, Options,
    Participant, ParticipantId, ParticipantKind, ParticipantRole, TurnEvent, TurnId,
};
use colloquy_store::{ConversationStore, NewConversation, NewParticipant, SeaStore};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};

/// A user-agent conversation with a human owner and one agent.
pub fn new_conversation() -> NewConversation {
    NewConversation {
        id: ConversationId::new(),
        kind: ConversationKind::UserAgent,
        title: Some("Trip planning".to_owned()),
        tags: vec!["travel".to_owned(), "demo".to_owned()],
        options: Options { model: Some("gpt-test".to_owned()), max_tokens: Some(512), ..Options::default() },
        participants: vec![
            NewParticipant {
                account: None,
                a2a_url: None,
                a2a_key: None,
                id: ParticipantId::new(),
                kind: ParticipantKind::User,
                display_name: "Ada".to_owned(),
                role: ParticipantRole::Owner,
                agent: None,
            },
            NewParticipant {
                account: None,
                a2a_url: None,
                a2a_key: None,
                id: ParticipantId::new(),
                kind: ParticipantKind::Agent,
                display_name: "Planner".to_owned(),
                role: ParticipantRole::Member,
                agent: Some(AgentSpec {
                    provider: "scripted".to_owned(),
                    model: "echo".to_owned(),
                    system_prompt: Some("Be brief.".to_owned()),
                    tools: vec!["weather".to_owned()],
                }),
            },
        ],
    }
}

/// Creates [`new_conversation`] in `store`.
pub async fn create_conversation(store: &SeaStore) -> (Conversation, Vec<Participant>) {
    store.create_conversation(new_conversation()).await.expect("create conversation")
}

/// A user's text message.
pub fn text(text: &str) -> NewMessage {
    NewMessage::new(MessageRole::User, vec![ContentPart::text(text)])
}

/// A durable event that records no message.
pub fn turn_start(request: u32) -> TurnEvent {
    TurnEvent::TurnStart { turn_id: TurnId::new(), request }
}

/// Sets a conversation's status behind the store's back (the store has no API for it yet).
pub async fn set_status(store: &SeaStore, conversation: ConversationId, status: &str) {
    let update = Query::update()
        .table(Alias::new("conversations"))
        .value(Alias::new("status"), status)
        .and_where(Expr::col(Alias::new("id")).eq(conversation.as_uuid()))
        .to_owned();
    let result = store.connection().execute(&update).await.expect("update status");
    assert_eq!(result.rows_affected(), 1);
}
