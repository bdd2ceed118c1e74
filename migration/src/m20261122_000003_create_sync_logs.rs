use sea_orm_migration::prelude::*;

use crate::m20261122_000002_create_integrations::Integrations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SyncLogs {
    Table,
    Id,
    IntegrationId,
    Status,
    Trigger,
    ScheduledFor,
    Attempt,
    Claims,
    Fence,
    LeaseOwner,
    LeaseUntil,
    EnqueuedAt,
    StartedAt,
    CompletedAt,
    DurationMs,
    RecordsCount,
    RecordsInserted,
    RecordsUpdated,
    RecordsUnchanged,
    RecordsDeleted,
    ErrorClass,
    ErrorMessage,
    WorkerId,
    CreatedAt,
}

/// Indexes that need a `WHERE` clause or `DESC` ordering; the SQL is the same on
/// PostgreSQL and SQLite.
const INDEXES: &[&str] = &[
    // At most one RUNNING run per integration, enforced by the database.
    "CREATE UNIQUE INDEX uq_sync_logs_one_running ON sync_logs (integration_id) WHERE status = 'RUNNING'",
    // At most one live (PENDING or RUNNING) run per integration: the scheduler and the
    // manual trigger rely on it to coalesce instead of stacking runs.
    "CREATE UNIQUE INDEX uq_sync_logs_one_live ON sync_logs (integration_id) WHERE status IN ('PENDING', 'RUNNING')",
    // History, newest first.
    "CREATE INDEX idx_sync_logs_history ON sync_logs (integration_id, started_at DESC, id DESC)",
    // The re-enqueuer: PENDING runs by last push.
    "CREATE INDEX idx_sync_logs_pending ON sync_logs (enqueued_at) WHERE status = 'PENDING'",
    // The reaper: RUNNING runs by lease expiry.
    "CREATE INDEX idx_sync_logs_running ON sync_logs (lease_until) WHERE status = 'RUNNING'",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SyncLogs as S;
        let count = |c: SyncLogs| {
            ColumnDef::new(c)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .col(ColumnDef::new(S::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(S::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(S::Status).string_len(16).not_null())
                    .col(ColumnDef::new(S::Trigger).string_len(16).not_null())
                    .col(
                        ColumnDef::new(S::ScheduledFor)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(S::Attempt).integer().not_null().default(1))
                    .col(ColumnDef::new(S::Claims).integer().not_null().default(0))
                    .col(ColumnDef::new(S::Fence).big_integer().not_null().default(0))
                    .col(ColumnDef::new(S::LeaseOwner).string_len(200).null())
                    .col(
                        ColumnDef::new(S::LeaseUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(S::EnqueuedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(S::StartedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(S::CompletedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(S::DurationMs).big_integer().null())
                    .col(count(S::RecordsCount))
                    .col(count(S::RecordsInserted))
                    .col(count(S::RecordsUpdated))
                    .col(count(S::RecordsUnchanged))
                    .col(count(S::RecordsDeleted))
                    .col(ColumnDef::new(S::ErrorClass).string_len(16).null())
                    .col(ColumnDef::new(S::ErrorMessage).text().null())
                    .col(ColumnDef::new(S::WorkerId).string_len(200).null())
                    .col(
                        ColumnDef::new(S::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .check(Expr::col(S::Status).is_in([
                        "PENDING",
                        "RUNNING",
                        "SUCCESS",
                        "FAILED",
                        "RATE_LIMITED",
                        "CANCELLED",
                    ]))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_sync_logs_integration")
                            .from(S::Table, S::IntegrationId)
                            .to(Integrations::Table, Integrations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A slot is scheduled once, whoever schedules it.
        manager
            .create_index(
                Index::create()
                    .name("uq_sync_logs_slot")
                    .table(S::Table)
                    .col(S::IntegrationId)
                    .col(S::ScheduledFor)
                    .unique()
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for sql in INDEXES {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SyncLogs::Table).to_owned())
            .await
    }
}
