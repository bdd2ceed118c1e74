use sea_orm_migration::prelude::*;

use crate::m20261122_000002_create_integrations::Integrations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Records {
    Table,
    IntegrationId,
    ExternalId,
    Data,
    ContentHash,
    Version,
    DeletedAt,
    SyncedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Records as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(ColumnDef::new(R::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(R::ExternalId).string_len(512).not_null())
                    .col(ColumnDef::new(R::Data).json_binary().not_null())
                    .col(ColumnDef::new(R::ContentHash).string_len(64).not_null())
                    .col(ColumnDef::new(R::Version).integer().not_null().default(1))
                    .col(
                        ColumnDef::new(R::DeletedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(R::SyncedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(R::IntegrationId).col(R::ExternalId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_records_integration")
                            .from(R::Table, R::IntegrationId)
                            .to(Integrations::Table, Integrations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The read path: records of one integration changed since a time.
        manager
            .create_index(
                Index::create()
                    .name("idx_records_synced")
                    .table(R::Table)
                    .col(R::IntegrationId)
                    .col(R::SyncedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Records::Table).to_owned())
            .await
    }
}
