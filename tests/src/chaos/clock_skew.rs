//! `clock-skew`: one worker's wall clock 5 minutes behind, one 5 minutes ahead, beside a
//! normal one (Debian's libfaketime, `procs::libfaketime`, preloaded into the worker
//! itself so the PID we hold is the worker's: the `faketime` wrapper would fork).
//!
//! Every protocol timestamp is the database's, so a skewed worker must be an ordinary
//! member of the fleet: it gets a fair share of the runs, steals no lease, brings no
//! retry forward, and its queue connection does not keep restarting.

use std::time::Duration;

use super::harness::{Ctx, RETRY_BASE_MS, RETRY_CAP_MS, env};
use super::report::Report;
use crate::fleet::scrape;
use crate::procs;

/// The worker's wall clock minus ours, from the `Date` header of its `/metrics`.
async fn observed_skew(port: u16) -> Option<i64> {
    let a = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    let date = a.headers().get("date")?.to_str().ok()?.to_owned();
    let theirs = chrono::DateTime::parse_from_rfc2822(&date).ok()?;
    Some((theirs.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds())
}

pub async fn run(ctx: &Ctx) -> Report {
    let mut r = Report::new("clock-skew");
    let Some(lib) = procs::libfaketime() else {
        return Report::aborted(
            "clock-skew",
            "faketime is not installed (apt-get install faketime)",
        );
    };
    let n = ctx.n(30, 60);
    let failing = 6;
    let phase = ctx.phase(30, 90);
    let mut f = ctx.fleet("clock-skew", &[]).await;
    f.add_api(&[]).await;
    let lib = lib.to_string_lossy().into_owned();
    let skewed = |offset: &str| {
        env(&[
            ("LD_PRELOAD", &lib),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ])
    };
    f.add_worker("sknormal", &[]).await;
    let minus = f.add_worker("skminus", &skewed("-300s")).await;
    let plus = f.add_worker("skplus", &skewed("+300s")).await;
    let show = |s: Option<i64>| s.map_or_else(|| "no answer".to_owned(), |s| format!("{s:+} s"));
    let skew_minus = observed_skew(f.workers[minus].port).await;
    let skew_plus = observed_skew(f.workers[plus].port).await;
    r.check(
        "precondition: skew seen in the workers' HTTP Date (− / +)",
        format!("{} / {}", show(skew_minus), show(skew_plus)),
        "≈ −300 / +300",
        skew_minus.is_some_and(|s| (-310..=-290).contains(&s))
            && skew_plus.is_some_and(|s| (290..=310).contains(&s)),
    );
    f.seed_group(
        "skh",
        n,
        1,
        "'{\"records\": 1, \"latencyMs\": 100}'::jsonb",
        "t0 + (g % 10) * interval '100 milliseconds'",
        "NULL",
    )
    .await;
    f.seed_group(
        "skf",
        failing,
        1,
        "'{\"records\": 0, \"failAlways\": true}'::jsonb",
        "t0",
        "NULL",
    )
    .await;
    f.exec("UPDATE integrations SET max_retries = 1000 WHERE name LIKE 'skf %'")
        .await;
    tokio::time::sleep(phase).await;

    let share = |label: &str| {
        format!(
            "SELECT count(*) AS n FROM sync_logs WHERE completed_at IS NOT NULL AND worker_id LIKE '{label}-%'"
        )
    };
    let runs_normal = f.n(&share("sknormal")).await;
    let runs_minus = f.n(&share("skminus")).await;
    let runs_plus = f.n(&share("skplus")).await;
    let stolen = f
        .n("SELECT count(*) AS n FROM sync_logs WHERE claims > 1")
        .await;
    // A retry is scheduled no earlier than its backoff after the failure before it.
    let early = f
        .n(&format!(
            "SELECT count(*) AS n FROM (\
               SELECT s.attempt, s.scheduled_for, \
                 lag(s.completed_at) OVER (PARTITION BY s.integration_id ORDER BY s.scheduled_for) AS prev \
               FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE i.name LIKE 'skf %') x \
             WHERE prev IS NOT NULL AND attempt >= 2 \
               AND scheduled_for < prev + least({RETRY_BASE_MS} * power(2, attempt - 2), {RETRY_CAP_MS}) * interval '1 millisecond'"
        ))
        .await;
    let retries = f
        .n(
            "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id \
            WHERE i.name LIKE 'skf %' AND s.attempt >= 2",
        )
        .await;
    let restarts_minus = scrape(f.workers[minus].port, "syncfleet_worker_restarts_total").await;
    let restarts_plus = scrape(f.workers[plus].port, "syncfleet_worker_restarts_total").await;
    let mut alive = 0;
    for m in &mut f.workers {
        if m.alive() {
            alive += 1;
        }
    }
    let fair = |k: i64| 4 * k >= runs_normal && k > 0;
    r.check(
        "runs of the −300 s worker vs the normal one",
        format!("{runs_minus} vs {runs_normal}"),
        "≥ 25 %",
        fair(runs_minus),
    );
    r.check(
        "runs of the +300 s worker vs the normal one",
        format!("{runs_plus} vs {runs_normal}"),
        "≥ 25 %",
        fair(runs_plus),
    );
    r.at_most("stolen leases (runs claimed twice, no kill)", stolen, 0);
    r.check(
        "retries earlier than their backoff",
        format!("{early} of {retries}"),
        "0",
        early == 0 && retries > 0,
    );
    let fmt = |v: Option<f64>| v.map_or_else(|| "no answer".to_owned(), |x| format!("{x:.0}"));
    r.check(
        "queue restarts of the skewed workers (− / +)",
        format!("{} / {}", fmt(restarts_minus), fmt(restarts_plus)),
        "0 / 0",
        restarts_minus == Some(0.0) && restarts_plus == Some(0.0),
    );
    r.check("workers alive", format!("{alive}/3"), "3/3", alive == 3);
    r.note(format!(
        "{n} healthy integrations every second and {failing} always failing (backoff {RETRY_BASE_MS} ms · 2^(n−1), cap {RETRY_CAP_MS} ms) for {} s.",
        phase.as_secs()
    ));
    f.stop(Duration::from_secs(10)).await;
    r
}
