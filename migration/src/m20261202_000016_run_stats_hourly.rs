//! Hourly aggregates of finished runs, which outlive the raw rows the retention deletes
//! (docs/architecture.md §3.9).
//!
//! `run_stats_hourly`: one row per integration and hour (by `completed_at`) with
//! finished runs: counts by outcome, records, duration percentiles. No foreign key to
//! `integrations`: checking one would take a key-share lock on every integration an
//! hour's rollup writes, and the finish locks those rows `FOR UPDATE`; deleting an
//! integration deletes its aggregates in the same transaction instead
//! (`control::integration::delete`).
//!
//! `run_stats_watermark`: one row (`id = 1`), `rolled_up_to` = the start of the first
//! hour not rolled up yet (`NULL` until the first rollup).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunStatsHourly {
    Table,
    IntegrationId,
    Hour,
    Runs,
    Succeeded,
    Failed,
    RateLimited,
    Cancelled,
    Records,
    DurationP50Ms,
    DurationP95Ms,
    DurationP99Ms,
    DurationMaxMs,
}

#[derive(DeriveIden)]
enum RunStatsWatermark {
    Table,
    Id,
    RolledUpTo,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use RunStatsHourly as H;
        let count = |c: RunStatsHourly| {
            ColumnDef::new(c)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(H::Table)
                    .col(ColumnDef::new(H::IntegrationId).uuid().not_null())
                    .col(
                        ColumnDef::new(H::Hour)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(count(H::Runs))
                    .col(count(H::Succeeded))
                    .col(count(H::Failed))
                    .col(count(H::RateLimited))
                    .col(count(H::Cancelled))
                    .col(count(H::Records))
                    .col(ColumnDef::new(H::DurationP50Ms).big_integer().null())
                    .col(ColumnDef::new(H::DurationP95Ms).big_integer().null())
                    .col(ColumnDef::new(H::DurationP99Ms).big_integer().null())
                    .col(ColumnDef::new(H::DurationMaxMs).big_integer().null())
                    .primary_key(Index::create().col(H::IntegrationId).col(H::Hour))
                    .to_owned(),
            )
            .await?;
        // Fleet and workspace windows read hours across integrations.
        manager
            .create_index(
                Index::create()
                    .name("idx_run_stats_hourly_hour")
                    .table(H::Table)
                    .col(H::Hour)
                    .to_owned(),
            )
            .await?;
        use RunStatsWatermark as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .col(
                        ColumnDef::new(W::Id)
                            .small_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(W::RolledUpTo)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(W::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .check(Expr::col(W::Id).eq(1))
                    .to_owned(),
            )
            .await?;
        let now = match manager.get_database_backend() {
            sea_orm_migration::sea_orm::DatabaseBackend::Sqlite => {
                "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
            }
            _ => "now()",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO run_stats_watermark (id, rolled_up_to, updated_at) VALUES (1, NULL, {now})"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RunStatsWatermark::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RunStatsHourly::Table).to_owned())
            .await
    }
}
