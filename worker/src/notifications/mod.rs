//! Notifications (docs/architecture.md §4.16): typed health events written with the
//! state change that causes them, freshness objectives, and webhook deliveries — the
//! second kind of leased work, claimed, leased, fenced, reaped and retried by the same
//! mechanism as sync runs ([`crate::work`]).

pub mod deliver;
pub mod events;
pub mod freshness;
pub mod sign;

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use uuid::Uuid;

use crate::config::{NotifyConfig, ms};
use crate::db::Dialect;
use crate::work::{self, Work};

pub use events::{EventType, NewEvent};

/// Webhook deliveries as leased work: live in `live_deliveries` (id = the delivery's
/// id), their subject the endpoint, and a due time so a retry waits out its backoff.
pub const DELIVERIES: Work = Work {
    name: "delivery",
    table: "live_deliveries",
    subject: "endpoint_id",
    due: true,
};

/// One pass of the delivery pump: deliveries that are due and not pushed (new ones,
/// retries whose backoff ended), and integrations whose freshness objective was
/// breached. Returns the deliveries to push.
pub async fn pump<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    limit: u64,
) -> Result<(Vec<Uuid>, usize), DbErr> {
    let stale = freshness::detect(db, limit).await?;
    let due = work::due_unpushed(db, &DELIVERIES, limit).await?;
    Ok((due, stale.len()))
}

/// What recovery did for deliveries.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Expired or overdue deliveries to push again.
    pub push: Vec<Uuid>,
    pub requeued: usize,
    pub quarantined: u64,
}

/// The reaper's steps for deliveries, the same as for runs: expired leases back to
/// PENDING, poison quarantined, overdue pushes repeated.
pub async fn recover<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    cfg: &NotifyConfig,
    max_claims: i32,
    reenqueue_after: Duration,
    limit: u64,
) -> Recovered {
    fn or_log<T: Default>(step: &str, r: Result<T, DbErr>) -> T {
        r.unwrap_or_else(|e| {
            tracing::warn!(step, error = %e, "delivery recovery step failed; the next pass retries");
            T::default()
        })
    }
    let quarantined = or_log(
        "delivery quarantine",
        deliver::quarantine(db, cfg, max_claims, limit).await,
    );
    let requeued: Vec<Uuid> = or_log(
        "delivery requeue",
        work::requeue_expired(db, &DELIVERIES, max_claims, limit).await,
    )
    .into_iter()
    .map(|(id, _)| id)
    .collect();
    let overdue = or_log(
        "delivery re-enqueue",
        work::overdue(db, &DELIVERIES, reenqueue_after, limit).await,
    );
    let mut push = requeued.clone();
    push.extend(overdue);
    Recovered {
        push,
        requeued: requeued.len(),
        quarantined,
    }
}

/// Deletes up to `limit` events older than `older_than` whose deliveries have all
/// finished, with those deliveries and their attempts (the history pass, with the run
/// history's retention). Returns how many events went.
pub async fn prune<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    older_than: Duration,
    limit: u64,
) -> Result<u64, DbErr> {
    use sea_orm::{TransactionSession, Value};

    use crate::db;
    let txn = db.begin().await?;
    let d = Dialect::of(&txn);
    let rows = db::query(
        &txn,
        format!(
            "SELECT id FROM events e WHERE created_at < {cutoff} AND NOT EXISTS \
               (SELECT 1 FROM notification_deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
             ORDER BY created_at LIMIT {limit}",
            cutoff = d.now_plus_ms("$1"),
        ),
        [(-ms(older_than)).into()],
    )
    .await?;
    let ids: Vec<Uuid> = rows
        .iter()
        .map(|r| r.try_get("", "id"))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        txn.rollback().await?;
        return Ok(0);
    }
    let list = work::placeholders(1, ids.len());
    let values = || ids.iter().map(|id| Value::from(*id)).collect::<Vec<_>>();
    // Children first: SQLite may run without foreign keys.
    for sql in [
        format!(
            "DELETE FROM delivery_attempts WHERE delivery_id IN \
             (SELECT id FROM notification_deliveries WHERE event_id IN ({list}))"
        ),
        format!("DELETE FROM notification_deliveries WHERE event_id IN ({list})"),
        format!("DELETE FROM events WHERE id IN ({list})"),
    ] {
        db::exec(&txn, sql, values()).await?;
    }
    txn.commit().await?;
    Ok(ids.len() as u64)
}
