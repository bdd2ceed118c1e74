//! `drain`: SIGTERM a worker with runs in flight (a deploy, a scale-down).
//!
//! It must exit within its grace period (`SYNCFLEET_SHUTDOWN_GRACE_MS`) plus a little,
//! finish what fits in the grace, and hand the rest back as PENDING (not leave them
//! RUNNING until their lease expires) so another worker finishes them at once.

use std::time::{Duration, Instant};

use super::harness::{self, Ctx, GRACE_MS, REENQUEUE_MS};
use super::report::Report;

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("drain");
    let (long, short) = (6i64, 4i64);
    let mut f = ctx.fleet("drain", &[]).await;
    f.add_api(&[]).await;
    let a = f.add_worker("dra", &[]).await;
    let a_like = f.workers[a].owner_like();
    f.seed_group(
        "dl",
        long as u64,
        3600,
        "'{\"records\": 2, \"latencyMs\": 8000}'::jsonb",
        "t0",
        "NULL",
    )
    .await;
    f.seed_group(
        "ds",
        short as u64,
        3600,
        "'{\"records\": 2, \"latencyMs\": 1000}'::jsonb",
        "t0",
        "NULL",
    )
    .await;
    let on_a = format!(
        "SELECT count(*) AS n FROM sync_logs WHERE status = 'RUNNING' AND lease_owner LIKE '{a_like}'"
    );
    let held = harness::until_n(&f, &on_a, long + short, Duration::from_secs(20)).await;
    r.within(
        "precondition: the worker holds every run",
        held,
        Duration::from_secs(20),
    );
    f.add_worker("drb", &[]).await;
    let grace = Duration::from_millis(GRACE_MS);
    let bound = grace + Duration::from_secs(2);
    let t = Instant::now();
    f.workers[a].proc.signal("TERM");
    let mut exit = None;
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = f.workers[a].proc.child.try_wait() {
            exit = Some((t.elapsed(), status.code()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left_running = f.n(&on_a).await;
    let released = f
        .n(
            "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
            WHERE i.name LIKE 'dl %' AND (s.status = 'PENDING' OR s.claims > 1)",
        )
        .await;
    let within = Duration::from_millis(REENQUEUE_MS) + Duration::from_secs(8 + 5);
    // Waits past the bound, to tell slow from never.
    let waited = Duration::from_secs(60);
    let finished = harness::until_n(
        &f,
        &format!(
            "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
             WHERE i.name LIKE 'dl %' AND s.status = 'SUCCESS' AND s.worker_id NOT LIKE '{a_like}'"
        ),
        long,
        waited,
    )
    .await;
    let short_by_a = f
        .n(&format!(
            "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
             WHERE i.name LIKE 'ds %' AND s.status = 'SUCCESS' AND s.worker_id LIKE '{a_like}'"
        ))
        .await;
    r.within("worker exited after SIGTERM", exit.map(|(d, _)| d), bound);
    r.check(
        "exit status",
        exit.and_then(|(_, c)| c)
            .map_or_else(|| "none".to_owned(), |c| c.to_string()),
        "0",
        exit.is_some_and(|(_, c)| c == Some(0)),
    );
    r.at_most("runs the drained worker left RUNNING", left_running, 0);
    r.check(
        "long runs released when the grace ran out (PENDING or reclaimed)",
        format!("{released}/{long}"),
        format!("{long}/{long}"),
        released == long,
    );
    r.within_waited(
        "released runs finished by another worker",
        finished,
        within,
        waited,
    );
    let max_claims = f
        .n(
            "SELECT coalesce(max(s.claims), 0)::bigint AS n FROM sync_logs s \
            JOIN integrations i ON i.id = s.integration_id WHERE i.name LIKE 'dl %'",
        )
        .await;
    let spread = f
        .n("SELECT coalesce((extract(epoch FROM max(s.completed_at) - min(s.completed_at)) * 1000)::bigint, 0) AS n \
            FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE i.name LIKE 'dl %'")
        .await;
    r.note(format!(
        "The {long} released runs (8 s each) were claimed {max_claims} times at most and \
         finished {:.1} s apart, first to last (concurrently ≈ 0 s, one after another ≈ {} s).",
        spread as f64 / 1000.0,
        8 * (long - 1)
    ));
    r.check(
        "short runs finished by the draining worker within its grace",
        format!("{short_by_a}/{short}"),
        format!("{short}/{short}"),
        short_by_a == short,
    );
    f.stop(Duration::from_secs(10)).await;
    r
}
