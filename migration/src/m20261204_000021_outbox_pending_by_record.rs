//! The waiting changes of a record, found through an index of their own
//! (docs/architecture.md §3.11).
//!
//! Every step of a push that looks for a record's waiting changes (the newest one at the
//! first claim, superseding the older ones, chaining the next one at a finish, rebasing
//! them on the cloud's new version) asks for `integration_id`, `external_id` and
//! `status = 'pending'`. The outbox keeps every pushed entry for the idempotency window,
//! and its live share swings between empty and a backlog, so statistics taken at either
//! end mislead the planner: with only `idx_outbox_record` and the `created_at`-ordered
//! pending index to choose from it scanned every pending entry for each record
//! (BENCHMARKS.md, "Pushes"). This partial index matches all three conditions, so it is
//! the cheapest plan whatever the statistics say.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_outbox_pending_record ON outbox (integration_id, external_id, record_version) \
                 WHERE status = 'pending'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_outbox_pending_record")
            .await?;
        Ok(())
    }
}
