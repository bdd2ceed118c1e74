//! Change notifications for live views (the web console): on PostgreSQL, a
//! `NOTIFY syncfleet_changes, '<integration id>'`. SQLite has no NOTIFY; the embedded
//! console polls instead (docs/architecture.md §12.3).
//!
//! Two ways to send one:
//! - [`changed`], inside the transaction that made the change: listeners hear of it
//!   exactly when it commits, and never of one that rolled back. Control actions use it.
//! - [`after_commit`], right after a run finish committed, in a statement of its own.
//!   PostgreSQL commits notifying transactions one at a time under an instance-wide
//!   lock held through the commit's WAL flush; a finish that notified would put every
//!   finish of the fleet in that queue. Sent apart, in a transaction that writes
//!   nothing else (so has no WAL to flush), the lock is held for microseconds and
//!   finishes commit in parallel, their WAL flushes grouped. The cost: a process that
//!   dies between the two commits loses that notification (the card shows the change at
//!   its next one).

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

/// Announces changes that already committed, in a statement of its own (its own
/// transaction, which writes nothing else and so has no WAL to flush: the notify lock is
/// held for microseconds). A failure is logged and dropped: the change itself is safe.
pub async fn after_commit(db: &impl ConnectionTrait, ids: impl IntoIterator<Item = Uuid>) {
    if let Err(e) = changed(db, ids).await {
        tracing::debug!(error = %e, "change notification not sent; the change itself committed");
    }
}
