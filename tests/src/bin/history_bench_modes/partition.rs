//! `history-bench partition`: the retention's batched deletes against dropping a time
//! partition, for the same rows, on PostgreSQL.
//!
//! Each round seeds a fresh database with `--rows` finished runs of one hour over M
//! integrations, twice: into the history table as it is (with its indexes), and into a
//! copy partitioned by `completed_at` by the hour (the same columns and checks, the same
//! indexes as partition-local ones: a partitioned table's unique indexes must contain the
//! partition key, so the one-live-run and one-run-per-slot indexes cannot be global).
//! After `VACUUM ANALYZE` and a `CHECKPOINT` (so both pay the same full-page images),
//! it measures on one database session, by wall time, that backend's CPU time
//! (`/proc`) and the WAL written (`pg_current_wal_lsn`, cluster-wide):
//!
//! - the retention pass (`retention::pass`, batches of 5,000, no pause, keep 1 run per
//!   integration) that deletes the hour's runs, then the `VACUUM` that makes their space
//!   reusable (the deletes leave dead rows and index entries behind);
//! - `DROP TABLE` of the hour's partition.
//!
//! cargo run --release -p tests --bin history-bench -- partition --rows 1000000 --rounds 3

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use syncfleet_worker::db as q;
use syncfleet_worker::history::{self, Clock, HISTORY, HistoryConfig, retention, rollup};
use tests::fleet::sys::cpu_secs;
use tokio_util::sync::CancellationToken;

use super::{drop_db, flag, fresh_db, insert_runs_sql, median, seed_integrations};

const DB: &str = "syncfleet_bench_partition";

/// `(wall s, backend CPU s, WAL MB)` of `work`.
async fn measure<F, Fut>(db: &DatabaseConnection, work: F) -> (f64, f64, f64)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let pid: i32 = q::query(db, "SELECT pg_backend_pid() AS pid", [])
        .await
        .unwrap()[0]
        .try_get("", "pid")
        .unwrap();
    let lsn = |db: &DatabaseConnection| {
        let db = db.clone();
        async move {
            q::query(
                &db,
                "SELECT CAST(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS BIGINT) AS b",
                [],
            )
            .await
            .unwrap()[0]
                .try_get::<i64>("", "b")
                .unwrap()
        }
    };
    let (cpu0, wal0, t) = (cpu_secs(pid), lsn(db).await, Instant::now());
    work().await;
    let wall = t.elapsed().as_secs_f64();
    let (cpu1, wal1) = (cpu_secs(pid), lsn(db).await);
    (wall, cpu1 - cpu0, (wal1 - wal0) as f64 / 1_048_576.0)
}

async fn size_mb(db: &DatabaseConnection, table: &str) -> f64 {
    let b: i64 = q::query(
        db,
        format!("SELECT pg_total_relation_size('{table}') AS b"),
        [],
    )
    .await
    .unwrap()[0]
        .try_get("", "b")
        .unwrap();
    b as f64 / 1_048_576.0
}

pub async fn run() {
    let rows: u64 = flag("rows", 1_000_000);
    let m: u64 = flag("integrations", 10_000);
    let rounds: u64 = flag("rounds", 3);
    let mut results: Vec<[f64; 9]> = Vec::new();
    for round in 0..rounds {
        // One session, so `pg_backend_pid()` is the backend doing the work.
        let (db, _) = fresh_db(DB, 1).await;
        seed_integrations(&db, m).await;
        let now = history::db_now(&db).await.unwrap();
        let hour = history::floor_hour(now) - TimeDelta::days(2);
        let step_us = 3_600_000_000 / rows;
        let t0 = hour.to_rfc3339();

        // Batched deletes.
        q::exec(
            &db,
            insert_runs_sql(HISTORY, &t0, 0, rows - 1, step_us, m),
            [],
        )
        .await
        .unwrap();
        db.execute_unprepared(&format!("VACUUM ANALYZE {HISTORY}"))
            .await
            .unwrap();
        let cfg = HistoryConfig {
            retention: Duration::from_secs(3600),
            keep_runs: 1,
            batch_pause: Duration::ZERO,
            ..HistoryConfig::default()
        };
        let clock = Clock::At(hour + TimeDelta::hours(3));
        rollup::pass(&db, &cfg, clock).await.unwrap();
        let before = size_mb(&db, HISTORY).await;
        db.execute_unprepared("CHECKPOINT").await.unwrap();
        let mut deleted = 0;
        let del = measure(&db, || async {
            deleted = retention::pass(&db, &cfg, clock, &CancellationToken::new())
                .await
                .unwrap()
                .deleted;
        })
        .await;
        let vac = measure(&db, || async {
            db.execute_unprepared(&format!("VACUUM {HISTORY}"))
                .await
                .unwrap();
        })
        .await;

        // A partitioned copy, and dropping the hour's partition.
        let next = hour + TimeDelta::hours(1);
        for sql in [
            format!(
                "CREATE TABLE part_history (LIKE {HISTORY} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) \
                 PARTITION BY RANGE (completed_at)"
            ),
            format!(
                "CREATE TABLE part_history_h PARTITION OF part_history FOR VALUES FROM ('{hour}') TO ('{next}')",
                hour = hour.to_rfc3339(),
                next = next.to_rfc3339()
            ),
            format!(
                "CREATE TABLE part_history_next PARTITION OF part_history FOR VALUES FROM ('{next}') TO ('{later}')",
                next = next.to_rfc3339(),
                later = (next + TimeDelta::hours(1)).to_rfc3339()
            ),
            "ALTER TABLE part_history ADD PRIMARY KEY (id, completed_at)".into(),
            "CREATE INDEX ON part_history (integration_id, scheduled_for)".into(),
            "CREATE INDEX ON part_history (integration_id, id DESC)".into(),
            "CREATE INDEX ON part_history (integration_id, status, id DESC)".into(),
            "CREATE INDEX ON part_history (completed_at)".into(),
            "CREATE INDEX ON part_history (integration_id) WHERE status IN ('PENDING', 'RUNNING')"
                .into(),
            "CREATE INDEX ON part_history (integration_id) WHERE status = 'RUNNING'".into(),
            "CREATE INDEX ON part_history (enqueued_at) WHERE status = 'PENDING'".into(),
            "CREATE INDEX ON part_history (lease_until) WHERE status = 'RUNNING'".into(),
        ] {
            db.execute_unprepared(&sql).await.unwrap();
        }
        q::exec(
            &db,
            insert_runs_sql("part_history", &t0, 0, rows - 1, step_us, m),
            [],
        )
        .await
        .unwrap();
        db.execute_unprepared("VACUUM ANALYZE part_history")
            .await
            .unwrap();
        let part_size = size_mb(&db, "part_history_h").await;
        db.execute_unprepared("CHECKPOINT").await.unwrap();
        let drop = measure(&db, || async {
            db.execute_unprepared("DROP TABLE part_history_h")
                .await
                .unwrap();
        })
        .await;
        eprintln!(
            "round {}: {rows} rows ({before:.0} MB; partition {part_size:.0} MB): batched delete of {deleted} \
             {:.2} s, {:.2} CPU s, {:.0} MB WAL; vacuum {:.2} s, {:.2} CPU s, {:.0} MB WAL; \
             drop partition {:.3} s, {:.3} CPU s, {:.2} MB WAL",
            round + 1,
            del.0,
            del.1,
            del.2,
            vac.0,
            vac.1,
            vac.2,
            drop.0,
            drop.1,
            drop.2
        );
        results.push([
            del.0, del.1, del.2, vac.0, vac.1, vac.2, drop.0, drop.1, drop.2,
        ]);
        let _ = db.close().await;
        drop_db(DB).await;
    }
    let col = |i: usize| {
        let (med, lo, hi) = median(&results.iter().map(|r| r[i]).collect::<Vec<_>>());
        format!("{med:.3} ({lo:.3}–{hi:.3})")
    };
    println!("| {rows} rows of one hour, {m} integrations | wall s | backend CPU s | WAL MB |");
    println!("|---|---|---|---|");
    println!(
        "| batched delete (retention pass) | {} | {} | {} |",
        col(0),
        col(1),
        col(2)
    );
    println!("| then VACUUM | {} | {} | {} |", col(3), col(4), col(5));
    println!(
        "| DROP TABLE of the partition | {} | {} | {} |",
        col(6),
        col(7),
        col(8)
    );
}
