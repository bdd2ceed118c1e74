//! Finishing runs: one transaction per batch, every write conditioned on each run's
//! fence (docs/architecture.md §4.5, §4.7). A single finish is a batch of one.
//!
//! The order is the fleet-wide lock order: the integrations' rows (sorted), then the
//! runs' live rows (deleted by the fence check, [`crate::work::take`]), then records,
//! the history rows and the integrations' next state, decided by [`policy::decide`]
//! run by run. A stale claim in a batch writes nothing, whatever the others do.

use std::collections::HashMap;
use std::time::Duration;

use entity::{ErrorClass, HealthState, SyncStatus};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, TransactionSession, TransactionTrait, Value};
use uuid::Uuid;

pub use super::Guard;
use super::history::{self, Ended};
use super::policy::{self, IntegrationState, Outcome, RetryPolicy};
use super::{Fence, RUNS};
use crate::config::ms;
use crate::db::{self, Dialect};
use crate::store::{self, Counts, Plan};
use crate::work;

/// Everything a finished run reports.
#[derive(Debug, Default)]
pub struct RunReport {
    pub plan: Plan,
    /// Redacted, secret-free message of a failure.
    pub error_message: Option<String>,
    pub watermark: Option<String>,
    /// A full sync that returned no records: soft-delete every stored one (computed in
    /// the finish transaction instead of a read of all stored records per run).
    pub delete_all: bool,
}

/// One run's finish.
#[derive(Debug)]
pub struct FinishReq {
    pub fence: Fence,
    pub outcome: Outcome,
    pub report: RunReport,
}

/// What the finish transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Applied {
        status: SyncStatus,
        disabled: bool,
        counts: Counts,
        duration_ms: i64,
    },
    /// The fence moved on: this claim is stale and wrote nothing.
    Stale,
}

pub(crate) fn status_of(o: Outcome) -> SyncStatus {
    match o {
        Outcome::Success => SyncStatus::Success,
        Outcome::Failure(_) => SyncStatus::Failed,
        Outcome::RateLimited { .. } => SyncStatus::RateLimited,
    }
}

pub(crate) fn class_of(o: Outcome) -> Option<ErrorClass> {
    match o {
        Outcome::Success => None,
        Outcome::Failure(c) => Some(c),
        Outcome::RateLimited { .. } => Some(ErrorClass::RateLimited),
    }
}

/// Writes one run's outcome, its records and the integration's next state atomically.
pub async fn finish<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    f: Fence,
    outcome: Outcome,
    report: RunReport,
    guard: Guard,
) -> Result<Finished, DbErr> {
    let req = FinishReq {
        fence: f,
        outcome,
        report,
    };
    let mut out = finish_guarded(db, retry, std::slice::from_ref(&req), guard).await?;
    Ok(out.pop().unwrap_or(Finished::Stale))
}

/// Finishes runs held by their owners ([`Guard::Owner`]); see [`finish_guarded`].
pub async fn finish_many<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    reqs: &[FinishReq],
) -> Result<Vec<Finished>, DbErr> {
    finish_guarded(db, retry, reqs, Guard::Owner).await
}

/// Finishes many runs in one transaction, every write conditioned on its run's fence.
/// Stale runs come back `Finished::Stale`, in the order of `reqs`.
pub async fn finish_guarded<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    retry: RetryPolicy,
    reqs: &[FinishReq],
    guard: Guard,
) -> Result<Vec<Finished>, DbErr> {
    let mut out = vec![Finished::Stale; reqs.len()];
    if reqs.is_empty() {
        return Ok(out);
    }
    let d = Dialect::of(db);
    let txn = db.begin().await?;

    // 1. The integrations' rows first, in id order. Gone means deleted while running:
    //    its runs went with it. The reaper skips an integration another transaction
    //    holds (a frozen worker's finish) and retries next pass.
    let mut iids: Vec<Uuid> = reqs.iter().map(|r| r.fence.subject).collect();
    iids.sort();
    iids.dedup();
    let (states, unhealthy) = lock_states(&txn, &iids, guard).await?;
    crate::chaos::finish_stall().await;

    // 2. The fence check of every run: its live row is deleted if the claim still holds
    //    it, and stays locked until commit.
    let fences: Vec<Fence> = reqs
        .iter()
        .map(|r| r.fence)
        .filter(|f| states.contains_key(&f.subject))
        .collect();
    let taken = work::take(&txn, &RUNS, &fences, guard).await?;
    let mut live: HashMap<(Uuid, i64), QueryResult> = HashMap::with_capacity(taken.len());
    for r in taken {
        live.insert((r.try_get("", "id")?, r.try_get("", "fence")?), r);
    }
    let mut applied: Vec<(usize, QueryResult)> = Vec::with_capacity(live.len());
    for (k, r) in reqs.iter().enumerate() {
        if let Some(row) = live.remove(&(r.fence.id, r.fence.fence)) {
            applied.push((k, row));
        }
    }
    if applied.is_empty() {
        txn.rollback().await?;
        return Ok(out);
    }

    // 3. Records (only a successful run writes them): full syncs that returned nothing
    //    soft-delete every stored record, the others apply their plans.
    let ok = |k: usize| reqs[k].outcome == Outcome::Success;
    let wipe: Vec<Uuid> = applied
        .iter()
        .filter(|(k, _)| ok(*k) && reqs[*k].report.delete_all)
        .map(|(k, _)| reqs[*k].fence.subject)
        .collect();
    let deleted = store::delete_all(&txn, &wipe).await?;
    let plans: Vec<(Uuid, &Plan)> = applied
        .iter()
        .filter(|(k, _)| ok(*k) && !reqs[*k].report.plan.is_empty())
        .map(|(k, _)| (reqs[*k].fence.subject, &reqs[*k].report.plan))
        .collect();
    store::apply_many(&txn, &plans, crate::conflicts::Source::Pull).await?;

    // 4. The history rows, written once.
    let counts_of = |k: usize| {
        let mut c = reqs[k].report.plan.counts;
        if let Some(n) = deleted.get(&reqs[k].fence.subject) {
            c.deleted = *n;
        }
        c
    };
    let ended: Vec<Ended<'_>> = applied
        .iter()
        .map(|(k, row)| Ended {
            live: row,
            status: status_of(reqs[*k].outcome),
            counts: counts_of(*k),
            error_class: class_of(reqs[*k].outcome),
            error_message: reqs[*k].report.error_message.clone(),
            wrote: ok(*k) && !reqs[*k].report.plan.is_empty(),
        })
        .collect();
    let durations = history::insert(&txn, &ended).await?;

    // 5. Every integration's next state.
    let mut decisions = Vec::with_capacity(applied.len());
    for (k, _) in &applied {
        let r = &reqs[*k];
        if let Some(&state) = states.get(&r.fence.subject) {
            decisions.push((*k, state, policy::decide(retry, state, r.outcome)));
        }
    }
    update_integrations(&txn, d, reqs, &decisions).await?;

    // 6. System disables are audited control actions.
    for (k, state, dec) in &decisions {
        if dec.disabled_now {
            audit_disable(&txn, state, dec, reqs[*k].outcome).await?;
        }
    }
    // 7. Health events, with the state change they describe (§4.16).
    let events = health_events(reqs, &decisions, &unhealthy);
    crate::notifications::events::emit(&txn, &events).await?;
    txn.commit().await?;
    // Off the commit path: a notifying commit would queue behind every other one.
    crate::notify::after_commit(db, decisions.iter().map(|(k, _, _)| reqs[*k].fence.subject)).await;

    let disabled: HashMap<usize, bool> = decisions
        .iter()
        .map(|(k, _, dec)| (*k, dec.disabled_now))
        .collect();
    for ((k, _), duration_ms) in applied.iter().zip(durations) {
        out[*k] = Finished::Applied {
            status: status_of(reqs[*k].outcome),
            disabled: disabled.get(k).copied().unwrap_or(false),
            counts: counts_of(*k),
            duration_ms,
        };
    }
    Ok(out)
}

/// The events a batch's finishes cause: `sync.failed` for every failure,
/// `integration.at_risk` on entering that health, `integration.disabled` with its cause,
/// and `integration.recovered` for a success that ends a failure streak, a disable or a
/// breach (`unhealthy`: the integrations with one open).
fn health_events(
    reqs: &[FinishReq],
    decisions: &[(usize, IntegrationState, policy::Decision)],
    unhealthy: &std::collections::HashSet<Uuid>,
) -> Vec<crate::notifications::NewEvent> {
    use crate::notifications::{EventType, NewEvent};
    let mut out = Vec::new();
    for (k, state, dec) in decisions {
        let r = &reqs[*k];
        let event = |t: EventType| {
            let mut e = NewEvent::new(t, state.id);
            e.run_id = Some(r.fence.id);
            e.health_before = Some(state.health);
            e.error_class = class_of(r.outcome);
            e.error = r.report.error_message.clone();
            e
        };
        if let Outcome::Failure(class) = r.outcome {
            out.push(event(EventType::SyncFailed));
            if dec.disabled_now {
                let mut e = event(EventType::Disabled);
                e.reason = Some(
                    match class {
                        ErrorClass::Auth => "auth",
                        ErrorClass::Config => "config",
                        ErrorClass::WorkerLost => "poison_run",
                        _ => "max_retries",
                    }
                    .into(),
                );
                out.push(e);
            } else if dec.health == HealthState::AtRisk && state.health != HealthState::AtRisk {
                out.push(event(EventType::AtRisk));
            }
        } else if dec.success && unhealthy.contains(&state.id) {
            let mut e = event(EventType::Recovered);
            e.error = None;
            out.push(e);
        }
    }
    out
}

/// The integrations' state, keyed by id, and those with an open failure streak, disable
/// or breach (`unhealthy_since` set).
type Locked = (
    HashMap<Uuid, IntegrationState>,
    std::collections::HashSet<Uuid>,
);

/// Locks the integrations `ids` (sorted) and reads the state the policy decides from.
async fn lock_states(
    txn: &impl ConnectionTrait,
    ids: &[Uuid],
    guard: Guard,
) -> Result<Locked, DbErr> {
    let rows = match Dialect::of(txn) {
        Dialect::Postgres => {
            let sql = format!(
                "SELECT id, {STATE_COLUMNS}, unhealthy_since FROM integrations WHERE id = ANY($1::text::uuid[]) ORDER BY id {}",
                match guard {
                    Guard::Owner => "FOR NO KEY UPDATE",
                    Guard::LeaseExpired => "FOR NO KEY UPDATE SKIP LOCKED",
                }
            );
            db::query(txn, sql, [Value::from(work::pg_array(ids))]).await?
        }
        // A no-op write takes the database's write lock before anything is read.
        Dialect::Sqlite => {
            let sql = format!(
                "UPDATE integrations SET retry_count = retry_count WHERE id IN ({}) RETURNING id, {STATE_COLUMNS}, unhealthy_since",
                work::placeholders(1, ids.len())
            );
            db::query(txn, sql, ids.iter().map(|id| Value::from(*id))).await?
        }
    };
    let mut states = HashMap::with_capacity(rows.len());
    let mut unhealthy = std::collections::HashSet::new();
    for i in rows {
        let id: Uuid = i.try_get("", "id")?;
        states.insert(id, state_of(id, &i)?);
        if i.try_get::<Option<chrono::DateTime<chrono::Utc>>>("", "unhealthy_since")?
            .is_some()
        {
            unhealthy.insert(id);
        }
    }
    Ok((states, unhealthy))
}

/// The integrations' next state, one statement for the batch.
async fn update_integrations(
    txn: &impl ConnectionTrait,
    d: Dialect,
    reqs: &[FinishReq],
    decisions: &[(usize, IntegrationState, policy::Decision)],
) -> Result<(), DbErr> {
    if decisions.is_empty() {
        return Ok(());
    }
    let now = d.now();
    // A success clears the integration's count of lost leases (`engine::lease`).
    let set = format!(
        "retry_count = v.rc, sync_enabled = v.en, health = v.h, next_trigger = v.nt, \
           next_sync_at = CASE WHEN v.next_ms IS NULL THEN NULL ELSE {next} END, \
           followup_requested = false, last_sync_at = {now}, \
           last_success_at = CASE WHEN v.ok THEN {now} ELSE last_success_at END, \
           last_error = CASE WHEN v.ok THEN NULL ELSE v.err END, \
           watermark = CASE WHEN v.ok AND v.wm IS NOT NULL THEN v.wm ELSE watermark END, \
           lost_leases = CASE WHEN v.ok THEN 0 ELSE lost_leases END, \
           stale_since = CASE WHEN v.ok THEN NULL ELSE stale_since END, \
           stale_at = CASE WHEN NOT v.ok THEN stale_at WHEN v.en THEN {stale} ELSE NULL END, \
           unhealthy_since = CASE WHEN v.ok THEN NULL \
             WHEN v.rc > integrations.retry_count THEN COALESCE(unhealthy_since, {now}) ELSE unhealthy_since END, \
           updated_at = {now}",
        next = d.now_plus_ms("v.next_ms"),
        stale = crate::notifications::freshness::next_stale_at(d),
    );
    if d == Dialect::Postgres {
        // One text parameter whatever the batch size (see `work::pg_array`).
        let rows: Vec<serde_json::Value> = decisions
            .iter()
            .map(|(k, _, dec)| {
                let r = &reqs[*k];
                serde_json::json!({
                    "id": r.fence.subject,
                    "rc": dec.retry_count,
                    "en": dec.sync_enabled,
                    "h": health_str(dec.health),
                    "nt": dec.next_trigger.as_str(),
                    "next_ms": dec.next_in.map(ms),
                    "ok": dec.success,
                    "err": r.report.error_message.clone().unwrap_or_default(),
                    "wm": r.report.watermark,
                })
            })
            .collect();
        let sql = format!(
            "UPDATE integrations SET {set} FROM jsonb_to_recordset($1::text::jsonb) \
               AS v(id uuid, rc int, en boolean, h text, nt text, next_ms bigint, ok boolean, err text, wm text) \
             WHERE integrations.id = v.id"
        );
        db::exec(
            txn,
            sql,
            [Value::from(serde_json::Value::Array(rows).to_string())],
        )
        .await?;
        return Ok(());
    }
    const N: usize = 9;
    let types = [
        "uuid", "int", "boolean", "text", "text", "bigint", "boolean", "text", "text",
    ];
    let mut values: Vec<Value> = Vec::with_capacity(decisions.len() * N);
    let mut tuples = Vec::with_capacity(decisions.len());
    for (n, (k, _, dec)) in decisions.iter().enumerate() {
        let r = &reqs[*k];
        let cols: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(c, t)| match d {
                Dialect::Postgres => format!("${}::{t}", n * N + c + 1),
                Dialect::Sqlite => format!("${}", n * N + c + 1),
            })
            .collect();
        tuples.push(format!("({})", cols.join(", ")));
        values.extend([
            r.fence.subject.into(),
            dec.retry_count.into(),
            dec.sync_enabled.into(),
            health_str(dec.health).into(),
            dec.next_trigger.as_str().into(),
            dec.next_in.map(ms).into(),
            dec.success.into(),
            r.report.error_message.clone().unwrap_or_default().into(),
            r.report.watermark.clone().into(),
        ]);
    }
    let sql = format!(
        "WITH v(id, rc, en, h, nt, next_ms, ok, err, wm) AS (VALUES {tuples}) \
         UPDATE integrations SET {set} FROM v WHERE integrations.id = v.id",
        tuples = tuples.join(", "),
    );
    db::exec(txn, sql, values).await?;
    Ok(())
}

/// Ends the PENDING run of an integration as CANCELLED (a pause), inside the caller's
/// transaction, which holds the integration's row. Returns how many runs it ended.
pub async fn cancel_pending(
    txn: &impl ConnectionTrait,
    integration_id: Uuid,
    message: &str,
) -> Result<u64, DbErr> {
    let rows = db::query(
        txn,
        format!(
            "DELETE FROM {t} WHERE integration_id = $1 AND status = 'PENDING' RETURNING *",
            t = RUNS.table
        ),
        [integration_id.into()],
    )
    .await?;
    let ended: Vec<Ended<'_>> = rows
        .iter()
        .map(|live| Ended {
            live,
            status: SyncStatus::Cancelled,
            counts: Counts::default(),
            error_class: None,
            error_message: Some(message.to_owned()),
            wrote: false,
        })
        .collect();
    history::insert(txn, &ended).await?;
    Ok(rows.len() as u64)
}

/// The columns of an integration the policy decides from.
pub(crate) const STATE_COLUMNS: &str =
    "retry_count, max_retries, sync_interval_secs, sync_enabled, health, followup_requested";

/// An integration's state from a row holding [`STATE_COLUMNS`].
pub(crate) fn state_of(
    id: uuid::Uuid,
    i: &sea_orm::QueryResult,
) -> Result<IntegrationState, DbErr> {
    Ok(IntegrationState {
        id,
        retry_count: i.try_get("", "retry_count")?,
        max_retries: i.try_get("", "max_retries")?,
        interval_secs: i.try_get("", "sync_interval_secs")?,
        sync_enabled: i.try_get("", "sync_enabled")?,
        health: i.try_get::<HealthState>("", "health")?,
        followup_requested: i.try_get("", "followup_requested")?,
    })
}

/// The audit event of a system disable.
pub(crate) async fn audit_disable(
    txn: &impl ConnectionTrait,
    state: &IntegrationState,
    decision: &policy::Decision,
    outcome: Outcome,
) -> Result<(), DbErr> {
    let reason = format!(
        "disabled after {} consecutive failure(s); last error class {}",
        decision.retry_count,
        class_of(outcome).map(ErrorClass::as_str).unwrap_or("none")
    );
    crate::audit::record(
        txn,
        crate::audit::Event {
            integration_id: Some(state.id),
            workspace_id: None,
            actor: "system".into(),
            actor_name: None,
            action: "integration.disable".into(),
            reason: Some(reason),
            before: Some(serde_json::json!({ "syncEnabled": true, "retryCount": state.retry_count })),
            after: Some(serde_json::json!({ "syncEnabled": false, "health": "disabled", "retryCount": decision.retry_count })),
        },
    )
    .await
}

pub(crate) fn health_str(h: HealthState) -> &'static str {
    match h {
        HealthState::Healthy => "healthy",
        HealthState::Degraded => "degraded",
        HealthState::AtRisk => "at_risk",
        HealthState::Disabled => "disabled",
        HealthState::Paused => "paused",
    }
}

/// The wait a `rate_limited` outcome asks for, bounded so a hostile header cannot park an
/// integration for years.
pub fn bounded_wait(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_millis(1), Duration::from_secs(24 * 3600))
}
