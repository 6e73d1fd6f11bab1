//! The first schema: conversations, participants, messages and the per-conversation event log.
//!
//! Columns that later features need (summary, tags, fork point, expiry, per-message usage) are
//! created now so the schema does not have to change for each of them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(conversations()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_conversations_expires_at")
                    .table(Conversations::Table)
                    .col(Conversations::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager.create_table(participants()).await?;
        // Lists a conversation's participants in join order; its leading column also serves
        // lookups by conversation.
        manager
            .create_index(
                Index::create()
                    .name("uq_participants_conversation_join_order")
                    .table(Participants::Table)
                    .col(Participants::ConversationId)
                    .col(Participants::JoinOrder)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager.create_table(messages()).await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_messages_conversation_seq")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_messages_conversation_client_msg_id")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::ClientMsgId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager.create_table(events()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children first, so no foreign key points at a dropped table.
        for table in [Events::Table.into_iden(), Messages::Table.into_iden(), Participants::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(Conversations::Table).to_owned()).await
    }

    // Schema creation is all or nothing on every backend (SQLite DDL is transactional too).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

fn conversations() -> TableCreateStatement {
    Table::create()
        .table(Conversations::Table)
        .col(ColumnDef::new(Conversations::Id).uuid().not_null().primary_key())
        .col(ColumnDef::new(Conversations::Kind).string().not_null())
        .col(ColumnDef::new(Conversations::Status).string().not_null())
        .col(ColumnDef::new(Conversations::Title).text().null())
        .col(ColumnDef::new(Conversations::Summary).text().null())
        .col(ColumnDef::new(Conversations::Tags).json_binary().not_null())
        .col(ColumnDef::new(Conversations::Options).json_binary().not_null())
        .col(ColumnDef::new(Conversations::ForkedFromConversation).uuid().null())
        .col(ColumnDef::new(Conversations::ForkedFromSeq).big_integer().null())
        .col(ColumnDef::new(Conversations::CreatedAt).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(Conversations::LastActivity).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(Conversations::ExpiresAt).timestamp_with_time_zone().null())
        .col(ColumnDef::new(Conversations::LastSeq).big_integer().not_null().default(0))
        .col(ColumnDef::new(Conversations::TotalMessages).big_integer().not_null().default(0))
        .col(ColumnDef::new(Conversations::TotalInputTokens).big_integer().not_null().default(0))
        .col(ColumnDef::new(Conversations::TotalOutputTokens).big_integer().not_null().default(0))
        .col(ColumnDef::new(Conversations::TotalCostUsd).double().not_null().default(0.0))
        .to_owned()
}

fn participants() -> TableCreateStatement {
    Table::create()
        .table(Participants::Table)
        .col(ColumnDef::new(Participants::Id).uuid().not_null().primary_key())
        .col(ColumnDef::new(Participants::ConversationId).uuid().not_null())
        .col(ColumnDef::new(Participants::JoinOrder).big_integer().not_null())
        .col(ColumnDef::new(Participants::Kind).string().not_null())
        .col(ColumnDef::new(Participants::DisplayName).text().not_null())
        .col(ColumnDef::new(Participants::Role).string().not_null())
        .col(ColumnDef::new(Participants::Agent).json_binary().null())
        .col(ColumnDef::new(Participants::JoinedAt).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(Participants::LeftAt).timestamp_with_time_zone().null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_participants_conversation")
                .from(Participants::Table, Participants::ConversationId)
                .to(Conversations::Table, Conversations::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn messages() -> TableCreateStatement {
    Table::create()
        .table(Messages::Table)
        .col(ColumnDef::new(Messages::Id).uuid().not_null().primary_key())
        .col(ColumnDef::new(Messages::ConversationId).uuid().not_null())
        .col(ColumnDef::new(Messages::Seq).big_integer().not_null())
        .col(ColumnDef::new(Messages::Sender).uuid().null())
        .col(ColumnDef::new(Messages::Role).string().not_null())
        .col(ColumnDef::new(Messages::Content).json_binary().not_null())
        .col(ColumnDef::new(Messages::TurnId).uuid().null())
        .col(ColumnDef::new(Messages::InputTokens).big_integer().null())
        .col(ColumnDef::new(Messages::OutputTokens).big_integer().null())
        .col(ColumnDef::new(Messages::CacheReadTokens).big_integer().null())
        .col(ColumnDef::new(Messages::CacheWriteTokens).big_integer().null())
        .col(ColumnDef::new(Messages::CostUsd).double().null())
        .col(ColumnDef::new(Messages::Model).string().null())
        .col(ColumnDef::new(Messages::Provider).string().null())
        .col(ColumnDef::new(Messages::LatencyMs).big_integer().null())
        .col(ColumnDef::new(Messages::ClientMsgId).string().null())
        .col(ColumnDef::new(Messages::CreatedAt).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(Messages::Metadata).json_binary().null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_messages_conversation")
                .from(Messages::Table, Messages::ConversationId)
                .to(Conversations::Table, Conversations::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn events() -> TableCreateStatement {
    Table::create()
        .table(Events::Table)
        .col(ColumnDef::new(Events::ConversationId).uuid().not_null())
        .col(ColumnDef::new(Events::Seq).big_integer().not_null())
        .col(ColumnDef::new(Events::Kind).string().not_null())
        .col(ColumnDef::new(Events::Payload).json_binary().not_null())
        .col(ColumnDef::new(Events::CreatedAt).timestamp_with_time_zone().not_null())
        .primary_key(Index::create().name("pk_events").col(Events::ConversationId).col(Events::Seq))
        .foreign_key(
            ForeignKey::create()
                .name("fk_events_conversation")
                .from(Events::Table, Events::ConversationId)
                .to(Conversations::Table, Conversations::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    Kind,
    Status,
    Title,
    Summary,
    Tags,
    Options,
    ForkedFromConversation,
    ForkedFromSeq,
    CreatedAt,
    LastActivity,
    ExpiresAt,
    LastSeq,
    TotalMessages,
    TotalInputTokens,
    TotalOutputTokens,
    TotalCostUsd,
}

#[derive(DeriveIden)]
enum Participants {
    Table,
    Id,
    ConversationId,
    JoinOrder,
    Kind,
    DisplayName,
    Role,
    Agent,
    JoinedAt,
    LeftAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ConversationId,
    Seq,
    Sender,
    Role,
    Content,
    TurnId,
    InputTokens,
    OutputTokens,
    CacheReadTokens,
    CacheWriteTokens,
    CostUsd,
    Model,
    Provider,
    LatencyMs,
    ClientMsgId,
    CreatedAt,
    Metadata,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    ConversationId,
    Seq,
    Kind,
    Payload,
    CreatedAt,
}
