//! `herd`: thousands of integrations fall due while every worker is down, for ten
//! re-enqueue periods; then the workers come back at once.
//!
//! The re-enqueuer must not multiply the queue while nobody consumes it (at most one
//! entry per PENDING run, so Redis stays bounded by the number of integrations), the
//! returning workers must not choke on the backlog (no queue restarts), and each
//! integration runs exactly once for its slot.

use std::time::{Duration, Instant};

use super::harness::{self, Ctx, REAPER_MS, REENQUEUE_MS};
use super::report::{Report, secs};

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("herd");
    let n = ctx.n(2000, 5000);
    let outage = Duration::from_millis(10 * REENQUEUE_MS);
    let mut f = ctx
        .fleet(
            "herd",
            &[
                ("SYNCFLEET_REENQUEUE_AFTER_MS", REENQUEUE_MS.to_string()),
                ("SYNCFLEET_REAPER_PERIOD_MS", REAPER_MS.to_string()),
                ("SYNCFLEET_WORKER_CONCURRENCY", "32".to_owned()),
            ],
        )
        .await;
    f.add_api(&[]).await;
    // The fleet was up, then every worker stops (a bad deploy, a cluster drain).
    for i in 0..3 {
        f.add_worker(&format!("hd{i}"), &[]).await;
    }
    for m in &mut f.workers {
        m.proc.terminate(Duration::from_secs(10));
    }
    let keys = harness::sample_redis(f.redis.url(), Duration::from_millis(500));
    f.seed_group(
        "hd",
        n,
        3600,
        "'{\"records\": 1}'::jsonb",
        "t0 + interval '1 second'",
        "NULL",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1) + outage).await;
    let pending = f
        .n("SELECT count(*) AS n FROM sync_logs WHERE status = 'PENDING'")
        .await;
    let (during, _) = keys.peek().await;
    let back = Instant::now();
    for i in 0..f.workers.len() {
        let m = f.respawn(&f.workers[i]);
        f.workers[i] = m;
    }
    // Generous for a debug build on two cores: 10 s plus 100 runs/s.
    let bound = Duration::from_secs(10 + n / 100);
    let fresh = harness::until_n(
        &f,
        "SELECT count(DISTINCT integration_id) AS n FROM sync_logs WHERE status = 'SUCCESS'",
        n as i64,
        bound,
    )
    .await;
    let drained = back.elapsed();
    let fresh_n = f
        .n("SELECT count(DISTINCT integration_id) AS n FROM sync_logs WHERE status = 'SUCCESS'")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ((sample, most_keys), samples) = keys.stop().await;
    let per = &f
        .rows(
            "SELECT coalesce(max(c), 0)::bigint AS mx, coalesce(min(c), 0)::bigint AS mn FROM \
             (SELECT i.id, count(s.id) AS c FROM integrations i LEFT JOIN sync_logs s ON s.integration_id = i.id GROUP BY i.id) x",
        )
        .await[0];
    let (most, least): (i64, i64) = (
        per.try_get("", "mx").unwrap_or(-1),
        per.try_get("", "mn").unwrap_or(-1),
    );
    let restarts = f.worker_counter("syncfleet_worker_restarts_total").await;
    let slack = (n / 50).max(50);
    r.check(
        "runs per integration after the outage (min / max)",
        format!("{least} / {most}"),
        "1 / 1",
        least == 1 && most == 1,
    );
    r.within(
        "every integration fresh after the workers came back",
        fresh,
        bound,
    );
    r.check(
        "largest Redis key under the prefix, max over samples",
        format!("{} ({})", sample.max_card, sample.max_key),
        format!("≤ {} (integrations + {slack})", n + slack),
        sample.max_card <= n + slack && samples > 0,
    );
    r.check(
        "worker queue restarts (syncfleet_worker_restarts_total)",
        format!("{restarts:.0}"),
        "0",
        restarts == 0.0,
    );
    r.note(format!(
        "{n} integrations due while no worker ran for {} ({} re-enqueue periods of {REENQUEUE_MS} ms, \
         reaper every {REAPER_MS} ms): {pending} PENDING runs; largest key {} at the end of the outage. \
         Redis: {samples} samples of every key, at most {most_keys} keys, the worst sample {} entries in all. \
         3 workers made {fresh_n} of them fresh in {}.",
        secs(outage),
        outage.as_millis() as u64 / REENQUEUE_MS,
        during.0.max_card,
        sample.total_card,
        secs(drained)
    ));
    f.stop(Duration::from_secs(10)).await;
    r
}
