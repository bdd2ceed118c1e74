//! `history-bench retention`: does the retention keep the history bounded, and the
//! history page fast, while runs keep coming?
//!
//! A fresh database with M integrations; this process writes finished runs into the
//! history table at `--rate` rows per wall second, their `completed_at` advancing
//! `--per-hour` runs per simulated hour (compressed time: a simulated hour passes in
//! `per-hour / rate` wall seconds). Beside it, as an API replica's history loop would,
//! a task runs the rollup and the retention pass every `--period-ms` wall milliseconds
//! with the simulated clock (`Clock::At`), with the production batch size and pause; and
//! `--clients` readers, each paced at `--reader-rate` requests per second, read
//! `GET /api/integrations/{id}/sync-history?pageSize=20` of random integrations from the
//! real `syncfleet api` process. Every half simulated hour it samples the history rows,
//! the table and index size, the aggregates' size, the watermark and the page latency.
//!
//! cargo run --release -p tests --bin history-bench -- retention --runs 10000000 \
//!     --integrations 10000 --per-hour 1000000 --rate 10000 --retention-mins 60 --keep 100

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DatabaseConnection;
use syncfleet_worker::db as q;
use syncfleet_worker::history::{
    self, Clock, HISTORY, HistoryConfig, STATS_TABLE, retention, rollup,
};
use tests::procs;
use tokio_util::sync::CancellationToken;

use super::{api_vars, flag, fresh_db, insert_runs_sql, median, seed_integrations};

const DB: &str = "syncfleet_bench_retention";

struct Shared {
    /// The simulated clock, unix ms.
    sim_ms: AtomicI64,
    inserted: AtomicU64,
    deleted: AtomicU64,
    rollup_ms: Mutex<Vec<f64>>,
    retention_ms: Mutex<Vec<f64>>,
    latencies_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
    done: AtomicBool,
}

impl Shared {
    fn sim(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.sim_ms.load(Ordering::Relaxed)).unwrap_or_default()
    }
}

async fn one_i64(db: &DatabaseConnection, sql: &str) -> i64 {
    q::query(db, sql, [])
        .await
        .expect(sql)
        .first()
        .map(|r| r.try_get_by_index::<i64>(0).unwrap_or(0))
        .unwrap_or(0)
}

pub async fn run() {
    let runs: u64 = flag("runs", 10_000_000);
    let m: u64 = flag("integrations", 10_000);
    let per_hour: u64 = flag("per-hour", 1_000_000);
    let rate: u64 = flag("rate", 10_000);
    let retention_mins: u64 = flag("retention-mins", 60);
    let keep: u32 = flag("keep", 100);
    let period_ms: u64 = flag("period-ms", 2_000);
    let clients: u64 = flag("clients", 2);
    let reader_rate: u64 = flag("reader-rate", 100);
    let batch: u64 = flag("batch", 5_000);

    let (db, db_url) = fresh_db(DB, 8).await;
    seed_integrations(&db, m).await;
    let t0 = history::floor_hour(history::db_now(&db).await.unwrap());
    let step_us = 3_600_000_000 / per_hour;
    let cfg = HistoryConfig {
        retention: Duration::from_secs(retention_mins * 60),
        keep_runs: keep,
        ..HistoryConfig::default()
    };
    eprintln!(
        "retention bench: {runs} runs over {m} integrations, {per_hour} per simulated hour, {rate} rows/s \
         ({:.0}× compressed), retention {retention_mins} min, keep {keep}, passes every {period_ms} ms",
        3600.0 * rate as f64 / per_hour as f64
    );

    let port = procs::free_port();
    let token = "bench-admin-token-0123456789";
    let mut api = procs::syncfleet("api", &api_vars(&db_url, port, token));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    for _ in 0..200 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = q::query(&db, "SELECT CAST(id AS TEXT) FROM integrations", [])
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();

    let shared = Arc::new(Shared {
        sim_ms: AtomicI64::new(t0.timestamp_millis()),
        inserted: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        rollup_ms: Mutex::new(Vec::new()),
        retention_ms: Mutex::new(Vec::new()),
        latencies_us: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let stop = CancellationToken::new();

    // The history loop, on the simulated clock.
    let maint = {
        let (db, shared, cfg, stop) = (db.clone(), shared.clone(), cfg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut keep = retention::Boundaries::default();
            while !stop.is_cancelled() {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(period_ms)) => {}
                    () = stop.cancelled() => break,
                }
                let now = Clock::At(shared.sim());
                let t = Instant::now();
                if let Err(e) = rollup::pass(&db, &cfg, now).await {
                    eprintln!("rollup failed: {e}");
                }
                shared
                    .rollup_ms
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                let t = Instant::now();
                match retention::pass_with(&db, &cfg, now, &mut keep, &stop).await {
                    Ok(r) => {
                        shared.deleted.fetch_add(r.deleted, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("retention failed: {e}"),
                }
                shared
                    .retention_ms
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            }
        })
    };

    // Paced readers of the history page.
    let mut readers = Vec::new();
    for c in 0..clients {
        let (http, base, ids, shared) = (http.clone(), base.clone(), ids.clone(), shared.clone());
        readers.push(tokio::spawn(async move {
            let gap = Duration::from_micros(1_000_000 / reader_rate.max(1));
            let mut i = (c as usize * 7919) % ids.len();
            let mut next = Instant::now();
            while !shared.done.load(Ordering::Relaxed) {
                i = (i * 48271 + 11) % ids.len();
                let t = Instant::now();
                let r = http
                    .get(format!(
                        "{base}/api/integrations/{}/sync-history?pageSize=20",
                        ids[i]
                    ))
                    .bearer_auth(token)
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    shared
                        .latencies_us
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_micros() as u64);
                } else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
                next += gap;
                let now = Instant::now();
                if next > now {
                    tokio::time::sleep(next - now).await;
                } else {
                    next = now;
                }
            }
        }));
    }

    // The sampler: every half simulated hour.
    let sampler = {
        let (db, shared) = (db.clone(), shared.clone());
        tokio::spawn(async move {
            println!(
                "| simulated time | runs written | runs deleted | history rows | table + indexes MB | aggregates MB | watermark | page p50 / p99 ms |"
            );
            println!("|---|---|---|---|---|---|---|---|");
            let mut next = t0 + TimeDelta::minutes(30);
            let mut samples: Vec<(f64, f64, f64, f64)> = Vec::new();
            let mut all: Vec<u64> = Vec::new();
            loop {
                let finished = shared.done.load(Ordering::Relaxed);
                if shared.sim() >= next || finished {
                    let rows = one_i64(&db, &format!("SELECT COUNT(*) FROM {HISTORY}")).await;
                    let size =
                        one_i64(&db, &format!("SELECT pg_total_relation_size('{HISTORY}')")).await;
                    let agg = one_i64(
                        &db,
                        &format!("SELECT pg_total_relation_size('{STATS_TABLE}')"),
                    )
                    .await;
                    let wm = history::watermark(&db).await.ok().flatten();
                    let mut lat = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
                    lat.sort_unstable();
                    let pct = |p: f64| {
                        if lat.is_empty() {
                            0.0
                        } else {
                            lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0
                        }
                    };
                    let hours = (shared.sim() - t0).num_minutes() as f64 / 60.0;
                    println!(
                        "| {hours:.1} h | {} | {} | {rows} | {:.0} | {:.1} | {} | {:.2} / {:.2} |",
                        shared.inserted.load(Ordering::Relaxed),
                        shared.deleted.load(Ordering::Relaxed),
                        size as f64 / 1_048_576.0,
                        agg as f64 / 1_048_576.0,
                        wm.map_or("—".into(), |w| format!(
                            "+{:.1} h",
                            (w - t0).num_minutes() as f64 / 60.0
                        )),
                        pct(0.5),
                        pct(0.99),
                    );
                    samples.push((rows as f64, size as f64 / 1_048_576.0, pct(0.5), pct(0.99)));
                    all.extend(lat);
                    next += TimeDelta::minutes(30);
                    if finished {
                        return (samples, all);
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // The writer.
    let started = Instant::now();
    let mut g = 0u64;
    while g < runs {
        let n = batch.min(runs - g);
        let sql = insert_runs_sql(HISTORY, &t0.to_rfc3339(), g, g + n - 1, step_us, m);
        q::exec(&db, sql, []).await.expect("insert runs");
        g += n;
        shared.inserted.store(g, Ordering::Relaxed);
        shared.sim_ms.store(
            t0.timestamp_millis() + i64::try_from(g * step_us / 1000).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let due = Duration::from_secs_f64(g as f64 / rate as f64);
        let spent = started.elapsed();
        if due > spent {
            tokio::time::sleep(due - spent).await;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    // Let the last passes run once more at the final simulated time.
    tokio::time::sleep(Duration::from_millis(period_ms * 2)).await;
    shared.done.store(true, Ordering::Relaxed);
    stop.cancel();
    let _ = maint.await;
    for r in readers {
        let _ = r.await;
    }
    let (samples, mut all) = sampler.await.unwrap();
    api.terminate(Duration::from_secs(10));

    all.sort_unstable();
    let overall = |p: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0
        }
    };
    // Steady state: the samples after the first two simulated hours.
    let steady: Vec<_> = samples.iter().skip(4).collect();
    let col =
        |f: fn(&(f64, f64, f64, f64)) -> f64| -> Vec<f64> { steady.iter().map(|s| f(s)).collect() };
    let (rows_med, rows_min, rows_max) = median(&col(|s| s.0));
    let (mb_med, mb_min, mb_max) = median(&col(|s| s.1));
    let (p99_med, p99_min, p99_max) = median(&col(|s| s.3));
    let (roll_med, _, roll_max) = median(&shared.rollup_ms.lock().unwrap());
    let (ret_med, _, ret_max) = median(&shared.retention_ms.lock().unwrap());
    println!();
    println!(
        "written {runs} runs in {wall:.0} s ({:.0} rows/s), deleted {}, reader errors {}",
        runs as f64 / wall,
        shared.deleted.load(Ordering::Relaxed),
        shared.errors.load(Ordering::Relaxed)
    );
    println!(
        "steady state (after 2 simulated hours): history rows {rows_med:.0} ({rows_min:.0}–{rows_max:.0}), \
         table + indexes {mb_med:.0} MB ({mb_min:.0}–{mb_max:.0}), page p99 per half hour {p99_med:.2} ms ({p99_min:.2}–{p99_max:.2})"
    );
    println!(
        "page latency over the whole run: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        overall(0.5),
        overall(0.99),
        overall(1.0),
        all.len()
    );
    println!(
        "rollup pass {roll_med:.0} ms median, {roll_max:.0} ms max; retention pass {ret_med:.0} ms median, {ret_max:.0} ms max"
    );
    super::drop_db(DB).await;
}
