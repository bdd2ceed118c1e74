//! Executing one run: claim → (isolation) → fetch under lease renewal and timeout →
//! finish (fenced). See docs/architecture.md §4.
//!
//! `execute` never fails the queue task for a business outcome; every outcome is written
//! to the database. A database error leaves the run where the reaper finds it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use entity::{ConnectorKind, ErrorClass, SyncStatus};
use futures::FutureExt;
use sea_orm::{DatabaseConnection, DbErr};
use tracing::Instrument;
use uuid::Uuid;

use crate::config::ProtocolConfig;
use crate::connectors::{self, ConnectorEnv, FetchContext};
use crate::db;
use crate::metrics::Metrics;
use crate::protocol::batch::{Batcher, FinishReq};
use crate::protocol::claim::{self, Claim, Source};
use crate::protocol::finish::{self, Finished, RunReport};
use crate::protocol::policy::Outcome;
use crate::protocol::{Fence, RUNS};
use crate::ratelimit::{self, Limiter};
use crate::secrets::SecretBox;
use crate::store;

mod lease;

use lease::{InFlight, Isolated, Isolation, Tracked, with_lease};

/// Longest error message stored in a SyncLog row.
const MAX_ERROR_LEN: usize = 2000;
/// The runs of an integration whose runs lost their lease this many times since its last
/// success run alone in their process (see `lease::Isolation`). One loss is what every
/// run in a crashed process shares; a second one singles out few besides the culprit, so
/// the fleet pays for isolation only there. The count lives on the integration, so a
/// poison integration's retry runs start as suspects instead of taking neighbours down.
const SUSPECT_AFTER: i32 = 2;
/// A run claimed this many times `max_claims` without finishing is quarantined whatever
/// its solo claims say (a backstop; the solo count normally decides first).
const CLAIMS_BACKSTOP: i32 = 3;

/// Runs writing more records than this finish in a transaction of their own.
const ALONE_ABOVE: usize = 2_000;

/// A run's outcome, ready for its fenced finish.
struct Prepared {
    kind: ConnectorKind,
    outcome: Outcome,
    report: RunReport,
}

impl Prepared {
    fn early(kind: ConnectorKind, outcome: Outcome, msg: String) -> Self {
        Self {
            kind,
            outcome,
            report: RunReport {
                error_message: Some(msg),
                ..RunReport::default()
            },
        }
    }
}

/// What became of a delivered run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    /// Run, finished, found stale or a duplicate: nothing more to do.
    Ran,
    /// Claimed while a suspect had this process and given back unexecuted
    /// (`lease::Isolation::enter`): its hint must go back to the queue.
    SteppedAside,
}

/// Inside a run's lease: stepped aside, or executed (with the isolation it held and
/// what it prepared to write; `None` = nothing to write).
enum Step<'a> {
    Aside,
    Ran(Isolated<'a>, Option<Prepared>),
}

/// Shared by every run of one worker process.
pub struct Engine {
    pub db: DatabaseConnection,
    pub cfg: ProtocolConfig,
    pub metrics: Metrics,
    /// Opens the secret fields of a config for its connector.
    pub secrets: Option<SecretBox>,
    pub env: ConnectorEnv,
    pub limiter: Limiter,
    /// Group commit of claims and finishes.
    batcher: Arc<Batcher>,
    /// Claims being executed now, so a bounded shutdown can release them.
    inflight: Tracked,
    /// Handler calls in flight (claimed or not): the queue fetches only for free slots.
    busy: Arc<AtomicUsize>,
    isolation: Isolation,
    /// Webhook deliveries' HTTP client (through the SSRF guard, with the attempt timeout).
    notify_client: reqwest::Client,
}

/// Counts one handler call in flight while it lives.
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Engine {
    pub fn new(
        db: DatabaseConnection,
        cfg: ProtocolConfig,
        metrics: Metrics,
        secrets: Option<SecretBox>,
        env: ConnectorEnv,
        limiter: Limiter,
    ) -> Arc<Self> {
        let batcher = Batcher::start(db.clone(), cfg.retry, cfg.lease);
        let notify_client = env.net.http_client(cfg.notify.timeout);
        Arc::new(Self {
            notify_client,
            batcher,
            db,
            cfg,
            metrics,
            secrets,
            env,
            limiter,
            inflight: Tracked::default(),
            busy: Arc::default(),
            isolation: Isolation::default(),
        })
    }

    /// The counter of handler calls in flight, for the queue's fetcher.
    pub fn busy(&self) -> Arc<AtomicUsize> {
        self.busy.clone()
    }

    /// Suspects waiting for or holding this process (see `lease::Isolation`).
    pub fn suspects(&self) -> Arc<AtomicUsize> {
        self.isolation.suspects()
    }

    /// `true` while a suspect waits for or holds this process: new runs go elsewhere.
    pub fn isolating(&self) -> bool {
        self.isolation.suspects().load(Ordering::Relaxed) > 0
    }

    /// Marks one handler call in flight until the guard drops.
    pub fn busy_guard(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.busy.clone())
    }

    /// Runs `run_id` as `owner` (the unique worker name).
    pub async fn execute(&self, run_id: Uuid, owner: &str) -> Result<Executed, DbErr> {
        let claimed = self.batcher.claim(run_id, owner).await?;
        let Some(c) = claimed else {
            self.metrics.duplicate_deliveries.inc();
            tracing::debug!(sync_log.id = %run_id, "claim found nothing: duplicate delivery");
            return Ok(Executed::Ran);
        };
        let span = tracing::info_span!(
            "sync_run",
            integration.id = %c.integration_id,
            sync_log.id = %run_id,
            fence = c.fence.fence,
            trigger = c.trigger.as_str(),
            attempt = c.attempt,
        );
        self.run_claimed(c).instrument(span).await
    }

    async fn run_claimed(&self, mut c: Claim) -> Result<Executed, DbErr> {
        if c.claims == 1 {
            let lag = (c.started_at - c.scheduled_for).num_milliseconds().max(0);
            self.metrics.scheduler_lag.observe(lag as f64 / 1000.0);
        }
        if let Some(msg) = self.backstop(c.claims) {
            let p = Prepared::early(
                self.kind_of(c.integration_id).await,
                Outcome::Failure(ErrorClass::WorkerLost),
                msg,
            );
            self.finish(c.fence, c.trigger, p).await?;
            self.metrics.quarantined_runs.inc();
            return Ok(Executed::Ran);
        }
        let flight = InFlight::new(&self.db, &self.inflight, &RUNS, c.fence);
        // The integration read with the claim moves into the run instead of being copied.
        let loaded = c.source.take();
        let leased = with_lease(&self.db, &RUNS, c.fence, self.cfg.lease, async {
            let source = match loaded {
                Some(s) => s,
                None => self.load_source(c.integration_id).await?,
            };
            let suspect = source
                .as_ref()
                .is_some_and(|s| s.lost_leases >= SUSPECT_AFTER);
            let Some(alone) = self.isolation.enter(suspect).await else {
                return Ok(Step::Aside);
            };
            if suspect {
                self.metrics.isolated_runs.inc();
                if !claim::mark_solo(&self.db, c.fence).await? {
                    return Ok(Step::Ran(alone, None));
                }
            }
            // A panic inside the run is this run's internal error: it fails under its
            // fence and counts towards the integration's retries, instead of looping
            // through release and reclaim.
            let prepared = match AssertUnwindSafe(self.prepare(&c, source))
                .catch_unwind()
                .await
            {
                Ok(p) => p?,
                Err(panic) => Some(self.panicked(&c, panic).await),
            };
            Ok::<_, DbErr>(Step::Ran(alone, prepared))
        })
        .await;
        let result = match leased {
            None => {
                tracing::warn!("lease lost while running; abandoning without writing");
                self.metrics.stale_finishes.inc();
                Ok(Executed::Ran)
            }
            Some(Err(e)) => Err(e),
            // A suspect has this process: give the claim back unexecuted (fenced; a claim
            // lost meanwhile is someone else's now). It is PENDING with no push time, so
            // the caller hands its hint back and another process takes it.
            Some(Ok(Step::Aside)) => {
                self.metrics.stepped_aside.inc();
                tracing::debug!("a suspect has this process; claim given back unexecuted");
                claim::give_back(&self.db, c.fence)
                    .await
                    .map(|_| Executed::SteppedAside)
            }
            // The integration was deleted (its runs went with it), or the claim moved on.
            Some(Ok(Step::Ran(_alone, None))) => Ok(Executed::Ran),
            // Still alone while finishing: a crash in the finish is this run's too.
            Some(Ok(Step::Ran(_alone, Some(p)))) => self
                .finish(c.fence, c.trigger, p)
                .await
                .map(|()| Executed::Ran),
        };
        flight.done();
        result
    }

    /// The outcome of a run whose execution panicked.
    async fn panicked(&self, c: &Claim, panic: Box<dyn std::any::Any + Send>) -> Prepared {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        tracing::error!(panic = %what, "run panicked; failing it as internal");
        let kind = self.kind_of(c.integration_id).await;
        Prepared::early(
            kind,
            Outcome::Failure(ErrorClass::Internal),
            truncate(format!("the run panicked: {what}")),
        )
    }

    /// What a run needs of its integration; `None` = the integration is gone.
    async fn load_source(&self, integration_id: uuid::Uuid) -> Result<Option<Source>, DbErr> {
        let rows = db::query(
            &self.db,
            "SELECT kind, config, watermark, lost_leases FROM integrations WHERE id = $1",
            [integration_id.into()],
        )
        .await?;
        rows.first()
            .map(|row| {
                Ok(Source {
                    kind: row.try_get("", "kind")?,
                    config: row.try_get("", "config")?,
                    watermark: row.try_get("", "watermark")?,
                    lost_leases: row.try_get("", "lost_leases")?,
                })
            })
            .transpose()
    }

    /// The connector kind of an integration, for metric labels (a placeholder if it
    /// cannot be read).
    async fn kind_of(&self, integration_id: uuid::Uuid) -> ConnectorKind {
        let rows = db::query(
            &self.db,
            "SELECT kind FROM integrations WHERE id = $1",
            [integration_id.into()],
        )
        .await;
        rows.ok()
            .and_then(|r| r.first().and_then(|r| r.try_get("", "kind").ok()))
            .unwrap_or(ConnectorKind::Synthetic)
    }

    /// Everything between the claim and the finish: the connector, the provider's
    /// limits, the fetch under the run timeout, and the plan of record writes.
    async fn prepare(&self, c: &Claim, source: Option<Source>) -> Result<Option<Prepared>, DbErr> {
        // The integration was deleted: its runs went with it.
        let Some(Source {
            kind,
            config,
            watermark,
            ..
        }) = source
        else {
            return Ok(None);
        };

        // Secrets are opened here, for the connector only; nothing downstream logs them.
        let opened = match &self.secrets {
            Some(b) => b.open_config(kind, c.integration_id, &config),
            None if connectors::secret_fields(kind)
                .iter()
                .any(|f| config.get(*f).is_some_and(SecretBox::is_encrypted)) =>
            {
                Err(crate::secrets::SecretError::Decrypt(
                    "(no SYNCFLEET_SECRET_KEY)".into(),
                ))
            }
            None => Ok(config),
        };
        let config = match opened {
            Ok(c) => c,
            Err(e) => {
                let outcome = Outcome::Failure(ErrorClass::Config);
                return Ok(Some(Prepared::early(kind, outcome, e.to_string())));
            }
        };
        let connector = match connectors::build(kind, &config, &self.env) {
            Ok(conn) => conn,
            Err(errs) => {
                let msg = errs
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let outcome = Outcome::Failure(ErrorClass::Config);
                return Ok(Some(Prepared::early(kind, outcome, msg)));
            }
        };
        // The provider's fleet-wide limits: wait briefly for a concurrency slot and for
        // the first request's token, or end the run as rate limited (not a failure) and
        // come back when the provider allows. Later requests take their own tokens
        // through the gate in the fetch context.
        let provider = ratelimit::provider_key(kind, &config, &connector.urls());
        // Waiting in place is bounded in total; past that the run is deferred, so contending runs do not hold
        // worker slots or starve each other.
        let max_inline = (self.cfg.lease / 3).min(Duration::from_secs(5));
        let admitted = self
            .limiter
            .admit(
                kind,
                &provider,
                self.cfg.lease,
                max_inline,
                self.metrics.rate_limit_waits.clone(),
            )
            .await;
        // The slot is held until this function returns, whichever way.
        let (_slot, gate) = match admitted {
            Ok(a) => (a.slot, a.gate),
            Err(ratelimit::Deferred::Busy { message }) => {
                self.metrics.provider_slot_deferrals.inc();
                let wait = ratelimit::slots::retry_when_busy(max_inline);
                let outcome = Outcome::RateLimited { wait };
                return Ok(Some(Prepared::early(kind, outcome, message)));
            }
            Err(ratelimit::Deferred::Limited {
                retry_after,
                message,
            }) => {
                let wait = finish::bounded_wait(retry_after);
                let outcome = Outcome::RateLimited { wait };
                return Ok(Some(Prepared::early(kind, outcome, message)));
            }
        };
        let previous_runs = if connector.wants_run_count() {
            let r = db::query(
                &self.db,
                "SELECT COUNT(*) AS n FROM run_history WHERE integration_id = $1 AND id <> $2 \
                 AND status IN ('SUCCESS', 'FAILED', 'RATE_LIMITED')",
                [c.integration_id.into(), c.fence.id.into()],
            )
            .await?;
            r.first()
                .map(|r| r.try_get::<i64>("", "n"))
                .transpose()?
                .unwrap_or(0)
        } else {
            0
        };
        let ctx = FetchContext {
            integration_id: c.integration_id,
            run_id: c.fence.id,
            attempt: c.attempt,
            previous_runs,
            watermark,
            gate: Some(gate),
        };

        // The lease is renewed around all of this by `with_lease`.
        let fetched = tokio::time::timeout(self.cfg.run_timeout, connector.fetch(&ctx)).await;
        let (outcome, report) = match fetched {
            Err(_) => (
                Outcome::Failure(ErrorClass::Timeout),
                RunReport {
                    error_message: Some(format!(
                        "run exceeded {} ms",
                        self.cfg.run_timeout.as_millis()
                    )),
                    ..RunReport::default()
                },
            ),
            Ok(Err(e)) => {
                let outcome = match e.class {
                    ErrorClass::RateLimited => Outcome::RateLimited {
                        wait: finish::bounded_wait(e.retry_after),
                    },
                    class => Outcome::Failure(class),
                };
                (
                    outcome,
                    RunReport {
                        error_message: Some(truncate(e.message)),
                        ..RunReport::default()
                    },
                )
            }
            // Nothing fetched: no stored record needs reading; a full sync soft-deletes
            // them all inside the finish transaction.
            Ok(Ok(f)) if f.records.is_empty() => (
                Outcome::Success,
                RunReport {
                    watermark: f.watermark,
                    delete_all: f.full,
                    ..RunReport::default()
                },
            ),
            Ok(Ok(f)) => {
                // A small run's stored rows are read together with other runs' reads.
                let plan = if f.records.len() <= ALONE_ABOVE {
                    let stored = self.batcher.stored(c.integration_id).await?;
                    store::diff(stored, f.records, f.full)
                } else {
                    store::plan(&self.db, c.integration_id, f.records, f.full).await?
                };
                (
                    Outcome::Success,
                    RunReport {
                        plan,
                        error_message: None,
                        watermark: f.watermark,
                        delete_all: false,
                    },
                )
            }
        };
        if let Outcome::RateLimited { wait } = outcome
            && let Err(e) = self.limiter.pause(&provider, wait).await
        {
            tracing::warn!(error = %e, "could not pause the provider fleet-wide");
        }
        Ok(Some(Prepared {
            kind,
            outcome,
            report,
        }))
    }

    async fn finish(&self, f: Fence, trigger: entity::Trigger, p: Prepared) -> Result<(), DbErr> {
        let Prepared {
            kind,
            outcome,
            report,
        } = p;
        let req = FinishReq {
            fence: f,
            outcome,
            report,
        };
        // A run with many records to write is a batch of its own: its cost is the
        // records, and it must not hold a batch's locks while they are written.
        let res = if req.report.plan.writes() > ALONE_ABOVE {
            finish::finish_many(&self.db, self.cfg.retry, std::slice::from_ref(&req))
                .await?
                .pop()
                .unwrap_or(Finished::Stale)
        } else {
            self.batcher.finish(req).await?
        };
        match res {
            Finished::Stale => {
                self.metrics.stale_finishes.inc();
                tracing::warn!("finish rejected by the fence: this claim is stale");
            }
            Finished::Applied {
                status,
                disabled,
                counts,
                duration_ms,
            } => {
                self.metrics
                    .runs
                    .with_label_values(&[status.as_str(), kind.as_str(), trigger.as_str()])
                    .inc();
                self.metrics
                    .run_duration
                    .with_label_values(&[kind.as_str()])
                    .observe(duration_ms as f64 / 1000.0);
                self.metrics
                    .records_synced
                    .with_label_values(&[kind.as_str()])
                    .inc_by(u64::try_from(counts.received).unwrap_or(0));
                if status == SyncStatus::Failed && !disabled {
                    self.metrics.retries_scheduled.inc();
                }
                if disabled {
                    self.metrics.integrations_disabled.inc();
                    tracing::warn!("integration disabled after repeated failures");
                }
                tracing::info!(
                    status = status.as_str(),
                    duration_ms,
                    records = counts.received,
                    "run finished"
                );
            }
        }
        Ok(())
    }

    /// One claim of a kind of leased work other than runs (§4.15): claim, track, lease,
    /// the shared isolation (it steps aside from a suspect like a run), `body` inside
    /// the lease, then `finish` with what `body` prepared (`None`: nothing to write).
    /// `body` gets the fence and the claim's count; [`Self::backstop`] says whether that
    /// count is past the claim-time backstop.
    async fn claimed_one<T, Body, BodyFut, Fin, FinFut>(
        &self,
        w: &'static crate::work::Work,
        id: Uuid,
        owner: &str,
        body: Body,
        finish: Fin,
    ) -> Result<Executed, DbErr>
    where
        Body: FnOnce(Fence, i32) -> BodyFut,
        BodyFut: std::future::Future<Output = Result<Option<T>, DbErr>>,
        Fin: FnOnce(Fence, T) -> FinFut,
        FinFut: std::future::Future<Output = Result<(), DbErr>>,
    {
        let claimed =
            crate::work::claim(&self.db, w, &[id], owner, self.cfg.lease, "", None).await?;
        let Some(row) = claimed.first() else {
            self.metrics.duplicate_deliveries.inc();
            return Ok(Executed::Ran);
        };
        let f = Fence::of(row, w.subject)?;
        let claims: i32 = row.try_get("", "claims")?;
        let span = tracing::info_span!("leased_work", work = w.name, id = %id, subject = %f.subject, fence = f.fence);
        let flight = InFlight::new(&self.db, &self.inflight, w, f);
        let leased = with_lease(&self.db, w, f, self.cfg.lease, async {
            let Some(_shared) = self.isolation.enter(false).await else {
                return Ok(None);
            };
            body(f, claims).await.map(Some)
        })
        .instrument(span.clone())
        .await;
        let result = match leased {
            None => {
                self.metrics.stale_finishes.inc();
                Ok(Executed::Ran)
            }
            Some(Err(e)) => Err(e),
            Some(Ok(None)) => {
                self.metrics.stepped_aside.inc();
                crate::work::give_back(&self.db, w, f)
                    .await
                    .map(|_| Executed::SteppedAside)
            }
            Some(Ok(Some(None))) => Ok(Executed::Ran),
            Some(Ok(Some(Some(t)))) => finish(f, t).instrument(span).await.map(|()| Executed::Ran),
        };
        flight.done();
        result
    }

    /// The failure message of a claim past the claim-time backstop (§4.13), if it is.
    fn backstop(&self, claims: i32) -> Option<String> {
        (claims > self.cfg.max_claims * CLAIMS_BACKSTOP)
            .then(|| format!("claimed {claims} times without finishing; quarantined"))
    }

    /// Attempts delivery `id` as `owner` on the leased-work mechanism
    /// ([`Self::claimed_one`]), with the delivery's own rules
    /// ([`crate::notifications::deliver`]).
    pub async fn deliver(&self, id: Uuid, owner: &str) -> Result<Executed, DbErr> {
        use crate::notifications::DELIVERIES;
        use crate::notifications::deliver::{self, Answer};
        let failed = |error: String| {
            Ok(Some((
                Answer::Failed {
                    status: None,
                    error,
                },
                0,
            )))
        };
        let body = |_: Fence, claims: i32| async move {
            if let Some(error) = self.backstop(claims) {
                return failed(error);
            }
            let sending = match deliver::load(&self.db, self.secrets.as_ref(), id).await {
                Ok(Some(s)) => s,
                // The delivery went with its endpoint or event.
                Ok(None) => return failed("gone".into()),
                Err(e) => return failed(format!("cannot read the delivery: {e}")),
            };
            if !sending.endpoint_enabled {
                return failed("the endpoint is disabled".into());
            }
            let now = crate::protocol::reaper::db_now(&self.db).await?;
            Ok(Some(
                deliver::send(&self.notify_client, &sending, now.timestamp()).await,
            ))
        };
        let finish = |f: Fence, (answer, latency): (Answer, i64)| async move {
            let done = deliver::finish(
                &self.db,
                &self.cfg.notify,
                f,
                answer,
                latency,
                crate::work::Guard::Owner,
            )
            .await?;
            let outcome = match done {
                deliver::Finished::Delivered => "delivered",
                deliver::Finished::Retrying(_) => "retrying",
                deliver::Finished::Failed { .. } => "failed",
                deliver::Finished::Stale => "stale",
            };
            self.metrics.deliveries.with_label_values(&[outcome]).inc();
            if let deliver::Finished::Failed {
                endpoint_disabled: true,
            } = done
            {
                tracing::warn!(endpoint.id = %f.subject, "notification endpoint disabled after repeated failed deliveries");
            }
            Ok(())
        };
        self.claimed_one(&DELIVERIES, id, owner, body, finish).await
    }

    /// Pushes live push `id` as `owner` on the leased-work mechanism
    /// ([`Self::claimed_one`]), with the push's own rules ([`crate::push`]).
    pub async fn push(&self, id: Uuid, owner: &str) -> Result<Executed, DbErr> {
        use crate::push::{self, Outcome, PUSHES};
        let body = |f: Fence, claims: i32| async move {
            // `None`: the integration went, its pushes with it.
            let Some(job) = push::load(&self.db, f.id).await? else {
                return Ok(None);
            };
            db::exec(
                &self.db,
                "UPDATE records SET sync_state = 'pushing' WHERE integration_id = $1 AND external_id = $2",
                [f.subject.into(), job.external_id.clone().into()],
            )
            .await?;
            let outcome = match self.backstop(claims) {
                Some(error) => Outcome::Failed {
                    status: None,
                    error,
                },
                None => push::send(&job, self.secrets.as_ref(), &self.env, f.subject).await,
            };
            Ok(Some((job, outcome)))
        };
        let finish = |f: Fence, (job, outcome): (push::Job, Outcome)| async move {
            let done = push::finish(
                &self.db,
                self.cfg.notify.backoff,
                f,
                &job,
                job.attempts + 1,
                outcome,
                crate::work::Guard::Owner,
            )
            .await?;
            let label = match done {
                push::Finished::Pushed => "pushed",
                push::Finished::Retrying(_) => "retrying",
                push::Finished::Conflict => "conflict",
                push::Finished::Failed => "failed",
                push::Finished::Stale => "stale",
            };
            self.metrics.pushes.with_label_values(&[label]).inc();
            Ok(())
        };
        self.claimed_one(&PUSHES, id, owner, body, finish).await
    }

    /// Gives every in-flight claim back (bounded shutdown): they become PENDING for
    /// another worker instead of waiting for their lease to expire.
    pub async fn release_all(&self) -> usize {
        let claims: Vec<(&'static crate::work::Work, Fence)> = self
            .inflight
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut n = 0;
        for (w, f) in claims {
            match crate::work::release(&self.db, w, f).await {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(work = w.name, id = %f.id, error = %e, "release failed; the reaper will recover it")
                }
            }
        }
        n
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
