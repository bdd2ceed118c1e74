//! `sync_logs.lost_leases` and `sync_logs.solo_claims`: how often a run's lease expired
//! under it (the reaper took it back), and how many of its claims ran alone in their
//! process. A run lost twice runs alone from then on; it is quarantined as a poison run
//! when it lost its worker `max_claims` times while nothing else ran beside it, so
//! healthy runs that only shared a process with a crash are never blamed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SyncLogs {
    Table,
    LostLeases,
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
                        ColumnDef::new(SyncLogs::LostLeases)
                            .integer()
                            .not_null()
                            .default(0),
                    )
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
                    .drop_column(SyncLogs::LostLeases)
                    .to_owned(),
            )
            .await
    }
}
