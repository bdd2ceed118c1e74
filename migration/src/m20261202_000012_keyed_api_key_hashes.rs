//! API keys under a keyed hash.
//!
//! - `server_secrets`: server-side keys sealed by `SYNCFLEET_SECRET_KEY` (the HMAC key
//!   API keys are hashed with).
//! - `api_keys.hash_version`: 1 = the unsalted SHA-256 stored until now (kept working,
//!   rewritten as HMAC on first use), 2 = HMAC-SHA256.
//! - `api_keys.key_prefix` held the first 10 characters of the key (7 of them secret);
//!   it is cleared, and new keys store their non-secret id there instead.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ServerSecrets {
    Table,
    Name,
    Value,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    HashVersion,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ServerSecrets::Table)
                    .col(
                        ColumnDef::new(ServerSecrets::Name)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ServerSecrets::Value).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(
                        ColumnDef::new(ApiKeys::HashVersion)
                            .small_integer()
                            .not_null()
                            .default(1),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("UPDATE api_keys SET key_prefix = ''")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Keys rehashed since cannot be turned back into SHA-256 hashes: they stop
        // working after a downgrade, so they are revoked rather than left unusable.
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE hash_version <> 1 AND revoked_at IS NULL",
        )
        .await?;
        db.execute_unprepared("ALTER TABLE api_keys DROP COLUMN hash_version")
            .await?;
        manager
            .drop_table(Table::drop().table(ServerSecrets::Table).to_owned())
            .await
    }
}
