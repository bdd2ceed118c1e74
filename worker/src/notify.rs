//! Change notifications for live views (the web console): on PostgreSQL, a
//! `NOTIFY syncfleet_changes, '<integration id>'` sent inside the transaction that
//! changed an integration's run state, so listeners hear of it exactly when it
//! commits (and never of a change that rolled back). SQLite has no NOTIFY; the
//! embedded console watches `sync_logs.completed_at` instead.

use sea_orm::{ConnectionTrait, DbErr};
use uuid::Uuid;

use crate::db::{self, Dialect};

/// The channel every change is announced on; the payload is an integration id.
pub const CHANNEL: &str = "syncfleet_changes";

/// Announces that these integrations changed, on commit of `txn`. One statement
/// whatever the count; PostgreSQL folds duplicates within a transaction.
pub async fn changed(
    txn: &impl ConnectionTrait,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<(), DbErr> {
    if Dialect::of(txn) != Dialect::Postgres {
        return Ok(());
    }
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    db::query(
        txn,
        format!("SELECT pg_notify('{CHANNEL}', x) FROM unnest(string_to_array($1, ',')) AS x"),
        [sea_orm::Value::from(ids.join(","))],
    )
    .await?;
    Ok(())
}
