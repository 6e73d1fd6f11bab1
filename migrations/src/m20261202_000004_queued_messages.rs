//! Messages posted while a turn runs wait in a queue until the turn boundary.

use sea_orm_migration::prelude::*;

/// Adds `messages.queued` (false for every earlier message: each was part of the history when
/// it was stored) and an index to find the queued ones at start.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Queued,
    ConversationId,
}

const INDEX: &str = "idx_messages_queued";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(ColumnDef::new(Messages::Queued).boolean().not_null().default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Messages::Table)
                    .col(Messages::Queued)
                    .col(Messages::ConversationId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(INDEX).table(Messages::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Messages::Table).drop_column(Messages::Queued).to_owned()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
