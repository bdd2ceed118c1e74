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
use crate::queue::Queue;
use crate::ratelimit::{self, Limiter};
use crate::secrets::SecretBox;
use crate::store;

mod lease;

use lease::{InFlight, Isolated, Isolation, Tracked, with_lease, with_leases};

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

/// How many times a finish that met a row locked past the lock timeout is tried.
const FINISH_TRIES: u32 = 3;

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

    /// One claim of a kind of leased work other than runs (§4.15): [`Self::claimed`]
    /// with a batch of one, finished by `finish` ([`finish_retrying`]).
    async fn claimed_one<T, Body, BodyFut, Fin, FinFut>(
        &self,
        w: &'static crate::work::Work,
        id: Uuid,
        owner: &str,
        body: Body,
        mut finish: Fin,
    ) -> Result<Executed, DbErr>
    where
        Body: FnOnce(Fence, i32) -> BodyFut,
        BodyFut: std::future::Future<Output = Result<Option<T>, DbErr>>,
        Fin: FnMut(Fence, T) -> FinFut,
        FinFut: std::future::Future<Output = Result<(), DbErr>>,
        T: Clone,
    {
        self.claimed(
            w,
            id,
            None,
            owner,
            |claimed: Vec<(Fence, i32)>| async move {
                let Some(&(f, claims)) = claimed.first() else {
                    return Ok(None);
                };
                Ok(body(f, claims).await?.map(|t| vec![(f, t)]))
            },
            |done: Vec<(Fence, T)>| async move {
                for (f, t) in done {
                    finish_retrying(&mut finish, f, t).await?;
                }
                Ok(())
            },
        )
        .await
    }

    /// Claims of a kind of leased work other than runs (§4.15), executed together:
    /// claim `id` and, if it was claimable and `companions` names its subject and how
    /// many, that many other due items of the subject that nobody holds now
    /// ([`crate::work::claim_due_of`]); track them, lease them, the shared isolation
    /// (they step aside from a suspect like a run), `body` with every claim's fence and
    /// count, then `finish` with the claims `body` prepared a result for, in order
    /// (`None` from `body`: nothing to write), all inside the leases. Each finish is
    /// fenced; the kind decides how many it writes per transaction. [`Self::backstop`] says
    /// whether a claim's count is past the claim-time backstop.
    async fn claimed<T, Body, BodyFut, Fin, FinFut>(
        &self,
        w: &'static crate::work::Work,
        id: Uuid,
        companions: Option<(Uuid, usize)>,
        owner: &str,
        body: Body,
        finish: Fin,
    ) -> Result<Executed, DbErr>
    where
        Body: FnOnce(Vec<(Fence, i32)>) -> BodyFut,
        BodyFut: std::future::Future<Output = Result<Option<Vec<(Fence, T)>>, DbErr>>,
        Fin: FnOnce(Vec<(Fence, T)>) -> FinFut,
        FinFut: std::future::Future<Output = Result<(), DbErr>>,
    {
        // The popped item is claimed as always; its companions only if free.
        let mut rows =
            crate::work::claim(&self.db, w, &[id], owner, self.cfg.lease, "", None).await?;
        if let (false, Some((subject, n))) = (rows.is_empty(), companions) {
            rows.extend(
                crate::work::claim_due_of(&self.db, w, subject, id, n, owner, self.cfg.lease)
                    .await?,
            );
        }
        if rows.is_empty() {
            self.metrics.duplicate_deliveries.inc();
            return Ok(Executed::Ran);
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            claimed.push((
                Fence::of(row, w.subject)?,
                row.try_get::<i32>("", "claims")?,
            ));
        }
        let fences: Vec<Fence> = claimed.iter().map(|(f, _)| *f).collect();
        let span = tracing::info_span!(
            "leased_work", work = w.name, id = %fences[0].id, subject = %fences[0].subject,
            fence = fences[0].fence, batch = fences.len()
        );
        let flights: Vec<InFlight> = fences
            .iter()
            .map(|f| InFlight::new(&self.db, &self.inflight, w, *f))
            .collect();
        // The finishes run inside the leases too: a batch's later finishes must not
        // outlive its claims while the earlier ones commit.
        let leased = with_leases(&self.db, w, fences.clone(), self.cfg.lease, async {
            let Some(_shared) = self.isolation.enter(false).await else {
                return Ok(None);
            };
            let Some(done) = body(claimed).await? else {
                return Ok(Some(()));
            };
            finish(done).await.map(Some)
        })
        .instrument(span)
        .await;
        let result = match leased {
            None => {
                self.metrics.stale_finishes.inc();
                Ok(Executed::Ran)
            }
            // The finish met rows held past the lock timeout on every try (a long local
            // write of the same records): the attempt is not the item's fault, so its
            // claims are given back uncounted (fenced: one that finished meanwhile is
            // gone) and the pump pushes them again, instead of their leases running out
            // into the reaper's poison count.
            Some(Err(e)) if crate::db::lock_timed_out(&e) => {
                tracing::warn!(
                    work = w.name,
                    batch = fences.len(),
                    "finish met busy rows; claims given back"
                );
                for f in &fences {
                    crate::work::give_back(&self.db, w, *f).await?;
                }
                Ok(Executed::Ran)
            }
            Some(Err(e)) => Err(e),
            Some(Ok(None)) => {
                self.metrics.stepped_aside.inc();
                let mut r = Ok(Executed::SteppedAside);
                for f in &fences {
                    if let Err(e) = crate::work::give_back(&self.db, w, *f).await {
                        r = Err(e);
                    }
                }
                r
            }
            Some(Ok(Some(()))) => Ok(Executed::Ran),
        };
        for flight in flights {
            flight.done();
        }
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
    ///
    /// Other due pushes of the integration are claimed with it ([`push::group_of`]): in
    /// the same request with a batching target, one request each otherwise, so a claim,
    /// a load and a finish serve many changes. Their own waiting entries are dropped from
    /// `queue` once they are claimed.
    pub async fn push(&self, id: Uuid, owner: &str, queue: &Queue) -> Result<Executed, DbErr> {
        use crate::push::{self, Outcome, PUSHES};
        let companions = push::group_of(&self.db, id).await?;
        let body = |claimed: Vec<(Fence, i32)>| async move {
            let companions: Vec<crate::job::SyncJob> = claimed
                .iter()
                .filter(|(f, _)| f.id != id)
                .map(|(f, _)| crate::job::SyncJob::of(&PUSHES, f.id))
                .collect();
            if !companions.is_empty()
                && let Err(e) = queue.forget(&companions).await
            {
                tracing::debug!(error = %e, "could not drop the entries of batched pushes; they are no-op deliveries");
            }
            let mut done: Vec<(Fence, (push::Job, Outcome))> = Vec::new();
            let mut sending: Vec<(Fence, push::Job)> = Vec::new();
            let ids: Vec<Uuid> = claimed.iter().map(|(f, _)| f.id).collect();
            let fences: Vec<Fence> = claimed.iter().map(|(f, _)| *f).collect();
            push::take_newest(&self.db, &fences).await?;
            let mut jobs = push::load_many(&self.db, &ids).await?;
            for (f, claims) in claimed {
                // Missing: the integration went, its pushes with it.
                let Some(job) = jobs.remove(&f.id) else {
                    continue;
                };
                match self.backstop(claims) {
                    Some(error) => done.push((
                        f,
                        (
                            job,
                            Outcome::Failed {
                                status: None,
                                error,
                            },
                        ),
                    )),
                    None => sending.push((f, job)),
                }
            }
            if let Some((f, _)) = sending.first() {
                let ids: Vec<&str> = sending
                    .iter()
                    .map(|(_, j)| j.external_id.as_str())
                    .collect();
                push::mark_pushing(&self.db, f.subject, &ids).await?;
            }
            if let Some((f, first)) = sending.first() {
                let integration = f.subject;
                let jobs: Vec<push::Job> = sending.iter().map(|(_, j)| j.clone()).collect();
                let outcomes =
                    match push::prepare(first, self.secrets.as_ref(), &self.env, integration) {
                        Err(o) => vec![o; jobs.len()],
                        Ok((opened, c)) => self.push_limited(&opened, &c, &jobs).await,
                    };
                for ((f, job), outcome) in sending.into_iter().zip(outcomes) {
                    done.push((f, (job, outcome)));
                }
            }
            Ok((!done.is_empty()).then_some(done))
        };
        let finish = |done: Vec<(Fence, (push::Job, Outcome))>| async move {
            for finished in push::finish_batch(&self.db, self.cfg.notify.backoff, done).await? {
                let label = match finished {
                    push::Finished::Pushed => "pushed",
                    push::Finished::Retrying(_) => "retrying",
                    push::Finished::Conflict => "conflict",
                    push::Finished::Failed => "failed",
                    push::Finished::Stale => "stale",
                    push::Finished::Busy => "busy",
                };
                self.metrics.pushes.with_label_values(&[label]).inc();
            }
            Ok(())
        };
        self.claimed(&PUSHES, id, companions, owner, body, finish)
            .await
    }

    /// Sends `jobs` (a request per change, or per batch of changes with a batching
    /// target), one request at a time, under the provider's fleet-wide limits, shared
    /// with the pulls of the same source and credential (`ratelimit::provider_key`): the
    /// group holds one concurrency slot and each request takes its own token. A spent
    /// rate or busy slots defer the jobs not yet sent (a retry after the wait, not a
    /// failure); a 429 pauses the provider fleet-wide as a pull's does and defers the
    /// rest; an answer that never came (connection refused, a timeout) is the answer of
    /// the rest too, rather than a timeout per change.
    async fn push_limited(
        &self,
        opened: &serde_json::Value,
        c: &crate::connectors::http_json::HttpJson,
        jobs: &[crate::push::Job],
    ) -> Vec<crate::push::Outcome> {
        use crate::connectors::Connector;
        use crate::push::Outcome;
        let kind = entity::ConnectorKind::HttpJson;
        let provider = ratelimit::provider_key(kind, opened, &c.urls());
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
        let admission = match admitted {
            Ok(a) => a,
            Err(d) => {
                let after = match &d {
                    ratelimit::Deferred::Busy { .. } => {
                        ratelimit::slots::retry_when_busy(max_inline)
                    }
                    ratelimit::Deferred::Limited { retry_after, .. } => {
                        retry_after.unwrap_or(max_inline)
                    }
                };
                let o = Outcome::Retry {
                    status: None,
                    error: d.message().to_owned(),
                    after: Some(after),
                };
                return vec![o; jobs.len()];
            }
        };
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(c.push_batch_size().max(1)) {
            // The first request spends the token the admission reserved.
            if let Err(e) = admission.gate.admit().await {
                let o = Outcome::Retry {
                    status: None,
                    error: e.message,
                    after: Some(e.retry_after.unwrap_or(max_inline)),
                };
                outcomes.resize(jobs.len(), o);
                break;
            }
            let answered = crate::push::send_with(c, chunk).await;
            let paused = answered.iter().find_map(|o| match o {
                Outcome::Retry {
                    status: Some(429),
                    after: Some(wait),
                    ..
                } => Some(*wait),
                _ => None,
            });
            let unanswered = answered
                .iter()
                .find(|o| matches!(o, Outcome::Retry { status: None, .. }))
                .cloned();
            outcomes.extend(answered);
            if let Some(wait) = paused {
                if let Err(e) = self.limiter.pause(&provider, wait).await {
                    tracing::warn!(error = %e, "could not pause the provider fleet-wide");
                }
                outcomes.resize(
                    jobs.len(),
                    Outcome::Retry {
                        status: None,
                        error: "the provider answered 429 to an earlier request of this group"
                            .into(),
                        after: Some(wait),
                    },
                );
                break;
            }
            if let Some(o) = unanswered {
                outcomes.resize(jobs.len(), o);
                break;
            }
        }
        outcomes
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

/// Runs `finish(f, t)`, again (up to [`FINISH_TRIES`] times) when a row stayed locked
/// past the lock timeout (a long local write of the same record): the finish rolled
/// back whole, and trying again while the lease holds beats leaving the claim to expire.
pub(crate) async fn finish_retrying<T, Fin, FinFut, R>(
    finish: &mut Fin,
    f: Fence,
    t: T,
) -> Result<R, DbErr>
where
    Fin: FnMut(Fence, T) -> FinFut,
    FinFut: std::future::Future<Output = Result<R, DbErr>>,
    T: Clone,
{
    let mut tries = 1;
    loop {
        match finish(f, t.clone()).await {
            Err(e) if tries < FINISH_TRIES && crate::db::lock_timed_out(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
            }
            other => return other,
        }
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
