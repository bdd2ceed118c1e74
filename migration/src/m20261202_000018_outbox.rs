//! Local writes and the transactional outbox (docs/architecture.md §3.11).
//!
//! - `records` gains what the push side needs: `cloud_version` and `cloud_id` (what the
//!   cloud last said), `agreed_hash` (the content hash both sides last agreed on),
//!   `modified_at` / `modified_by` (the last local write) and `sync_state`
//!   (`synced | pending | pushing | conflict | failed`), with a partial index on the
//!   records that are not `synced`.
//! - `outbox`: one row per accepted local change, written in the same transaction as the
//!   change: the operation, the record's data and version after it, and the cloud
//!   version it was based on.
//! - `live_pushes`: the third kind of leased work, a record's push while it is PENDING
//!   or RUNNING (at most one per record), pointing at the outbox entry it carries.
//! - `idempotency_keys`: the first answer to each `Idempotency-Key` of a workspace, with
//!   the hash of the request it answered.

use sea_orm_migration::prelude::*;

use crate::m20261122_000002_create_integrations::Integrations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Records {
    Table,
    CloudVersion,
    CloudId,
    AgreedHash,
    ModifiedAt,
    ModifiedBy,
    SyncState,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    IntegrationId,
    ExternalId,
    Operation,
    Data,
    RecordVersion,
    BaseCloudVersion,
    Status,
    Attempts,
    LastStatusCode,
    LastError,
    CreatedBy,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum LivePushes {
    Table,
    Id,
    IntegrationId,
    ExternalId,
    OutboxId,
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
enum IdempotencyKeys {
    Table,
    WorkspaceId,
    Key,
    RequestHash,
    Status,
    Body,
    CreatedAt,
}

fn ts(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).timestamp_with_time_zone().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for c in [
            ColumnDef::new(Records::CloudVersion)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(Records::CloudId).text().null().to_owned(),
            ColumnDef::new(Records::AgreedHash)
                .string_len(64)
                .null()
                .to_owned(),
            ts(Records::ModifiedAt).null().to_owned(),
            ColumnDef::new(Records::ModifiedBy)
                .string_len(200)
                .null()
                .to_owned(),
            ColumnDef::new(Records::SyncState)
                .string_len(16)
                .not_null()
                .default("synced")
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Records::Table)
                        .add_column(c)
                        .to_owned(),
                )
                .await?;
        }
        db.execute_unprepared(
            "CREATE INDEX idx_records_sync_state ON records (integration_id, sync_state, external_id) \
             WHERE sync_state <> 'synced'",
        )
        .await?;

        use Outbox as O;
        manager
            .create_table(
                Table::create()
                    .table(O::Table)
                    .col(ColumnDef::new(O::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(O::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(O::ExternalId).string_len(512).not_null())
                    .col(ColumnDef::new(O::Operation).string_len(16).not_null())
                    .col(ColumnDef::new(O::Data).text().null())
                    .col(ColumnDef::new(O::RecordVersion).integer().not_null())
                    .col(ColumnDef::new(O::BaseCloudVersion).text().null())
                    .col(ColumnDef::new(O::Status).string_len(16).not_null())
                    .col(ColumnDef::new(O::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(O::LastStatusCode).integer().null())
                    .col(ColumnDef::new(O::LastError).text().null())
                    .col(ColumnDef::new(O::CreatedBy).string_len(200).null())
                    .col(ts(O::CreatedAt).not_null())
                    .col(ts(O::FinishedAt).null())
                    .check(Expr::col(O::Operation).is_in(["upsert", "delete"]))
                    .check(Expr::col(O::Status).is_in([
                        "pending",
                        "pushing",
                        "pushed",
                        "failed",
                        "superseded",
                        "conflict",
                    ]))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_outbox_integration")
                            .from(O::Table, O::IntegrationId)
                            .to(Integrations::Table, Integrations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for sql in [
            // A record's changes in order.
            "CREATE INDEX idx_outbox_record ON outbox (integration_id, external_id, created_at)",
            // What is still to push, oldest first (the backlog's age).
            "CREATE INDEX idx_outbox_pending ON outbox (created_at) WHERE status IN ('pending', 'pushing')",
        ] {
            db.execute_unprepared(sql).await?;
        }

        // The third kind of leased work: a record's push while PENDING or RUNNING, at most
        // one per record (its changes go out in order, one in flight at a time).
        use LivePushes as L;
        manager
            .create_table(
                Table::create()
                    .table(L::Table)
                    .col(ColumnDef::new(L::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(L::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(L::ExternalId).string_len(512).not_null())
                    .col(ColumnDef::new(L::OutboxId).uuid().not_null())
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
                            .name("fk_live_pushes_integration")
                            .from(L::Table, L::IntegrationId)
                            .to(Integrations::Table, Integrations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for sql in [
            "CREATE UNIQUE INDEX uq_live_pushes_record ON live_pushes (integration_id, external_id)",
            "CREATE INDEX idx_live_pushes_due ON live_pushes (due_at) WHERE status = 'PENDING' AND enqueued_at IS NULL",
        ] {
            db.execute_unprepared(sql).await?;
        }

        use IdempotencyKeys as K;
        manager
            .create_table(
                Table::create()
                    .table(K::Table)
                    .col(ColumnDef::new(K::WorkspaceId).uuid().not_null())
                    .col(ColumnDef::new(K::Key).string_len(255).not_null())
                    .col(ColumnDef::new(K::RequestHash).string_len(64).not_null())
                    .col(ColumnDef::new(K::Status).integer().not_null())
                    .col(ColumnDef::new(K::Body).text().not_null())
                    .col(ts(K::CreatedAt).not_null())
                    .primary_key(Index::create().col(K::WorkspaceId).col(K::Key))
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_idempotency_keys_created ON idempotency_keys (created_at)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE idempotency_keys").await?;
        db.execute_unprepared("DROP TABLE live_pushes").await?;
        db.execute_unprepared("DROP TABLE outbox").await?;
        db.execute_unprepared("DROP INDEX idx_records_sync_state")
            .await?;
        for c in [
            Records::CloudVersion,
            Records::CloudId,
            Records::AgreedHash,
            Records::ModifiedAt,
            Records::ModifiedBy,
            Records::SyncState,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Records::Table)
                        .drop_column(c)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
