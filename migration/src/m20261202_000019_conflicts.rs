//! Pull meets push: conflict strategies and the conflicts they open
//! (docs/architecture.md §3.12).
//!
//! - `integrations.conflict_strategy`: what happens when the cloud's copy of a record
//!   changed while the local copy has a change not pushed yet: `cloud_wins`,
//!   `local_wins`, `newest_wins` or `manual` (the default: nothing is overwritten
//!   without a person).
//! - `conflicts`: every conflict found, by a pull, a push answered 409/412 or a webhook:
//!   both copies, the cloud's version, and how it was settled (by the strategy at once,
//!   or `open` until a person resolves it). At most one open conflict per record.

use sea_orm_migration::prelude::*;

use crate::m20261122_000002_create_integrations::Integrations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Strategy {
    ConflictStrategy,
}

#[derive(DeriveIden)]
enum Conflicts {
    Table,
    Id,
    IntegrationId,
    ExternalId,
    Status,
    Source,
    Strategy,
    Resolution,
    LocalData,
    LocalDeleted,
    CloudData,
    CloudDeleted,
    CloudKnown,
    CloudHash,
    CloudVersion,
    Detail,
    DetectedAt,
    ResolvedAt,
    ResolvedBy,
}

fn ts(c: impl IntoIden) -> ColumnDef {
    ColumnDef::new(c).timestamp_with_time_zone().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .add_column(
                        ColumnDef::new(Strategy::ConflictStrategy)
                            .string_len(16)
                            .not_null()
                            .default("manual"),
                    )
                    .to_owned(),
            )
            .await?;

        use Conflicts as C;
        manager
            .create_table(
                Table::create()
                    .table(C::Table)
                    .col(ColumnDef::new(C::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(C::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(C::ExternalId).string_len(512).not_null())
                    .col(ColumnDef::new(C::Status).string_len(16).not_null())
                    .col(ColumnDef::new(C::Source).string_len(16).not_null())
                    .col(ColumnDef::new(C::Strategy).string_len(16).not_null())
                    .col(ColumnDef::new(C::Resolution).string_len(16).null())
                    .col(ColumnDef::new(C::LocalData).text().null())
                    .col(ColumnDef::new(C::LocalDeleted).boolean().not_null())
                    .col(ColumnDef::new(C::CloudData).text().null())
                    .col(ColumnDef::new(C::CloudDeleted).boolean().not_null())
                    .col(ColumnDef::new(C::CloudKnown).boolean().not_null())
                    .col(ColumnDef::new(C::CloudHash).string_len(64).null())
                    .col(ColumnDef::new(C::CloudVersion).text().null())
                    .col(ColumnDef::new(C::Detail).text().null())
                    .col(ts(C::DetectedAt).not_null())
                    .col(ts(C::ResolvedAt).null())
                    .col(ColumnDef::new(C::ResolvedBy).string_len(200).null())
                    .check(Expr::col(C::Status).is_in(["open", "resolved"]))
                    .check(Expr::col(C::Source).is_in(["pull", "push", "webhook"]))
                    .check(Expr::col(C::Resolution).is_in(["local", "cloud", "merged"]))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_conflicts_integration")
                            .from(C::Table, C::IntegrationId)
                            .to(Integrations::Table, Integrations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for sql in [
            "CREATE UNIQUE INDEX uq_conflicts_open ON conflicts (integration_id, external_id) WHERE status = 'open'",
            "CREATE INDEX idx_conflicts_list ON conflicts (integration_id, status, detected_at)",
            "CREATE INDEX idx_conflicts_open ON conflicts (detected_at) WHERE status = 'open'",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE conflicts").await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .drop_column(Strategy::ConflictStrategy)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
