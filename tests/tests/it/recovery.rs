//! Recovery under ordinary faults: a run whose future is dropped, a writer frozen while it
//! holds row locks, a long worker outage, a database that hangs. Each of these once
//! stopped syncing for good or stalled everyone's recovery.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::json;
use syncfleet_worker::db as q;
use syncfleet_worker::protocol::policy::RetryPolicy;
use syncfleet_worker::protocol::reaper;
use tests::env::test_env;
use tests::proxy::Proxy;
use uuid::Uuid;

use crate::protocol::{insert_due, runs};
use crate::util::{count, eventually};

/// A queue worker rebuilt (or a task aborted) mid-run drops the run's future: its lease
/// stops being renewed with it and the claim goes back to PENDING at once, so another
/// worker runs it. (The renewer was a detached task that renewed for ever.)
#[tokio::test]
async fn a_dropped_run_stops_renewing_and_is_released() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (_stop, worker) = env.spawn_worker(&[]);
    let id = app
        .client
        .create("slow", "synthetic", json!({ "latencyMs": 6000 }), None)
        .await;
    eventually(Duration::from_secs(10), "run RUNNING", || async {
        (runs(&env.db, id).await.first()?.status == "RUNNING").then_some(())
    })
    .await;
    worker.abort();
    let _ = worker.await;
    let dropped = Instant::now();
    eventually(
        Duration::from_secs(2),
        "run released to PENDING",
        || async {
            let r = runs(&env.db, id).await;
            (r.first()?.status == "PENDING").then_some(())
        },
    )
    .await;
    eprintln!(
        "dropped run released in {} ms",
        dropped.elapsed().as_millis()
    );
    let (_stop2, w2) = env.spawn_worker(&[]);
    eventually(
        Duration::from_secs(20),
        "run finished by another worker",
        || async { (runs(&env.db, id).await.first()?.status == "SUCCESS").then_some(()) },
    )
    .await;
    let rs = runs(&env.db, id).await;
    assert_eq!((rs.len(), rs[0].claims), (1, 2));
    w2.abort();
    app.stop().await;
}

async fn insert_running(db: &impl ConnectionTrait, integration: Uuid, solo_claims: i32) -> Uuid {
    let id = Uuid::now_v7();
    q::exec(
        db,
        "INSERT INTO live_runs (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, \
         solo_claims, lease_owner, lease_until, started_at, created_at) VALUES ($1, $2, 'RUNNING', 'schedule', \
         now(), 1, $3 + 1, $3 + 1, $3, 'gone-worker', now() - interval '1 second', now(), now())",
        [id.into(), integration.into(), solo_claims.into()],
    )
    .await
    .expect("insert running run");
    q::exec(
        db,
        "UPDATE integrations SET next_sync_at = NULL WHERE id = $1",
        [integration.into()],
    )
    .await
    .expect("clear slot");
    id
}

/// A writer frozen inside its finish holds its integration's and its run's row locks.
/// A recovery pass skips what it holds instead of waiting behind it: the other expired
/// run is requeued and the other poison run quarantined, in one prompt pass.
#[tokio::test]
async fn recovery_skips_rows_a_frozen_writer_holds() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("the requeued run waits for a worker that this test does not start");
    let ids = insert_due(&env.db, 3, Some(60)).await;
    let (frozen, other, poison) = (ids[0], ids[1], ids[2]);
    let frozen_run = insert_running(&env.db, frozen, 3).await;
    let other_run = insert_running(&env.db, other, 0).await;
    let poison_run = insert_running(&env.db, poison, 3).await;
    let holder = Database::connect(&env.db_url).await.expect("connect");
    let txn = holder.begin().await.expect("begin");
    q::query(
        &txn,
        "SELECT id FROM integrations WHERE id = $1 FOR UPDATE",
        [frozen.into()],
    )
    .await
    .expect("lock integration");
    q::exec(
        &txn,
        "UPDATE live_runs SET worker_id = worker_id WHERE id = $1",
        [frozen_run.into()],
    )
    .await
    .expect("lock run");
    let policy = RetryPolicy::default();
    let began = Instant::now();
    let pass = tokio::time::timeout(
        Duration::from_secs(5),
        reaper::pass(&env.db, policy, 3, Duration::from_secs(60), 100),
    )
    .await
    .expect("the recovery pass waited behind the frozen writer");
    eprintln!(
        "recovery pass beside a frozen writer: {} ms",
        began.elapsed().as_millis()
    );
    assert_eq!(pass.requeued, vec![other_run]);
    assert_eq!(pass.quarantined, 1);
    let status = |run: Uuid| {
        let db = env.db.clone();
        async move {
            q::query(
                &db,
                "SELECT status FROM sync_logs WHERE id = $1",
                [run.into()],
            )
            .await
            .expect("status")[0]
                .try_get::<String>("", "status")
                .expect("status")
        }
    };
    assert_eq!(status(poison_run).await, "FAILED");
    assert_eq!(
        status(frozen_run).await,
        "RUNNING",
        "held rows are left for a later pass"
    );
    txn.rollback().await.expect("rollback");
    let later = reaper::pass(&env.db, policy, 3, Duration::from_secs(60), 100).await;
    assert_eq!(later.quarantined, 1, "the freed run is recovered next pass");
    assert_eq!(status(frozen_run).await, "FAILED");
}

/// Protocol sessions carry a lock timeout and an idle-in-transaction timeout below the
/// lease: a frozen process cannot hold its row locks past its lease.
#[tokio::test]
async fn protocol_sessions_cannot_idle_in_a_transaction_past_the_lease() {
    let Some(env) = test_env().await else { return };
    let pool = syncfleet_api::db::Pool::new("worker", 2).protocol(Duration::from_millis(1000));
    let db = syncfleet_api::db::connect(&env.db_url, pool)
        .await
        .expect("connect");
    let rows = q::query(
        &db,
        "SELECT current_setting('lock_timeout') AS l, current_setting('idle_in_transaction_session_timeout') AS i, \
         current_setting('application_name') AS a",
        [],
    )
    .await
    .expect("settings");
    let get = |c: &str| rows[0].try_get::<String>("", c).expect("setting");
    assert_eq!((get("l").as_str(), get("i").as_str()), ("250ms", "500ms"));
    assert!(get("a").starts_with("syncfleet-worker:"), "{}", get("a"));
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("SELECT 1")
        .await
        .expect("first statement");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        txn.execute_unprepared("SELECT 1").await.is_err(),
        "an idle transaction outlived the lease"
    );
}

/// Workers stopped for ten re-enqueue periods with 5,000 integrations due: the queue
/// keeps one entry per PENDING run throughout, and when workers return each integration
/// runs exactly once. (The re-enqueuer used to push a new entry per run every period
/// until apalis' fetch script could no longer unpack the due set: a permanent wedge.)
#[tokio::test]
async fn a_long_worker_outage_leaves_one_entry_per_run() {
    let Some(env) = test_env().await else { return };
    let n = 5000;
    let fast = [
        ("SYNCFLEET_REENQUEUE_AFTER_MS", "200"),
        ("SYNCFLEET_REAPER_PERIOD_MS", "100"),
        ("SYNCFLEET_MAX_QUEUE_DEPTH", "20000"),
    ];
    let app = env.spawn_app(&fast).await;
    insert_due(&env.db, n, Some(3600)).await;
    let queue = syncfleet_worker::Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .expect("queue");
    eventually(Duration::from_secs(30), "every run scheduled", || async {
        let p = count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status = 'PENDING'",
            vec![],
        )
        .await;
        (p == n as i64).then_some(())
    })
    .await;
    // Ten re-enqueue periods with nobody fetching.
    let mut max_depth = 0;
    let until = Instant::now() + Duration::from_millis(10 * 200 + 500);
    while Instant::now() < until {
        max_depth = max_depth.max(queue.depth().await.expect("depth"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        max_depth <= n as u64,
        "queue grew to {max_depth} entries for {n} runs"
    );
    let started = Instant::now();
    let (_s1, w1) = env.spawn_worker(&fast);
    let (_s2, w2) = env.spawn_worker(&fast);
    eventually(
        Duration::from_secs(120),
        "every integration synced",
        || async {
            let s = count(
                &env.db,
                "SELECT COUNT(*) FROM sync_logs WHERE status = 'SUCCESS'",
                vec![],
            )
            .await;
            (s == n as i64).then_some(())
        },
    )
    .await;
    let fresh_in = started.elapsed();
    // A run popped by a worker and not yet claimed has no entry, so a re-enqueue pass in
    // that instant pushes it again; the duplicate is consumed as a no-op delivery. A pass
    // that read its runs before they finished can land its push after they did, so the
    // API stops first (no pass after this) and the workers, still up, drain what it left.
    app.stop().await;
    eventually(Duration::from_secs(30), "the queue drained", || async {
        (queue.depth().await.ok()? == 0).then_some(())
    })
    .await;
    assert_eq!(
        count(&env.db, "SELECT COUNT(*) FROM sync_logs", vec![]).await,
        n as i64,
        "an integration ran more than once"
    );
    eprintln!(
        "herd: {n} runs, queue max {max_depth} entries during the outage, all fresh {} ms after workers returned",
        fresh_in.as_millis()
    );
    w1.abort();
    w2.abort();
}

/// With the database hanging (connections accepted, never answered), `/readyz` answers
/// 503 naming it within a second and API requests fail fast with 503
/// `database_unavailable`, not a 500 after the pool's 10 s acquire timeout.
#[tokio::test]
async fn a_hanging_database_is_reported_fast() {
    let Some(env) = test_env().await else { return };
    let url = url::Url::parse(&env.db_url).expect("db url");
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    let mut proxied = url.clone();
    proxied.set_port(Some(proxy.port)).expect("port");
    let proxied = proxied.to_string();
    let app = env.spawn_app(&[("DATABASE_URL", &proxied)]).await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let list = format!("{}/api/integrations", app.url);
    let auth = format!("Bearer {}", env.admin_token());
    let ok = http
        .get(&list)
        .header("authorization", &auth)
        .send()
        .await
        .expect("list");
    assert_eq!(ok.status(), 200);
    proxy.hang();
    let t = Instant::now();
    let ready = http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .expect("readyz");
    let ready_ms = t.elapsed().as_millis();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["database"], "unavailable", "{body}");
    assert!(ready_ms < 1000, "/readyz took {ready_ms} ms");
    let t = Instant::now();
    let failed = http
        .get(&list)
        .header("authorization", &auth)
        .send()
        .await
        .expect("list");
    let req_ms = t.elapsed().as_millis();
    assert_eq!(failed.status(), 503);
    let body: serde_json::Value = failed.json().await.expect("json");
    assert_eq!(body["code"], "database_unavailable", "{body}");
    assert!(req_ms < 2500, "the request took {req_ms} ms");
    eprintln!("database hanging: /readyz 503 in {ready_ms} ms, request 503 in {req_ms} ms");
    proxy.restore();
    eventually(Duration::from_secs(15), "ready again", || async {
        let r = http.get(format!("{}/readyz", app.url)).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    app.stop().await;
}

/// A run that panics fails as `internal` under its fence, once, and counts towards the
/// integration's retries; the worker keeps serving (it used to loop through release and
/// reclaim until a backstop quarantined it).
#[tokio::test]
async fn a_panicking_run_fails_as_internal() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let (stop, worker) = env.spawn_worker(&[]);
    let id = app
        .client
        .create("bug", "synthetic", json!({ "panic": true }), None)
        .await;
    let healthy = app.client.create("ok", "synthetic", json!({}), None).await;
    eventually(
        Duration::from_secs(15),
        "the panicking run failed",
        || async { (runs(&env.db, id).await.first()?.status == "FAILED").then_some(()) },
    )
    .await;
    let rs = runs(&env.db, id).await;
    // Claimed once on a quiet machine. Under the suite's load a finish can stall past the
    // short lease's idle-in-transaction timeout; the run is then reaped and claimed again
    // (fenced), which is recovery working, not the panic being retried.
    assert_eq!(rs[0].error_class.as_deref(), Some("internal"));
    assert!((1..=2).contains(&rs[0].claims), "claims {}", rs[0].claims);
    eventually(
        Duration::from_secs(15),
        "the other integration synced",
        || async { (runs(&env.db, healthy).await.first()?.status == "SUCCESS").then_some(()) },
    )
    .await;
    let (_, _, retry_count) = crate::protocol::state(&env.db, id).await;
    assert_eq!(retry_count, 1);
    // The failed integration's retry is scheduled; pause it so the test ends clean.
    let (s, _) = app
        .client
        .post(&format!("/api/integrations/{id}/pause"), &json!({}))
        .await;
    assert!(s.is_success());
    stop.cancel();
    let _ = worker.await;
    app.stop().await;
}
