//! Full conversation records: conversation tools, participants keyed per conversation, message
//! token counts and full-text search, API keys and leases.
//!
//! A participant id now names a party (a user, an agent or a service) that may take part in many
//! conversations, so `participants` is keyed by `(conversation_id, id)`; SQLite cannot change a
//! primary key in place, so the table is rebuilt (the same statements on both backends). Search
//! is the one place the backends differ: an FTS5 table kept by triggers on SQLite, a generated
//! `tsvector` column with a GIN index on Postgres.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();

        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Conversations::Table)
                    .add_column(ColumnDef::new(Conversations::Tools).json_binary().not_null().default("[]"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_conversations_status_last_activity")
                    .table(Conversations::Table)
                    .col(Conversations::Status)
                    .col(Conversations::LastActivity)
                    .to_owned(),
            )
            .await?;

        rebuild_participants(manager, ParticipantsKey::PerConversation).await?;

        for column in [
            ColumnDef::new(Messages::TotalTokens).big_integer().null().to_owned(),
            ColumnDef::new(Messages::ContentTokens).big_integer().not_null().default(0).to_owned(),
            ColumnDef::new(Messages::SearchText).text().null().to_owned(),
        ] {
            manager.alter_table(Table::alter().table(Messages::Table).add_column(column).to_owned()).await?;
        }
        backfill_messages(manager, backend).await?;
        create_search(manager, backend).await?;

        manager.create_table(api_keys()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_participant")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::ParticipantId)
                    .to_owned(),
            )
            .await?;
        manager.create_table(leases()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager.drop_table(Table::drop().table(Leases::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ApiKeys::Table).to_owned()).await?;
        drop_search(manager, backend).await?;
        for column in [Messages::SearchText, Messages::ContentTokens, Messages::TotalTokens] {
            manager.alter_table(Table::alter().table(Messages::Table).drop_column(column).to_owned()).await?;
        }
        // Fails if a participant id takes part in two conversations: the old key cannot hold that.
        rebuild_participants(manager, ParticipantsKey::Global).await?;
        manager
            .drop_index(
                Index::drop().name("idx_conversations_status_last_activity").table(Conversations::Table).to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table(Conversations::Table).drop_column(Conversations::Tools).to_owned())
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Which primary key `participants` gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ParticipantsKey {
    /// `(conversation_id, id)`: this migration's.
    PerConversation,
    /// `id`: the initial migration's.
    Global,
}

/// Copies `participants` into a new table with the given key and puts it in the old one's place.
async fn rebuild_participants(manager: &SchemaManager<'_>, key: ParticipantsKey) -> Result<(), DbErr> {
    let mut table = Table::create();
    table
        .table(ParticipantsNext::Table)
        .col(ColumnDef::new(Participants::Id).uuid().not_null())
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
                .from(ParticipantsNext::Table, Participants::ConversationId)
                .to(Conversations::Table, Conversations::Id)
                .on_delete(ForeignKeyAction::Cascade),
        );
    match key {
        // Index names are per schema on Postgres: the two keys' names differ so that the new
        // table's can be created while the old table still has its own.
        ParticipantsKey::PerConversation => table.primary_key(
            Index::create()
                .name("pk_participants_conversation_id")
                .col(Participants::ConversationId)
                .col(Participants::Id),
        ),
        ParticipantsKey::Global => table.primary_key(Index::create().name("pk_participants_id").col(Participants::Id)),
    };
    manager.create_table(table.to_owned()).await?;

    let columns = [
        Participants::Id,
        Participants::ConversationId,
        Participants::JoinOrder,
        Participants::Kind,
        Participants::DisplayName,
        Participants::Role,
        Participants::Agent,
        Participants::JoinedAt,
        Participants::LeftAt,
    ];
    let copy = Query::insert()
        .into_table(ParticipantsNext::Table)
        .columns(columns.clone())
        .select_from(Query::select().columns(columns).from(Participants::Table).to_owned())
        .map_err(|err| DbErr::Migration(err.to_string()))?
        .to_owned();
    manager.exec_stmt(copy).await?;
    manager.drop_table(Table::drop().table(Participants::Table).to_owned()).await?;
    manager.rename_table(Table::rename().table(ParticipantsNext::Table, Participants::Table).to_owned()).await?;

    // The old table's indexes went with it.
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
    if key == ParticipantsKey::PerConversation {
        // Finds a party's conversations.
        manager
            .create_index(
                Index::create().name("idx_participants_id").table(Participants::Table).col(Participants::Id).to_owned(),
            )
            .await?;
    }
    Ok(())
}

/// Fills the new message columns of rows stored before this migration: totals from the usage
/// columns, and the text and its size from the JSON content (the SQL differs per backend).
async fn backfill_messages(manager: &SchemaManager<'_>, backend: DbBackend) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let sql = match backend {
        DbBackend::Postgres => {
            "UPDATE messages SET
                total_tokens = CASE WHEN input_tokens IS NULL THEN NULL
                                    ELSE input_tokens + COALESCE(output_tokens, 0) END,
                search_text = (SELECT string_agg(part->>'text', ' ') FROM jsonb_array_elements(content) AS part
                               WHERE part->>'type' = 'text'),
                content_tokens = (length(content::text) + 3) / 4"
        }
        _ => {
            "UPDATE messages SET
                total_tokens = CASE WHEN input_tokens IS NULL THEN NULL
                                    ELSE input_tokens + COALESCE(output_tokens, 0) END,
                search_text = (SELECT group_concat(json_extract(part.value, '$.text'), ' ')
                               FROM json_each(messages.content) AS part
                               WHERE json_extract(part.value, '$.type') = 'text'),
                content_tokens = (length(content) + 3) / 4"
        }
    };
    db.execute_unprepared(sql).await?;
    Ok(())
}

/// SQLite: an FTS5 index kept by triggers. Its rowids are recorded in `messages.search_rowid`
/// because the implicit rowid of `messages` (keyed by a UUID) may change on VACUUM.
/// Postgres: a generated `tsvector` column with a GIN index.
async fn create_search(manager: &SchemaManager<'_>, backend: DbBackend) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let statements: &[&str] = match backend {
        DbBackend::Postgres => &[
            "ALTER TABLE messages ADD COLUMN search_tsv tsvector
                GENERATED ALWAYS AS (to_tsvector('simple', COALESCE(search_text, ''))) STORED",
            "CREATE INDEX idx_messages_search_tsv ON messages USING GIN (search_tsv)",
        ],
        _ => &[
            "ALTER TABLE messages ADD COLUMN search_rowid INTEGER",
            "CREATE INDEX idx_messages_search_rowid ON messages (search_rowid)",
            "CREATE VIRTUAL TABLE messages_fts USING fts5(search_text)",
            "INSERT INTO messages_fts (rowid, search_text)
                SELECT rowid, search_text FROM messages WHERE search_text IS NOT NULL",
            "UPDATE messages SET search_rowid = rowid WHERE search_text IS NOT NULL",
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
                WHEN new.search_text IS NOT NULL
                BEGIN
                    INSERT INTO messages_fts (search_text) VALUES (new.search_text);
                    UPDATE messages SET search_rowid = last_insert_rowid() WHERE rowid = new.rowid;
                END",
            "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
                WHEN old.search_rowid IS NOT NULL
                BEGIN
                    DELETE FROM messages_fts WHERE rowid = old.search_rowid;
                END",
        ],
    };
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

async fn drop_search(manager: &SchemaManager<'_>, backend: DbBackend) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let statements: &[&str] = match backend {
        DbBackend::Postgres => &["DROP INDEX idx_messages_search_tsv", "ALTER TABLE messages DROP COLUMN search_tsv"],
        _ => &[
            "DROP TRIGGER messages_fts_delete",
            "DROP TRIGGER messages_fts_insert",
            "DROP TABLE messages_fts",
            "DROP INDEX idx_messages_search_rowid",
            "ALTER TABLE messages DROP COLUMN search_rowid",
        ],
    };
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

fn api_keys() -> TableCreateStatement {
    Table::create()
        .table(ApiKeys::Table)
        .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
        .col(ColumnDef::new(ApiKeys::KeyHash).string().not_null().unique_key())
        .col(ColumnDef::new(ApiKeys::Label).text().null())
        .col(ColumnDef::new(ApiKeys::ParticipantId).uuid().null())
        .col(ColumnDef::new(ApiKeys::Admin).boolean().not_null().default(false))
        .col(ColumnDef::new(ApiKeys::CreatedAt).timestamp_with_time_zone().not_null())
        .col(ColumnDef::new(ApiKeys::RevokedAt).timestamp_with_time_zone().null())
        .to_owned()
}

fn leases() -> TableCreateStatement {
    Table::create()
        .table(Leases::Table)
        .col(ColumnDef::new(Leases::ConversationId).uuid().not_null().primary_key())
        .col(ColumnDef::new(Leases::Holder).text().null())
        .col(ColumnDef::new(Leases::Token).big_integer().not_null())
        .col(ColumnDef::new(Leases::ExpiresAt).timestamp_with_time_zone().not_null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_leases_conversation")
                .from(Leases::Table, Leases::ConversationId)
                .to(Conversations::Table, Conversations::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    Status,
    LastActivity,
    Tools,
}

#[derive(DeriveIden, Clone)]
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
enum ParticipantsNext {
    Table,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    TotalTokens,
    ContentTokens,
    SearchText,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    KeyHash,
    Label,
    ParticipantId,
    Admin,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    ConversationId,
    Holder,
    Token,
    ExpiresAt,
}
