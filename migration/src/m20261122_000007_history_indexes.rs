//! Indexes for the read paths of the API: history pages (keyset on the time-ordered
//! UUIDv7 id, optionally by status) and the fleet's windows ("failed in the last
//! hour", stats over a window), which select by completion time.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE INDEX idx_sync_logs_integration_id ON sync_logs (integration_id, id DESC)",
    "CREATE INDEX idx_sync_logs_integration_status ON sync_logs (integration_id, status, id DESC)",
    "CREATE INDEX idx_sync_logs_completed ON sync_logs (completed_at)",
];

const DOWN: &[&str] = &[
    "DROP INDEX idx_sync_logs_completed",
    "DROP INDEX idx_sync_logs_integration_status",
    "DROP INDEX idx_sync_logs_integration_id",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in UP {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for sql in DOWN {
            manager.get_connection().execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
