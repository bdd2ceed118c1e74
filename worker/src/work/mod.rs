//! Leased work (docs/architecture.md §4.15): the one mechanism behind every kind of work
//! the fleet executes.
//!
//! A piece of work is a row in its kind's live table while it is PENDING or RUNNING. A
//! worker claims it with a compare-and-set that bumps its fence, holds it under a lease
//! it renews, and finishes it under that fence: the finish deletes the live row (the
//! fence check) in the same transaction as the kind's own writes (a run's history row,
//! records and integration state). The reaper returns RUNNING rows whose lease expired,
//! quarantines the ones that keep killing their worker, and re-pushes PENDING rows whose
//! push is overdue. The queue carries only ids.
//!
//! Everything here is generic over the kind, described by a [`Work`]; a kind adds only
//! its own rules (what its row carries, what executing it means, what its finish writes).
//! Every statement takes a list of ids: a single claim or finish is a batch of one, so
//! there is one code path whatever the batch size and on both databases.

pub mod batcher;

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use uuid::Uuid;

use crate::config::ms;
use crate::db::{self, Dialect};

/// Most items in one statement (bounded well below every driver's bind limit).
pub const MAX_BATCH: usize = 256;

/// A kind of leased work: where its live rows are and what they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Work {
    /// For logs and metrics.
    pub name: &'static str,
    /// The live table: `id`, `status` (`PENDING | RUNNING`), `claims`, `solo_claims`,
    /// `fence`, `lease_owner`, `lease_until`, `enqueued_at`, `started_at`, `worker_id`
    /// and the subject column, plus the kind's own columns.
    pub table: &'static str,
    /// The column naming what an item is of (a run's integration). A finish locks its
    /// subjects' rows before the live rows (the fleet-wide lock order).
    pub subject: &'static str,
    /// The live table has `due_at`: a PENDING item is claimable (and pushed) only once
    /// it is due, so a retry can wait out its backoff in the live table ([`defer`]).
    pub due: bool,
}

impl Work {
    /// `" AND (due_at IS NULL OR due_at <= now)"` for kinds with a due time.
    fn due_now(&self, d: Dialect) -> String {
        if self.due {
            format!(" AND (due_at IS NULL OR due_at <= {})", d.now())
        } else {
            String::new()
        }
    }
}

/// A claim on one item: its id and the fence that every write of this claim carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    pub id: Uuid,
    pub fence: i64,
    pub subject: Uuid,
}

impl Fence {
    pub(crate) fn of(row: &QueryResult, subject: &str) -> Result<Self, DbErr> {
        Ok(Self {
            id: row.try_get("", "id")?,
            fence: row.try_get("", "fence")?,
            subject: row.try_get("", subject)?,
        })
    }
}

/// Which claims a finish may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The worker holding the claim finishes it.
    Owner,
    /// The reaper fails an item whose lease has expired (and only then), skipping rows
    /// another transaction holds.
    LeaseExpired,
}

/// A PostgreSQL array literal of `items` (uuids, numbers: nothing that needs quoting),
/// bound as one text parameter and cast in SQL (`$1::text::uuid[]`). A statement whose
/// text does not depend on how many items it carries is prepared once per connection and
/// its plan reused, where a list of placeholders made every batch size a new statement.
pub fn pg_array<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut s = String::from("{");
    for (k, x) in items.into_iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push('}');
    s
}

/// `$first, $first+1, …` (`n` of them).
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Claims the claimable items among `ids` for `owner` in one statement: a PENDING item,
/// or a RUNNING one whose lease expired, becomes RUNNING with the next fence. Returns
/// the claimed rows (`id`, subject, `fence`, `claims`, `solo_claims`, `started_at` and
/// `carried`); ids missing from the result were not claimable (a duplicate delivery).
///
/// On PostgreSQL `join` may read more with the claim, from `c` (the claimed rows), e.g.
/// `"LEFT JOIN integrations i ON i.id = c.integration_id"` with its columns in `joined`.
pub async fn claim(
    db: &impl ConnectionTrait,
    w: &Work,
    ids: &[Uuid],
    owner: &str,
    lease: Duration,
    carried: &str,
    join: Option<(&str, &str)>,
) -> Result<Vec<QueryResult>, DbErr> {
    claim_rows(db, w, ids, owner, lease, carried, join).await
}

/// Claims up to `n` PENDING, due items of `subject` other than `except`, oldest due
/// first, in one statement, skipping rows another transaction holds (a finish taking or
/// deferring them): the companions a popped item takes along (a group of pushes), which
/// must never wait while holding the rows already locked, as that could close a cycle
/// with a transaction that locks the same rows in another order. Concurrent
/// claimers of one subject each get the next free ones instead of racing for the same
/// list, so their groups stay full.
pub async fn claim_due_of(
    db: &impl ConnectionTrait,
    w: &Work,
    subject: Uuid,
    except: Uuid,
    n: usize,
    owner: &str,
    lease: Duration,
) -> Result<Vec<QueryResult>, DbErr> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let d = Dialect::of(db);
    let due = w.due_now(d);
    let order = if w.due { "due_at, id" } else { "id" };
    let sql = claim_update(
        w,
        d,
        &format!(
            "id IN (SELECT id FROM {t} WHERE {s} = $3 AND id <> $4 AND status = 'PENDING'{due} \
             ORDER BY {order} LIMIT {n} {skip}) AND status = 'PENDING'{due}",
            t = w.table,
            s = w.subject,
            skip = d.skip_locked(),
        ),
        "",
    );
    db::query(
        db,
        sql,
        [
            owner.into(),
            ms(lease).into(),
            subject.into(),
            except.into(),
        ],
    )
    .await
}

/// The claim itself, shared by every way of choosing what to claim: the rows `filter`
/// selects become RUNNING for `$1` with a lease of `$2` ms and the next fence; returns
/// the claimed rows' `id`, subject, `fence`, `claims`, `solo_claims`, `started_at` and
/// `carried`.
fn claim_update(w: &Work, d: Dialect, filter: &str, carried: &str) -> String {
    format!(
        "UPDATE {t} SET status = 'RUNNING', claims = claims + 1, fence = fence + 1, \
         lease_owner = $1, worker_id = $1, lease_until = {until}, started_at = COALESCE(started_at, {now}) \
         WHERE {filter} RETURNING id, {s}, fence, claims, solo_claims, started_at{sep}{carried}",
        t = w.table,
        s = w.subject,
        now = d.now(),
        until = d.now_plus_ms("$2"),
        sep = if carried.is_empty() { "" } else { ", " },
    )
}

async fn claim_rows(
    db: &impl ConnectionTrait,
    w: &Work,
    ids: &[Uuid],
    owner: &str,
    lease: Duration,
    carried: &str,
    join: Option<(&str, &str)>,
) -> Result<Vec<QueryResult>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let d = Dialect::of(db);
    let now = d.now();
    // PostgreSQL: the rows are locked in id order before they are updated, so two
    // batches that overlap (a duplicate delivery) queue instead of deadlocking. The lock
    // takes them by primary key alone (a status condition there let stale statistics
    // plan a scan of every live row). SQLite serialises writers.
    let target = match d {
        Dialect::Postgres => format!(
            "id IN (SELECT id FROM {t} WHERE id = ANY($3::text::uuid[]) ORDER BY id FOR UPDATE)",
            t = w.table,
        ),
        Dialect::Sqlite => format!("id IN ({})", placeholders(3, ids.len())),
    };
    let update = claim_update(
        w,
        d,
        &format!(
            "{target} AND ((status = 'PENDING'{due}) OR (status = 'RUNNING' AND lease_until < {now}))",
            due = w.due_now(d),
        ),
        carried,
    );
    let sql = match (d, join) {
        (Dialect::Postgres, Some((join, joined))) => {
            format!("WITH c AS ({update}) SELECT c.*, {joined} FROM c {join}")
        }
        _ => update,
    };
    let mut values: Vec<Value> = Vec::with_capacity(ids.len() + 2);
    values.push(owner.into());
    values.push(ms(lease).into());
    match d {
        Dialect::Postgres => values.push(pg_array(ids).into()),
        Dialect::Sqlite => values.extend(ids.iter().map(|id| Value::from(*id))),
    }
    db::query(db, sql, values).await
}

/// Extends the lease of a live claim. `false` means the claim is lost (reaped, reclaimed
/// or finished elsewhere): the caller must stop and write nothing.
pub async fn renew(
    db: &impl ConnectionTrait,
    w: &Work,
    f: Fence,
    lease: Duration,
) -> Result<bool, DbErr> {
    let d = Dialect::of(db);
    let sql = format!(
        "UPDATE {t} SET lease_until = {until} WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
        t = w.table,
        until = d.now_plus_ms("$3")
    );
    let r = db::exec(db, sql, [f.id.into(), f.fence.into(), ms(lease).into()]).await?;
    Ok(r.rows_affected() == 1)
}

/// Extends the leases of claims executed together (one statement on PostgreSQL) and
/// returns those still held. A row another transaction holds locked now (a local write
/// retargeting its push) is not waited for: it is checked without a lock and, if still
/// this claim's, kept for the next renewal — one long writer must not stall the renewal
/// of the whole batch past the lock timeout.
pub async fn renew_many(
    db: &impl ConnectionTrait,
    w: &Work,
    fences: &[Fence],
    lease: Duration,
) -> Result<Vec<Fence>, DbErr> {
    let d = Dialect::of(db);
    if fences.len() <= 1 || d == Dialect::Sqlite {
        let mut held = Vec::with_capacity(fences.len());
        for f in fences {
            if renew(db, w, *f, lease).await? {
                held.push(*f);
            }
        }
        return Ok(held);
    }
    let ids = pg_array(fences.iter().map(|f| f.id));
    let renewed = db::query(
        db,
        format!(
            "UPDATE {t} SET lease_until = {until} WHERE id IN (\
               SELECT id FROM {t} WHERE id = ANY($1::text::uuid[]) FOR UPDATE SKIP LOCKED) \
             AND status = 'RUNNING' RETURNING id, fence",
            t = w.table,
            until = d.now_plus_ms("$2")
        ),
        [ids.clone().into(), ms(lease).into()],
    )
    .await?;
    let mut now_at: std::collections::HashMap<Uuid, i64> = std::collections::HashMap::new();
    for r in &renewed {
        now_at.insert(r.try_get("", "id")?, r.try_get("", "fence")?);
    }
    let skipped: Vec<Fence> = fences
        .iter()
        .filter(|f| !now_at.contains_key(&f.id))
        .copied()
        .collect();
    if !skipped.is_empty() {
        // Not renewed: gone, finished, reclaimed (the status or fence moved), or only
        // locked by someone now. A plain read tells them apart without waiting.
        let rows = db::query(
            db,
            format!(
                "SELECT id, fence FROM {t} WHERE id = ANY($1::text::uuid[]) AND status = 'RUNNING'",
                t = w.table
            ),
            [pg_array(skipped.iter().map(|f| f.id)).into()],
        )
        .await?;
        for r in &rows {
            now_at.insert(r.try_get("", "id")?, r.try_get("", "fence")?);
        }
    }
    Ok(fences
        .iter()
        .filter(|f| now_at.get(&f.id) == Some(&f.fence))
        .copied()
        .collect())
}

/// Gives a live claim back (shutdown drain ran out, or its future was dropped): the item
/// becomes PENDING with no push time, so the re-enqueuer hands it to another worker on
/// its next pass.
pub async fn release(db: &impl ConnectionTrait, w: &Work, f: Fence) -> Result<bool, DbErr> {
    hand_back(db, w, f, "").await
}

/// Gives back a claim that never started executing (it stepped aside, see
/// docs/architecture.md §4.13): released like [`release`], and its claim uncounted, so
/// `claims` counts the claims that executed (or died executing) and stepping aside never
/// feeds the backstop. The fence keeps its value: the next claim still gets a new one.
pub async fn give_back(db: &impl ConnectionTrait, w: &Work, f: Fence) -> Result<bool, DbErr> {
    hand_back(db, w, f, ", claims = claims - 1").await
}

async fn hand_back(
    db: &impl ConnectionTrait,
    w: &Work,
    f: Fence,
    also: &str,
) -> Result<bool, DbErr> {
    let sql = format!(
        "UPDATE {t} SET status = 'PENDING', lease_owner = NULL, lease_until = NULL, enqueued_at = NULL{also} \
         WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
        t = w.table
    );
    let r = db::exec(db, sql, [f.id.into(), f.fence.into()]).await?;
    Ok(r.rows_affected() == 1)
}

/// Ends this claim's attempt without ending the item (a retry after a backoff): the
/// item becomes PENDING again, not claimable before `delay_ms` from now, its claim
/// counts reset (this claim finished, so none of them is a claim "without finishing"),
/// and not pushed, so the kind's pump pushes it once it is due ([`due_unpushed`]).
/// Fenced like a finish; `false` means the claim is stale. For kinds with `due`.
pub async fn defer(
    db: &impl ConnectionTrait,
    w: &Work,
    f: Fence,
    delay_ms: i64,
) -> Result<bool, DbErr> {
    Ok(!defer_many(db, w, &[(f, delay_ms)]).await?.is_empty())
}

/// [`defer`] for many claims, each with its own delay, in one statement on PostgreSQL
/// (one per claim on SQLite, inside the caller's transaction). Returns the ids of the
/// claims that still held their item; the others are stale and must write nothing.
pub async fn defer_many(
    db: &impl ConnectionTrait,
    w: &Work,
    items: &[(Fence, i64)],
) -> Result<Vec<Uuid>, DbErr> {
    debug_assert!(w.due, "{} has no due time", w.name);
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let d = Dialect::of(db);
    let set = |ms: &str| {
        format!(
            "status = 'PENDING', lease_owner = NULL, lease_until = NULL, enqueued_at = NULL, \
             started_at = NULL, claims = 0, solo_claims = 0, due_at = {}",
            d.now_plus_ms(ms)
        )
    };
    match d {
        Dialect::Postgres => {
            let sql = format!(
                "UPDATE {t} t SET {set} FROM unnest($1::text::uuid[], $2::text::bigint[], $3::text::bigint[]) \
                 AS v(id, fence, ms) WHERE t.id = v.id AND t.fence = v.fence AND t.status = 'RUNNING' \
                 RETURNING t.id",
                t = w.table,
                set = set("v.ms"),
            );
            let values = [
                Value::from(pg_array(items.iter().map(|(f, _)| f.id))),
                Value::from(pg_array(items.iter().map(|(f, _)| f.fence))),
                Value::from(pg_array(items.iter().map(|(_, ms)| ms))),
            ];
            let rows = db::query(db, sql, values).await?;
            rows.iter().map(|r| r.try_get("", "id")).collect()
        }
        Dialect::Sqlite => {
            let sql = format!(
                "UPDATE {t} SET {set} WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
                t = w.table,
                set = set("$3"),
            );
            let mut held = Vec::with_capacity(items.len());
            for (f, ms) in items {
                let r = db::exec(db, &sql, [f.id.into(), f.fence.into(), (*ms).into()]).await?;
                if r.rows_affected() == 1 {
                    held.push(f.id);
                }
            }
            Ok(held)
        }
    }
}

/// PENDING items that are due and were never pushed (new, or deferred and now due):
/// stamps them pushed and returns them, soonest due first, for a push. For kinds with
/// `due`; the read is the partial index on `due_at` of the unpushed PENDING rows.
pub async fn due_unpushed(
    db: &impl ConnectionTrait,
    w: &Work,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    debug_assert!(w.due, "{} has no due time", w.name);
    let d = Dialect::of(db);
    let now = d.now();
    let rows = db::query(
        db,
        format!(
            "UPDATE {t} SET enqueued_at = {now} WHERE id IN (\
               SELECT id FROM {t} WHERE status = 'PENDING' AND enqueued_at IS NULL \
               AND (due_at IS NULL OR due_at <= {now}) ORDER BY due_at LIMIT {limit} {lock}) \
             AND status = 'PENDING' AND enqueued_at IS NULL RETURNING id",
            t = w.table,
            lock = d.skip_locked(),
        ),
        [],
    )
    .await?;
    rows.iter().map(|r| r.try_get("", "id")).collect()
}

/// Counts this claim as executed alone in its process (docs/architecture.md §4.13): if
/// the process dies now, the item is to blame. `false` means the claim is lost.
pub async fn mark_solo(db: &impl ConnectionTrait, w: &Work, f: Fence) -> Result<bool, DbErr> {
    let sql = format!(
        "UPDATE {t} SET solo_claims = solo_claims + 1 WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
        t = w.table
    );
    let r = db::exec(db, sql, [f.id.into(), f.fence.into()]).await?;
    Ok(r.rows_affected() == 1)
}

/// The fence check of a finish, inside the caller's transaction (which already holds
/// the subjects' rows): deletes the live rows of the claims in `fences` that still hold
/// their item and returns them (`*` plus `duration_ms`, the time since `started_at`). A
/// claim missing from the result is stale and must write nothing. The deleted rows stay
/// locked until commit, and nobody can claim an item that is gone.
pub async fn take(
    txn: &impl ConnectionTrait,
    w: &Work,
    fences: &[Fence],
    guard: Guard,
) -> Result<Vec<QueryResult>, DbErr> {
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let d = Dialect::of(txn);
    let expired = match guard {
        Guard::LeaseExpired => format!(" AND lease_until < {}", d.now()),
        Guard::Owner => String::new(),
    };
    // A stale and a live claim of one item may share a batch: each pair carries its fence.
    let dur = d.ms_since("started_at");
    match d {
        Dialect::Postgres => {
            let sql = format!(
                "DELETE FROM {t} WHERE status = 'RUNNING'{expired} AND (id, fence) IN \
                 (SELECT * FROM unnest($1::text::uuid[], $2::text::bigint[])) RETURNING *, {dur} AS duration_ms",
                t = w.table,
            );
            let values = [
                Value::from(pg_array(fences.iter().map(|f| f.id))),
                Value::from(pg_array(fences.iter().map(|f| f.fence))),
            ];
            db::query(txn, sql, values).await
        }
        Dialect::Sqlite => {
            let terms: Vec<String> = (0..fences.len())
                .map(|k| format!("(id = ${} AND fence = ${})", 2 * k + 1, 2 * k + 2))
                .collect();
            let sql = format!(
                "DELETE FROM {t} WHERE status = 'RUNNING'{expired} AND ({}) RETURNING *, {dur} AS duration_ms",
                terms.join(" OR "),
                t = w.table,
            );
            let values = fences
                .iter()
                .flat_map(|f| [Value::from(f.id), Value::from(f.fence)]);
            db::query(txn, sql, values).await
        }
    }
}

/// RUNNING items whose lease expired and that are not poison become PENDING again.
/// Returns `(id, subject)` of each; push them.
pub async fn requeue_expired(
    db: &impl ConnectionTrait,
    w: &Work,
    max_claims: i32,
    limit: u64,
) -> Result<Vec<(Uuid, Uuid)>, DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    let rows = db::query(
        db,
        format!(
            "UPDATE {t} SET status = 'PENDING', lease_owner = NULL, lease_until = NULL, enqueued_at = {now} \
             WHERE id IN (SELECT id FROM {t} WHERE status = 'RUNNING' AND lease_until < {now} \
               AND solo_claims < $1 LIMIT {limit} {lock}) \
             AND status = 'RUNNING' AND lease_until < {now} RETURNING id, {s}",
            t = w.table,
            s = w.subject,
            lock = d.skip_locked(),
        ),
        [max_claims.into()],
    )
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("", "id")?, r.try_get("", w.subject)?)))
        .collect()
}

/// Expired items that lost their worker `max_claims` times while running alone: poison,
/// for the kind's fenced finish with [`Guard::LeaseExpired`]. Returns each claim and
/// its claim count.
pub async fn poisoned(
    db: &impl ConnectionTrait,
    w: &Work,
    max_claims: i32,
    limit: u64,
) -> Result<Vec<(Fence, i32)>, DbErr> {
    let now = Dialect::of(db).now();
    let rows = db::query(
        db,
        format!(
            "SELECT id, fence, claims, {s} FROM {t} WHERE status = 'RUNNING' \
             AND lease_until < {now} AND solo_claims >= $1 LIMIT {limit}",
            t = w.table,
            s = w.subject,
        ),
        [max_claims.into()],
    )
    .await?;
    rows.iter()
        .map(|r| Ok((Fence::of(r, w.subject)?, r.try_get("", "claims")?)))
        .collect()
}

/// PENDING items last pushed before `cutoff` (an SQL timestamp expression over `$1`,
/// bound to `param`), or never: stamps them pushed now and returns them for a push.
/// Pushing an item that still has its queue entry changes nothing.
pub async fn pushed_before(
    db: &impl ConnectionTrait,
    w: &Work,
    cutoff: &str,
    param: Value,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let d = Dialect::of(db);
    let rows = db::query(
        db,
        format!(
            "UPDATE {t} SET enqueued_at = {now} WHERE id IN (\
               SELECT id FROM {t} WHERE status = 'PENDING' AND (enqueued_at IS NULL OR enqueued_at < {cutoff}){due} \
               ORDER BY enqueued_at NULLS FIRST LIMIT {limit} {lock}) RETURNING id",
            t = w.table,
            now = d.now(),
            due = w.due_now(d),
            lock = d.skip_locked(),
        ),
        // A literal LIMIT: PostgreSQL's generic plan for a parameterised one sorts every row.
        [param],
    )
    .await?;
    rows.iter().map(|r| r.try_get("", "id")).collect()
}

/// PENDING items whose last push is older than `after` (a crash between commit and
/// push, a popped entry whose worker died before claiming it), or that were never
/// pushed: stamped and returned for another push. The re-enqueuer of every kind.
pub async fn overdue(
    db: &impl ConnectionTrait,
    w: &Work,
    after: Duration,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let cutoff = Dialect::of(db).now_plus_ms("$1");
    pushed_before(db, w, &cutoff, (-ms(after)).into(), limit).await
}

/// Live items by status, for gauges: `(pending, running)`.
pub async fn counts(db: &impl ConnectionTrait, w: &Work) -> Result<(i64, i64), DbErr> {
    let rows = db::query(
        db,
        format!(
            "SELECT COALESCE(SUM(CASE WHEN status = 'PENDING' THEN 1 ELSE 0 END), 0) AS p, \
                    COALESCE(SUM(CASE WHEN status = 'RUNNING' THEN 1 ELSE 0 END), 0) AS r FROM {t}",
            t = w.table
        ),
        [],
    )
    .await?;
    match rows.first() {
        Some(r) => Ok((r.try_get("", "p")?, r.try_get("", "r")?)),
        None => Ok((0, 0)),
    }
}
