use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    WorkspaceId,
    IntegrationId,
    Actor,
    Action,
    Reason,
    Before,
    After,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use AuditEvents as A;
        // No foreign key to integrations: the audit trail outlives a deleted integration.
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .col(ColumnDef::new(A::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(A::WorkspaceId).uuid().not_null())
                    .col(ColumnDef::new(A::IntegrationId).uuid().null())
                    .col(ColumnDef::new(A::Actor).string_len(200).not_null())
                    .col(ColumnDef::new(A::Action).string_len(64).not_null())
                    .col(ColumnDef::new(A::Reason).text().null())
                    .col(ColumnDef::new(A::Before).json_binary().null())
                    .col(ColumnDef::new(A::After).json_binary().null())
                    .col(
                        ColumnDef::new(A::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_audit_events_integration ON audit_events (integration_id, created_at DESC)",
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_audit_events_workspace ON audit_events (workspace_id, created_at DESC)",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}
