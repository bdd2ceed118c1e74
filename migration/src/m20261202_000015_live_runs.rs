//! Live runs apart from history (docs/architecture.md §3.3).
//!
//! A run lives in the narrow `live_runs` table while it is PENDING or RUNNING: only the
//! indexes the protocol needs (its id, and one live run per integration), filled so its
//! claim and lease renewals are HOT updates. Its history row is written once, when it
//! finishes, into `run_history` (the former `sync_logs` table), which carries the history
//! indexes. `sync_logs` becomes a read-only view of both, so every reader sees a run
//! from its creation on.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261122_000002_create_integrations::Integrations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LiveRuns {
    Table,
    Id,
    IntegrationId,
    Status,
    Trigger,
    ScheduledFor,
    Attempt,
    Claims,
    SoloClaims,
    Fence,
    LeaseOwner,
    LeaseUntil,
    EnqueuedAt,
    StartedAt,
    WorkerId,
    CreatedAt,
}

/// Every column of a run, in the view's order.
const COLUMNS: &str = "id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, solo_claims, \
    fence, lease_owner, lease_until, enqueued_at, started_at, completed_at, duration_ms, records_count, \
    records_inserted, records_updated, records_unchanged, records_deleted, error_class, error_message, \
    worker_id, created_at";

/// The columns a live run has.
const LIVE: &str = "id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, solo_claims, \
    fence, lease_owner, lease_until, enqueued_at, started_at, worker_id, created_at";

/// `live_sync_logs`: the live runs with a run's every column (the queue's views read it);
/// `sync_logs`: every run.
fn view_sql(backend: DbBackend) -> [String; 2] {
    // A live run has no outcome yet; PostgreSQL wants the NULLs typed.
    let (ts, big, text) = match backend {
        DbBackend::Postgres => ("NULL::timestamptz", "NULL::bigint", "NULL::varchar"),
        _ => ("NULL", "NULL", "NULL"),
    };
    [
        format!(
            "CREATE VIEW live_sync_logs AS \
         SELECT id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, solo_claims, \
           fence, lease_owner, lease_until, enqueued_at, started_at, {ts} AS completed_at, {big} AS duration_ms, \
           CAST(0 AS BIGINT) AS records_count, CAST(0 AS BIGINT) AS records_inserted, \
           CAST(0 AS BIGINT) AS records_updated, CAST(0 AS BIGINT) AS records_unchanged, \
           CAST(0 AS BIGINT) AS records_deleted, {text} AS error_class, {text} AS error_message, worker_id, created_at \
         FROM live_runs"
        ),
        format!(
            "CREATE VIEW sync_logs AS SELECT {COLUMNS} FROM live_sync_logs \
         UNION ALL SELECT {COLUMNS} FROM run_history"
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use LiveRuns as L;
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        db.execute_unprepared("ALTER TABLE sync_logs RENAME TO run_history")
            .await?;
        let mut table = Table::create()
            .table(L::Table)
            .col(ColumnDef::new(L::Id).uuid().not_null().primary_key())
            .col(ColumnDef::new(L::IntegrationId).uuid().not_null())
            .col(ColumnDef::new(L::Status).string_len(16).not_null())
            .col(ColumnDef::new(L::Trigger).string_len(16).not_null())
            .col(
                ColumnDef::new(L::ScheduledFor)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .col(ColumnDef::new(L::Attempt).integer().not_null().default(1))
            .col(ColumnDef::new(L::Claims).integer().not_null().default(0))
            .col(
                ColumnDef::new(L::SoloClaims)
                    .integer()
                    .not_null()
                    .default(0),
            )
            .col(ColumnDef::new(L::Fence).big_integer().not_null().default(0))
            .col(ColumnDef::new(L::LeaseOwner).string_len(200).null())
            .col(
                ColumnDef::new(L::LeaseUntil)
                    .timestamp_with_time_zone()
                    .null(),
            )
            .col(
                ColumnDef::new(L::EnqueuedAt)
                    .timestamp_with_time_zone()
                    .null(),
            )
            .col(
                ColumnDef::new(L::StartedAt)
                    .timestamp_with_time_zone()
                    .null(),
            )
            .col(ColumnDef::new(L::WorkerId).string_len(200).null())
            .col(
                ColumnDef::new(L::CreatedAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .check(Expr::col(L::Status).is_in(["PENDING", "RUNNING"]))
            .foreign_key(
                ForeignKey::create()
                    .name("fk_live_runs_integration")
                    .from(L::Table, L::IntegrationId)
                    .to(Integrations::Table, Integrations::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned();
        manager.create_table(table.take()).await?;
        // At most one live (PENDING or RUNNING) run per integration: the scheduler and
        // the manual trigger coalesce on it instead of stacking runs.
        db.execute_unprepared(
            "CREATE UNIQUE INDEX uq_live_runs_integration ON live_runs (integration_id)",
        )
        .await?;
        if backend == DbBackend::Postgres {
            // Room in every page for the claim's and the renewals' new row versions, so
            // they stay HOT (no index entries written).
            db.execute_unprepared("ALTER TABLE live_runs SET (fillfactor = 50)")
                .await?;
        }
        db.execute_unprepared(&format!(
            "INSERT INTO live_runs ({LIVE}) SELECT {LIVE} FROM run_history WHERE status IN ('PENDING', 'RUNNING')"
        ))
        .await?;
        db.execute_unprepared("DELETE FROM run_history WHERE status IN ('PENDING', 'RUNNING')")
            .await?;
        // History indexes stay; the protocol's indexes go with the live rows.
        for idx in [
            "uq_sync_logs_one_running",
            "uq_sync_logs_one_live",
            "idx_sync_logs_pending",
            "idx_sync_logs_running",
            "uq_sync_logs_slot",
        ] {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {idx}"))
                .await?;
        }
        if backend == DbBackend::Postgres {
            // Lets the planner skip the history side of `sync_logs` for a live status.
            db.execute_unprepared(
                "ALTER TABLE run_history ADD CONSTRAINT ck_run_history_finished \
                 CHECK (status NOT IN ('PENDING', 'RUNNING'))",
            )
            .await?;
        }
        for sql in view_sql(backend) {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP VIEW sync_logs").await?;
        db.execute_unprepared("DROP VIEW live_sync_logs").await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                "ALTER TABLE run_history DROP CONSTRAINT ck_run_history_finished",
            )
            .await?;
        }
        db.execute_unprepared(&format!(
            "INSERT INTO run_history ({LIVE}) SELECT {LIVE} FROM live_runs"
        ))
        .await?;
        db.execute_unprepared("DROP TABLE live_runs").await?;
        db.execute_unprepared("ALTER TABLE run_history RENAME TO sync_logs")
            .await?;
        for sql in [
            "CREATE UNIQUE INDEX uq_sync_logs_one_running ON sync_logs (integration_id) WHERE status = 'RUNNING'",
            "CREATE UNIQUE INDEX uq_sync_logs_one_live ON sync_logs (integration_id) WHERE status IN ('PENDING', 'RUNNING')",
            "CREATE INDEX idx_sync_logs_pending ON sync_logs (enqueued_at) WHERE status = 'PENDING'",
            "CREATE INDEX idx_sync_logs_running ON sync_logs (lease_until) WHERE status = 'RUNNING'",
            "CREATE UNIQUE INDEX uq_sync_logs_slot ON sync_logs (integration_id, scheduled_for)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
