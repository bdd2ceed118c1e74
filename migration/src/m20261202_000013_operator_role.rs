//! The `operator` role (spans workspaces; the bootstrap key of a fresh install): the
//! role check of `api_keys` admits it. SQLite cannot alter a check, so the table is
//! rebuilt there with the same columns and rows.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "('admin', 'viewer')";
const NEW: &str = "('operator', 'admin', 'viewer')";

async fn set_roles(manager: &SchemaManager<'_>, from: &str, to: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    match db.get_database_backend() {
        DatabaseBackend::Sqlite => {
            let rows = db
                .query_all_raw(Statement::from_string(
                    DatabaseBackend::Sqlite,
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'",
                ))
                .await?;
            let sql: String = rows
                .first()
                .ok_or_else(|| DbErr::Custom("api_keys is missing".into()))?
                .try_get("", "sql")?;
            if !sql.contains(from) {
                return Err(DbErr::Custom(format!("api_keys has no role check {from}")));
            }
            let rebuilt = sql.replace(from, to).replacen(
                "CREATE TABLE \"api_keys\"",
                "CREATE TABLE \"api_keys_rebuilt\"",
                1,
            );
            // One call, so every statement runs on one connection of the pool in order
            // (spread over connections, a rename could meet a stale view of the schema).
            db.execute_unprepared(&format!(
                "{rebuilt}; INSERT INTO api_keys_rebuilt SELECT * FROM api_keys; DROP TABLE api_keys; \
                 ALTER TABLE api_keys_rebuilt RENAME TO api_keys;"
            ))
            .await?;
        }
        _ => {
            db.execute_unprepared(
                "ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_role_check",
            )
            .await?;
            db.execute_unprepared(&format!(
                "ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role IN {to})"
            ))
            .await?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_roles(manager, OLD, NEW).await
    }

    /// Operator keys become admins of their home workspace (revoked if they have none).
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE api_keys SET role = 'admin', revoked_at = CASE WHEN workspace_id IS NULL \
             THEN COALESCE(revoked_at, created_at) ELSE revoked_at END WHERE role = 'operator'",
        )
        .await?;
        set_roles(manager, NEW, OLD).await
    }
}
