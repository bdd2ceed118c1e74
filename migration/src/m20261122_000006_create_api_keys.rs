use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    WorkspaceId,
    Name,
    Role,
    KeyHash,
    KeyPrefix,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ApiKeys as K;
        manager
            .create_table(
                Table::create()
                    .table(K::Table)
                    .col(ColumnDef::new(K::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(K::WorkspaceId).uuid().null())
                    .col(ColumnDef::new(K::Name).string_len(200).not_null())
                    .col(ColumnDef::new(K::Role).string_len(16).not_null())
                    .col(
                        ColumnDef::new(K::KeyHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(K::KeyPrefix).string_len(16).not_null())
                    .col(
                        ColumnDef::new(K::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(K::LastUsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(K::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .check(Expr::col(K::Role).is_in(["admin", "viewer"]))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
