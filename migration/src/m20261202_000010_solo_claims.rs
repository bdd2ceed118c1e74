//! `integrations.lost_leases` and `sync_logs.solo_claims`: how often the reaper took an
//! integration's runs back after their lease expired since its last success, and how
//! many of a run's claims ran alone in their process. Runs of an integration lost twice
//! run alone; a run is quarantined as a poison run when it lost its worker `max_claims`
//! times while nothing else ran beside it, so healthy runs that only shared a process
//! with a crash are never blamed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SyncLogs {
    Table,
    SoloClaims,
}

#[derive(DeriveIden)]
enum Integrations {
    Table,
    LostLeases,
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
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .add_column(
                        ColumnDef::new(Integrations::LostLeases)
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
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .drop_column(Integrations::LostLeases)
                    .to_owned(),
            )
            .await
    }
}
