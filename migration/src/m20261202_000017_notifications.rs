//! Health events and their webhook deliveries, and the freshness objective
//! (docs/architecture.md §3.10, §4.16).
//!
//! - `events`: one row per typed event (`integration.disabled`, …), written in the
//!   transaction of the state change that caused it; `body` is the exact JSON every
//!   delivery of it sends.
//! - `notification_endpoints`: a workspace's webhook receivers and their signing secrets
//!   (sealed when a secret key is configured).
//! - `notification_deliveries`: one per event and endpoint, its outcome and attempts so far.
//! - `live_deliveries`: the second kind of leased work — a delivery's live row while it
//!   is PENDING or RUNNING (the same columns as `live_runs`, plus `due_at`, the earliest
//!   time its next attempt may be claimed).
//! - `delivery_attempts`: one row per attempt (status code, latency, error).
//! - `integrations`: `stale_after_secs` (the objective in force, NULL = none; unless
//!   `stale_after_custom`, the API keeps it at twice the interval plus the lease), `stale_at` (when it is breached unless a success comes first: a due
//!   time, indexed like `next_sync_at`), `stale_since` (breached since) and
//!   `unhealthy_since` (an open failure streak, disable or breach: the next success is a
//!   recovery).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261122_000001_create_workspaces::Workspaces;
use crate::m20261122_000002_create_integrations::Integrations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    WorkspaceId,
    EventType,
    IntegrationId,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum NotificationEndpoints {
    Table,
    Id,
    WorkspaceId,
    Url,
    Description,
    EventTypes,
    Enabled,
    Format,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    ConsecutiveFailures,
    DisabledReason,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum NotificationDeliveries {
    Table,
    Id,
    WorkspaceId,
    EndpointId,
    EventId,
    EventType,
    Status,
    Attempts,
    LastStatusCode,
    LastLatencyMs,
    LastError,
    NextAttemptAt,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum LiveDeliveries {
    Table,
    Id,
    EndpointId,
    Status,
    Claims,
    SoloClaims,
    Fence,
    LeaseOwner,
    LeaseUntil,
    EnqueuedAt,
    StartedAt,
    WorkerId,
    DueAt,
}

#[derive(DeriveIden)]
enum DeliveryAttempts {
    Table,
    Id,
    DeliveryId,
    Attempt,
    StartedAt,
    FinishedAt,
    StatusCode,
    LatencyMs,
    Error,
    Outcome,
}

#[derive(DeriveIden)]
enum Freshness {
    StaleAfterSecs,
    StaleAfterCustom,
    StaleAt,
    StaleSince,
    UnhealthySince,
}

fn ts(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).timestamp_with_time_zone().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        for c in [
            ColumnDef::new(Freshness::StaleAfterSecs)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Freshness::StaleAfterCustom)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ts(Freshness::StaleAt).null().to_owned(),
            ts(Freshness::StaleSince).null().to_owned(),
            ts(Freshness::UnhealthySince).null().to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Integrations::Table)
                        .add_column(c)
                        .to_owned(),
                )
                .await?;
        }
        // The freshness detector reads only the integrations whose objective comes due.
        db.execute_unprepared(
            "CREATE INDEX idx_integrations_stale_at ON integrations (stale_at) WHERE stale_at IS NOT NULL",
        )
        .await?;

        use Events as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .col(ColumnDef::new(E::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(E::WorkspaceId).uuid().not_null())
                    .col(ColumnDef::new(E::EventType).string_len(64).not_null())
                    .col(ColumnDef::new(E::IntegrationId).uuid().null())
                    .col(ColumnDef::new(E::Body).text().not_null())
                    .col(ts(E::CreatedAt).not_null())
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_events_workspace ON events (workspace_id, created_at)",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_events_integration ON events (integration_id, created_at)",
        )
        .await?;
        // The history pass prunes events by age (with their finished deliveries).
        db.execute_unprepared("CREATE INDEX idx_events_created ON events (created_at)")
            .await?;

        use NotificationEndpoints as N;
        manager
            .create_table(
                Table::create()
                    .table(N::Table)
                    .col(ColumnDef::new(N::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(N::WorkspaceId).uuid().not_null())
                    .col(ColumnDef::new(N::Url).text().not_null())
                    .col(ColumnDef::new(N::Description).text().not_null().default(""))
                    .col(ColumnDef::new(N::EventTypes).text().not_null())
                    .col(
                        ColumnDef::new(N::Enabled)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(ColumnDef::new(N::Format).string_len(16).not_null())
                    .col(ColumnDef::new(N::Secret).text().not_null())
                    .col(ColumnDef::new(N::PreviousSecret).text().null())
                    .col(ts(N::PreviousSecretUntil).null())
                    .col(
                        ColumnDef::new(N::ConsecutiveFailures)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(N::DisabledReason).text().null())
                    .col(ColumnDef::new(N::Version).integer().not_null().default(1))
                    .col(ts(N::CreatedAt).not_null())
                    .col(ts(N::UpdatedAt).not_null())
                    .check(Expr::col(N::Format).is_in(["standard", "slack"]))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_endpoints_workspace")
                            .from(N::Table, N::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_endpoints_workspace ON notification_endpoints (workspace_id)",
        )
        .await?;

        use NotificationDeliveries as D;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .col(ColumnDef::new(D::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(D::WorkspaceId).uuid().not_null())
                    .col(ColumnDef::new(D::EndpointId).uuid().not_null())
                    .col(ColumnDef::new(D::EventId).uuid().not_null())
                    .col(ColumnDef::new(D::EventType).string_len(64).not_null())
                    .col(ColumnDef::new(D::Status).string_len(16).not_null())
                    .col(ColumnDef::new(D::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(D::LastStatusCode).integer().null())
                    .col(ColumnDef::new(D::LastLatencyMs).big_integer().null())
                    .col(ColumnDef::new(D::LastError).text().null())
                    .col(ts(D::NextAttemptAt).null())
                    .col(ts(D::CreatedAt).not_null())
                    .col(ts(D::FinishedAt).null())
                    .check(Expr::col(D::Status).is_in(["pending", "succeeded", "failed"]))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_deliveries_endpoint")
                            .from(D::Table, D::EndpointId)
                            .to(N::Table, N::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_deliveries_event")
                            .from(D::Table, D::EventId)
                            .to(E::Table, E::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for sql in [
            "CREATE INDEX idx_deliveries_endpoint ON notification_deliveries (endpoint_id, created_at)",
            "CREATE INDEX idx_deliveries_workspace ON notification_deliveries (workspace_id, created_at)",
            "CREATE INDEX idx_deliveries_event ON notification_deliveries (event_id)",
        ] {
            db.execute_unprepared(sql).await?;
        }

        use LiveDeliveries as L;
        manager
            .create_table(
                Table::create()
                    .table(L::Table)
                    .col(ColumnDef::new(L::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(L::EndpointId).uuid().not_null())
                    .col(ColumnDef::new(L::Status).string_len(16).not_null())
                    .col(ColumnDef::new(L::Claims).integer().not_null().default(0))
                    .col(
                        ColumnDef::new(L::SoloClaims)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(L::Fence).big_integer().not_null().default(0))
                    .col(ColumnDef::new(L::LeaseOwner).string_len(200).null())
                    .col(ts(L::LeaseUntil).null())
                    .col(ts(L::EnqueuedAt).null())
                    .col(ts(L::StartedAt).null())
                    .col(ColumnDef::new(L::WorkerId).string_len(200).null())
                    .col(ts(L::DueAt).null())
                    .check(Expr::col(L::Status).is_in(["PENDING", "RUNNING"]))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_live_deliveries_delivery")
                            .from(L::Table, L::Id)
                            .to(D::Table, D::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The pump's read: PENDING deliveries that are due and not pushed yet.
        db.execute_unprepared(
            "CREATE INDEX idx_live_deliveries_due ON live_deliveries (due_at) \
             WHERE status = 'PENDING' AND enqueued_at IS NULL",
        )
        .await?;
        if backend == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE live_deliveries SET (fillfactor = 50)")
                .await?;
        }

        use DeliveryAttempts as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .col(ColumnDef::new(A::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(A::DeliveryId).uuid().not_null())
                    .col(ColumnDef::new(A::Attempt).integer().not_null())
                    .col(ts(A::StartedAt).null())
                    .col(ts(A::FinishedAt).not_null())
                    .col(ColumnDef::new(A::StatusCode).integer().null())
                    .col(ColumnDef::new(A::LatencyMs).big_integer().null())
                    .col(ColumnDef::new(A::Error).text().null())
                    .col(ColumnDef::new(A::Outcome).string_len(16).not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_attempts_delivery")
                            .from(A::Table, A::DeliveryId)
                            .to(D::Table, D::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_delivery_attempts ON delivery_attempts (delivery_id, attempt)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for t in [
            "delivery_attempts",
            "live_deliveries",
            "notification_deliveries",
            "notification_endpoints",
            "events",
        ] {
            db.execute_unprepared(&format!("DROP TABLE {t}")).await?;
        }
        db.execute_unprepared("DROP INDEX idx_integrations_stale_at")
            .await?;
        for c in [
            Freshness::StaleAfterSecs,
            Freshness::StaleAfterCustom,
            Freshness::StaleAt,
            Freshness::StaleSince,
            Freshness::UnhealthySince,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Integrations::Table)
                        .drop_column(c)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
