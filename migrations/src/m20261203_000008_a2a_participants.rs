//! Services that are remote A2A agents: the agent's URL and bearer key on their participant row.

use sea_orm_migration::prelude::*;

/// Adds `participants.a2a_url` and `participants.a2a_key` (nullable; earlier participants have
/// neither).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Participants {
    Table,
    A2aUrl,
    A2aKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for column in [Participants::A2aUrl, Participants::A2aKey] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Participants::Table)
                        .add_column(ColumnDef::new(column).text().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Participants::A2aUrl, Participants::A2aKey] {
            manager.alter_table(Table::alter().table(Participants::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
