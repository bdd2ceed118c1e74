//! Group commit of the run lifecycle on PostgreSQL: the claims of many runs in one
//! statement, the finishes of many runs in one transaction.
//!
//! Nothing of the protocol is weakened. A batched claim is the same compare-and-set,
//! row by row, as [`super::claim::claim`]; a batched finish takes the same locks in the
//! same order (integration rows, sorted, then run rows), checks every run's fence in
//! the same conditional UPDATE and decides every integration's next state with the same
//! [`policy::decide`]. Only the round trips are shared. A batch waits for nothing: it
//! holds whatever queued while the previous one was in the database, so a quiet worker
//! sees no added latency and a busy one amortises one commit over many runs.
//!
//! Runs that carry records to write keep the single-run path ([`super::finish::finish`]):
//! their cost is the records, and a large one must not hold a batch's locks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use entity::{ConnectorKind, Trigger};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, TransactionSession, TransactionTrait, Value,
};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::Fence;
use super::claim::{Claim, Source};
use super::finish::{self, Finished, Guard, RunReport};
use super::policy::{self, IntegrationState, Outcome, RetryPolicy};
use crate::config::ms;
use crate::db::{self, Dialect};
use crate::store::Counts;

/// Most runs in one batched statement (bounded well below the bind-parameter limit).
pub const MAX_BATCH: usize = 256;

/// Claims `ids` for `owner` in one statement and reads each claimed run's integration
/// (kind, config, watermark) with it. Ids missing from the result were not claimable.
pub async fn claim_many(
    db: &impl ConnectionTrait,
    owner: &str,
    ids: &[Uuid],
    lease: Duration,
) -> Result<HashMap<Uuid, Claim>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut values: Vec<Value> = Vec::with_capacity(ids.len() + 2);
    values.push(owner.into());
    values.push(ms(lease).into());
    let ph = placeholders(3, ids.len());
    values.extend(ids.iter().map(|id| Value::from(*id)));
    // The rows are locked in id order before they are updated, so two batches that
    // overlap (a duplicate delivery) queue instead of deadlocking. The lock takes them by
    // primary key alone: with a status condition there, stale statistics made the planner
    // scan every live run per batch.
    let claim = super::claim::claim_sql(
        Dialect::Postgres,
        &format!("id IN (SELECT id FROM sync_logs WHERE id IN ({ph}) ORDER BY id FOR UPDATE)"),
        "$1",
        "$2",
    );
    let sql = format!(
        "WITH c AS ({claim}) \
         SELECT c.*, i.kind, i.config, i.watermark, i.lost_leases FROM c LEFT JOIN integrations i ON i.id = c.integration_id"
    );
    let rows = db::query(db, sql, values).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let run_id: Uuid = r.try_get("", "id")?;
        let integration_id: Uuid = r.try_get("", "integration_id")?;
        let kind: Option<ConnectorKind> = r.try_get("", "kind")?;
        let source = match kind {
            Some(kind) => Some(Source {
                kind,
                config: r.try_get("", "config")?,
                watermark: r.try_get("", "watermark")?,
                lost_leases: r.try_get("", "lost_leases")?,
            }),
            None => None,
        };
        out.insert(
            run_id,
            Claim {
                fence: Fence {
                    run_id,
                    fence: r.try_get("", "fence")?,
                    integration_id,
                },
                integration_id,
                claims: r.try_get("", "claims")?,
                trigger: r.try_get::<Trigger>("", "trigger")?,
                attempt: r.try_get("", "attempt")?,
                scheduled_for: r.try_get("", "scheduled_for")?,
                started_at: r.try_get("", "started_at")?,
                source: Some(source),
            },
        );
    }
    Ok(out)
}

/// One run's finish, as handed to [`finish_many`]. Its report carries no records to
/// write (`plan` empty); `delete_all` soft-deletes every stored record (a full sync that
/// returned nothing).
#[derive(Debug)]
pub struct FinishReq {
    pub fence: Fence,
    pub outcome: Outcome,
    pub report: RunReport,
}

/// Finishes many runs in one transaction: every write conditioned on its run's fence,
/// exactly as [`finish::finish`] does for one. Stale runs come back `Finished::Stale`.
pub async fn finish_many<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    reqs: &[FinishReq],
) -> Result<Vec<Finished>, DbErr> {
    let mut out = vec![Finished::Stale; reqs.len()];
    if reqs.is_empty() {
        return Ok(out);
    }
    let txn = db.begin().await?;

    // 1. Integration rows first, in id order (the fleet-wide lock order).
    let mut iids: Vec<Uuid> = reqs.iter().map(|r| r.fence.integration_id).collect();
    iids.sort();
    iids.dedup();
    let rows = db::query(
        &txn,
        format!(
            "SELECT id, {} FROM integrations WHERE id IN ({}) ORDER BY id FOR UPDATE",
            finish::STATE_COLUMNS,
            placeholders(1, iids.len())
        ),
        iids.iter().map(|id| Value::from(*id)),
    )
    .await?;
    let mut states: HashMap<Uuid, IntegrationState> = HashMap::with_capacity(rows.len());
    for i in rows {
        let id: Uuid = i.try_get("", "id")?;
        states.insert(id, finish::state_of(id, &i)?);
    }
    crate::chaos::finish_stall().await;

    // 2. The fence check of every run, which also locks the run rows until commit.
    let live: Vec<usize> = (0..reqs.len())
        .filter(|&k| states.contains_key(&reqs[k].fence.integration_id))
        .collect();
    if live.is_empty() {
        txn.rollback().await?;
        return Ok(out);
    }
    const COLS: usize = 10;
    let mut values: Vec<Value> = Vec::with_capacity(live.len() * COLS);
    let mut tuples = Vec::with_capacity(live.len());
    for (n, &k) in live.iter().enumerate() {
        let r = &reqs[k];
        let c = r.report.plan.counts;
        let p = n * COLS;
        tuples.push(typed_tuple(
            p,
            &[
                "uuid", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "text",
                "text",
            ],
        ));
        values.extend([
            r.fence.run_id.into(),
            r.fence.fence.into(),
            finish::status_of(r.outcome).as_str().into(),
            c.received.into(),
            c.inserted.into(),
            c.updated.into(),
            c.unchanged.into(),
            c.deleted.into(),
            finish::class_of(r.outcome)
                .map(|c| c.as_str().to_owned())
                .into(),
            r.report.error_message.clone().into(),
        ]);
    }
    let fenced = db::query(
        &txn,
        format!(
            "UPDATE sync_logs AS s SET status = v.status, completed_at = now(), \
               duration_ms = (extract(epoch FROM (now() - s.started_at)) * 1000)::bigint, lease_until = NULL, \
               records_count = v.rc, records_inserted = v.ri, records_updated = v.ru, records_unchanged = v.rn, \
               records_deleted = v.rd, error_class = v.ec, error_message = v.em \
             FROM (VALUES {}) AS v(id, fence, status, rc, ri, ru, rn, rd, ec, em) \
             WHERE s.id = v.id AND s.fence = v.fence AND s.status = 'RUNNING' \
             RETURNING s.id, s.fence, s.duration_ms",
            tuples.join(", ")
        ),
        values,
    )
    .await?;
    // Keyed by (run, fence): a stale and a live claim of one run may share a batch.
    let mut durations: HashMap<(Uuid, i64), i64> = HashMap::with_capacity(fenced.len());
    for r in &fenced {
        durations.insert(
            (r.try_get("", "id")?, r.try_get("", "fence")?),
            r.try_get::<Option<i64>>("", "duration_ms")?.unwrap_or(0),
        );
    }
    let key = |k: usize| (reqs[k].fence.run_id, reqs[k].fence.fence);
    let applied: Vec<usize> = live
        .into_iter()
        .filter(|&k| durations.contains_key(&key(k)))
        .collect();
    if applied.is_empty() {
        txn.rollback().await?;
        return Ok(out);
    }

    // 3. Full syncs that returned nothing: every stored record is gone at the source.
    let wipe: Vec<usize> = applied
        .iter()
        .copied()
        .filter(|&k| reqs[k].report.delete_all && reqs[k].outcome == Outcome::Success)
        .collect();
    let mut deleted: HashMap<Uuid, i64> = HashMap::new();
    if !wipe.is_empty() {
        let rows = db::query(
            &txn,
            format!(
                "UPDATE records SET deleted_at = now(), synced_at = now() \
                 WHERE deleted_at IS NULL AND integration_id IN ({}) RETURNING integration_id",
                placeholders(1, wipe.len())
            ),
            wipe.iter()
                .map(|&k| Value::from(reqs[k].fence.integration_id)),
        )
        .await?;
        for r in rows {
            *deleted.entry(r.try_get("", "integration_id")?).or_default() += 1;
        }
        if !deleted.is_empty() {
            let mut values: Vec<Value> = Vec::new();
            let mut tuples = Vec::new();
            for &k in &wipe {
                if let Some(n) = deleted.get(&reqs[k].fence.integration_id) {
                    let p = values.len();
                    tuples.push(typed_tuple(p, &["uuid", "bigint"]));
                    values.extend([reqs[k].fence.run_id.into(), (*n).into()]);
                }
            }
            db::exec(
                &txn,
                format!(
                    "UPDATE sync_logs AS s SET records_deleted = v.n FROM (VALUES {}) AS v(id, n) WHERE s.id = v.id",
                    tuples.join(", ")
                ),
                values,
            )
            .await?;
        }
    }

    // 4. Every integration's next state, decided by the same policy as a single finish.
    const ICOLS: usize = 9;
    let mut values: Vec<Value> = Vec::with_capacity(applied.len() * ICOLS);
    let mut tuples = Vec::with_capacity(applied.len());
    let mut decisions = Vec::with_capacity(applied.len());
    for (n, &k) in applied.iter().enumerate() {
        let r = &reqs[k];
        let Some(&state) = states.get(&r.fence.integration_id) else {
            continue;
        };
        let d = policy::decide(retry, state, r.outcome);
        let p = n * ICOLS;
        tuples.push(typed_tuple(
            p,
            &[
                "uuid", "int", "boolean", "text", "text", "bigint", "boolean", "text", "text",
            ],
        ));
        values.extend([
            r.fence.integration_id.into(),
            d.retry_count.into(),
            d.sync_enabled.into(),
            finish::health_str(d.health).into(),
            d.next_trigger.as_str().into(),
            d.next_in.map(ms).into(),
            d.success.into(),
            r.report.error_message.clone().unwrap_or_default().into(),
            r.report.watermark.clone().into(),
        ]);
        decisions.push((k, state, d));
    }
    db::exec(
        &txn,
        format!(
            "UPDATE integrations AS i SET retry_count = v.rc, sync_enabled = v.en, health = v.h, next_trigger = v.nt, \
               next_sync_at = CASE WHEN v.next_ms IS NULL THEN NULL \
                              ELSE now() + (v.next_ms::double precision * interval '1 millisecond') END, \
               followup_requested = false, last_sync_at = now(), \
               last_success_at = CASE WHEN v.ok THEN now() ELSE i.last_success_at END, \
               last_error = CASE WHEN v.ok THEN NULL ELSE v.err END, \
               watermark = CASE WHEN v.ok AND v.wm IS NOT NULL THEN v.wm ELSE i.watermark END, \
               lost_leases = CASE WHEN v.ok THEN 0 ELSE i.lost_leases END, \
               updated_at = now() \
             FROM (VALUES {}) AS v(id, rc, en, h, nt, next_ms, ok, err, wm) WHERE i.id = v.id",
            tuples.join(", ")
        ),
        values,
    )
    .await?;

    // 5. System disables are audited control actions.
    for (k, state, d) in &decisions {
        if d.disabled_now {
            finish::audit_disable(&txn, state, d, reqs[*k].outcome).await?;
        }
    }
    crate::notify::changed(
        &txn,
        decisions
            .iter()
            .map(|(k, _, _)| reqs[*k].fence.integration_id),
    )
    .await?;
    txn.commit().await?;

    for (k, _, d) in decisions {
        let r = &reqs[k];
        let mut counts: Counts = r.report.plan.counts;
        if let Some(n) = deleted.get(&r.fence.integration_id) {
            counts.deleted = *n;
        }
        out[k] = Finished::Applied {
            status: finish::status_of(r.outcome),
            disabled: d.disabled_now,
            counts,
            duration_ms: durations
                .get(&(r.fence.run_id, r.fence.fence))
                .copied()
                .unwrap_or(0),
        };
    }
    Ok(out)
}

/// `($p+1::t1, $p+2::t2, …)`: one row of a typed `VALUES` list.
fn typed_tuple(p: usize, types: &[&str]) -> String {
    let cols: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(k, t)| format!("${}::{t}", p + k + 1))
        .collect();
    format!("({})", cols.join(", "))
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// The batchers: a queue of requests drained by a few loops, each taking whatever waits.

type Reply<T> = oneshot::Sender<Result<T, String>>;
type ClaimWaiters = Vec<(Uuid, Reply<Option<Claim>>)>;

/// Claims and finishes of one worker process, grouped.
pub struct Batcher {
    claims: mpsc::UnboundedSender<(Uuid, String, Reply<Option<Claim>>)>,
    finishes: mpsc::UnboundedSender<(FinishReq, Reply<Finished>)>,
}

/// Loops per batcher: one can be in the database while the next batch gathers.
const LOOPS: usize = 2;

impl Batcher {
    pub fn start(db: DatabaseConnection, retry: RetryPolicy, lease: Duration) -> Arc<Self> {
        let (ctx, crx) = mpsc::unbounded_channel();
        let (ftx, frx) = mpsc::unbounded_channel();
        let crx = Arc::new(Mutex::new(crx));
        let frx = Arc::new(Mutex::new(frx));
        for _ in 0..LOOPS {
            tokio::spawn(claim_loop(db.clone(), lease, crx.clone()));
            tokio::spawn(finish_loop(db.clone(), retry, frx.clone()));
        }
        Arc::new(Self {
            claims: ctx,
            finishes: ftx,
        })
    }

    pub async fn claim(&self, run_id: Uuid, owner: &str) -> Result<Option<Claim>, DbErr> {
        let (tx, rx) = oneshot::channel();
        self.claims
            .send((run_id, owner.to_owned(), tx))
            .map_err(|_| DbErr::Custom("claim batcher stopped".into()))?;
        rx.await
            .map_err(|_| DbErr::Custom("claim batcher stopped".into()))?
            .map_err(DbErr::Custom)
    }

    pub async fn finish(&self, req: FinishReq) -> Result<Finished, DbErr> {
        let (tx, rx) = oneshot::channel();
        self.finishes
            .send((req, tx))
            .map_err(|_| DbErr::Custom("finish batcher stopped".into()))?;
        rx.await
            .map_err(|_| DbErr::Custom("finish batcher stopped".into()))?
            .map_err(DbErr::Custom)
    }
}

/// Takes one request (waiting), then whatever else is queued, up to `MAX_BATCH`.
async fn gather<T>(rx: &Mutex<mpsc::UnboundedReceiver<T>>) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(x) => batch.push(x),
            Err(_) => break,
        }
    }
    Some(batch)
}

type ClaimRx = Arc<Mutex<mpsc::UnboundedReceiver<(Uuid, String, Reply<Option<Claim>>)>>>;
type FinishRx = Arc<Mutex<mpsc::UnboundedReceiver<(FinishReq, Reply<Finished>)>>>;

async fn claim_loop(db: DatabaseConnection, lease: Duration, rx: ClaimRx) {
    while let Some(batch) = gather(&rx).await {
        // One statement per owner (a worker restarted under a new name may overlap).
        let mut by_owner: HashMap<String, ClaimWaiters> = HashMap::new();
        for (id, owner, reply) in batch {
            by_owner.entry(owner).or_default().push((id, reply));
        }
        for (owner, items) in by_owner {
            let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
            match claim_many(&db, &owner, &ids, lease).await {
                Ok(mut claimed) => {
                    for (id, reply) in items {
                        let _ = reply.send(Ok(claimed.remove(&id)));
                    }
                }
                // Each run falls back to its own claim, so one bad batch fails nobody else.
                Err(e) => {
                    tracing::debug!(error = %e, runs = ids.len(), "batched claim failed; claiming one by one");
                    for (id, reply) in items {
                        let r = super::claim::claim(&db, id, &owner, lease)
                            .await
                            .map_err(|e| e.to_string());
                        let _ = reply.send(r);
                    }
                }
            }
        }
    }
}

async fn finish_loop(db: DatabaseConnection, retry: RetryPolicy, rx: FinishRx) {
    while let Some(batch) = gather(&rx).await {
        let (reqs, replies): (Vec<FinishReq>, Vec<Reply<Finished>>) = batch.into_iter().unzip();
        match finish_many(&db, retry, &reqs).await {
            Ok(results) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            // Each run falls back to its own transaction, so one bad run (or a deadlock
            // with a concurrent writer) fails nobody else.
            Err(e) => {
                tracing::debug!(error = %e, runs = reqs.len(), "batched finish failed; finishing one by one");
                for (req, reply) in reqs.into_iter().zip(replies) {
                    let r = finish::finish(
                        &db,
                        retry,
                        req.fence,
                        req.outcome,
                        req.report,
                        Guard::Owner,
                    )
                    .await
                    .map_err(|e| e.to_string());
                    let _ = reply.send(r);
                }
            }
        }
    }
}
