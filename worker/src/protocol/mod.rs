//! The run protocol (docs/architecture.md §4): schedule → claim → run → finish (fenced) → recover.
//!
//! The database is the source of truth; the queue only carries "run `run_id` now" hints.
//! Every state change here is one conditional statement or one transaction, and every
//! timestamp comes from the database clock, so worker clock skew cannot move schedules
//! or steal live work. A duplicate delivery or a zombie worker changes nothing.
//!
//! A sync run is the first kind of leased work ([`crate::work`]): its live row is in
//! `live_runs` ([`RUNS`]), its history row is written once, by its finish, into
//! `run_history`; `sync_logs` is the view of both.

pub mod batch;
pub mod claim;
pub mod finish;
mod history;
pub mod policy;
pub mod reaper;
pub mod schedule;
pub mod trigger;

use sea_orm::QueryResult;
use uuid::Uuid;

use crate::work::Work;
pub use crate::work::{Fence, Guard};

/// Sync runs as leased work: live in `live_runs`, one per integration.
pub const RUNS: Work = Work {
    name: "sync",
    table: "live_runs",
    subject: "integration_id",
    due: false,
};

/// Locks an integration's row and returns `cols` of it.
///
/// Lock order: every transaction that writes both an integration and one of its runs
/// (finish, trigger, schedule, pause, delete) takes the integration row first, so they
/// queue instead of deadlocking. On SQLite the lock is a no-op write, which takes the
/// database's write lock before anything is read (no stale read snapshot to upgrade).
pub(crate) async fn lock_integration(
    txn: &impl sea_orm::ConnectionTrait,
    id: Uuid,
    cols: &str,
) -> Result<Vec<QueryResult>, sea_orm::DbErr> {
    lock_integration_with(txn, id, cols, "FOR NO KEY UPDATE").await
}

async fn lock_integration_with(
    txn: &impl sea_orm::ConnectionTrait,
    id: Uuid,
    cols: &str,
    lock: &str,
) -> Result<Vec<QueryResult>, sea_orm::DbErr> {
    use crate::db::{self, Dialect};
    let sql = match Dialect::of(txn) {
        Dialect::Postgres => format!("SELECT {cols} FROM integrations WHERE id = $1 {lock}"),
        Dialect::Sqlite => format!(
            "UPDATE integrations SET retry_count = retry_count WHERE id = $1 RETURNING {cols}"
        ),
    };
    db::query(txn, sql, [id.into()]).await
}

pub(crate) fn ids(rows: &[QueryResult], col: &str) -> Result<Vec<Uuid>, sea_orm::DbErr> {
    rows.iter().map(|r| r.try_get::<Uuid>("", col)).collect()
}
