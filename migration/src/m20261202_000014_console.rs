//! The web console's tables: `console_sessions` (logins) and an index listing a
//! workspace's integrations by name.
//!
//! `console_sessions`: web console logins. A session is a random token in an
//! `HttpOnly` cookie; only its SHA-256 is stored. Each request checks the session
//! together with its API key (a revoked key ends its sessions at once).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    Id,
    KeyId,
    CsrfToken,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ConsoleSessions as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .col(
                        ColumnDef::new(S::Id)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(S::KeyId).uuid().not_null())
                    .col(ColumnDef::new(S::CsrfToken).string_len(64).not_null())
                    .col(
                        ColumnDef::new(S::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(S::LastSeenAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(S::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_console_sessions_key")
                            .from(S::Table, S::KeyId)
                            .to(ApiKeys::Table, ApiKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_console_sessions_key")
                    .table(S::Table)
                    .col(S::KeyId)
                    .to_owned(),
            )
            .await?;
        // The console's overview lists a workspace's integrations by name, a page at a
        // time: an index in that order serves a page without sorting the workspace.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_integrations_workspace_name ON integrations (workspace_id, LOWER(name), id)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_integrations_workspace_name")
            .await?;
        manager
            .drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await
    }
}
