//! Accounts: stable identities that API keys authenticate and participants are bound to.

use sea_orm_migration::prelude::*;

/// Creates `accounts`, binds `api_keys` to an account with an optional expiry, and binds
/// participants to accounts. Earlier keys (bound to a participant, or admin) have no account
/// and authenticate no one until re-issued; earlier participants have none and can only be
/// acted for by an admin.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    Name,
    Kind,
    DisplayName,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    AccountId,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Participants {
    Table,
    AccountId,
}

const KEYS_INDEX: &str = "idx_api_keys_account";
const PARTICIPANTS_INDEX: &str = "idx_participants_account";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(ColumnDef::new(Accounts::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Accounts::Name).string().not_null().unique_key())
                    .col(ColumnDef::new(Accounts::Kind).string().not_null())
                    .col(ColumnDef::new(Accounts::DisplayName).text().not_null())
                    .col(ColumnDef::new(Accounts::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for column in [
            ColumnDef::new(ApiKeys::AccountId).uuid().null().to_owned(),
            ColumnDef::new(ApiKeys::ExpiresAt).timestamp_with_time_zone().null().to_owned(),
        ] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).add_column(column).to_owned()).await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Participants::Table)
                    .add_column(ColumnDef::new(Participants::AccountId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name(KEYS_INDEX).table(ApiKeys::Table).col(ApiKeys::AccountId).to_owned())
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(PARTICIPANTS_INDEX)
                    .table(Participants::Table)
                    .col(Participants::AccountId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(PARTICIPANTS_INDEX).table(Participants::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name(KEYS_INDEX).table(ApiKeys::Table).to_owned()).await?;
        manager
            .alter_table(Table::alter().table(Participants::Table).drop_column(Participants::AccountId).to_owned())
            .await?;
        for column in [ApiKeys::ExpiresAt, ApiKeys::AccountId] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(Accounts::Table).to_owned()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
