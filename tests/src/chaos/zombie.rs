//! `zombie`: workers that stop without dying.
//!
//! 1. SIGSTOP a worker past its lease, let another finish its runs, SIGCONT it: every
//!    write the zombie still attempts must be refused by the fence.
//! 2. Freeze a worker *inside* its finish transaction (the worker's fault-injection hook
//!    `SYNCFLEET_CHAOS_FINISH_STALL_MS` stalls it after it took its row locks; its
//!    session, named `syncfleet-worker:<pid>`, shows `idle in transaction`), then SIGSTOP
//!    it. Other workers' expired runs must still be reaped within a reaper period: one
//!    frozen process must not stall the fleet's recovery.

use std::time::Duration;

use super::harness::{self, Ctx, LEASE_MS, REAPER_MS, env};
use super::report::Report;
use crate::fleet::{Fleet, scrape};

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("zombie");
    let mut f = ctx.fleet("zombie", &[]).await;
    f.add_api(&[]).await;
    past_lease(&mut f, &mut r).await;
    frozen_mid_finish(&mut f, &mut r).await;
    f.stop(Duration::from_secs(10)).await;
    r
}

/// What a run row and its records look like, to compare before and after the zombie woke.
const SNAPSHOT: &str = "SELECT coalesce(string_agg(s.id || ':' || s.status || ':' || s.fence || ':' || \
       coalesce(s.worker_id, '') || ':' || coalesce(s.completed_at::text, '') || ':' || \
       (SELECT count(*) || '/' || coalesce(sum(x.version), 0) || '/' || coalesce(max(x.synced_at)::text, '') \
        FROM records x WHERE x.integration_id = s.integration_id), ',' ORDER BY s.id), '') AS snap \
     FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE i.name LIKE 'zs %'";

async fn past_lease(f: &mut Fleet, r: &mut Report) {
    let runs = 6;
    let a = f.add_worker("zsa", &[]).await;
    f.seed_group(
        "zs",
        runs,
        3600,
        "'{\"records\": 3, \"latencyMs\": 2500}'::jsonb",
        "t0",
        "NULL",
    )
    .await;
    let on_a = format!(
        "SELECT count(*) AS n FROM sync_logs WHERE status = 'RUNNING' AND lease_owner LIKE '{}'",
        f.workers[a].owner_like()
    );
    let running = harness::until_n(f, &on_a, runs as i64, Duration::from_secs(20)).await;
    r.within(
        "precondition: the zombie holds its runs",
        running,
        Duration::from_secs(20),
    );
    f.workers[a].proc.signal("STOP");
    f.add_worker("zsb", &[]).await;
    let done = harness::until_n(
        f,
        "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
         WHERE i.name LIKE 'zs %' AND s.status = 'SUCCESS'",
        runs as i64,
        Duration::from_secs(30),
    )
    .await;
    r.within(
        "runs of the stopped worker finished elsewhere",
        done,
        Duration::from_secs(30),
    );
    let before: String = f.one(SNAPSHOT, "snap").await;
    f.workers[a].proc.signal("CONT");
    let port = f.workers[a].port;
    let stale = harness::poll(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async {
            scrape(port, "syncfleet_stale_finishes_total")
                .await
                .filter(|&n| n >= runs as f64)
        },
    )
    .await
    .map(|(n, _)| n);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stale = match stale {
        Some(n) => n,
        None => scrape(port, "syncfleet_stale_finishes_total")
            .await
            .unwrap_or(0.0),
    };
    let after: String = f.one(SNAPSHOT, "snap").await;
    let by_zombie = f
        .n(&format!(
            "SELECT count(*) AS n FROM sync_logs WHERE status <> 'RUNNING' AND worker_id LIKE '{}'",
            f.workers[a].owner_like()
        ))
        .await;
    r.check(
        "stale writes of the woken zombie refused (syncfleet_stale_finishes_total)",
        format!("{stale:.0} of {runs} runs"),
        "≥ 1",
        stale >= 1.0,
    );
    r.check(
        "runs and records changed after SIGCONT",
        if before == after { "none" } else { "CHANGED" },
        "none",
        before == after && !before.is_empty(),
    );
    r.at_most("runs finished by the zombie", by_zombie, 0);
    // Done with both: the next part starts from an idle fleet.
    for m in &mut f.workers {
        m.proc.signal("KILL");
    }
    f.workers.clear();
}

async fn frozen_mid_finish(f: &mut Fleet, r: &mut Report) {
    let stall = env(&[
        ("SYNCFLEET_CHAOS_FINISH_STALL_MS", "600000"),
        ("SYNCFLEET_WORKER_CONCURRENCY", "1"),
    ]);
    let z = f.add_worker("zfrozen", &stall).await;
    let zpid = f.workers[z].pid();
    f.seed_group(
        "zf",
        1,
        3600,
        "'{\"records\": 0, \"latencyMs\": 100}'::jsonb",
        "t0",
        "NULL",
    )
    .await;
    let idle_sql = format!(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'syncfleet-worker:{zpid}' \
         AND state = 'idle in transaction'"
    );
    let in_finish = harness::until_n(f, &idle_sql, 1, Duration::from_secs(20)).await;
    r.within(
        "precondition: worker frozen inside its finish (`idle in transaction`, application_name)",
        in_finish,
        Duration::from_secs(20),
    );
    f.workers[z].proc.signal("STOP");

    // Another worker takes long runs and is killed: its leases expire while the frozen
    // one still holds its locks.
    let held = 6;
    let g = f.add_worker("zvictim", &[]).await;
    f.seed_group(
        "zk",
        held,
        3600,
        "'{\"records\": 0, \"latencyMs\": 60000}'::jsonb",
        "t0",
        "NULL",
    )
    .await;
    let victim_like = f.workers[g].owner_like();
    let on_g = format!(
        "SELECT count(*) AS n FROM sync_logs WHERE status = 'RUNNING' AND lease_owner LIKE '{victim_like}'"
    );
    let running = harness::until_n(f, &on_g, held as i64, Duration::from_secs(20)).await;
    r.within(
        "precondition: the victim holds its runs",
        running,
        Duration::from_secs(20),
    );
    f.workers[g].proc.signal("KILL");
    let _ = f.workers[g].proc.child.wait();
    let expiry: chrono::DateTime<chrono::Utc> = f
        .one(
            &format!(
                "SELECT max(lease_until) AS t FROM sync_logs WHERE status = 'RUNNING' AND lease_owner LIKE '{victim_like}'"
            ),
            "t",
        )
        .await;
    f.add_worker("zheir", &[]).await;
    let reaped_sql = format!(
        "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
         WHERE i.name LIKE 'zk %' AND NOT (s.status = 'RUNNING' AND s.lease_owner LIKE '{victim_like}')"
    );
    let give_up = Duration::from_millis(LEASE_MS) + Duration::from_secs(15);
    let reaped_at = harness::poll(give_up, Duration::from_millis(100), || async {
        match harness::try_n(f, &reaped_sql).await {
            Some(n) if n >= held as i64 => harness::db_now(&f.db).await,
            _ => None,
        }
    })
    .await
    .map(|(t, _)| t);
    let frozen_still = harness::try_n(f, &idle_sql).await.unwrap_or(0);
    let lock_waits = harness::try_n(
        f,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND application_name NOT LIKE 'syncfleet-worker:%'",
    )
    .await
    .unwrap_or(0);
    let reaped = harness::try_n(f, &reaped_sql).await.unwrap_or(0);
    let delay = reaped_at.map(|t| (t - expiry).to_std().unwrap_or(Duration::ZERO));
    let bound = Duration::from_millis(REAPER_MS + 1000);
    r.within_waited(
        "others' expired runs reaped after their lease expired, despite the frozen worker",
        delay,
        bound,
        give_up,
    );
    r.note(format!(
        "Frozen mid-finish: worker pid {zpid} stalled in its finish transaction and SIGSTOPped \
         (its session still `idle in transaction` at the end: {}); the killed victim held \
         {held} runs whose leases expired at {expiry}, {reaped} of them reaped in the end; \
         {lock_waits} non-worker session(s) waiting on a lock; bound = reaper period \
         {REAPER_MS} ms + 1 s slack.",
        if frozen_still > 0 { "yes" } else { "no" }
    ));
    f.workers[z].proc.signal("CONT");
    f.workers[z].proc.signal("KILL");
}
