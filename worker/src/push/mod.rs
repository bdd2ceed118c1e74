//! Pushing local changes to the cloud: the third kind of leased work
//! (docs/architecture.md §4.17). A record has at most one live push (`live_pushes`,
//! unique by record), which carries the latest outbox entry not pushed yet: its changes
//! go out in order, one in flight at a time, and a change whose push has not started is
//! replaced by the newer one. Claim, lease, release, reaping and backoff are
//! [`crate::work`]'s; this module holds what a push sends and what its answer writes.

use std::time::Duration;

use entity::ConnectorKind;
use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait};
use uuid::Uuid;

use crate::config::{NotifyConfig, ms};
use crate::conflicts::{self, Cloud, Settled, Source};
use crate::connectors::http_json::{HttpJson, PushRequest, PushResponse};
use crate::connectors::{ConnectorEnv, RecordJson};
use crate::db::{self, Dialect};
use crate::protocol::policy::{self, RetryPolicy};
use crate::secrets::SecretBox;
use crate::work::{self, Fence, Guard, Work};

/// Pushes as leased work: live in `live_pushes`, one per record, their subject the
/// integration.
pub const PUSHES: Work = Work {
    name: "push",
    table: "live_pushes",
    subject: "integration_id",
    due: true,
};

/// Makes outbox entry `entry` (just written for record `external_id`) the record's next
/// push, inside the write's transaction, which holds the record's row: a new live push
/// if the record has none, else nothing — the record's push takes the newest waiting
/// change when it is first claimed ([`take_newest`]), or its finish chains it.
///
/// No existing live row is locked: a write transaction can be long (a batch of 1,000
/// operations), and the claims, lease renewals and finishes of pushes must not wait for
/// it. A live row that a quarantine deletes between the read and the commit is the one
/// gap: the entry then waits for the record's next write or a retry by hand.
pub async fn enqueue(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    entry: Uuid,
) -> Result<(), DbErr> {
    let now = Dialect::of(txn).now();
    // Read first: an insert that meets the record's live row while a claim or a finish is
    // updating it (a new index entry, not yet committed) would wait for that transaction.
    let exists = db::query(
        txn,
        "SELECT 1 AS one FROM live_pushes WHERE integration_id = $1 AND external_id = $2",
        [integration.into(), external_id.to_owned().into()],
    )
    .await?;
    if !exists.is_empty() {
        return Ok(());
    }
    db::exec(
        txn,
        format!(
            "INSERT INTO live_pushes (id, integration_id, external_id, outbox_id, status, due_at) \
             VALUES ($1, $2, $3, $4, 'PENDING', {now}) ON CONFLICT (integration_id, external_id) DO NOTHING"
        ),
        [
            Uuid::now_v7().into(),
            integration.into(),
            external_id.to_owned().into(),
            entry.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Points the pushes `fences` that are claimed for the first time (`fence` 1) at their
/// record's newest waiting change, and supersedes the older waiting ones: a change
/// written while a push waited replaces it, so one push carries the record's latest
/// state. A push claimed before (given back, reaped, or waiting out a retry) keeps its
/// entry: its request may have reached the cloud, so it is sent again with its own key,
/// and its finish chains the newest change. Runs right after the claim, before the jobs
/// are read; a change committed meanwhile stays waiting and is chained by the finish.
pub async fn take_newest(db: &impl ConnectionTrait, fences: &[Fence]) -> Result<(), DbErr> {
    let first: Vec<sea_orm::Value> = fences
        .iter()
        .filter(|f| f.fence == 1)
        .map(|f| f.id.into())
        .collect();
    if first.is_empty() {
        return Ok(());
    }
    let list = work::placeholders(1, first.len());
    let now = Dialect::of(db).now();
    // Both statements start from the claimed live rows (by primary key) and look up each
    // record's waiting changes through `idx_outbox_pending_record`: the planner must not
    // start from the outbox's waiting entries, whose count its statistics rarely know
    // (docs/architecture.md §3.11).
    db::exec(
        db,
        format!(
            "UPDATE live_pushes SET outbox_id = n.newest FROM (\
               SELECT l.id AS lid, (SELECT o.id FROM outbox o \
                 WHERE o.integration_id = l.integration_id AND o.external_id = l.external_id \
                 AND o.status = 'pending' ORDER BY o.record_version DESC, o.created_at DESC, o.id DESC LIMIT 1) AS newest \
               FROM live_pushes l WHERE l.id IN ({list}) AND l.fence = 1 AND l.status = 'RUNNING') n \
             WHERE live_pushes.id = n.lid AND n.newest IS NOT NULL"
        ),
        first.clone(),
    )
    .await?;
    db::exec(
        db,
        format!(
            "WITH c AS MATERIALIZED (SELECT l.integration_id, l.external_id, e.id AS cid, e.record_version AS v \
               FROM live_pushes l JOIN outbox e ON e.id = l.outbox_id \
               WHERE l.id IN ({list}) AND l.fence = 1 AND l.status = 'RUNNING') \
             UPDATE outbox SET status = 'superseded', finished_at = {now} FROM c \
             WHERE outbox.integration_id = c.integration_id AND outbox.external_id = c.external_id \
               AND outbox.status = 'pending' AND outbox.id <> c.cid AND outbox.record_version <= c.v"
        ),
        first,
    )
    .await?;
    Ok(())
}

/// Everything one push needs, read after its claim.
#[derive(Debug, Clone)]
pub struct Job {
    pub outbox_id: Uuid,
    pub external_id: String,
    pub kind: ConnectorKind,
    pub config: serde_json::Value,
    /// `None` = a delete.
    pub data: Option<String>,
    pub base_cloud_version: Option<String>,
    pub cloud_id: Option<String>,
    /// Attempts of this outbox entry before this one.
    pub attempts: i32,
    /// The cloud has acknowledged the record (a version, an id or agreed content from a
    /// pull or a push): a change that is not is a create.
    pub known_to_cloud: bool,
}

/// Reads push `id`'s job; `None` = gone (its integration deleted).
pub async fn load(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Job>, DbErr> {
    Ok(load_many(db, &[id]).await?.remove(&id))
}

/// Reads the jobs of pushes `ids` in one statement; a push missing from the answer is
/// gone (its integration deleted).
pub async fn load_many(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Job>, DbErr> {
    let mut jobs = std::collections::HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(jobs);
    }
    let rows = db::query(
        db,
        format!(
            "SELECT p.id, p.outbox_id, p.external_id, o.data, o.base_cloud_version, o.operation, o.attempts, i.kind, \
               i.config, r.cloud_id, \
               (r.agreed_hash IS NOT NULL OR r.cloud_version IS NOT NULL OR r.cloud_id IS NOT NULL) AS known \
             FROM live_pushes p JOIN outbox o ON o.id = p.outbox_id JOIN integrations i ON i.id = p.integration_id \
             LEFT JOIN records r ON r.integration_id = p.integration_id AND r.external_id = p.external_id \
             WHERE p.id IN ({})",
            work::placeholders(1, ids.len())
        ),
        ids.iter().map(|id| sea_orm::Value::from(*id)),
    )
    .await?;
    for r in &rows {
        let op: String = r.try_get("", "operation")?;
        jobs.insert(
            r.try_get("", "id")?,
            Job {
                outbox_id: r.try_get("", "outbox_id")?,
                external_id: r.try_get("", "external_id")?,
                kind: r.try_get("", "kind")?,
                config: r.try_get("", "config")?,
                data: if op == "delete" {
                    None
                } else {
                    r.try_get("", "data")?
                },
                base_cloud_version: r.try_get("", "base_cloud_version")?,
                cloud_id: r.try_get("", "cloud_id")?,
                attempts: r.try_get("", "attempts")?,
                known_to_cloud: r.try_get::<Option<bool>>("", "known")?.unwrap_or(false),
            },
        );
    }
    Ok(jobs)
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the cloud has it.
    Pushed {
        cloud_version: Option<String>,
        cloud_id: Option<String>,
    },
    /// 409 / 412: the cloud changed since the version this change was based on; the
    /// answer may carry the cloud's record and version.
    Conflict {
        status: u16,
        error: String,
        cloud_record: Option<serde_json::Value>,
        cloud_version: Option<String>,
    },
    /// 429, 5xx, a timeout, a connection error, no push target yet: try again after
    /// `after` (or the backoff), without limit — the outbox keeps the change.
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// Any other 4xx, or a config the connector refuses: failed, retryable by hand.
    Failed { status: Option<u16>, error: String },
}

/// The push rules for an answer.
pub fn classify(r: PushResponse) -> Outcome {
    let error = || format!("HTTP {}: {}", r.status, r.excerpt.trim());
    match r.status {
        200..=299 => Outcome::Pushed {
            cloud_version: r.cloud_version.clone(),
            cloud_id: r.cloud_id.clone(),
        },
        409 | 412 => Outcome::Conflict {
            status: r.status,
            error: error(),
            cloud_record: r.cloud_record.clone(),
            cloud_version: r.cloud_version.clone(),
        },
        408 | 429 | 500..=599 => Outcome::Retry {
            status: Some(r.status),
            error: error(),
            after: r.retry_after,
        },
        _ => Outcome::Failed {
            status: Some(r.status),
            error: error(),
        },
    }
}

/// The most changes of integration `config` one push request carries (1 unless its
/// target batches, `config.push.batch.maxOperations`). Read from the stored config: the
/// batch settings hold no secret.
pub fn batch_size(config: &serde_json::Value) -> usize {
    config
        .pointer("/push/batch/maxOperations")
        .and_then(serde_json::Value::as_u64)
        .map_or(1, |n| {
            n.clamp(1, u64::from(crate::connectors::http_json::MAX_PUSH_BATCH)) as usize
        })
}

/// The push target of job `j`'s integration: its config with secrets opened (for the
/// connector and the provider's rate-limit key only) and the connector; `Err` is every
/// job's outcome (no pushing connector, a config it refuses, no target yet).
pub fn prepare(
    j: &Job,
    secrets: Option<&SecretBox>,
    env: &ConnectorEnv,
    integration: Uuid,
) -> Result<(serde_json::Value, HttpJson), Outcome> {
    if j.kind != ConnectorKind::HttpJson {
        return Err(Outcome::Failed {
            status: None,
            error: format!(
                "the {} connector cannot push (only http_json has a push target)",
                j.kind.as_str()
            ),
        });
    }
    let config = match secrets {
        Some(b) => b
            .open_config(j.kind, integration, &j.config)
            .map_err(|e| Outcome::Failed {
                status: None,
                error: e.to_string(),
            })?,
        None => j.config.clone(),
    };
    let c = HttpJson::from_config(&config, Some(env)).map_err(|errs| Outcome::Failed {
        status: None,
        error: errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    if !c.pushes() {
        return Err(Outcome::Retry {
            status: None,
            error: "no push target configured (config.push): the change waits in the outbox".into(),
            after: None,
        });
    }
    Ok((config, c))
}

/// Sends `jobs` through connector `c`: one outcome per job, in order.
pub async fn send_with(c: &HttpJson, jobs: &[Job]) -> Vec<Outcome> {
    let keys: Vec<String> = jobs.iter().map(|j| j.outbox_id.to_string()).collect();
    let reqs: Vec<PushRequest<'_>> = jobs
        .iter()
        .zip(&keys)
        .map(|(j, key)| PushRequest {
            external_id: &j.external_id,
            cloud_id: j.cloud_id.as_deref(),
            data: j.data.as_deref(),
            idempotency_key: key,
            if_match: j.base_cloud_version.as_deref(),
            create_only: !j.known_to_cloud && j.data.is_some() && c.conditional_create(),
        })
        .collect();
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in reqs.chunks(c.push_batch_size()) {
        match c.push_many(chunk).await {
            Ok(answers) => out.extend(answers.into_iter().map(classify)),
            // A refused address or a bad URL: final, like a 4xx.
            Err(e) if e.class == entity::ErrorClass::Config => {
                out.extend(chunk.iter().map(|_| Outcome::Failed {
                    status: None,
                    error: e.message.clone(),
                }));
            }
            Err(e) => out.extend(chunk.iter().map(|_| Outcome::Retry {
                status: None,
                error: e.message.clone(),
                after: None,
            })),
        }
    }
    out
}

/// Shows records `ids` of `integration` as `pushing` (one statement). A record a local
/// write holds locked is left as it is (SKIP LOCKED): the write makes it `pending`
/// anyway, and waiting here for a long write would outlast the lock timeout.
pub async fn mark_pushing(
    db: &impl ConnectionTrait,
    integration: Uuid,
    ids: &[&str],
) -> Result<(), DbErr> {
    let d = Dialect::of(db);
    let list = work::placeholders(2, ids.len());
    let sql = match d {
        Dialect::Postgres => format!(
            "UPDATE records SET sync_state = 'pushing' WHERE integration_id = $1 AND external_id IN (\
               SELECT external_id FROM records WHERE integration_id = $1 AND external_id IN ({list}) {lock})",
            lock = d.skip_locked()
        ),
        Dialect::Sqlite => format!(
            "UPDATE records SET sync_state = 'pushing' WHERE integration_id = $1 AND external_id IN ({list})"
        ),
    };
    db::exec(
        db,
        sql,
        std::iter::once(sea_orm::Value::from(integration))
            .chain(ids.iter().map(|s| sea_orm::Value::from(s.to_string()))),
    )
    .await?;
    Ok(())
}

/// The most changes of a target that does not batch one claim takes: sent one request
/// after another under one claim, load and finish.
pub const SINGLE_GROUP: usize = 16;

/// The companions to claim with popped push `id`: its integration and how many other
/// due pushes of it (`group - 1`), where `group` is the target's batch size, or
/// [`SINGLE_GROUP`] for a target that takes one change a request; `None` when the push
/// is gone. They are claimed oldest due first, skipping those another claimer holds
/// (`work::claim_due_of`). Each record has at most one live push, so a group never holds
/// two changes of one record and per-record order is kept; the worker drops the
/// companions' queue entries (`Queue::forget`), and one it misses finds its push claimed
/// (a no-op).
pub async fn group_of(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<(Uuid, usize)>, DbErr> {
    let rows = db::query(
        db,
        "SELECT p.integration_id, i.config FROM live_pushes p JOIN integrations i ON i.id = p.integration_id \
         WHERE p.id = $1",
        [id.into()],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let config: serde_json::Value = r.try_get("", "config")?;
    let size = match batch_size(&config) {
        1 => SINGLE_GROUP,
        n => n,
    };
    Ok(Some((r.try_get("", "integration_id")?, size - 1)))
}

/// What a finish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Pushed,
    Retrying(Duration),
    Conflict,
    Failed,
    /// The fence moved on: wrote nothing.
    Stale,
    /// The record was held by a local write: the answer is not written now, the push
    /// waits a moment and is sent again with the same key (the cloud answers it once).
    Busy,
}

/// The content hash of the change a job carries (`None` for a delete).
fn pushed_hash(job: &Job) -> Option<String> {
    job.data.as_deref().map(|d| {
        serde_json::from_str::<serde_json::Value>(d)
            .map(|v| RecordJson::new(&v).content_hash_hex())
            .unwrap_or_default()
    })
}

/// Finishes a batch of pushes (one request's answers), each under its own fence, and
/// returns what each finish did, in order. The answered ones (pushed, or to retry) are
/// finished together, set-based, in one transaction per integration
/// ([`finish_answered`]); a refusal (a conflict) or a failure goes through the
/// per-record rules of [`finish_one`]. Each transaction is tried again on a lock
/// timeout.
pub async fn finish_batch<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    backoff: RetryPolicy,
    items: Vec<(Fence, (Job, Outcome))>,
) -> Result<Vec<Finished>, DbErr> {
    let mut out = vec![Finished::Stale; items.len()];
    let mut answered: Vec<(usize, Fence, Job, Outcome)> = Vec::new();
    let mut ends: Vec<(usize, Fence, Job, Outcome)> = Vec::new();
    for (k, (f, (job, outcome))) in items.into_iter().enumerate() {
        match outcome {
            Outcome::Pushed { .. } | Outcome::Retry { .. } => answered.push((k, f, job, outcome)),
            _ => ends.push((k, f, job, outcome)),
        }
    }
    let mut subjects: Vec<Uuid> = answered.iter().map(|(_, f, _, _)| f.subject).collect();
    subjects.sort();
    subjects.dedup();
    for subject in subjects {
        let group: Vec<(usize, Fence, Job, Outcome)> = answered
            .iter()
            .filter(|(_, f, _, _)| f.subject == subject)
            .cloned()
            .collect();
        let mut run = |_: Fence, g: Vec<(usize, Fence, Job, Outcome)>| async move {
            finish_answered(db, backoff, subject, &g).await
        };
        let first = group[0].1;
        let done = crate::engine::finish_retrying(&mut run, first, group.clone()).await?;
        for ((k, ..), d) in group.iter().zip(done) {
            out[*k] = d;
        }
    }
    let mut one = |f: Fence, (job, outcome): (Job, Outcome)| async move {
        finish_one(db, f, &job, outcome, Guard::Owner).await
    };
    for (k, f, job, outcome) in ends {
        out[k] = crate::engine::finish_retrying(&mut one, f, (job, outcome)).await?;
    }
    Ok(out)
}

/// How long a push whose record a local write held at its finish waits before it is
/// sent again (ms).
const BUSY_WAIT_MS: i64 = 250;

/// The answered pushes of one integration (each `Pushed` or `Retry`), finished under
/// their fences in one transaction and a fixed number of statements, whatever their
/// number: the records locked in key order, those another transaction holds (a local
/// write, a pull's finish) skipped ([`Finished::Busy`]), so this never waits for a
/// record and takes no integration lock; the live rows taken
/// (pushed) or deferred by their backoff (retry), their outbox entries, the records'
/// cloud version, id, agreed content and sync state; a pushed record with a newer change
/// waiting gets it as its next push. Stale claims write nothing.
async fn finish_answered<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    backoff: RetryPolicy,
    integration: Uuid,
    all: &[(usize, Fence, Job, Outcome)],
) -> Result<Vec<Finished>, DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    let txn = db.begin().await?;
    let xids: Vec<sea_orm::Value> = all
        .iter()
        .map(|(_, _, j, _)| j.external_id.clone().into())
        .collect();
    let with_integration = |rest: &[sea_orm::Value]| {
        std::iter::once(sea_orm::Value::from(integration)).chain(rest.to_vec())
    };
    // The records, in key order; on PostgreSQL those a local write holds now are skipped,
    // not waited for (a batch write holds its records for its whole transaction, longer
    // than a lease when it is large): their pushes are deferred briefly and sent again.
    let free: Option<std::collections::HashSet<String>> = if d == Dialect::Postgres {
        let rows = db::query(
            &txn,
            format!(
                "SELECT external_id FROM records WHERE integration_id = $1 AND external_id IN ({}) \
                 ORDER BY external_id FOR UPDATE SKIP LOCKED",
                work::placeholders(2, xids.len())
            ),
            with_integration(&xids),
        )
        .await?;
        Some(
            rows.iter()
                .map(|r| r.try_get("", "external_id"))
                .collect::<Result<_, _>>()?,
        )
    } else {
        None
    };
    let is_free = |j: &Job| free.as_ref().is_none_or(|f| f.contains(&j.external_id));
    let (items, busy): (Vec<_>, Vec<_>) = all.iter().partition(|(_, _, j, _)| is_free(j));
    let busy: Vec<(Fence, i64)> = busy.iter().map(|(_, f, _, _)| (*f, BUSY_WAIT_MS)).collect();
    let deferred_busy = work::defer_many(&txn, &PUSHES, &busy).await?;
    // The fence checks: pushed claims end (their live rows go), retried ones wait out
    // their backoff in the live table.
    let pushed: Vec<Fence> = items
        .iter()
        .filter(|(_, _, _, o)| matches!(o, Outcome::Pushed { .. }))
        .map(|(_, f, _, _)| *f)
        .collect();
    let retried: Vec<(Fence, i64)> = items
        .iter()
        .filter_map(|(_, f, j, o)| match o {
            Outcome::Retry { after, .. } => Some((
                *f,
                ms(after.unwrap_or_else(|| policy::backoff(backoff, f.id, j.attempts + 1))),
            )),
            _ => None,
        })
        .collect();
    let mut held: std::collections::HashSet<Uuid> =
        work::take(&txn, &PUSHES, &pushed, Guard::Owner)
            .await?
            .iter()
            .map(|r| r.try_get("", "id"))
            .collect::<Result<_, _>>()?;
    held.extend(work::defer_many(&txn, &PUSHES, &retried).await?);
    let live: Vec<&(usize, Fence, Job, Outcome)> = items
        .iter()
        .copied()
        .filter(|(_, f, _, _)| held.contains(&f.id))
        .collect();
    let outcome_of = |f: &Fence, o: &Outcome| {
        if deferred_busy.contains(&f.id) {
            Finished::Busy
        } else if !held.contains(&f.id) {
            Finished::Stale
        } else {
            match o {
                Outcome::Pushed { .. } => Finished::Pushed,
                Outcome::Retry { after, .. } => Finished::Retrying(after.unwrap_or_default()),
                _ => unreachable!("finish_answered takes pushed and retried outcomes only"),
            }
        }
    };
    if live.is_empty() {
        txn.commit().await?;
        return Ok(all.iter().map(|(_, f, _, o)| outcome_of(f, o)).collect());
    }
    // This attempt on each entry.
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(live.len() * 4);
    for (_, _, j, o) in &live {
        let (status, code, error): (&str, Option<i32>, Option<String>) = match o {
            Outcome::Retry { status, error, .. } => {
                ("pending", status.map(i32::from), Some(error.clone()))
            }
            _ => ("pushed", None, None),
        };
        values.extend([j.outbox_id.into(), status.into(), code.into(), error.into()]);
    }
    db::exec(
        &txn,
        format!(
            "WITH v(id, status, code, error) AS (VALUES {rows}) \
             UPDATE outbox SET status = v.status, attempts = outbox.attempts + 1, last_status_code = v.code, \
               last_error = v.error, finished_at = CASE WHEN v.status = 'pushed' THEN {now} END \
             FROM v WHERE outbox.id = v.id",
            rows = value_rows(1, live.len(), 4),
        ),
        values,
    )
    .await?;
    // A change written while this one was on its way was based on the cloud version this
    // one replaced: the cloud's new version is this push's own content, so the waiting
    // change is based on it now (else its If-Match would be refused as a conflict with
    // ourselves).
    let mut rebased: Vec<sea_orm::Value> = Vec::new();
    for (_, _, j, o) in &live {
        if let Outcome::Pushed {
            cloud_version: Some(v),
            ..
        } = o
        {
            rebased.extend([
                j.external_id.clone().into(),
                j.base_cloud_version.clone().into(),
                v.clone().into(),
            ]);
        }
    }
    if !rebased.is_empty() {
        db::exec(
            &txn,
            format!(
                "WITH v(xid, old, new) AS (VALUES {rows}) \
                 UPDATE outbox SET base_cloud_version = v.new FROM v \
                 WHERE outbox.integration_id = $1 AND outbox.external_id = v.xid AND outbox.status = 'pending' \
                 AND (outbox.base_cloud_version = v.old OR (outbox.base_cloud_version IS NULL AND v.old IS NULL))",
                rows = value_rows(2, rebased.len() / 3, 3),
            ),
            std::iter::once(sea_orm::Value::from(integration)).chain(rebased),
        )
        .await?;
    }
    // The next change of each pushed record, if one waits (the newest; the others
    // superseded). A retried entry is not replaced by a newer one: its request may have
    // reached the cloud (a timeout, a 5xx after the write), so it is sent again with its
    // own key — the cloud answers it once — and its finish chains the newest change,
    // rebased on the version it answered. Replacing it would send the newer change with
    // a new key over a cloud version it never saw: a conflict with ourselves.
    let next = next_changes(
        &txn,
        integration,
        &live
            .iter()
            .filter(|(_, _, _, o)| matches!(o, Outcome::Pushed { .. }))
            .map(|(_, _, j, _)| (j.external_id.as_str(), j.outbox_id))
            .collect::<Vec<_>>(),
    )
    .await?;
    let chained: Vec<(&str, Uuid)> = live
        .iter()
        .filter(|(_, _, _, o)| matches!(o, Outcome::Pushed { .. }))
        .filter_map(|(_, _, j, _)| {
            next.get(&j.external_id)
                .map(|n| (j.external_id.as_str(), *n))
        })
        .collect();
    enqueue_new(&txn, integration, &chained).await?;
    // The records: what the cloud now holds, and their state (still pending while a
    // change waits).
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(live.len() * 5 + 1);
    values.push(integration.into());
    for (_, _, j, o) in &live {
        let waiting = next.contains_key(&j.external_id);
        let (cv, cid, hash, state) = match o {
            Outcome::Pushed {
                cloud_version,
                cloud_id,
            } => (
                cloud_version.clone(),
                cloud_id.clone(),
                pushed_hash(j),
                if waiting { "pending" } else { "synced" },
            ),
            _ => (None, None, None, "pending"),
        };
        values.extend([
            j.external_id.clone().into(),
            cv.into(),
            cid.into(),
            hash.into(),
            state.into(),
        ]);
    }
    db::exec(
        &txn,
        format!(
            "WITH v(xid, cv, cid, hash, state) AS (VALUES {rows}) \
             UPDATE records SET cloud_version = COALESCE(v.cv, records.cloud_version), \
               cloud_id = COALESCE(v.cid, records.cloud_id), agreed_hash = COALESCE(v.hash, records.agreed_hash), \
               sync_state = v.state \
             FROM v WHERE records.integration_id = $1 AND records.external_id = v.xid",
            rows = value_rows(2, live.len(), 5),
        ),
        values,
    )
    .await?;
    txn.commit().await?;
    Ok(all.iter().map(|(_, f, _, o)| outcome_of(f, o)).collect())
}

/// `($first, …), (…), …`: `rows` rows of `width` placeholders each, numbered on.
fn value_rows(first: usize, rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", work::placeholders(first + r * width, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The newest change waiting behind each of `records` (`(external_id, the entry whose
/// push just ended)`) of `integration`, inside a finish's transaction that holds the
/// records: every other waiting entry of those records is superseded. Returns the newest
/// waiting entry by record.
async fn next_changes(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    records: &[(&str, Uuid)],
) -> Result<std::collections::HashMap<String, Uuid>, DbErr> {
    let mut next = std::collections::HashMap::new();
    if records.is_empty() {
        return Ok(next);
    }
    let now = Dialect::of(txn).now();
    let own: std::collections::HashSet<Uuid> = records.iter().map(|(_, e)| *e).collect();
    let rows = db::query(
        txn,
        format!(
            "SELECT id, external_id FROM outbox WHERE integration_id = $1 AND status = 'pending' \
             AND external_id IN ({}) ORDER BY external_id, record_version DESC, created_at DESC, id DESC",
            work::placeholders(2, records.len())
        ),
        std::iter::once(sea_orm::Value::from(integration)).chain(
            records
                .iter()
                .map(|(x, _)| sea_orm::Value::from(x.to_string())),
        ),
    )
    .await?;
    let mut superseded: Vec<Uuid> = Vec::new();
    for r in &rows {
        let id: Uuid = r.try_get("", "id")?;
        if own.contains(&id) {
            continue;
        }
        let xid: String = r.try_get("", "external_id")?;
        match next.entry(xid) {
            std::collections::hash_map::Entry::Occupied(_) => superseded.push(id),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
        }
    }
    if !superseded.is_empty() {
        db::exec(
            txn,
            format!(
                "UPDATE outbox SET status = 'superseded', finished_at = {now} WHERE status = 'pending' AND id IN ({})",
                work::placeholders(1, superseded.len())
            ),
            superseded.into_iter().map(sea_orm::Value::from),
        )
        .await?;
    }
    Ok(next)
}

/// New live pushes for `changes` (`(external_id, entry)`) of `integration`, whose
/// previous pushes just ended in the caller's transaction (which holds the records, so
/// no local write can add one meanwhile).
async fn enqueue_new(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    changes: &[(&str, Uuid)],
) -> Result<(), DbErr> {
    if changes.is_empty() {
        return Ok(());
    }
    let now = Dialect::of(txn).now();
    let rows = (0..changes.len())
        .map(|k| {
            format!(
                "(${}, $1, ${}, ${}, 'PENDING', {now})",
                3 * k + 2,
                3 * k + 3,
                3 * k + 4
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut values: Vec<sea_orm::Value> = vec![integration.into()];
    for (xid, entry) in changes {
        values.extend([
            Uuid::now_v7().into(),
            xid.to_string().into(),
            (*entry).into(),
        ]);
    }
    db::exec(
        txn,
        format!(
            "INSERT INTO live_pushes (id, integration_id, external_id, outbox_id, status, due_at) VALUES {rows}"
        ),
        values,
    )
    .await?;
    Ok(())
}

/// Ends one push the cloud refused (a conflict) or that failed, under its fence, in one
/// transaction: the record's row first (the lock a local write of the record takes
/// too), then the live row (`work::take`), the outbox entry and the record's sync state;
/// the record's newest waiting change, if any, then becomes a new live push. Under
/// [`Guard::LeaseExpired`] (the reaper quarantining a poison push) a record a writer
/// holds is skipped, not waited for.
pub async fn finish_one<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    f: Fence,
    job: &Job,
    outcome: Outcome,
    guard: Guard,
) -> Result<Finished, DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    let txn = db.begin().await?;
    let cols = conflicts::LOCAL_COLUMNS;
    let lock = match (d, guard) {
        (Dialect::Sqlite, _) => format!(
            "UPDATE records SET version = version WHERE integration_id = $1 AND external_id = $2 RETURNING {cols}"
        ),
        (Dialect::Postgres, Guard::Owner) => format!(
            "SELECT {cols} FROM records WHERE integration_id = $1 AND external_id = $2 FOR UPDATE"
        ),
        (Dialect::Postgres, Guard::LeaseExpired) => format!(
            "SELECT {cols} FROM records WHERE integration_id = $1 AND external_id = $2 FOR UPDATE SKIP LOCKED"
        ),
    };
    let rec = db::query(
        &txn,
        lock,
        [f.subject.into(), job.external_id.clone().into()],
    )
    .await?;
    let held = !work::take(&txn, &PUSHES, &[f], guard).await?.is_empty();
    if !held || (rec.is_empty() && guard == Guard::LeaseExpired) {
        txn.rollback().await?;
        return Ok(Finished::Stale);
    }
    let (status, error) = match &outcome {
        Outcome::Conflict {
            status,
            error,
            cloud_record,
            cloud_version,
        } => {
            if let Some(row) = rec.first() {
                let local = conflicts::Local::read(row)?;
                let done = refused(
                    &txn,
                    f,
                    job,
                    &local,
                    *status,
                    error,
                    cloud_record,
                    cloud_version,
                )
                .await?;
                txn.commit().await?;
                return Ok(done);
            }
            (Some(*status), error.clone())
        }
        Outcome::Failed { status, error } => (*status, error.clone()),
        Outcome::Pushed { .. } | Outcome::Retry { .. } => {
            txn.rollback().await?;
            return Err(DbErr::Custom(
                "finish_one ends refused or failed pushes; answered ones go through finish_batch"
                    .into(),
            ));
        }
    };
    let state = if matches!(outcome, Outcome::Conflict { .. }) {
        "conflict"
    } else {
        "failed"
    };
    db::exec(
        &txn,
        format!(
            "UPDATE outbox SET status = $2, attempts = attempts + 1, last_status_code = $3, last_error = $4, \
               finished_at = {now} WHERE id = $1"
        ),
        [
            job.outbox_id.into(),
            state.into(),
            status.map(i32::from).into(),
            error.into(),
        ],
    )
    .await?;
    // A failed change does not hold back the next one of its record.
    let next = if state == "failed" {
        next_changes(
            &txn,
            f.subject,
            &[(job.external_id.as_str(), job.outbox_id)],
        )
        .await?
        .remove(&job.external_id)
    } else {
        None
    };
    if let Some(newest) = next {
        enqueue_new(&txn, f.subject, &[(job.external_id.as_str(), newest)]).await?;
    }
    db::exec(
        &txn,
        "UPDATE records SET sync_state = $3 WHERE integration_id = $1 AND external_id = $2",
        [
            f.subject.into(),
            job.external_id.clone().into(),
            (if next.is_some() { "pending" } else { state }).into(),
        ],
    )
    .await?;
    txn.commit().await?;
    Ok(if state == "failed" {
        Finished::Failed
    } else {
        Finished::Conflict
    })
}
/// A push the cloud refused with 409/412, inside `finish_one`'s transaction (the live push
/// already taken, the record locked): the conflict goes through the integration's
/// strategy (`conflicts::settle`), which keeps the cloud's copy, pushes the local one
/// again over the cloud's version, or holds it for a person. A refusal of a change that
/// was sent without `If-Match` is not a version conflict the local copy could win by
/// pushing again: under a strategy that would, the entry fails instead of looping.
#[allow(clippy::too_many_arguments)]
async fn refused(
    txn: &impl ConnectionTrait,
    f: Fence,
    job: &Job,
    local: &conflicts::Local,
    status: u16,
    error: &str,
    cloud_record: &Option<serde_json::Value>,
    cloud_version: &Option<String>,
) -> Result<Finished, DbErr> {
    let now = Dialect::of(txn).now();
    let rules = conflicts::rules_of(txn, &[f.subject])
        .await?
        .remove(&f.subject)
        .unwrap_or_else(|| conflicts::Rules::of("manual", &serde_json::Value::Null));
    let cloud = match cloud_record {
        Some(v) => {
            let mut c = rules.cloud_of(&RecordJson::new(v));
            c.version = c.version.or_else(|| cloud_version.clone());
            c
        }
        None => Cloud::unknown(cloud_version.clone()),
    };
    let forced = job.base_cloud_version.is_none() && cloud.version.is_none();
    let fails = forced && matches!(conflicts::decide(&rules, local, &cloud), Settled::Local);
    db::exec(
        txn,
        format!(
            "UPDATE outbox SET status = $2, attempts = attempts + 1, last_status_code = $3, last_error = $4, \
               finished_at = CASE WHEN $2 = 'failed' THEN {now} END WHERE id = $1"
        ),
        [
            job.outbox_id.into(),
            (if fails { "failed" } else { "pending" }).into(),
            i32::from(status).into(),
            error.to_owned().into(),
        ],
    )
    .await?;
    if fails {
        db::exec(
            txn,
            "UPDATE records SET sync_state = 'failed' WHERE integration_id = $1 AND external_id = $2",
            [f.subject.into(), job.external_id.clone().into()],
        )
        .await?;
        return Ok(Finished::Failed);
    }
    conflicts::settle(txn, f.subject, &rules, local, &cloud, Source::Push).await?;
    Ok(Finished::Conflict)
}

/// The reaper's steps for pushes: expired leases back to PENDING, poison quarantined
/// (failed), overdue pushes repeated; returns the pushes to push again.
pub async fn recover<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    max_claims: i32,
    reenqueue_after: Duration,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    for (f, claims) in work::poisoned(db, &PUSHES, max_claims, limit).await? {
        if let Some(job) = load(db, f.id).await? {
            let outcome = Outcome::Failed {
                status: None,
                error: format!("push lost its worker {claims} time(s); quarantined"),
            };
            finish_one(db, f, &job, outcome, Guard::LeaseExpired).await?;
        }
    }
    let mut push: Vec<Uuid> = work::requeue_expired(db, &PUSHES, max_claims, limit)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    push.extend(work::overdue(db, &PUSHES, reenqueue_after, limit).await?);
    Ok(push)
}

/// The pushes' backoff: the delivery policy (5 s doubling to an hour by default).
pub fn backoff(cfg: &NotifyConfig) -> RetryPolicy {
    cfg.backoff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> PushResponse {
        PushResponse {
            status,
            retry_after: None,
            cloud_version: Some("v2".into()),
            cloud_id: None,
            cloud_record: None,
            excerpt: String::new(),
        }
    }

    #[test]
    fn answers_follow_the_push_rules() {
        assert!(
            matches!(classify(answer(201)), Outcome::Pushed { cloud_version: Some(v), .. } if v == "v2")
        );
        assert!(matches!(classify(answer(409)), Outcome::Conflict { .. }));
        assert!(matches!(classify(answer(412)), Outcome::Conflict { .. }));
        for s in [408, 429, 500, 503] {
            assert!(matches!(classify(answer(s)), Outcome::Retry { .. }), "{s}");
        }
        for s in [400, 404, 422] {
            assert!(matches!(classify(answer(s)), Outcome::Failed { .. }), "{s}");
        }
    }
}
