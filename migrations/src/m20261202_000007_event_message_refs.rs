//! An event that records a message refers to it instead of carrying a second copy of it.

use sea_orm_migration::prelude::*;

/// Adds `events.message_id`: set on `message_posted`, `message_queued`, `message_end` and
/// `tool_execution_end` rows whose payload leaves the message out (it is read from `messages`).
/// Earlier rows keep their copy and a NULL here, and read as before.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    MessageId,
}

const INDEX: &str = "idx_events_message_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Events::Table)
                    .add_column(ColumnDef::new(Events::MessageId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager.create_index(Index::create().name(INDEX).table(Events::Table).col(Events::MessageId).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(INDEX).table(Events::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Events::Table).drop_column(Events::MessageId).to_owned()).await
    }
}
