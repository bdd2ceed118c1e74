//! The run protocol end to end (docs/architecture.md §4; the invariants and the tests
//! that prove them are listed in §4.12): backoff and disable, error classes,
//! duplicate deliveries, concurrent schedulers, missed slots, no overlap, coalescing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::json;
use syncfleet_worker::db as q;
use syncfleet_worker::protocol::policy::{RetryPolicy, backoff_base};
use syncfleet_worker::protocol::schedule;
use tests::env::test_env;
use tests::procs;
use uuid::Uuid;

use crate::util::{count, eventually};

pub struct Run {
    pub status: String,
    pub trigger: String,
    pub attempt: i32,
    pub claims: i32,
    pub fence: i64,
    pub scheduled_for: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error_class: Option<String>,
    pub worker_id: Option<String>,
}

/// Runs of one integration, oldest first.
pub async fn runs(db: &DatabaseConnection, id: Uuid) -> Vec<Run> {
    let rows = q::query(
        db,
        "SELECT status, \"trigger\", attempt, claims, fence, scheduled_for, completed_at, error_class, worker_id \
         FROM sync_logs WHERE integration_id = $1 ORDER BY scheduled_for, created_at",
        [id.into()],
    )
    .await
    .expect("runs");
    rows.iter()
        .map(|r| Run {
            status: r.try_get("", "status").unwrap(),
            trigger: r.try_get("", "trigger").unwrap(),
            attempt: r.try_get("", "attempt").unwrap(),
            claims: r.try_get("", "claims").unwrap(),
            fence: r.try_get("", "fence").unwrap(),
            scheduled_for: r.try_get("", "scheduled_for").unwrap(),
            completed_at: r.try_get("", "completed_at").unwrap(),
            error_class: r.try_get("", "error_class").unwrap(),
            worker_id: r.try_get("", "worker_id").unwrap(),
        })
        .collect()
}

/// `(sync_enabled, health, retry_count)`.
pub async fn state(db: &DatabaseConnection, id: Uuid) -> (bool, String, i32) {
    let r = q::query(
        db,
        "SELECT sync_enabled, health, retry_count FROM integrations WHERE id = $1",
        [id.into()],
    )
    .await
    .expect("state");
    let r = &r[0];
    (
        r.try_get("", "sync_enabled").unwrap(),
        r.try_get("", "health").unwrap(),
        r.try_get("", "retry_count").unwrap(),
    )
}

async fn disable_audits(db: &DatabaseConnection, id: Uuid) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM audit_events WHERE integration_id = $1 AND action = 'integration.disable' AND actor = 'system'",
        vec![id.into()],
    )
    .await
}

fn ms(d: chrono::TimeDelta) -> i64 {
    d.num_milliseconds()
}

/// Always failing: exactly `max_retries` FAILED runs spaced by the backoff, then
/// disabled with one audit event; nothing runs after that.
#[tokio::test]
async fn failures_back_off_then_disable() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    let id = app
        .client
        .create(
            "always-fails",
            "synthetic",
            json!({ "failAlways": true }),
            Some(1),
        )
        .await;
    eventually(Duration::from_secs(20), "integration disabled", || async {
        (state(&env.db, id).await.1 == "disabled").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rs = runs(&env.db, id).await;
    assert_eq!(rs.len(), 3, "exactly max_retries runs");
    assert!(
        rs.iter()
            .all(|r| r.status == "FAILED" && r.error_class.as_deref() == Some("transient"))
    );
    assert_eq!(
        rs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        rs.iter().map(|r| r.trigger.as_str()).collect::<Vec<_>>(),
        vec!["schedule", "retry", "retry"]
    );
    let policy = RetryPolicy {
        base: Duration::from_millis(300),
        cap: Duration::from_millis(2000),
    };
    for n in 1..rs.len() {
        let gap = ms(rs[n].scheduled_for - rs[n - 1].completed_at.unwrap());
        let base = backoff_base(policy, n as i32).as_millis() as i64;
        assert!(
            gap >= base - 5 && gap <= base + base / 10 + 5,
            "gap {n}: {gap} ms, expected {base}..{}",
            base * 11 / 10
        );
    }
    let (enabled, health, retry_count) = state(&env.db, id).await;
    assert!(!enabled);
    assert_eq!((health.as_str(), retry_count), ("disabled", 3));
    assert_eq!(disable_audits(&env.db, id).await, 1);
    // Regression (apalis-redis retried any handler `Err` up to 25 times): the queue
    // holds nothing for these runs; no backend retries behind the protocol's back.
    let queue = syncfleet_worker::Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .expect("queue");
    assert_eq!(queue.depth().await.expect("depth"), 0);
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// A success between failures resets the count; the integration stays healthy.
#[tokio::test]
async fn success_resets_the_failure_count() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    let id = app
        .client
        .create("recovers", "synthetic", json!({ "failFirst": 2 }), Some(1))
        .await;
    eventually(
        Duration::from_secs(20),
        "a success after two failures",
        || async {
            let rs = runs(&env.db, id).await;
            rs.iter().any(|r| r.status == "SUCCESS").then_some(())
        },
    )
    .await;
    let rs = runs(&env.db, id).await;
    assert_eq!(rs[0].status, "FAILED");
    assert_eq!(rs[1].status, "FAILED");
    assert_eq!(rs[2].status, "SUCCESS");
    assert_eq!(rs[2].attempt, 3);
    let (enabled, health, retry_count) = state(&env.db, id).await;
    assert!(enabled);
    assert_eq!((health.as_str(), retry_count), ("healthy", 0));
    // The next run is a fresh first attempt on the schedule.
    eventually(Duration::from_secs(10), "next scheduled run", || async {
        let rs = runs(&env.db, id).await;
        rs.get(3)
            .filter(|r| r.status == "SUCCESS")
            .map(|r| (r.attempt, r.trigger.clone()))
    })
    .await;
    let rs = runs(&env.db, id).await;
    assert_eq!((rs[3].attempt, rs[3].trigger.as_str()), (1, "schedule"));
    assert_eq!(disable_audits(&env.db, id).await, 0);
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// `config` and `auth` disable at once; `rate_limited` waits and never counts.
#[tokio::test]
async fn error_classes_decide_what_follows() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    let config = app
        .client
        .create(
            "bad-config",
            "synthetic",
            json!({ "failAlways": true, "errorClass": "config" }),
            Some(1),
        )
        .await;
    let auth = app
        .client
        .create(
            "bad-auth",
            "synthetic",
            json!({ "failAlways": true, "errorClass": "auth" }),
            Some(1),
        )
        .await;
    let limited = app
        .client
        .create(
            "limited",
            "synthetic",
            json!({ "failAlways": true, "errorClass": "rate_limited", "retryAfterMs": 400 }),
            Some(1),
        )
        .await;
    for id in [config, auth] {
        eventually(Duration::from_secs(15), "disabled at once", || async {
            (state(&env.db, id).await.1 == "disabled").then_some(())
        })
        .await;
    }
    eventually(
        Duration::from_secs(15),
        "four rate-limited runs",
        || async {
            (runs(&env.db, limited)
                .await
                .iter()
                .filter(|r| r.status == "RATE_LIMITED")
                .count()
                >= 4)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for id in [config, auth] {
        let rs = runs(&env.db, id).await;
        assert_eq!(rs.len(), 1, "no retry after a config/auth error");
        assert_eq!(rs[0].status, "FAILED");
        assert_eq!(disable_audits(&env.db, id).await, 1);
    }
    let rs = runs(&env.db, limited).await;
    let (enabled, health, retry_count) = state(&env.db, limited).await;
    assert!(enabled, "rate limiting must not disable");
    assert_eq!((health.as_str(), retry_count), ("healthy", 0));
    let finished: Vec<&Run> = rs.iter().filter(|r| r.status == "RATE_LIMITED").collect();
    for w in finished.windows(2) {
        let gap = ms(w[1].scheduled_for - w[0].completed_at.unwrap());
        assert!(gap >= 395, "waited only {gap} ms for the provider's reset");
    }
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

/// Pushing one run id three times executes it once.
#[tokio::test]
async fn duplicate_deliveries_execute_once() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let id = app
        .client
        .create("dup", "synthetic", json!({ "records": 5 }), None)
        .await;
    let run_id: Uuid = eventually(Duration::from_secs(10), "first run pending", || async {
        let r = q::query(
            &env.db,
            "SELECT id FROM sync_logs WHERE integration_id = $1",
            [id.into()],
        )
        .await
        .ok()?;
        r.first().map(|r| r.try_get::<Uuid>("", "id").unwrap())
    })
    .await;
    let queue = syncfleet_worker::Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .expect("queue");
    queue
        .push(&[run_id, run_id])
        .await
        .expect("push duplicates");
    let (stop, worker) = env.spawn_worker(&[]);
    eventually(Duration::from_secs(10), "run finished", || async {
        (runs(&env.db, id).await.first()?.status == "SUCCESS").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rs = runs(&env.db, id).await;
    assert_eq!(rs.len(), 1);
    assert_eq!(
        (rs[0].claims, rs[0].fence),
        (1, 1),
        "claimed more than once"
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND version = 1",
            vec![id.into()]
        )
        .await,
        5
    );
    // All three deliveries were consumed.
    assert_eq!(queue.depth().await.expect("depth"), 0);
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}

pub(crate) async fn insert_due(
    db: &DatabaseConnection,
    n: usize,
    interval: Option<i64>,
) -> Vec<Uuid> {
    let ws = syncfleet_api::db::default_workspace(db).await.expect("ws");
    let now = syncfleet_worker::db::Dialect::of(db).now();
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut sql = String::from(
            "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, next_sync_at, created_at, updated_at) VALUES ",
        );
        let mut values: Vec<sea_orm::Value> = vec![ws.into(), interval.into()];
        for (i, _) in chunk.iter().enumerate() {
            let id = Uuid::now_v7();
            ids.push(id);
            values.push(id.into());
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, $1, 'bulk', 'synthetic', '{{}}', $2, true, {now}, {now}, {now})",
                i + 3
            ));
        }
        q::exec(db, sql, values).await.expect("insert integrations");
    }
    ids
}

/// Three schedulers racing over the same due integrations: every slot once.
#[tokio::test]
async fn three_schedulers_schedule_every_slot_exactly_once() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("it schedules runs with no worker to run them");
    let ids = insert_due(&env.db, 600, Some(60)).await;
    let mut handles = Vec::new();
    for _ in 0..3 {
        let db = sea_orm::Database::connect(&env.db_url)
            .await
            .expect("connect");
        handles.push(tokio::spawn(async move {
            let mut created = 0usize;
            loop {
                let ids = schedule::tick(&db, 40).await.expect("tick");
                if ids.is_empty() {
                    return created;
                }
                created += ids.len();
            }
        }));
    }
    let mut per_scheduler = Vec::new();
    for h in handles {
        per_scheduler.push(h.await.expect("join"));
    }
    assert_eq!(
        per_scheduler.iter().sum::<usize>(),
        ids.len(),
        "per scheduler: {per_scheduler:?}"
    );
    assert!(
        per_scheduler.iter().filter(|n| **n > 0).count() >= 2,
        "schedulers did not share work: {per_scheduler:?}"
    );
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM sync_logs", vec![]).await,
        ids.len() as i64
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(DISTINCT integration_id) FROM sync_logs",
            vec![]
        )
        .await,
        ids.len() as i64
    );
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM integrations WHERE next_sync_at IS NOT NULL",
            vec![]
        )
        .await,
        0
    );
}

/// After the fleet was down for several intervals, each integration runs once (not
/// once per missed slot), and the backlog is spread over ticks.
#[tokio::test]
async fn missed_slots_run_once_and_spread_out() {
    let Some(env) = test_env().await else { return };
    let ids = insert_due(&env.db, 20, Some(1)).await;
    // Simulate an outage: the slots fell due 5 s ago.
    q::exec(
        &env.db,
        "UPDATE integrations SET next_sync_at = now() - interval '5 seconds'",
        [],
    )
    .await
    .expect("age");
    let overrides = [
        ("SYNCFLEET_MAX_RUNS_PER_TICK", "5"),
        ("SYNCFLEET_SCHEDULER_TICK_MS", "100"),
    ];
    let (stop, worker) = env.spawn_worker(&overrides);
    let app = env.spawn_app(&overrides).await;
    eventually(Duration::from_secs(10), "every integration ran", || async {
        let n = count(
            &env.db,
            "SELECT COUNT(DISTINCT integration_id) FROM sync_logs WHERE status = 'SUCCESS'",
            vec![],
        )
        .await;
        (n == ids.len() as i64).then_some(())
    })
    .await;
    app.stop().await;
    stop.cancel();
    let _ = worker.await;
    // One catch-up run per integration for the missed slots (a second one is a new slot).
    let catch_up = q::query(
        &env.db,
        "SELECT integration_id, COUNT(*) AS n FROM sync_logs WHERE scheduled_for < now() - interval '4 seconds' GROUP BY integration_id",
        [],
    )
    .await
    .expect("catch-up");
    assert_eq!(catch_up.len(), ids.len());
    assert!(
        catch_up
            .iter()
            .all(|r| r.try_get::<i64>("", "n").unwrap() == 1)
    );
    // Spread: the catch-up runs were created by several ticks of at most 5.
    let ticks = q::query(
        &env.db,
        "SELECT created_at, COUNT(*) AS n FROM sync_logs WHERE scheduled_for < now() - interval '4 seconds' GROUP BY created_at",
        [],
    )
    .await
    .expect("ticks");
    assert!(ticks.len() >= 4, "{} ticks", ticks.len());
    assert!(
        ticks
            .iter()
            .all(|r| r.try_get::<i64>("", "n").unwrap() <= 5)
    );
}

/// 4 worker processes, 200 integrations on tiny intervals and bursts of manual
/// triggers: never two RUNNING runs of one integration, and triggers coalesce.
#[tokio::test]
async fn no_overlap_under_four_worker_processes() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("interval integrations keep being scheduled until the fleet stops");
    let app = env.spawn_app(&[]).await;
    let vars = env.vars(&[("SYNCFLEET_WORKER_CONCURRENCY", "8")]);
    let workers: Vec<procs::Proc> = (0..4).map(|_| procs::syncfleet("worker", &vars)).collect();
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            app.client
                .create(
                    &format!("i{i}"),
                    "synthetic",
                    json!({ "records": 2, "latencyMs": 40 }),
                    Some(1),
                )
                .await,
        );
    }
    // The coalescing subject: manual-only, slow.
    let slow = app
        .client
        .create("slow", "synthetic", json!({ "latencyMs": 1500 }), None)
        .await;
    eventually(Duration::from_secs(15), "slow run running", || async {
        runs(&env.db, slow)
            .await
            .first()
            .filter(|r| r.status == "RUNNING")
            .map(|_| ())
    })
    .await;
    let mut followups = 0;
    for _ in 0..10 {
        let v = app.client.trigger(slow).await;
        assert_eq!(v["coalesced"], true, "{v}");
        followups += usize::from(v["followupRequested"] == true);
    }
    assert_eq!(
        followups, 10,
        "every trigger during the run reports the (single) follow-up"
    );
    // Sample continuously while bursts of manual triggers hit the busy integrations.
    let sampler_db = env.db.clone();
    let sampler = tokio::spawn(async move {
        let mut samples = 0u32;
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        while std::time::Instant::now() < deadline {
            let dup = count(
                &sampler_db,
                "SELECT COUNT(*) FROM (SELECT integration_id FROM sync_logs WHERE status = 'RUNNING' GROUP BY integration_id HAVING COUNT(*) > 1) d",
                vec![],
            )
            .await;
            assert_eq!(dup, 0, "two RUNNING runs of one integration");
            samples += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples
    });
    for round in 0..3 {
        for id in ids.iter().skip(round * 50).take(50) {
            let _ = app
                .client
                .post(&format!("/api/integrations/{id}/sync"), &json!({}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let samples = sampler.await.expect("sampler");
    assert!(samples > 50, "only {samples} samples");
    // Finished runs of one integration never overlap in time.
    let overlaps = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs a JOIN sync_logs b ON a.integration_id = b.integration_id AND a.id < b.id \
         WHERE a.completed_at IS NOT NULL AND b.completed_at IS NOT NULL \
         AND a.started_at < b.completed_at AND b.started_at < a.completed_at",
        vec![],
    )
    .await;
    assert_eq!(overlaps, 0, "overlapping runs");
    // Ten triggers during one run: exactly one follow-up run.
    eventually(Duration::from_secs(10), "follow-up finished", || async {
        let rs = runs(&env.db, slow).await;
        (rs.len() == 2 && rs.iter().all(|r| r.status == "SUCCESS")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let rs = runs(&env.db, slow).await;
    assert_eq!(
        rs.len(),
        2,
        "ten coalesced triggers must make one follow-up"
    );
    assert_eq!(rs[1].trigger, "manual");
    let total = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE status = 'SUCCESS'",
        vec![],
    )
    .await;
    eprintln!("no-overlap: {samples} samples, {total} successful runs, 0 overlaps");
    drop(workers);
    app.stop().await;
}

/// A claim whose lease was taken over cannot finish: its outcome, records and the
/// integration state it would write are all refused by the fence.
#[tokio::test]
async fn a_stale_claim_cannot_finish() {
    use syncfleet_worker::connectors::SourceRecord;
    use syncfleet_worker::protocol::claim::claim;
    use syncfleet_worker::protocol::finish::{Finished, Guard, RunReport, finish};
    use syncfleet_worker::protocol::policy::Outcome;
    use syncfleet_worker::protocol::trigger::{Triggered, trigger};
    let Some(env) = test_env().await else { return };
    let id = insert_due(&env.db, 1, None).await[0];
    let Triggered::Created(run) = trigger(&env.db, id, entity::Trigger::Manual).await.unwrap()
    else {
        panic!("no run")
    };
    let a = claim(&env.db, run, "worker-a", Duration::from_millis(50))
        .await
        .unwrap()
        .expect("a claims");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let b = claim(&env.db, run, "worker-b", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("b reclaims");
    assert_eq!((a.fence.fence, b.fence.fence), (1, 2));
    let policy = RetryPolicy::default();
    let done = finish(
        &env.db,
        policy,
        b.fence,
        Outcome::Success,
        RunReport::default(),
        Guard::Owner,
    )
    .await
    .unwrap();
    assert!(matches!(done, Finished::Applied { .. }));
    // The zombie tries to finish with a failure and with records.
    let rec = vec![SourceRecord::new("zombie", &json!({ "x": 1 }))];
    let plan = syncfleet_worker::store::plan(&env.db, id, rec, true)
        .await
        .unwrap();
    let report = RunReport {
        plan,
        error_message: Some("late".into()),
        watermark: Some("w".into()),
        delete_all: false,
    };
    let stale = finish(
        &env.db,
        policy,
        a.fence,
        Outcome::Failure(entity::ErrorClass::Transient),
        report,
        Guard::Owner,
    )
    .await
    .unwrap();
    assert_eq!(stale, Finished::Stale);
    let r = &runs(&env.db, id).await[0];
    assert_eq!(
        (r.status.as_str(), r.fence, r.worker_id.as_deref()),
        ("SUCCESS", 2, Some("worker-b"))
    );
    assert_eq!(state(&env.db, id).await, (true, "healthy".to_owned(), 0));
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1",
            vec![id.into()]
        )
        .await,
        0
    );
}

/// The batched lifecycle (PostgreSQL group commit) keeps the fence per run: in one
/// batch a stale claim is refused while a live one lands, and a full sync that returned
/// nothing soft-deletes the stored records of its own integration only.
#[tokio::test]
async fn a_batched_finish_refuses_stale_claims_run_by_run() {
    use syncfleet_worker::protocol::batch::{FinishReq, claim_many, finish_many};
    use syncfleet_worker::protocol::claim::claim;
    use syncfleet_worker::protocol::finish::{Finished, RunReport};
    use syncfleet_worker::protocol::policy::Outcome;
    use syncfleet_worker::protocol::trigger::{Triggered, trigger};
    let Some(env) = test_env().await else { return };
    let ids = insert_due(&env.db, 2, None).await;
    let mut runs_of = Vec::new();
    for id in &ids {
        let Triggered::Created(run) = trigger(&env.db, *id, entity::Trigger::Manual)
            .await
            .unwrap()
        else {
            panic!("no run")
        };
        runs_of.push(run);
        // Each integration holds one stored record.
        q::exec(
            &env.db,
            "INSERT INTO records (integration_id, external_id, data, content_hash, version, synced_at) \
             VALUES ($1, 'r1', '{}'::jsonb, 'h', 1, now())",
            [(*id).into()],
        )
        .await
        .unwrap();
    }
    let claimed = claim_many(&env.db, "worker-a", &runs_of, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // A second batch claim of the same live runs finds nothing (duplicate delivery).
    let again = claim_many(&env.db, "worker-x", &runs_of, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(again.is_empty());
    let a0 = claimed[&runs_of[0]].clone();
    let a1 = claimed[&runs_of[1]].clone();
    assert!(
        matches!(a0.source, Some(Some(_))),
        "the claim reads its integration"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    // Run 0's lease expires and worker-b takes it over; run 1 is renewed by its owner.
    let b0 = claim(&env.db, runs_of[0], "worker-b", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("b reclaims");
    assert_eq!(b0.fence.fence, 2);
    let full_empty = || RunReport {
        delete_all: true,
        ..RunReport::default()
    };
    let out = finish_many(
        &env.db,
        RetryPolicy::default(),
        &[
            FinishReq {
                fence: a0.fence,
                outcome: Outcome::Success,
                report: full_empty(),
            },
            FinishReq {
                fence: a1.fence,
                outcome: Outcome::Success,
                report: full_empty(),
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(out[0], Finished::Stale);
    assert!(
        matches!(out[1], Finished::Applied { counts, .. } if counts.deleted == 1),
        "{:?}",
        out[1]
    );
    let r0 = &runs(&env.db, ids[0]).await[0];
    assert_eq!(
        (r0.status.as_str(), r0.fence, r0.worker_id.as_deref()),
        ("RUNNING", 2, Some("worker-b"))
    );
    assert_eq!(runs(&env.db, ids[1]).await[0].status, "SUCCESS");
    assert_eq!(
        count(
            &env.db,
            "SELECT records_deleted FROM sync_logs WHERE integration_id = $1",
            vec![ids[1].into()]
        )
        .await,
        1
    );
    let live = |id: uuid::Uuid| {
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND deleted_at IS NULL",
            vec![id.into()],
        )
    };
    assert_eq!(live(ids[0]).await, 1, "the stale claim deleted nothing");
    assert_eq!(live(ids[1]).await, 0);

    // The stale and the live claim of one run in the same batch: only the live one lands.
    let out = finish_many(
        &env.db,
        RetryPolicy::default(),
        &[
            FinishReq {
                fence: a0.fence,
                outcome: Outcome::Failure(entity::ErrorClass::Transient),
                report: RunReport::default(),
            },
            FinishReq {
                fence: b0.fence,
                outcome: Outcome::Success,
                report: full_empty(),
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(out[0], Finished::Stale);
    assert!(matches!(out[1], Finished::Applied { .. }), "{:?}", out[1]);
    let r0 = &runs(&env.db, ids[0]).await[0];
    assert_eq!(
        (r0.status.as_str(), r0.fence, r0.worker_id.as_deref()),
        ("SUCCESS", 2, Some("worker-b"))
    );
    assert_eq!(
        state(&env.db, ids[0]).await,
        (true, "healthy".to_owned(), 0)
    );
}

/// Records-bearing runs finish in one batch too (their upserts share statements), and
/// the fence still decides run by run: a stale claim's records, outcome and integration
/// state are refused while the live runs beside it land theirs. Runs on both databases.
#[tokio::test]
async fn a_batched_finish_of_records_refuses_a_stale_claims_records() {
    use syncfleet_worker::connectors::SourceRecord;
    use syncfleet_worker::protocol::batch::{FinishReq, claim_many, finish_many};
    use syncfleet_worker::protocol::claim::claim;
    use syncfleet_worker::protocol::finish::{Finished, RunReport};
    use syncfleet_worker::protocol::policy::Outcome;
    use syncfleet_worker::protocol::trigger::{Triggered, trigger};
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = sea_orm::Database::connect(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("b.db").display()
    ))
    .await
    .expect("sqlite");
    <migration::Migrator as migration::MigratorTrait>::up(&sqlite, None)
        .await
        .expect("migrate");
    let pg = test_env().await;
    let mut dbs = vec![sqlite];
    if let Some(env) = &pg {
        dbs.push(env.db.clone());
    }
    for db in &dbs {
        let ids = insert_due(db, 3, None).await;
        let mut run_ids = Vec::new();
        for id in &ids {
            let Triggered::Created(run) = trigger(db, *id, entity::Trigger::Manual).await.unwrap()
            else {
                panic!("no run")
            };
            run_ids.push(run);
        }
        let claimed = claim_many(db, "worker-a", &run_ids, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 3);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Run 1's lease expires and worker-b takes it over: worker-a's claim is stale.
        let b1 = claim(db, run_ids[1], "worker-b", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("b reclaims");
        let mut reqs = Vec::new();
        for (n, (id, run)) in ids.iter().zip(&run_ids).enumerate() {
            let recs: Vec<SourceRecord> = (0..100)
                .map(|k| SourceRecord::new(format!("r{k}"), &json!({ "run": n, "k": k })))
                .collect();
            let plan = syncfleet_worker::store::plan(db, *id, recs, true)
                .await
                .unwrap();
            reqs.push(FinishReq {
                fence: claimed[run].fence,
                outcome: Outcome::Success,
                report: RunReport {
                    plan,
                    watermark: Some(format!("w{n}")),
                    ..RunReport::default()
                },
            });
        }
        let out = finish_many(db, RetryPolicy::default(), &reqs)
            .await
            .unwrap();
        assert_eq!(out[1], Finished::Stale, "the stale claim is refused");
        for k in [0, 2] {
            assert!(
                matches!(out[k], Finished::Applied { counts, .. } if counts.inserted == 100),
                "{:?}",
                out[k]
            );
        }
        let stored = |id: uuid::Uuid| {
            count(
                db,
                "SELECT COUNT(*) FROM records WHERE integration_id = $1",
                vec![id.into()],
            )
        };
        assert_eq!(stored(ids[0]).await, 100);
        assert_eq!(
            stored(ids[1]).await,
            0,
            "no record of the stale claim landed"
        );
        assert_eq!(stored(ids[2]).await, 100);
        let r1 = &runs(db, ids[1]).await[0];
        assert_eq!(
            (r1.status.as_str(), r1.fence, r1.worker_id.as_deref()),
            ("RUNNING", b1.fence.fence, Some("worker-b"))
        );
        for k in [0, 2] {
            assert_eq!(runs(db, ids[k]).await[0].status, "SUCCESS");
            assert_eq!(
                count(
                    db,
                    "SELECT records_inserted FROM sync_logs WHERE integration_id = $1",
                    vec![ids[k].into()]
                )
                .await,
                100
            );
        }
        // The live claim of run 1 finishes later with its own records.
        let recs = vec![SourceRecord::new("only", &json!({ "b": true }))];
        let plan = syncfleet_worker::store::plan(db, ids[1], recs, true)
            .await
            .unwrap();
        let out = finish_many(
            db,
            RetryPolicy::default(),
            &[FinishReq {
                fence: b1.fence,
                outcome: Outcome::Success,
                report: RunReport {
                    plan,
                    ..RunReport::default()
                },
            }],
        )
        .await
        .unwrap();
        assert!(matches!(out[0], Finished::Applied { .. }));
        assert_eq!(stored(ids[1]).await, 1);
    }
}
