//! Fault tests with real processes: a killed worker, a frozen (zombie) worker, a run
//! that kills every worker, a Redis restart. They only signal processes they started.

use std::time::{Duration, Instant};

use serde_json::json;
use syncfleet_worker::db as q;
use tests::env::{skip_or_fail, test_env};
use tests::procs::{self, RedisServer};

use crate::protocol::{runs, state};
use crate::util::{count, eventually};

/// `kill -9` a worker mid-run: the run is reclaimed after the lease and finishes once.
#[tokio::test]
async fn killed_worker_run_is_reclaimed_and_finishes_once() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let vars = env.vars(&[]);
    let mut a = procs::syncfleet("worker", &vars);
    let id = app
        .client
        .create(
            "slow",
            "synthetic",
            json!({ "latencyMs": 2500, "records": 4 }),
            None,
        )
        .await;
    let owner_a = eventually(
        Duration::from_secs(15),
        "run RUNNING on worker A",
        || async {
            runs(&env.db, id)
                .await
                .first()
                .filter(|r| r.status == "RUNNING")
                .and_then(|r| r.worker_id.clone())
        },
    )
    .await;
    a.signal("KILL");
    let _ = a.child.wait();
    let killed_at = Instant::now();
    let _b = procs::syncfleet("worker", &vars);
    eventually(
        Duration::from_secs(20),
        "run finished elsewhere",
        || async { (runs(&env.db, id).await.first()?.status == "SUCCESS").then_some(()) },
    )
    .await;
    let recovered_in = killed_at.elapsed();
    let rs = runs(&env.db, id).await;
    assert_eq!(rs.len(), 1, "finished once");
    assert_eq!(rs[0].claims, 2, "one crash recovery");
    assert_ne!(rs[0].worker_id.as_deref(), Some(owner_a.as_str()));
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1",
            vec![id.into()]
        )
        .await,
        4
    );
    // lease 1.5 s + reaper 0.25 s: nothing may stay RUNNING past that.
    tokio::time::sleep(Duration::from_millis(1750)).await;
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status = 'RUNNING'",
            vec![]
        )
        .await,
        0
    );
    eprintln!(
        "crash: 1 kill, 1 reclaim, recovered in {} ms",
        recovered_in.as_millis()
    );
    app.stop().await;
}

/// A counter from a worker process's `/metrics`.
async fn worker_counter(port: u16, name: &str) -> u64 {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok();
    let Some(body) = body else { return 0 };
    let text = body.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `SIGSTOP` a worker past its lease, let another finish the run, `SIGCONT`: every
/// write of the stale worker is rejected by the fence.
#[tokio::test]
async fn zombie_worker_writes_are_fenced_off() {
    let Some(env) = test_env().await else { return };
    let app = env.spawn_app(&[]).await;
    let port_a = procs::free_port();
    let a = procs::syncfleet(
        "worker",
        &env.vars(&[("SYNCFLEET_WORKER_LISTEN", &format!("127.0.0.1:{port_a}"))]),
    );
    let id = app
        .client
        .create(
            "zombie",
            "synthetic",
            json!({ "latencyMs": 2000, "records": 3 }),
            None,
        )
        .await;
    let owner_a = eventually(Duration::from_secs(15), "run RUNNING on A", || async {
        runs(&env.db, id)
            .await
            .first()
            .filter(|r| r.status == "RUNNING")
            .and_then(|r| r.worker_id.clone())
    })
    .await;
    a.signal("STOP");
    let b = procs::syncfleet("worker", &env.vars(&[]));
    eventually(Duration::from_secs(20), "B finished the run", || async {
        (runs(&env.db, id).await.first()?.status == "SUCCESS").then_some(())
    })
    .await;
    let before = runs(&env.db, id).await;
    let records_before = count(
        &env.db,
        "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND version = 1",
        vec![id.into()],
    )
    .await;
    a.signal("CONT");
    // A wakes up: its renewal or its finish must be refused; give it time to try.
    let rejected = eventually(
        Duration::from_secs(10),
        "A's stale write rejected",
        || async {
            let n = worker_counter(port_a, "syncfleet_stale_finishes_total").await;
            (n >= 1).then_some(n)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = runs(&env.db, id).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].status, "SUCCESS");
    assert_ne!(
        after[0].worker_id.as_deref(),
        Some(owner_a.as_str()),
        "the zombie's finish landed"
    );
    assert_eq!(after[0].fence, before[0].fence);
    assert_eq!(after[0].completed_at, before[0].completed_at);
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM records WHERE integration_id = $1 AND version = 1",
            vec![id.into()]
        )
        .await,
        records_before
    );
    eprintln!(
        "zombie: {rejected} stale write(s) rejected, fence {}",
        after[0].fence
    );
    drop(b);
    drop(a);
    app.stop().await;
}

/// A run that aborts its worker process every time is quarantined after it killed its
/// worker `max_claims` times running alone (and the integration disabled after its
/// retries); the 50 healthy integrations that shared those processes keep running and
/// none of their runs is ever quarantined.
#[tokio::test]
async fn poison_run_is_quarantined_and_its_neighbours_are_not() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("interval integrations keep being scheduled until the fleet stops");
    let app = env.spawn_app(&[]).await;
    let vars = env.vars(&[]);
    let mut neighbours = Vec::new();
    for i in 0..50 {
        neighbours.push(
            app.client
                .create(
                    &format!("healthy{i}"),
                    "synthetic",
                    json!({ "latencyMs": 200 }),
                    Some(1),
                )
                .await,
        );
    }
    let healthy = neighbours[0];
    let poison = app
        .client
        .create("poison", "synthetic", json!({ "crashProcess": true }), None)
        .await;
    // Two workers, each replaced as soon as it dies (what a supervisor would do).
    let mut workers = vec![
        procs::syncfleet("worker", &vars),
        procs::syncfleet("worker", &vars),
    ];
    let mut crashes = 0;
    let mut healthy_after_disable = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let successes = runs(&env.db, healthy)
            .await
            .iter()
            .filter(|r| r.status == "SUCCESS")
            .count();
        if state(&env.db, poison).await.1 == "disabled" {
            let base = *healthy_after_disable.get_or_insert(successes);
            if successes >= base + 2 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "poison not disabled, or the fleet stopped serving others"
        );
        for w in &mut workers {
            if let Ok(Some(_)) = w.child.try_wait() {
                crashes += 1;
                *w = procs::syncfleet("worker", &vars);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rs = runs(&env.db, poison).await;
    assert_eq!(rs.len(), 3, "max_retries runs");
    for r in &rs {
        assert_eq!(
            (r.status.as_str(), r.error_class.as_deref()),
            ("FAILED", Some("worker_lost"))
        );
    }
    // The first run is lost twice beside others, then its three solo claims die; the
    // integration stays a suspect, so its retries run alone from their first claim.
    // (A claim that stepped aside from a suspect's process is given back uncounted.)
    let claims: Vec<i32> = rs.iter().map(|r| r.claims).collect();
    assert_eq!(claims, [5, 3, 3], "claims per run");
    assert_eq!(
        crashes, 11,
        "every claim of the poison runs killed its worker"
    );
    let blamed = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE integration_id <> $1 AND error_class = 'worker_lost'",
        vec![poison.into()],
    )
    .await;
    assert_eq!(
        blamed, 0,
        "a healthy run was quarantined beside the poison run"
    );
    let shared = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE integration_id <> $1 AND claims > 1",
        vec![poison.into()],
    )
    .await;
    let ok = runs(&env.db, healthy)
        .await
        .iter()
        .filter(|r| r.status == "SUCCESS")
        .count();
    eprintln!(
        "poison: {crashes} worker crashes, 3 runs quarantined after {claims:?} claims, then disabled; {shared} healthy runs lost a worker beside it, 0 quarantined; healthy had {ok} successes"
    );
    drop(workers);
    app.stop().await;
}

/// `SHUTDOWN NOSAVE` Redis with runs of 3 s in flight and start it again empty: the runs
/// in flight finish (nothing stays RUNNING from before), the workers are not rebuilt, and
/// every integration syncs again.
#[tokio::test]
async fn redis_restart_with_runs_in_flight_recovers() {
    let Some(mut env) = test_env().await else {
        return;
    };
    env.leaves_work("interval integrations keep being scheduled until the fleet stops");
    let Some(mut redis) = RedisServer::start() else {
        skip_or_fail("redis-server (binary)");
        return;
    };
    env.redis_url = redis.url();
    let app = env.spawn_app(&[]).await;
    let vars = env.vars(&[]);
    let port = procs::free_port();
    let _w1 = procs::syncfleet(
        "worker",
        &env.vars(&[("SYNCFLEET_WORKER_LISTEN", &format!("127.0.0.1:{port}"))]),
    );
    let _w2 = procs::syncfleet("worker", &vars);
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            app.client
                .create(
                    &format!("r{i}"),
                    "synthetic",
                    json!({ "latencyMs": 3000 }),
                    Some(1),
                )
                .await,
        );
    }
    let in_flight = eventually(Duration::from_secs(20), "runs in flight", || async {
        let n = count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status = 'RUNNING'",
            vec![],
        )
        .await;
        (n >= 20).then_some(n)
    })
    .await;
    let mut c = env.redis().await;
    let _: Result<(), _> = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async(&mut c)
        .await;
    let down_at = q::query(&env.db, "SELECT now() AS t", [])
        .await
        .expect("now")[0]
        .try_get::<chrono::DateTime<chrono::Utc>>("", "t")
        .expect("t");
    tokio::time::sleep(Duration::from_millis(4000)).await;
    redis.restart();
    let restarted = Instant::now();
    let marker = q::query(&env.db, "SELECT now() AS t", [])
        .await
        .expect("now")[0]
        .try_get::<chrono::DateTime<chrono::Utc>>("", "t")
        .expect("t");
    eventually(Duration::from_secs(30), "every integration synced after the restart", || async {
        let n = count(
            &env.db,
            "SELECT COUNT(DISTINCT integration_id) FROM sync_logs WHERE status = 'SUCCESS' AND started_at > $1",
            vec![marker.into()],
        )
        .await;
        (n == 30).then_some(())
    })
    .await;
    let recovery = restarted.elapsed();
    // Every run in flight at the shutdown finished: none is RUNNING from before.
    assert_eq!(
        count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status = 'RUNNING' AND started_at < $1",
            vec![down_at.into()],
        )
        .await,
        0,
        "runs in flight at the shutdown stranded RUNNING"
    );
    // Nothing scheduled before the restart is left behind.
    eventually(Duration::from_secs(15), "no stranded runs", || async {
        let n = count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status IN ('PENDING', 'RUNNING') AND created_at < $1",
            vec![marker.into()],
        )
        .await;
        (n == 0).then_some(())
    })
    .await;
    // Regression (apalis-redis ended a worker's stream on any Redis error, dropping the
    // runs it drove): the worker rode the outage out without being rebuilt.
    let restarts = worker_counter(port, "syncfleet_worker_restarts_total").await;
    assert_eq!(restarts, 0, "the worker was rebuilt by a Redis restart");
    eprintln!(
        "redis restart: {in_flight} runs of 3 s in flight, Redis down 4 s; all 30 integrations synced again {} ms after it came back, 0 stranded; worker restarts {restarts}",
        recovery.as_millis()
    );
    app.stop().await;
}

/// Workers whose clocks run 300 s behind and ahead keep their registration and their
/// share of the work: nothing in the fleet's liveness uses a process's own clock (the
/// queue stamps heartbeats with Redis `TIME`, the protocol uses the database clock).
#[tokio::test]
async fn clock_skewed_workers_keep_their_share() {
    let Some(env) = test_env().await else { return };
    env.leaves_work("interval integrations keep being scheduled until the fleet stops");
    let Some(lib) = procs::libfaketime() else {
        skip_or_fail("libfaketime (Debian package `faketime`)");
        return;
    };
    let lib = lib.display().to_string();
    let app = env.spawn_app(&[]).await;
    let mut workers = Vec::new();
    for skew in ["+0s", "-300s", "+300s"] {
        let port = procs::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut vars = env.vars(&[("SYNCFLEET_WORKER_LISTEN", &listen)]);
        if skew != "+0s" {
            vars.insert("LD_PRELOAD".into(), lib.clone());
            vars.insert("FAKETIME".into(), skew.into());
            // Skew the wall clock only; timers run on the real monotonic clock.
            vars.insert("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into());
        }
        let p = procs::syncfleet("worker", &vars);
        workers.push((skew, port, p));
    }
    for i in 0..30 {
        app.client
            .create(
                &format!("s{i}"),
                "synthetic",
                json!({ "latencyMs": 50 }),
                Some(1),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mut share = Vec::new();
    for (skew, port, p) in &workers {
        let runs = count(
            &env.db,
            "SELECT COUNT(*) FROM sync_logs WHERE status = 'SUCCESS' AND worker_id LIKE $1",
            vec![format!("%-{}-%", p.pid()).into()],
        )
        .await;
        let restarts = worker_counter(*port, "syncfleet_worker_restarts_total").await;
        share.push((*skew, runs, restarts));
    }
    eprintln!("clock skew (skew, successful runs, worker restarts): {share:?}");
    let normal = share[0].1;
    assert!(normal > 0, "the normal worker ran nothing");
    for (skew, runs, restarts) in &share {
        assert_eq!(*restarts, 0, "worker at {skew} was restarted");
        assert!(
            *runs * 4 >= normal,
            "worker at {skew} ran {runs} runs against {normal} for the normal one"
        );
    }
    let stolen = count(
        &env.db,
        "SELECT COUNT(*) FROM sync_logs WHERE claims > 1",
        vec![],
    )
    .await;
    assert_eq!(stolen, 0, "a lease was stolen (no worker was killed)");
    let queue = syncfleet_worker::Queue::redis(&env.redis_url, &env.prefix, Duration::from_secs(5))
        .await
        .expect("queue");
    assert_eq!(queue.workers_alive().await.expect("alive"), 3);
    drop(workers);
    app.stop().await;
}
