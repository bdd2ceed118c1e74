//! `poison`: one integration whose run aborts its worker process every time, beside 50
//! healthy ones, on two workers restarted whenever they die (as a supervisor would).
//!
//! The poison run must be quarantined (`worker_lost`); the healthy runs that happened to
//! share a worker with it were reclaimed through no fault of their own and must never be
//! quarantined with it, and the healthy integrations must keep syncing meanwhile (their
//! staleness is sampled throughout, not only at the end).

use std::time::{Duration, Instant};

use super::harness::{self, Ctx, LEASE_MS};
use super::report::{Report, secs};

/// Worst tolerated staleness of a healthy integration (interval 1 s, runs ≤ 0.5 s). The
/// healthy load keeps the two workers under half busy, so what is measured is what the
/// crashes and the isolation cost. The poison run kills a worker five times before its
/// quarantine (twice beside others, then three times alone); each crash takes a worker
/// out for a restart, and each of the first two costs the runs beside it a lease, a
/// reaper pass and a rerun. Runs claimed in the same batch as a suspect, suspects
/// included, step aside instead of dying with it (docs/architecture.md §4.13).
/// Measured here: 7.6–8.7 s with 3 s leases (18–20 s before runs stepped aside), so the
/// bound is five leases and a restart's slack.
const STALENESS_BOUND_MS: u64 = 5 * LEASE_MS + 3000;

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("poison");
    let healthy = 50i64;
    let give_up = ctx.phase(60, 90);
    let window = Duration::from_secs(10);
    let mut f = ctx.fleet("poison", &[]).await;
    f.add_api(&[]).await;
    for i in 0..2 {
        f.add_worker(&format!("pw{i}"), &[]).await;
    }
    // Healthy runs of 0.8–1.5 s, so every crash takes some of them down with it.
    f.seed_group(
        "ph",
        healthy as u64,
        1,
        "jsonb_build_object('records', 2, 'latencyMs', 200 + (g * 13) % 300)",
        "t0 + (g % 10) * interval '100 milliseconds'",
        "NULL",
    )
    .await;
    f.seed_group(
        "pp",
        1,
        1,
        "'{\"crashProcess\": true, \"latencyMs\": 300}'::jsonb",
        "t0 + interval '4 seconds'",
        "NULL",
    )
    .await;
    let warm = harness::until_n(
        &f,
        "SELECT count(*) AS n FROM integrations WHERE name LIKE 'ph %' AND last_success_at IS NOT NULL",
        healthy,
        Duration::from_secs(15),
    )
    .await;
    r.within(
        "precondition: every healthy integration synced before the poison",
        warm,
        Duration::from_secs(15),
    );
    let stale = harness::sample_sql_max(
        f.db.clone(),
        "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - last_success_at) * 1000), 0)::bigint AS n \
         FROM integrations WHERE name LIKE 'ph %'"
            .into(),
        Duration::from_millis(250),
    );

    // Until the first poison run is quarantined, then a window of healthy syncing.
    let began = Instant::now();
    let mut crashes = 0;
    let quarantined_sql = "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
                           WHERE i.name LIKE 'pp %' AND s.error_class = 'worker_lost'";
    let mut first_quarantine = None;
    while began.elapsed() < give_up {
        crashes += harness::revive(&mut f);
        if harness::try_n(&f, quarantined_sql).await.unwrap_or(0) >= 1 {
            first_quarantine = Some(began.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let since = harness::db_now(&f.db).await.expect("database clock");
    let settle = Instant::now();
    while settle.elapsed() < window {
        crashes += harness::revive(&mut f);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (worst_ms, samples) = stale.stop().await;

    let poison_runs = f
        .rows(
            "SELECT count(*) FILTER (WHERE s.completed_at IS NOT NULL)::bigint AS done, \
               count(*) FILTER (WHERE s.error_class = 'worker_lost')::bigint AS lost, \
               bool_and(NOT i.sync_enabled) AS disabled \
             FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE i.name LIKE 'pp %'",
        )
        .await;
    let done: i64 = poison_runs[0].try_get("", "done").unwrap_or(-1);
    let lost: i64 = poison_runs[0].try_get("", "lost").unwrap_or(-1);
    let disabled: bool = poison_runs[0].try_get("", "disabled").unwrap_or(false);
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
    let healthy_runs = f
        .n(
            "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
            WHERE i.name LIKE 'ph %' AND s.status = 'SUCCESS'",
        )
        .await;
    let still_syncing = f
        .n(&format!(
            "SELECT count(DISTINCT s.integration_id) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
             WHERE i.name LIKE 'ph %' AND s.status = 'SUCCESS' AND s.completed_at > {}",
            harness::lit(since)
        ))
        .await;
    r.within("first poison run quarantined", first_quarantine, give_up);
    r.check(
        "poison runs finished, all as worker_lost",
        format!("{lost} of {done}"),
        "all, ≥ 1",
        lost >= 1 && lost == done,
    );
    r.at_most("healthy runs quarantined", healthy_lost, 0);
    let bound = Duration::from_millis(STALENESS_BOUND_MS);
    let worst = Duration::from_millis(u64::try_from(worst_ms).unwrap_or(0));
    r.check(
        "healthy integrations keep syncing: worst staleness during the poison",
        format!("{} ({samples} samples)", secs(worst)),
        format!("≤ {}", secs(bound)),
        worst <= bound && samples > 0,
    );
    r.check(
        &format!(
            "healthy integrations with a SUCCESS in the {} s after the first quarantine",
            window.as_secs()
        ),
        format!("{still_syncing}/{healthy}"),
        format!("{healthy}/{healthy}"),
        still_syncing == healthy,
    );
    r.note(format!(
        "{crashes} worker crashes (each restarted) in {}; {healthy_runs} healthy runs succeeded, \
         {healthy_reclaimed} of them reclaimed from a crashed worker; poison integration \
         disabled by the end: {}.",
        secs(began.elapsed()),
        if disabled { "yes" } else { "no" }
    ));
    f.stop(Duration::from_secs(10)).await;
    r
}
