//! `redis-restart`: the queue vanishes under load and comes back empty.
//!
//! Runs of 3 s are in flight on three workers when Redis is shut down (`SHUTDOWN
//! NOSAVE`) for ~6 s and started again with nothing in it. The database is the source of
//! truth, so nothing may be left behind: no run that started before the shutdown may
//! still be RUNNING a minute later, and every integration must sync again.

use std::time::{Duration, Instant};

use super::harness::{self, Ctx};
use super::report::Report;
use crate::fleet::scrape;

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("redis-restart");
    let n = ctx.n(24, 60);
    let down = Duration::from_secs(6);
    let window = ctx.phase(30, 60);
    let mut f = ctx.fleet("redis-restart", &[]).await;
    f.add_api(&[]).await;
    for i in 0..3 {
        f.add_worker(&format!("rr{i}"), &[]).await;
    }
    f.seed_group(
        "rr",
        n,
        1,
        "'{\"records\": 2, \"latencyMs\": 3000}'::jsonb",
        "t0 + (g % 3) * interval '1 second'",
        "NULL",
    )
    .await;
    let in_flight = harness::until_n(
        &f,
        "SELECT count(*) AS n FROM sync_logs WHERE status = 'RUNNING'",
        (n as i64) * 2 / 3,
        Duration::from_secs(20),
    )
    .await;
    r.within(
        "precondition: runs in flight before the shutdown",
        in_flight,
        Duration::from_secs(20),
    );
    let running_at_shutdown = f
        .n("SELECT count(*) AS n FROM sync_logs WHERE status = 'RUNNING'")
        .await;
    let t_shut = harness::db_now(&f.db).await.expect("database clock");
    {
        let mut c = f.redis_conn().await;
        let _: Result<(), _> = redis::cmd("SHUTDOWN")
            .arg("NOSAVE")
            .query_async(&mut c)
            .await;
    }
    tokio::time::sleep(down).await;
    f.redis.restart();
    let restarted = Instant::now();
    let t_restart = harness::db_now(&f.db).await.expect("database clock");

    let synced_sql = format!(
        "SELECT count(DISTINCT integration_id) AS n FROM sync_logs WHERE status = 'SUCCESS' AND started_at > {}",
        harness::lit(t_restart)
    );
    let recovery = harness::until_n(&f, &synced_sql, n as i64, window).await;
    if let Some(rest) = window.checked_sub(restarted.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let synced = harness::try_n(&f, &synced_sql).await.unwrap_or(0);
    let stale = f
        .n(&format!(
            "SELECT count(*) AS n FROM sync_logs WHERE status = 'RUNNING' AND started_at < {}",
            harness::lit(t_shut)
        ))
        .await;
    let mut alive = 0;
    let mut restarts = 0.0;
    for m in &mut f.workers {
        if m.alive() {
            alive += 1;
        }
        restarts += scrape(m.port, "syncfleet_worker_restarts_total")
            .await
            .unwrap_or(0.0);
    }
    r.at_most(
        &format!(
            "runs started before the shutdown still RUNNING {} s after the restart",
            window.as_secs()
        ),
        stale,
        0,
    );
    r.check(
        "integrations with a SUCCESS started after the restart",
        format!("{synced}/{n}"),
        format!("{n}/{n}"),
        synced == n as i64,
    );
    r.within(
        "recovery: every integration synced again after the restart",
        recovery,
        window,
    );
    r.check("workers alive", format!("{alive}/3"), "3/3", alive == 3);
    r.note(format!(
        "{running_at_shutdown} runs of 3 s were RUNNING at the shutdown; Redis down for {} s, \
         restarted empty; workers' queue restarts (syncfleet_worker_restarts_total) {restarts:.0}.",
        down.as_secs()
    ));
    f.stop(Duration::from_secs(10)).await;
    r
}
