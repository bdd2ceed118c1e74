//! `sync_logs.solo_claims`: claims of a run executed alone in their process. A run is
//! quarantined as a poison run when it lost its worker that many times while nothing else
//! ran beside it, so healthy runs that only shared a process with a crash are never blamed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SyncLogs {
    Table,
    SoloClaims,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SyncLogs::Table)
                    .add_column(
                        ColumnDef::new(SyncLogs::SoloClaims)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SyncLogs::Table)
                    .drop_column(SyncLogs::SoloClaims)
                    .to_owned(),
            )
            .await
    }
}
