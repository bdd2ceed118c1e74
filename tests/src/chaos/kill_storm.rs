//! `kill-storm`: `kill -9` workers (and now and then an api) over and over while many
//! short runs go on, restarting each victim like a supervisor would.
//!
//! A kill is the one fault every deployment sees daily; the protocol promises that it
//! costs a reclaim and nothing else. A ledger of every kill (and the runs its victim
//! held) explains every extra claim: a claim that no kill explains is a stolen lease.

use std::time::{Duration, Instant};

use rand::Rng;

use super::harness::{self, Ctx, LEASE_MS, REAPER_MS, REENQUEUE_MS};
use super::report::{Report, secs};

struct Kill {
    role: &'static str,
    /// RUNNING runs the victim held when it died.
    held: i64,
}

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("kill-storm");
    let n = ctx.n(60, 200);
    let storm = ctx.phase(30, 120);
    let mut f = ctx.fleet("kill-storm", &[]).await;
    f.add_api(&[]).await;
    f.add_api(&[]).await;
    for i in 0..3 {
        f.add_worker(&format!("ks{i}"), &[]).await;
    }
    // Runs of 100–500 ms, 1–5 records each, every second.
    f.seed_group(
        "ks",
        n,
        1,
        "jsonb_build_object('records', 1 + g % 5, 'latencyMs', 100 + (g * 37) % 400)",
        "t0 + (g % 10) * interval '100 milliseconds'",
        "NULL",
    )
    .await;
    let double = harness::sample_sql_max(
        f.db.clone(),
        "SELECT count(*) AS n FROM (SELECT integration_id FROM sync_logs WHERE status = 'RUNNING' \
         GROUP BY integration_id HAVING count(*) > 1) x"
            .into(),
        Duration::from_millis(200),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut ledger: Vec<Kill> = Vec::new();
    let end = Instant::now() + storm;
    while Instant::now() < end {
        let (pause, api, dead_for) = {
            let mut rng = rand::rng();
            (
                rng.random_range(700..2000u64),
                rng.random_bool(0.2),
                rng.random_range(0..1000u64),
            )
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let (role, idx) = if api {
            ("api", rand::rng().random_range(0..f.apis.len()))
        } else {
            ("worker", rand::rng().random_range(0..f.workers.len()))
        };
        let victim = if api {
            &mut f.apis[idx]
        } else {
            &mut f.workers[idx]
        };
        victim.proc.signal("KILL");
        let _ = victim.proc.child.wait();
        // Read after the kill, once a statement the victim had in flight has committed or
        // failed (its server session ends it): a dead worker claims nothing more, and its
        // leases (renewed every third of one) outlive this wait by far.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = harness::try_n(
            &f,
            &format!(
                "SELECT count(*) AS n FROM sync_logs WHERE status = 'RUNNING' AND lease_owner LIKE '{}'",
                victim_like(&f, role, idx)
            ),
        )
        .await
        .unwrap_or(0);
        ledger.push(Kill { role, held });
        tokio::time::sleep(Duration::from_millis(dead_for)).await;
        if api {
            let m = f.respawn(&f.apis[idx]);
            f.apis[idx] = m;
        } else {
            let m = f.respawn(&f.workers[idx]);
            f.workers[idx] = m;
        }
    }
    let storm_end = harness::db_now(&f.db).await.expect("database clock");
    let mut ready = 0;
    for m in f.apis.iter().chain(f.workers.iter()) {
        let path = if m.role == "api" {
            "/readyz"
        } else {
            "/metrics"
        };
        if crate::fleet::wait_http(m.port, path, Duration::from_secs(20)).await {
            ready += 1;
        }
    }

    // A run killed mid-flight waits out its lease, then a reaper pass, a push and its own
    // latency; PENDING ones at most a re-enqueue period.
    let bound = Duration::from_millis(LEASE_MS + 2 * REAPER_MS + REENQUEUE_MS + 500 + 3000);
    let stuck_sql = format!(
        "SELECT count(*) AS n FROM sync_logs WHERE status IN ('PENDING', 'RUNNING') AND created_at < {}",
        harness::lit(storm_end)
    );
    let settled = Instant::now();
    let mut recovered = harness::poll(bound, Duration::from_millis(100), || async {
        harness::try_n(&f, &stuck_sql).await.filter(|&n| n == 0)
    })
    .await
    .map(|(_, d)| d);
    let stuck = harness::try_n(&f, &stuck_sql).await.unwrap_or(-1);
    // Past the bound, keep watching a while: late is a different finding from never.
    let waited = Duration::from_secs(60);
    if recovered.is_none() {
        recovered = harness::poll(
            waited.saturating_sub(settled.elapsed()),
            Duration::from_millis(250),
            || async { harness::try_n(&f, &stuck_sql).await.filter(|&n| n == 0) },
        )
        .await
        .map(|_| settled.elapsed());
    }
    let (max_double, samples) = double.stop().await;

    let worker_kills = ledger.iter().filter(|k| k.role == "worker").count();
    let api_kills = ledger.len() - worker_kills;
    let held: i64 = ledger.iter().map(|k| k.held).sum();
    let reclaims = f
        .n("SELECT coalesce(sum(claims - 1), 0)::bigint AS n FROM sync_logs WHERE claims > 1")
        .await;
    let runs = f
        .n("SELECT count(*) AS n FROM sync_logs WHERE completed_at IS NOT NULL")
        .await;
    let quarantined = f
        .n("SELECT count(*) AS n FROM sync_logs WHERE error_class = 'worker_lost'")
        .await;
    // Every claim takes a new fence; a claim that stepped aside unexecuted (§4.13) is
    // given back uncounted, so `claims` never exceeds the fence and equals it unless
    // some claim stepped aside. Finished runs only: the fleet keeps scheduling, and a
    // run created a moment ago is rightly PENDING and unclaimed (claims 0).
    let fence_ne_claims = f
        .n(
            "SELECT count(*) AS n FROM run_history WHERE status <> 'CANCELLED' \
            AND (claims > fence OR claims < 1)",
        )
        .await;
    let never = f
        .n("SELECT count(*) AS n FROM integrations i WHERE NOT EXISTS \
            (SELECT 1 FROM sync_logs s WHERE s.integration_id = i.id AND s.status = 'SUCCESS')")
        .await;
    let wrong_records = f
        .n("SELECT count(*) AS n FROM integrations i WHERE \
              (SELECT count(*) FROM records x WHERE x.integration_id = i.id AND x.deleted_at IS NULL) \
              <> CASE WHEN EXISTS (SELECT 1 FROM sync_logs s WHERE s.integration_id = i.id AND s.status = 'SUCCESS') \
                 THEN (i.config->>'records')::bigint ELSE 0 END \
              OR EXISTS (SELECT 1 FROM records x WHERE x.integration_id = i.id AND x.deleted_at IS NOT NULL)")
        .await;

    r.check(
        "processes ready again after the storm",
        format!("{ready}/{}", f.apis.len() + f.workers.len()),
        "all",
        ready == f.apis.len() + f.workers.len(),
    );
    r.check(
        "integrations with two RUNNING runs, max over samples",
        format!("{max_double} ({samples} samples)"),
        "0",
        max_double == 0 && samples > 0,
    );
    r.within_waited(
        "runs created before the storm ended still PENDING/RUNNING → 0",
        recovered,
        bound,
        waited,
    );
    r.at_most("stuck PENDING/RUNNING after the recovery bound", stuck, 0);
    r.check(
        "integrations whose live records ≠ their synthetic `records` (or soft-deleted)",
        wrong_records,
        "0",
        wrong_records == 0,
    );
    r.at_most("integrations never synced", never, 0);
    r.at_most("runs with claims > fence (or none)", fence_ne_claims, 0);
    r.check(
        "extra claims (Σ claims − 1) explained by kills",
        reclaims,
        format!("≤ {held} runs held by killed workers"),
        reclaims <= held,
    );
    r.note(format!(
        "Ledger: {worker_kills} worker kills and {api_kills} api kills in {} over {n} integrations \
         (runs of 100–500 ms every second); the killed workers held {held} runs; {runs} runs \
         finished, {quarantined} of them quarantined as worker_lost (killed under their run \
         at every claim); recovery bound {} = lease + 2 reaper periods + re-enqueue + latency + 3 s.",
        secs(storm),
        secs(bound)
    ));
    f.stop(Duration::from_secs(10)).await;
    r
}

/// The `lease_owner` pattern of the process just killed (its pid is still known).
fn victim_like(f: &crate::fleet::Fleet, role: &str, idx: usize) -> String {
    if role == "api" {
        // An api holds no lease: match nothing.
        "-".into()
    } else {
        f.workers[idx].owner_like()
    }
}
