//! Drops `idx_sync_logs_history (integration_id, started_at DESC, id DESC)`.
//!
//! History pages by the UUIDv7 id since migration 7 (`idx_sync_logs_integration_id`,
//! `idx_sync_logs_integration_status`); nothing reads this index any more, and every
//! claim and finish paid for it (a run row is written three times).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_sync_logs_history")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_sync_logs_history ON sync_logs (integration_id, started_at DESC, id DESC)",
            )
            .await?;
        Ok(())
    }
}
