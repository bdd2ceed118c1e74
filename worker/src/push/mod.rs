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
/// if the record has none; the pending push retargeted if one waits (its entry is
/// superseded); nothing if one is running (its finish takes the newest entry next).
pub async fn enqueue(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    entry: Uuid,
) -> Result<(), DbErr> {
    let d = Dialect::of(txn);
    let now = d.now();
    let lock = match d {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let rows = db::query(
        txn,
        format!(
            "SELECT id, status, outbox_id FROM live_pushes WHERE integration_id = $1 AND external_id = $2{lock}"
        ),
        [integration.into(), external_id.to_owned().into()],
    )
    .await?;
    match rows.first() {
        None => {
            db::exec(
                txn,
                format!(
                    "INSERT INTO live_pushes (id, integration_id, external_id, outbox_id, status, due_at) \
                     VALUES ($1, $2, $3, $4, 'PENDING', {now})"
                ),
                [
                    Uuid::now_v7().into(),
                    integration.into(),
                    external_id.to_owned().into(),
                    entry.into(),
                ],
            )
            .await?;
        }
        Some(r) if r.try_get::<String>("", "status")? == "PENDING" => {
            let old: Uuid = r.try_get("", "outbox_id")?;
            db::exec(
                txn,
                format!("UPDATE outbox SET status = 'superseded', finished_at = {now} WHERE id = $1 AND status = 'pending'"),
                [old.into()],
            )
            .await?;
            db::exec(
                txn,
                "UPDATE live_pushes SET outbox_id = $2 WHERE id = $1 AND status = 'PENDING'",
                [r.try_get::<Uuid>("", "id")?.into(), entry.into()],
            )
            .await?;
        }
        // Running: this entry waits for it (the push's finish chains it).
        Some(_) => {}
    }
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
}

/// Reads push `id`'s job; `None` = gone (its integration deleted).
pub async fn load(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Job>, DbErr> {
    let rows = db::query(
        db,
        "SELECT p.outbox_id, p.external_id, o.data, o.base_cloud_version, o.operation, o.attempts, i.kind, i.config, r.cloud_id \
         FROM live_pushes p JOIN outbox o ON o.id = p.outbox_id JOIN integrations i ON i.id = p.integration_id \
         LEFT JOIN records r ON r.integration_id = p.integration_id AND r.external_id = p.external_id \
         WHERE p.id = $1",
        [id.into()],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let op: String = r.try_get("", "operation")?;
    Ok(Some(Job {
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
    }))
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the cloud has it.
    Pushed {
        cloud_version: Option<String>,
        cloud_id: Option<String>,
    },
    /// 409 / 412: the cloud changed since the version this change was based on.
    Conflict { status: u16, error: String },
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

/// Sends job `j` (secrets opened for the connector only).
pub async fn send(
    j: &Job,
    secrets: Option<&SecretBox>,
    env: &ConnectorEnv,
    integration: Uuid,
) -> Outcome {
    if j.kind != ConnectorKind::HttpJson {
        return Outcome::Failed {
            status: None,
            error: format!(
                "the {} connector cannot push (only http_json has a push target)",
                j.kind.as_str()
            ),
        };
    }
    let config = match secrets {
        Some(b) => match b.open_config(j.kind, integration, &j.config) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Failed {
                    status: None,
                    error: e.to_string(),
                };
            }
        },
        None => j.config.clone(),
    };
    let c = match HttpJson::from_config(&config, Some(env)) {
        Ok(c) => c,
        Err(errs) => {
            let error = errs
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            return Outcome::Failed {
                status: None,
                error,
            };
        }
    };
    if !c.pushes() {
        return Outcome::Retry {
            status: None,
            error: "no push target configured (config.push): the change waits in the outbox".into(),
            after: None,
        };
    }
    let req = PushRequest {
        external_id: &j.external_id,
        cloud_id: j.cloud_id.as_deref(),
        data: j.data.as_deref(),
        idempotency_key: &j.outbox_id.to_string(),
        if_match: j.base_cloud_version.as_deref(),
    };
    match c.push(&req).await {
        Ok(r) => classify(r),
        // A refused address or a bad URL: final, like a 4xx.
        Err(e) if e.class == entity::ErrorClass::Config => Outcome::Failed {
            status: None,
            error: e.message,
        },
        Err(e) => Outcome::Retry {
            status: None,
            error: e.message,
            after: None,
        },
    }
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
}

/// Writes a push's outcome under its fence, in one transaction: the record's row first
/// (the lock a local write of the record takes too), then the live row (`work::defer`
/// for a retry, `work::take` for an end), the outbox entry and the record's sync state;
/// an end then hands the record's newest waiting entry, if any, to a new live push.
pub async fn finish<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    backoff: RetryPolicy,
    f: Fence,
    job: &Job,
    attempts: i32,
    outcome: Outcome,
    guard: Guard,
) -> Result<Finished, DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    let txn = db.begin().await?;
    let lock = match (d, guard) {
        (Dialect::Sqlite, _) => "UPDATE records SET version = version WHERE integration_id = $1 AND external_id = $2 RETURNING content_hash".to_owned(),
        (Dialect::Postgres, Guard::Owner) => "SELECT content_hash FROM records WHERE integration_id = $1 AND external_id = $2 FOR UPDATE".to_owned(),
        (Dialect::Postgres, Guard::LeaseExpired) => "SELECT content_hash FROM records WHERE integration_id = $1 AND external_id = $2 FOR UPDATE SKIP LOCKED".to_owned(),
    };
    let rec = db::query(
        &txn,
        lock,
        [f.subject.into(), job.external_id.clone().into()],
    )
    .await?;
    let pushed_hash: Option<String> = job.data.as_deref().map(|d| {
        serde_json::from_str::<serde_json::Value>(d)
            .map(|v| RecordJson::new(&v).content_hash_hex())
            .unwrap_or_default()
    });
    let held = match &outcome {
        Outcome::Retry { after, .. } => {
            let wait = after.unwrap_or_else(|| policy::backoff(backoff, f.id, attempts));
            work::defer(&txn, &PUSHES, f, ms(wait)).await?
        }
        _ => !work::take(&txn, &PUSHES, &[f], guard).await?.is_empty(),
    };
    if !held || (rec.is_empty() && guard == Guard::LeaseExpired) {
        txn.rollback().await?;
        return Ok(Finished::Stale);
    }
    let (status, state, error, code): (&str, &str, Option<String>, Option<i32>) = match &outcome {
        Outcome::Pushed { .. } => ("pushed", "synced", None, None),
        Outcome::Conflict { status, error } => (
            "conflict",
            "conflict",
            Some(error.clone()),
            Some(i32::from(*status)),
        ),
        Outcome::Retry { status, error, .. } => (
            "pending",
            "pending",
            Some(error.clone()),
            status.map(i32::from),
        ),
        Outcome::Failed { status, error } => (
            "failed",
            "failed",
            Some(error.clone()),
            status.map(i32::from),
        ),
    };
    let ended = !matches!(outcome, Outcome::Retry { .. });
    db::exec(
        &txn,
        format!(
            "UPDATE outbox SET status = $2, attempts = attempts + 1, last_status_code = $3, last_error = $4, \
               finished_at = CASE WHEN $5 THEN {now} ELSE NULL END WHERE id = $1"
        ),
        [
            job.outbox_id.into(),
            (if ended { status } else { "pending" }).into(),
            code.into(),
            error.clone().into(),
            ended.into(),
        ],
    )
    .await?;
    if let Outcome::Pushed {
        cloud_version,
        cloud_id,
    } = &outcome
    {
        db::exec(
            &txn,
            "UPDATE records SET cloud_version = COALESCE($3, cloud_version), cloud_id = COALESCE($4, cloud_id), \
               agreed_hash = COALESCE($5, agreed_hash) WHERE integration_id = $1 AND external_id = $2",
            [
                f.subject.into(),
                job.external_id.clone().into(),
                cloud_version.clone().into(),
                cloud_id.clone().into(),
                pushed_hash.into(),
            ],
        )
        .await?;
    }
    // The next change of the record, if one waits: the newest, the others superseded
    // (after a retry too: the retry then carries the newest state).
    let mut next = None;
    if !matches!(outcome, Outcome::Conflict { .. }) {
        let waiting = db::query(
            &txn,
            "SELECT id FROM outbox WHERE integration_id = $1 AND external_id = $2 AND status = 'pending' \
             AND id <> $3 ORDER BY created_at DESC, id DESC",
            [f.subject.into(), job.external_id.clone().into(), job.outbox_id.into()],
        )
        .await?;
        if let Some(first) = waiting.first() {
            let newest: Uuid = first.try_get("", "id")?;
            db::exec(
                &txn,
                format!(
                    "UPDATE outbox SET status = 'superseded', finished_at = {now} WHERE integration_id = $1 \
                     AND external_id = $2 AND status = 'pending' AND id <> $3"
                ),
                [f.subject.into(), job.external_id.clone().into(), newest.into()],
            )
            .await?;
            if ended {
                enqueue(&txn, f.subject, &job.external_id, newest).await?;
            } else {
                db::exec(
                    &txn,
                    format!(
                        "UPDATE outbox SET status = 'superseded', finished_at = {now} WHERE id = $1"
                    ),
                    [job.outbox_id.into()],
                )
                .await?;
                db::exec(
                    &txn,
                    "UPDATE live_pushes SET outbox_id = $2 WHERE id = $1",
                    [f.id.into(), newest.into()],
                )
                .await?;
            }
            next = Some(newest);
        }
    }
    // The record's state: still pending while a change waits.
    let state = if next.is_some() { "pending" } else { state };
    db::exec(
        &txn,
        "UPDATE records SET sync_state = $3 WHERE integration_id = $1 AND external_id = $2",
        [
            f.subject.into(),
            job.external_id.clone().into(),
            state.into(),
        ],
    )
    .await?;
    txn.commit().await?;
    Ok(match outcome {
        Outcome::Pushed { .. } => Finished::Pushed,
        Outcome::Retry { after, .. } => Finished::Retrying(after.unwrap_or_default()),
        Outcome::Conflict { .. } => Finished::Conflict,
        Outcome::Failed { .. } => Finished::Failed,
    })
}

/// The reaper's steps for pushes: expired leases back to PENDING, poison quarantined
/// (failed), overdue pushes repeated; returns the pushes to push again.
pub async fn recover<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    backoff: RetryPolicy,
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
            finish(db, backoff, f, &job, claims, outcome, Guard::LeaseExpired).await?;
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
