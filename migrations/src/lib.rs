//! Colloquy's database schema, as an ordered list of sea-orm-migration migrations.
//!
//! Migrations name tables and columns directly instead of using the store's entity types, so an
//! old migration never changes when an entity does. The store runs [`Migrator::up`] when it
//! connects; `down` exists so a migration can be tried and undone during development.

use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_records;
mod m20261122_000003_message_temperature;
mod m20261202_000004_queued_messages;
mod m20261202_000005_usage_estimated;
mod m20261202_000006_accounts;
mod m20261202_000007_event_message_refs;
mod m20261203_000008_a2a_participants;

/// Every migration of the Colloquy schema, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_records::Migration),
            Box::new(m20261122_000003_message_temperature::Migration),
            Box::new(m20261202_000004_queued_messages::Migration),
            Box::new(m20261202_000005_usage_estimated::Migration),
            Box::new(m20261202_000006_accounts::Migration),
            Box::new(m20261202_000007_event_message_refs::Migration),
            Box::new(m20261203_000008_a2a_participants::Migration),
        ]
    }
}
