//! `poison`: one integration whose run aborts its worker process every time, beside 50
//! healthy ones, on two workers restarted whenever they die (as a supervisor would).
//!
//! The poison run must be quarantined (`worker_lost`) after its claims and its
//! integration disabled; the healthy runs that happened to share a worker with it were
//! reclaimed through no fault of their own and must never be quarantined with it.

use std::time::{Duration, Instant};

use super::harness::{self, Ctx};
use super::report::Report;

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("poison");
    let healthy = 50;
    let give_up = ctx.phase(60, 90);
    let mut f = ctx.fleet("poison", &[]).await;
    f.add_api(&[]).await;
    for i in 0..2 {
        f.add_worker(&format!("pw{i}"), &[]).await;
    }
    // Healthy runs of 0.8–1.5 s, so every crash takes some of them down with it.
    f.seed_group(
        "ph",
        healthy,
        1,
        "jsonb_build_object('records', 2, 'latencyMs', 800 + (g * 13) % 700)",
        "t0 + (g % 10) * interval '100 milliseconds'",
        "NULL",
    )
    .await;
    f.seed_group(
        "pp",
        1,
        1,
        "'{\"crashProcess\": true, \"latencyMs\": 300}'::jsonb",
        "t0 + interval '2 seconds'",
        "NULL",
    )
    .await;
    let began = Instant::now();
    let mut crashes = 0;
    let mut disabled_at = None;
    while began.elapsed() < give_up {
        crashes += harness::revive(&mut f);
        if disabled_at.is_none()
            && harness::try_n(
                &f,
                "SELECT count(*) AS n FROM integrations WHERE name LIKE 'pp %' AND NOT sync_enabled",
            )
            .await
                == Some(1)
        {
            disabled_at = harness::db_now(&f.db).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let disabled_in = disabled_at.map(|_| began.elapsed());
    // Healthy integrations keep syncing afterwards (or, if the poison was never
    // disabled, in the last seconds of the scenario).
    let since = match disabled_at {
        Some(t) => t,
        None => harness::db_now(&f.db).await.expect("database clock"),
    };
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(6) {
        crashes += harness::revive(&mut f);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let poison_runs = f
        .rows(
            "SELECT count(*) FILTER (WHERE s.completed_at IS NOT NULL)::bigint AS done, \
               count(*) FILTER (WHERE s.error_class = 'worker_lost')::bigint AS lost \
             FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE i.name LIKE 'pp %'",
        )
        .await;
    let done: i64 = poison_runs[0].try_get("", "done").unwrap_or(-1);
    let lost: i64 = poison_runs[0].try_get("", "lost").unwrap_or(-1);
    let healthy_lost = f
        .n(
            "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
            WHERE i.name LIKE 'ph %' AND s.error_class = 'worker_lost'",
        )
        .await;
    let healthy_reclaimed = f
        .n(
            "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
            WHERE i.name LIKE 'ph %' AND s.claims > 1",
        )
        .await;
    let still_syncing = f
        .n(&format!(
            "SELECT count(DISTINCT s.integration_id) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
             WHERE i.name LIKE 'ph %' AND s.status = 'SUCCESS' AND s.completed_at > {}",
            harness::lit(since)
        ))
        .await;
    r.check(
        "poison runs quarantined as worker_lost",
        format!("{lost} of {done} finished"),
        "all, ≥ 1",
        lost >= 1 && lost == done,
    );
    r.within("poison integration disabled", disabled_in, give_up);
    r.at_most("healthy runs quarantined", healthy_lost, 0);
    r.check(
        "healthy integrations syncing after the poison was disabled",
        format!("{still_syncing}/{healthy}"),
        format!("{healthy}/{healthy}"),
        still_syncing == healthy as i64,
    );
    r.note(format!(
        "{crashes} worker crashes (each restarted); {healthy_reclaimed} healthy runs were reclaimed \
         from a crashed worker."
    ));
    f.stop(Duration::from_secs(10)).await;
    r
}
