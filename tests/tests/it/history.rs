//! History at scale (docs/architecture.md §3.9): the retention deletes old finished runs
//! and nothing else, the hourly rollup is exact and idempotent, and the stats read the
//! same totals before and after the raw rows are gone. Each scenario runs on PostgreSQL
//! and on SQLite.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Value};
use serde_json::Value as Json;
use syncfleet_worker::db as q;
use syncfleet_worker::history::rollup::{self, HourStats};
use syncfleet_worker::history::{
    self, Clock, HISTORY, HistoryConfig, STATS_TABLE, WATERMARK_TABLE, retention,
};
use tests::embedded::spawn_standalone;
use tests::env::test_env;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::util::{count, eventually};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("instant")
        .with_timezone(&Utc)
}

/// A fresh, migrated SQLite database (kept while the directory lives).
async fn sqlite() -> (tempfile::TempDir, DatabaseConnection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    let db = Database::connect(&url).await.expect("sqlite");
    Migrator::up(&db, None).await.expect("migrate");
    (dir, db)
}

/// A paused integration nobody schedules.
async fn integration(db: &impl ConnectionTrait, name: &str) -> Uuid {
    let ws = syncfleet_api::db::default_workspace(db)
        .await
        .expect("workspace");
    let id = Uuid::now_v7();
    let now = q::Dialect::of(db).now();
    q::exec(
        db,
        format!(
            "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, \
             health, created_at, updated_at) VALUES ($1, $2, $3, 'synthetic', '{{}}', NULL, false, 'paused', {now}, {now})"
        ),
        [id.into(), ws.into(), name.into()],
    )
    .await
    .expect("insert integration");
    id
}

/// A UUIDv7 stamped at `t`, as the service makes run ids.
fn id_at(t: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(t.timestamp_millis()).expect("after 1970");
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1000,
        u32::try_from(ms % 1000).expect("ms") * 1_000_000,
    ))
}

/// Inserts a finished run (into the history table) that completed at `done`.
async fn finished(
    db: &impl ConnectionTrait,
    integration: Uuid,
    status: &str,
    done: DateTime<Utc>,
    duration_ms: Option<i64>,
    records: i64,
) -> Uuid {
    let created = done - TimeDelta::milliseconds(duration_ms.unwrap_or(0) + 500);
    let id = id_at(created);
    q::exec(
        db,
        format!(
            "INSERT INTO {HISTORY} (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, \
             started_at, completed_at, duration_ms, records_count, created_at) \
             VALUES ($1, $2, $3, 'schedule', $4, 1, 1, 1, $5, $6, $7, $8, $4)"
        ),
        [
            id.into(),
            integration.into(),
            status.into(),
            created.into(),
            duration_ms.map(|_| created + TimeDelta::milliseconds(500)).into(),
            done.into(),
            duration_ms.into(),
            records.into(),
        ],
    )
    .await
    .expect("insert finished run");
    id
}

/// Inserts a live run created at `created` (its id stamped then).
async fn live(
    db: &impl ConnectionTrait,
    integration: Uuid,
    status: &str,
    created: DateTime<Utc>,
) -> Uuid {
    let id = id_at(created);
    let lease: Value = if status == "RUNNING" {
        (created + TimeDelta::days(365)).into()
    } else {
        Option::<DateTime<Utc>>::None.into()
    };
    q::exec(
        db,
        "INSERT INTO live_runs (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, \
         lease_owner, lease_until, created_at) VALUES ($1, $2, $3, 'manual', $4, 1, 0, 0, 'somewhere', $5, $4)",
        [
            id.into(),
            integration.into(),
            status.into(),
            created.into(),
            lease,
        ],
    )
    .await
    .expect("insert live run");
    id
}

/// Ids of an integration's runs still stored, oldest first.
async fn stored(db: &impl ConnectionTrait, integration: Uuid) -> Vec<Uuid> {
    q::query(
        db,
        "SELECT id FROM sync_logs WHERE integration_id = $1 ORDER BY id",
        [integration.into()],
    )
    .await
    .expect("runs")
    .iter()
    .map(|r| r.try_get("", "id").expect("id"))
    .collect()
}

async fn aggregates(db: &impl ConnectionTrait) -> Vec<HourStats> {
    q::query(
        db,
        format!("SELECT * FROM {STATS_TABLE} ORDER BY hour, integration_id"),
        [],
    )
    .await
    .expect("aggregates")
    .iter()
    .map(|r| HourStats {
        integration_id: r.try_get("", "integration_id").unwrap(),
        hour: r.try_get("", "hour").unwrap(),
        runs: r.try_get("", "runs").unwrap(),
        succeeded: r.try_get("", "succeeded").unwrap(),
        failed: r.try_get("", "failed").unwrap(),
        rate_limited: r.try_get("", "rate_limited").unwrap(),
        cancelled: r.try_get("", "cancelled").unwrap(),
        records: r.try_get("", "records").unwrap(),
        duration_p50_ms: r.try_get("", "duration_p50_ms").unwrap(),
        duration_p95_ms: r.try_get("", "duration_p95_ms").unwrap(),
        duration_p99_ms: r.try_get("", "duration_p99_ms").unwrap(),
        duration_max_ms: r.try_get("", "duration_max_ms").unwrap(),
    })
    .collect()
}

fn cfg(retention: Duration, keep: u32) -> HistoryConfig {
    HistoryConfig {
        retention,
        keep_runs: keep,
        // Small batches, so the walk crosses batch boundaries.
        delete_batch: 4,
        batch_pause: Duration::ZERO,
        ..HistoryConfig::default()
    }
}

/// Rolls up as of `now` (so the watermark lands on `floor_hour(now − grace)`).
async fn roll(db: &DatabaseConnection, c: &HistoryConfig, now: DateTime<Utc>) -> rollup::Rollup {
    rollup::pass(db, c, Clock::At(now)).await.expect("rollup")
}

async fn retain(
    db: &DatabaseConnection,
    c: &HistoryConfig,
    keep: &mut retention::Boundaries,
    now: DateTime<Utc>,
) -> u64 {
    retention::pass_with(db, c, Clock::At(now), keep, &CancellationToken::new())
        .await
        .expect("retention")
        .deleted
}

/// The retention deletes finished runs older than the retention whose hour is rolled
/// up, keeps the newest `keep` finished runs of every integration whatever their age,
/// and never touches a live run.
async fn retention_scenario(db: &DatabaseConnection) {
    let t = at("2026-06-01T12:00:00Z");
    let grace = HistoryConfig::default().rollup_grace;
    let c = cfg(Duration::from_secs(3600), 3);
    // Keep boundaries remembered across passes, as the history loop does.
    let mut keep = retention::Boundaries::default();
    // A: one run every 10 minutes from t − 10 h to t − 10 min (60 runs).
    let a = integration(db, "frequent").await;
    let mut a_runs = Vec::new();
    for k in (1..=60).rev() {
        let done = t - TimeDelta::minutes(10 * k);
        a_runs.push(finished(db, a, "SUCCESS", done, Some(40), 1).await);
    }
    // B: two runs two days ago and nothing since: fewer than `keep`, all kept.
    let b = integration(db, "rare").await;
    let b_runs = vec![
        finished(db, b, "SUCCESS", t - TimeDelta::hours(49), Some(10), 0).await,
        finished(db, b, "FAILED", t - TimeDelta::hours(48), Some(10), 0).await,
    ];
    // C: five old finished runs, and live runs created even earlier.
    let c_int = integration(db, "with live runs").await;
    let pending = live(db, c_int, "PENDING", t - TimeDelta::hours(72)).await;
    let c_runs: Vec<Uuid> = {
        let mut v = Vec::new();
        for k in 0..5 {
            let done = t - TimeDelta::hours(30) + TimeDelta::minutes(k);
            v.push(finished(db, c_int, "FAILED", done, Some(5), 0).await);
        }
        v
    };
    let d_int = integration(db, "running for ever").await;
    let running = live(db, d_int, "RUNNING", t - TimeDelta::hours(72)).await;
    for k in 0..4 {
        finished(
            db,
            d_int,
            "SUCCESS",
            t - TimeDelta::hours(40) + TimeDelta::minutes(k),
            Some(5),
            0,
        )
        .await;
    }

    // Nothing is rolled up: nothing may go, however old.
    assert_eq!(retain(db, &c, &mut keep, t).await, 0);
    assert_eq!(stored(db, a).await.len(), 60);

    // Rolled up to t − 6 h: only runs before it may go, though the retention is 1 h.
    let r = roll(db, &c, t - TimeDelta::hours(6) + grace).await;
    assert_eq!(r.rolled_up_to, Some(t - TimeDelta::hours(6)));
    let deleted = retain(db, &c, &mut keep, t).await;
    let a_left = stored(db, a).await;
    // A's runs completed at t − 10 h … t − 6 h 10 min go (24); from t − 6 h on they stay.
    assert_eq!(
        a_left,
        a_runs[24..].to_vec(),
        "A keeps the hours not rolled up"
    );
    assert_eq!(stored(db, b).await, b_runs, "B keeps its last runs");
    let c_left = stored(db, c_int).await;
    assert_eq!(
        c_left,
        [vec![pending], c_runs[2..].to_vec()].concat(),
        "C keeps 3 finished and its live run"
    );
    let d_left = stored(db, d_int).await;
    assert_eq!(d_left.len(), 4, "D keeps 3 finished and its live run");
    assert_eq!(d_left[0], running);
    assert_eq!(deleted, 24 + 2 + 1);

    // A second pass finds nothing more.
    assert_eq!(retain(db, &c, &mut keep, t).await, 0);

    // Rolled up to t: the retention (1 h) is now the cut.
    roll(db, &c, t + grace).await;
    retain(db, &c, &mut keep, t).await;
    let a_left = stored(db, a).await;
    // Completed before t − 1 h: gone; t − 1 h and later (6 runs) stay.
    assert_eq!(a_left, a_runs[54..].to_vec());
    // Later, with no new runs, A still keeps its newest 3.
    roll(db, &c, t + TimeDelta::hours(5) + grace).await;
    retain(db, &c, &mut keep, t + TimeDelta::hours(5)).await;
    assert_eq!(stored(db, a).await, a_runs[57..].to_vec());
    assert_eq!(stored(db, b).await, b_runs);
    assert_eq!(stored(db, c_int).await.len(), 4);
    assert_eq!(stored(db, d_int).await.len(), 4);

    // Every finished run that was deleted had been counted: the aggregates still hold
    // all 60 + 2 + 5 + 4 finished runs.
    let agg: i64 = aggregates(db).await.iter().map(|s| s.runs).sum();
    assert_eq!(agg, 71);

    // B syncs again: three new runs make its two old ones deletable, although the
    // boundary remembered from the passes before said B had too few runs.
    for k in 0..3 {
        finished(
            db,
            b,
            "SUCCESS",
            t + TimeDelta::hours(5) + TimeDelta::minutes(k),
            Some(10),
            0,
        )
        .await;
    }
    roll(db, &c, t + TimeDelta::hours(7) + grace).await;
    assert_eq!(retain(db, &c, &mut keep, t + TimeDelta::hours(7)).await, 2);
    assert_eq!(stored(db, b).await.len(), 3);
    // The planted live runs go now, so the test leaves no work behind.
    q::exec(
        db,
        "DELETE FROM live_runs WHERE id IN ($1, $2)",
        [pending.into(), running.into()],
    )
    .await
    .expect("remove the live runs");
}

#[tokio::test]
async fn retention_deletes_only_what_it_may_on_postgres() {
    let Some(env) = test_env().await else { return };
    retention_scenario(&env.db).await;
}

#[tokio::test]
async fn retention_deletes_only_what_it_may_on_sqlite() {
    let (_dir, db) = sqlite().await;
    retention_scenario(&db).await;
}

/// `percentile_disc`: the value at 1-based rank ceil(p·n) of the sorted values.
fn disc(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// The rollup's figures are those of the raw runs of each complete hour, edges
/// included; an hour that is not complete is left alone; rolling up again (after the
/// watermark is reset), or from two passes at once, writes the same rows.
async fn rollup_scenario(db: &DatabaseConnection) {
    let h = at("2026-06-01T10:00:00Z");
    let grace = HistoryConfig::default().rollup_grace;
    let c = cfg(Duration::from_secs(3600), 100);
    let x = integration(db, "x").await;
    let y = integration(db, "y").await;
    // x: 37 runs in hour h with durations 1…37 ms in a scrambled order, mixed outcomes.
    let mut durations = Vec::new();
    let (mut ok, mut failed, mut limited, mut records) = (0, 0, 0, 0);
    for k in 0..37i64 {
        let d = (k * 17) % 37 + 1;
        let status = match k % 5 {
            0 => "FAILED",
            1 => "RATE_LIMITED",
            _ => "SUCCESS",
        };
        match status {
            "FAILED" => failed += 1,
            "RATE_LIMITED" => limited += 1,
            _ => ok += 1,
        }
        records += k;
        durations.push(d);
        finished(
            db,
            x,
            status,
            h + TimeDelta::seconds(60 + k * 90),
            Some(d),
            k,
        )
        .await;
    }
    // A cancelled run (no duration) at the very start of the hour…
    finished(db, x, "CANCELLED", h, None, 0).await;
    // …one a millisecond before it (previous hour) and one exactly at its end (next hour,
    // which is not complete yet).
    finished(
        db,
        x,
        "SUCCESS",
        h - TimeDelta::milliseconds(1),
        Some(1000),
        3,
    )
    .await;
    finished(db, x, "SUCCESS", h + TimeDelta::hours(1), Some(2000), 4).await;
    // y: one run in hour h.
    finished(db, y, "FAILED", h + TimeDelta::minutes(59), Some(123), 0).await;
    // A live run in hour h is not counted.
    live(db, y, "PENDING", h + TimeDelta::minutes(30)).await;

    let r = roll(db, &c, h + TimeDelta::hours(1) + grace).await;
    assert_eq!(r.rolled_up_to, Some(h + TimeDelta::hours(1)));
    assert_eq!(r.hours, 2, "the previous hour and h");
    let rows = aggregates(db).await;
    durations.sort_unstable();
    let expected = vec![
        HourStats {
            integration_id: x,
            hour: h - TimeDelta::hours(1),
            runs: 1,
            succeeded: 1,
            failed: 0,
            rate_limited: 0,
            cancelled: 0,
            records: 3,
            duration_p50_ms: Some(1000),
            duration_p95_ms: Some(1000),
            duration_p99_ms: Some(1000),
            duration_max_ms: Some(1000),
        },
        HourStats {
            integration_id: x,
            hour: h,
            runs: 38,
            succeeded: ok,
            failed,
            rate_limited: limited,
            cancelled: 1,
            records,
            duration_p50_ms: disc(&durations, 0.5),
            duration_p95_ms: disc(&durations, 0.95),
            duration_p99_ms: disc(&durations, 0.99),
            duration_max_ms: Some(37),
        },
        HourStats {
            integration_id: y,
            hour: h,
            runs: 1,
            succeeded: 0,
            failed: 1,
            rate_limited: 0,
            cancelled: 0,
            records: 0,
            duration_p50_ms: Some(123),
            duration_p95_ms: Some(123),
            duration_p99_ms: Some(123),
            duration_max_ms: Some(123),
        },
    ];
    let mut sorted_rows = rows.clone();
    sorted_rows.sort_by_key(|s| (s.hour, s.integration_id));
    let mut sorted_expected = expected.clone();
    sorted_expected.sort_by_key(|s| (s.hour, s.integration_id));
    assert_eq!(sorted_rows, sorted_expected);
    assert_eq!(
        (
            disc(&durations, 0.5),
            disc(&durations, 0.95),
            disc(&durations, 0.99)
        ),
        (Some(19), Some(36), Some(37))
    );

    // A later pass at the same time does nothing.
    let again = roll(db, &c, h + TimeDelta::hours(1) + grace).await;
    assert_eq!((again.hours, again.busy), (0, false));

    // Reset the watermark: the hours are rolled up again, to the same rows — twice at
    // once, as two API replicas might.
    q::exec(
        db,
        format!("UPDATE {WATERMARK_TABLE} SET rolled_up_to = NULL WHERE id = 1"),
        [],
    )
    .await
    .expect("reset");
    let now = h + TimeDelta::hours(1) + grace;
    let (r1, r2) = tokio::join!(
        rollup::pass(db, &c, Clock::At(now)),
        rollup::pass(db, &c, Clock::At(now))
    );
    let (r1, r2) = (r1.expect("first"), r2.expect("second"));
    assert_eq!(
        r1.hours + r2.hours,
        2,
        "each hour written once: {r1:?} {r2:?}"
    );
    assert_eq!(aggregates(db).await, rows);
    assert_eq!(
        history::watermark(db).await.expect("watermark"),
        Some(h + TimeDelta::hours(1))
    );

    // The next hour, once complete.
    roll(db, &c, h + TimeDelta::hours(2) + grace).await;
    let next: Vec<HourStats> = aggregates(db)
        .await
        .into_iter()
        .filter(|s| s.hour == h + TimeDelta::hours(1))
        .collect();
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].runs, next[0].records), (1, 4));

    // Hours without runs are skipped in one step.
    let far = h + TimeDelta::days(40);
    let r = roll(db, &c, far + grace).await;
    assert_eq!((r.hours, r.rolled_up_to), (0, Some(far)));
    q::exec(db, "DELETE FROM live_runs WHERE status = 'PENDING'", [])
        .await
        .expect("remove the live run");
}

#[tokio::test]
async fn rollup_is_exact_and_idempotent_on_postgres() {
    let Some(env) = test_env().await else { return };
    rollup_scenario(&env.db).await;
}

#[tokio::test]
async fn rollup_is_exact_and_idempotent_on_sqlite() {
    let (_dir, db) = sqlite().await;
    rollup_scenario(&db).await;
}

/// The totals of `/api/sync/stats` (overall and by kind).
fn totals(s: &Json) -> Vec<(String, Json)> {
    let pick = |k: &Json| {
        serde_json::json!([
            k["runs"],
            k["succeeded"],
            k["failed"],
            k["rateLimited"],
            k["recordsPerRun"]
        ])
    };
    let mut out = vec![("overall".to_owned(), pick(&s["overall"]))];
    if let Some(m) = s["byKind"].as_object() {
        for (k, v) in m {
            out.push((k.clone(), pick(v)));
        }
    }
    out
}

/// Finished runs of a few hours ago and of the last minutes, with the real clock.
async fn plant_recent_history(db: &impl ConnectionTrait) -> Uuid {
    let now = history::db_now(db).await.expect("now");
    let id = integration(db, "stats").await;
    for k in 0..30i64 {
        let status = if k % 3 == 0 { "FAILED" } else { "SUCCESS" };
        finished(
            db,
            id,
            status,
            now - TimeDelta::minutes(240 - k * 4),
            Some(10 + k),
            k,
        )
        .await;
    }
    for k in 0..5i64 {
        finished(
            db,
            id,
            "RATE_LIMITED",
            now - TimeDelta::minutes(20 - k),
            Some(7),
            1,
        )
        .await;
    }
    id
}

/// The stats answer the same totals from the raw runs, after the rollup, and after the
/// retention deleted the raw runs of the rolled-up hours.
#[tokio::test]
async fn stats_totals_survive_the_retention_on_postgres() {
    let Some(env) = test_env().await else { return };
    let settings = [
        ("SYNCFLEET_HISTORY_RETENTION", "1h"),
        ("SYNCFLEET_HISTORY_KEEP_RUNS", "1"),
        // The test runs the passes itself.
        ("SYNCFLEET_HISTORY_PERIOD_MS", "3600000"),
    ];
    let app = env.spawn_app(&settings).await;
    let c = env.config(&settings).history;
    plant_recent_history(&env.db).await;
    let (s, before) = app.client.get("/api/sync/stats?window=24h").await;
    assert_eq!(s, 200, "{before}");
    assert_eq!(before["overall"]["runs"], 35);

    let r = rollup::pass(&env.db, &c, Clock::Database)
        .await
        .expect("rollup");
    assert!(r.hours > 0, "{r:?}");
    let (_, rolled) = app.client.get("/api/sync/stats?window=24h").await;
    assert_eq!(totals(&rolled), totals(&before), "{rolled}");

    let stop = CancellationToken::new();
    let gone = retention::pass(&env.db, &c, Clock::Database, &stop)
        .await
        .expect("retention")
        .deleted;
    assert!(
        gone >= 20,
        "runs of the rolled-up hours older than 1 h go ({gone})"
    );
    let (_, after) = app.client.get("/api/sync/stats?window=24h").await;
    assert_eq!(totals(&after), totals(&before), "{after}");
    assert_eq!(after["sampledRuns"], 35);
    // A window inside the retention starts where it was asked to.
    let (_, hour) = app.client.get("/api/sync/stats?window=1h").await;
    assert_eq!(hour["overall"]["runs"], 5, "{hour}");
    let since =
        DateTime::parse_from_rfc3339(hour["since"].as_str().expect("since")).expect("rfc 3339");
    let now = history::db_now(&env.db).await.expect("now");
    assert!(
        (now - since.with_timezone(&Utc) - TimeDelta::hours(1))
            .num_seconds()
            .abs()
            < 60
    );
    app.stop().await;
}

/// The API role's own loop rolls up and deletes (PostgreSQL), and so does the embedded
/// mode's (SQLite).
#[tokio::test]
async fn the_history_loop_runs_in_the_api_role() {
    let Some(env) = test_env().await else { return };
    let settings = [
        ("SYNCFLEET_HISTORY_RETENTION", "1h"),
        ("SYNCFLEET_HISTORY_KEEP_RUNS", "1"),
        ("SYNCFLEET_HISTORY_PERIOD_MS", "200"),
    ];
    let app = env.spawn_app(&settings).await;
    let id = plant_recent_history(&env.db).await;
    eventually(
        Duration::from_secs(15),
        "old runs deleted by the loop",
        || async {
            let left = count(
                &env.db,
                &format!("SELECT COUNT(*) FROM {HISTORY} WHERE integration_id = $1"),
                vec![id.into()],
            )
            .await;
            (left < 35).then_some(())
        },
    )
    .await;
    assert!(
        history::watermark(&env.db)
            .await
            .expect("watermark")
            .is_some()
    );
    let m = reqwest::get(format!("{}/metrics", app.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let deleted: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("syncfleet_history_deleted_runs_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no deletion counter:\n{m}"));
    assert!(deleted > 0.0);
    app.stop().await;
}

#[tokio::test]
async fn the_history_loop_runs_in_the_embedded_mode() {
    let app = spawn_standalone(&[
        ("SYNCFLEET_HISTORY_RETENTION", "1h"),
        ("SYNCFLEET_HISTORY_KEEP_RUNS", "1"),
        ("SYNCFLEET_HISTORY_PERIOD_MS", "200"),
    ])
    .await;
    let db = Database::connect(format!("sqlite://{}?mode=rwc", app.db_path.display()))
        .await
        .expect("sqlite");
    let id = plant_recent_history(&db).await;
    eventually(
        Duration::from_secs(15),
        "old runs deleted by the loop",
        || async {
            let left = count(
                &db,
                &format!("SELECT COUNT(*) FROM {HISTORY} WHERE integration_id = $1"),
                vec![id.into()],
            )
            .await;
            (left < 35).then_some(())
        },
    )
    .await;
    let rolled = count(
        &db,
        &format!("SELECT COUNT(*) FROM {STATS_TABLE} WHERE integration_id = $1"),
        vec![id.into()],
    )
    .await;
    assert!(rolled > 0);
    let (s, stats) = app.client.get("/api/sync/stats?window=24h").await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["overall"]["runs"], 35, "{stats}");
    let _ = db.close().await;
    app.stop().await;
}
