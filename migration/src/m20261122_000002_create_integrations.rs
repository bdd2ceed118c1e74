use sea_orm_migration::prelude::*;

use crate::m20261122_000001_create_workspaces::Workspaces;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Integrations {
    Table,
    Id,
    WorkspaceId,
    Name,
    Kind,
    Config,
    SyncIntervalSecs,
    SyncEnabled,
    NextSyncAt,
    NextTrigger,
    FollowupRequested,
    RetryCount,
    MaxRetries,
    Health,
    LastSyncAt,
    LastSuccessAt,
    LastError,
    Watermark,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Integrations as I;
        manager
            .create_table(
                Table::create()
                    .table(I::Table)
                    .col(ColumnDef::new(I::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(I::WorkspaceId).uuid().not_null())
                    .col(ColumnDef::new(I::Name).string_len(200).not_null())
                    .col(ColumnDef::new(I::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(I::Config).json_binary().not_null())
                    .col(ColumnDef::new(I::SyncIntervalSecs).big_integer().null())
                    .col(ColumnDef::new(I::SyncEnabled).boolean().not_null())
                    .col(
                        ColumnDef::new(I::NextSyncAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(I::NextTrigger)
                            .string_len(16)
                            .not_null()
                            .default("schedule"),
                    )
                    .col(
                        ColumnDef::new(I::FollowupRequested)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(I::RetryCount)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(I::MaxRetries)
                            .integer()
                            .not_null()
                            .default(3),
                    )
                    .col(
                        ColumnDef::new(I::Health)
                            .string_len(16)
                            .not_null()
                            .default("healthy"),
                    )
                    .col(
                        ColumnDef::new(I::LastSyncAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(I::LastSuccessAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(I::LastError).text().null())
                    .col(ColumnDef::new(I::Watermark).text().null())
                    .col(ColumnDef::new(I::Version).integer().not_null().default(1))
                    .col(
                        ColumnDef::new(I::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(I::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .check(Expr::col(I::RetryCount).gte(0))
                    .check(Expr::col(I::MaxRetries).gte(1))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_integrations_workspace")
                            .from(I::Table, I::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The scheduler's hot query: enabled integrations by due time. Partial, so it holds
        // only integrations that are actually waiting for a slot.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_integrations_due ON integrations (next_sync_at) \
                 WHERE sync_enabled AND next_sync_at IS NOT NULL",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_integrations_workspace")
                    .table(I::Table)
                    .col(I::WorkspaceId)
                    .col(I::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Integrations::Table).to_owned())
            .await
    }
}
