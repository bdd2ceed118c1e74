//! The fleet benchmark: the real `syncfleet api` and N `syncfleet worker` processes
//! against the local PostgreSQL and a private `redis-server`, measured from the outside
//! (database rows, `/proc`, Redis `INFO`, the workers' `/metrics`).
//!
//! cargo run --release -p tests --bin fleet-bench -- <scenario> [--key value]...
//!
//! Scenarios (options and defaults in `Opts`):
//! - `throughput`: `--integrations` (50000) synthetic integrations with `--records` (0)
//!   records each, all due at one instant; completed runs/s from that instant to the last
//!   `completed_at`, for each of `--workers` (1,2,4) worker processes, `--rounds` (3) times.
//! - `lag`: `--integrations` (100000) of which `--rate` (1000) per second fall due for
//!   `--window` (60) s; `started_at − scheduled_for` p50 / p99 / max.
//! - `freshness`: `--integrations` (100000) on `--interval` (300) s intervals, 5% failing
//!   forever; p99 staleness of the healthy ones over `--duration` s, and the failing
//!   ones' backoff and disable checked run by run.
//! - `storm`: a shared source goes down: `--integrations` (5000) integrations fail with a
//!   config error (disabled at once) in the same instant as `--healthy` (20000) healthy
//!   ones are due; `--endpoints` (1) webhook endpoints (a receiver in this process) each
//!   take the `integration.disabled` events. Reports when the last event arrived and the healthy
//!   wave's runs/s, against a round of the healthy wave alone.
//! - `footprint`: RSS of api and workers idle and under load, PostgreSQL bytes per 1M
//!   runs, Redis `used_memory` idle, after `--runs` (1000000) completed runs and after the
//!   queue retention window.
//!
//! Every round gets a fresh database and a fresh `redis-server`, dropped afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tests::fleet::sys::{cpu_secs, cpu_secs_named};
use tests::fleet::{self, Fleet};
use tests::procs::RedisServer;

#[derive(Debug, Clone)]
struct Opts {
    scenario: String,
    integrations: u64,
    records: u64,
    workers: Vec<usize>,
    rounds: usize,
    /// `throughput`: measure a second wave whose records are all unchanged.
    resync: bool,
    concurrency: usize,
    rate: u64,
    window: u64,
    interval: u64,
    duration: u64,
    runs: u64,
    retry_base_ms: u64,
    retention_ms: u64,
    /// `storm`: the healthy integrations due beside the failing ones.
    healthy: u64,
    /// `storm`: endpoints that each take every `integration.disabled` event.
    endpoints: u64,
    /// Extra `KEY=VALUE` settings for every process, comma separated.
    env: Vec<(String, String)>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().cloned().unwrap_or_else(|| {
        eprintln!("usage: fleet-bench <throughput|lag|freshness|footprint|storm> [--key value]...");
        std::process::exit(2)
    });
    let mut kv: HashMap<String, String> = HashMap::new();
    let mut it = args.iter().skip(1);
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            eprintln!("unexpected argument `{k}`");
            std::process::exit(2)
        };
        let v = it.next().cloned().unwrap_or_else(|| {
            eprintln!("--{k} needs a value");
            std::process::exit(2)
        });
        kv.insert(k.to_owned(), v);
    }
    let num = |k: &str, d: u64| -> u64 {
        kv.get(k).map_or(d, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("--{k}: `{v}` is not a number");
                std::process::exit(2)
            })
        })
    };
    let (default_n, default_interval) = match scenario.as_str() {
        "throughput" => (50_000, 86_400),
        "lag" | "freshness" => (100_000, 300),
        "footprint" => (50_000, 1),
        "storm" => (5_000, 86_400),
        other => {
            eprintln!("unknown scenario `{other}`");
            std::process::exit(2)
        }
    };
    let interval = num("interval", default_interval);
    Opts {
        integrations: num("integrations", default_n),
        records: num("records", 0),
        workers: kv
            .get("workers")
            .map(|w| w.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| match scenario.as_str() {
                "throughput" => vec![1, 2, 4],
                "storm" => vec![4],
                _ => vec![2],
            }),
        rounds: usize::try_from(num("rounds", 3)).unwrap_or(3),
        resync: kv.get("resync").is_some_and(|v| v == "true" || v == "1"),
        concurrency: usize::try_from(num("concurrency", 64)).unwrap_or(64),
        rate: num("rate", 1000),
        window: num("window", 60),
        interval,
        duration: num("duration", 2 * interval + 60),
        runs: num("runs", 1_000_000),
        retry_base_ms: num("retry-base-ms", 10_000),
        retention_ms: num("retention-ms", 30_000),
        healthy: num("healthy", 20_000),
        endpoints: num("endpoints", 1),
        env: kv
            .get("env")
            .map(|e| {
                e.split(',')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        scenario,
    }
}

// ---------------------------------------------------------------------------------------
// The fleet under test: `tests::fleet` on a fresh database of the machine's PostgreSQL

/// A [`Fleet`] on a database of its own, dropped by [`BenchFleet::stop`].
struct BenchFleet {
    fleet: Fleet,
    admin: DatabaseConnection,
    db_name: String,
}

impl std::ops::Deref for BenchFleet {
    type Target = Fleet;
    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl std::ops::DerefMut for BenchFleet {
    fn deref_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }
}

fn admin_url() -> String {
    std::env::var("SYNCFLEET_BENCH_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl BenchFleet {
    async fn start(o: &Opts, extra: &[(&str, String)]) -> Self {
        let admin = Database::connect(admin_url()).await.expect("PostgreSQL");
        let db_name = format!(
            "syncfleet_fleetbench_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        admin
            .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&db_name);
        let db_url = url.to_string();
        {
            let db = Database::connect(&db_url).await.unwrap();
            use migration::MigratorTrait;
            migration::Migrator::up(&db, None).await.unwrap();
            let _ = db.close().await;
        }
        // `FLEET_BENCH_EXPLAIN=<ms>`: the server logs the plan of every slower statement.
        if let Ok(ms) = std::env::var("FLEET_BENCH_EXPLAIN") {
            for set in [
                "session_preload_libraries = 'auto_explain'".to_owned(),
                format!("auto_explain.log_min_duration = {ms}"),
                "auto_explain.log_analyze = on".to_owned(),
            ] {
                admin
                    .execute_unprepared(&format!("ALTER DATABASE {db_name} SET {set}"))
                    .await
                    .unwrap();
            }
        }
        let redis = RedisServer::start().expect("redis-server");
        let mut vars = fleet::base_vars(&db_url, &redis.url());
        for (k, v) in [
            ("SYNCFLEET_WORKER_CONCURRENCY", o.concurrency.to_string()),
            ("SYNCFLEET_RETRY_BASE_MS", o.retry_base_ms.to_string()),
            ("SYNCFLEET_QUEUE_RETENTION_MS", o.retention_ms.to_string()),
        ] {
            vars.insert(k.to_owned(), v);
        }
        for (k, v) in extra {
            vars.insert((*k).to_owned(), v.clone());
        }
        for (k, v) in &o.env {
            vars.insert(k.clone(), v.clone());
        }
        let mut fleet = Fleet::new(&db_url, redis, vars).await;
        // `FLEET_BENCH_LOGS=<dir>` keeps every process's log there (`<label>.log`).
        if let Some(dir) = std::env::var_os("FLEET_BENCH_LOGS") {
            fleet.log_dir = Some(PathBuf::from(dir));
        }
        fleet.add_api(&[]).await;
        Self {
            fleet,
            admin,
            db_name,
        }
    }

    async fn stop(mut self) {
        self.fleet.stop(Duration::from_secs(30)).await;
        let _ = self
            .admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .await;
    }
}

/// CPU seconds of api, workers (summed), Redis and PostgreSQL.
fn cpu_split(f: &Fleet) -> [f64; 4] {
    [
        cpu_secs(f.api().pid()),
        f.workers.iter().map(|m| cpu_secs(m.pid())).sum(),
        f.redis.proc.as_ref().map_or(0.0, |p| cpu_secs(p.pid())),
        cpu_secs_named("postgres"),
    ]
}

fn median(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn fmt3(v: &[f64], digits: usize) -> String {
    let (m, lo, hi) = median(v);
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

fn max_of(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// All integrations due at one instant; runs/s from that instant to the last finish.
/// Waits until `n` runs succeeded in all.
async fn wait_for_successes(f: &BenchFleet, n: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done: i64 = f
            .one(
                "SELECT count(*) AS n FROM run_history WHERE status = 'SUCCESS'",
                "n",
            )
            .await;
        if done as u64 >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out at {done}/{n} successes"
        );
    }
}

/// Index entries written so far, estimated from the table statistics: every insert and
/// every non-HOT update writes one entry into each index of its table.
async fn index_tuples(f: &BenchFleet) -> f64 {
    f.one(
        "SELECT COALESCE(sum((t.n_tup_ins + t.n_tup_upd - t.n_tup_hot_upd) \
           * (SELECT count(*) FROM pg_index x WHERE x.indrelid = t.relid)), 0)::float8 AS n \
         FROM pg_stat_user_tables t",
        "n",
    )
    .await
}

async fn throughput(o: &Opts) {
    let mut table = Vec::new();
    for &w in &o.workers {
        let (mut rates, mut api_rss, mut worker_rss, mut per_run_stmts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut cpu: Vec<Vec<f64>> = Vec::new();
        for round in 0..o.rounds {
            let mut f = BenchFleet::start(o, &[]).await;
            f.add_workers(w).await;
            let n = o.integrations;
            f.seed(
                n,
                86_400,
                &format!("jsonb_build_object('records', {})", o.records),
                "t0 + interval '1 day'",
                "NULL",
            )
            .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let waves = if o.resync { 2 } else { 1 };
            if o.resync {
                // The first sync, not measured: the measured wave finds every record
                // unchanged (the synthetic connector's records are deterministic).
                f.exec("UPDATE integrations SET next_sync_at = now()").await;
                wait_for_successes(&f, n, Duration::from_secs(900)).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let idx0 = index_tuples(&f).await;
            let xact0: i64 = f
                .one(
                    "SELECT (xact_commit + xact_rollback)::bigint AS x FROM pg_stat_database WHERE datname = current_database()",
                    "x",
                )
                .await;
            // Due together, 2 s from now (so the UPDATE's own time is not counted).
            f.exec("UPDATE integrations SET next_sync_at = date_trunc('second', now()) + interval '3 seconds'")
                .await;
            let t0: chrono::DateTime<chrono::Utc> = f
                .one("SELECT min(next_sync_at) AS t FROM integrations", "t")
                .await;
            let cpu0 = cpu_split(&f);
            let deadline = Instant::now() + Duration::from_secs(900);
            let mut peak_api: f64 = 0.0;
            let mut peak_worker: f64 = 0.0;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (a, ws) = f.rss();
                peak_api = peak_api.max(a);
                peak_worker = peak_worker.max(max_of(&ws));
                let done: i64 = f
                    .one(
                        "SELECT count(*) AS n FROM sync_logs WHERE status = 'SUCCESS'",
                        "n",
                    )
                    .await;
                if done as u64 >= n * waves {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "throughput round timed out at {done}/{}",
                    n * waves
                );
            }
            let r = &f
                .rows(&format!(
                    "SELECT count(*) AS total, count(*) FILTER (WHERE status = 'SUCCESS') AS ok, \
                       max(claims) AS max_claims, \
                       count(*) FILTER (WHERE started_at IS NULL OR completed_at IS NULL) AS incomplete, \
                       extract(epoch FROM max(completed_at) - '{t0}'::timestamptz)::float8 AS secs \
                     FROM sync_logs"
                ))
                .await[0];
            let total: i64 = r.try_get("", "total").unwrap();
            let ok: i64 = r.try_get("", "ok").unwrap();
            let incomplete: i64 = r.try_get("", "incomplete").unwrap();
            let secs: f64 = r.try_get("", "secs").unwrap();
            let not_rescheduled: i64 = f
                .one(
                    "SELECT count(*) AS n FROM integrations WHERE next_sync_at IS NULL OR last_success_at IS NULL",
                    "n",
                )
                .await;
            let metric_runs = f.worker_counter("syncfleet_runs_total").await;
            let xact1: i64 = f
                .one(
                    "SELECT (xact_commit + xact_rollback)::bigint AS x FROM pg_stat_database WHERE datname = current_database()",
                    "x",
                )
                .await;
            let cpu1 = cpu_split(&f);
            // The statistics collector flushes within a second or so.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let idx_per_run = (index_tuples(&f).await - idx0) / n as f64;
            let per_run_us: Vec<f64> = (0..4)
                .map(|k| (cpu1[k] - cpu0[k]) / n as f64 * 1e6)
                .collect();
            assert_eq!(total, ok, "every run must succeed");
            assert_eq!(total as u64, n * waves, "one run per integration and wave");
            assert_eq!(incomplete, 0);
            assert_eq!(not_rescheduled, 0, "every integration rescheduled");
            let rate = n as f64 / secs;
            let (pa, pw) = f.peak_rss();
            eprintln!(
                "throughput workers={w} round {}: {n} runs in {secs:.2} s = {rate:.0} runs/s \
                 (metrics: {metric_runs:.0} runs; transactions/run {:.2}; peak RSS api {pa:.0} MB, worker {:.0} MB; \
                 CPU µs/run api {:.0}, workers {:.0}, redis {:.0}, postgres {:.0}; index tuples/run {idx_per_run:.1})",
                round + 1,
                (xact1 - xact0) as f64 / n as f64,
                max_of(&pw),
                per_run_us[0],
                per_run_us[1],
                per_run_us[2],
                per_run_us[3],
            );
            cpu.push(per_run_us);
            rates.push(rate);
            api_rss.push(pa.max(peak_api));
            worker_rss.push(max_of(&pw).max(peak_worker));
            per_run_stmts.push((xact1 - xact0) as f64 / n as f64);
            f.stop().await;
        }
        let cpu_med = |k: usize| median(&cpu.iter().map(|c| c[k]).collect::<Vec<_>>()).0;
        table.push(format!(
            "| {w} | {n} | {rec} | {} | {} | {:.0} / {:.0} / {:.0} / {:.0} | {} | {} |",
            fmt3(&rates, 0),
            fmt3(&per_run_stmts, 2),
            cpu_med(0),
            cpu_med(1),
            cpu_med(2),
            cpu_med(3),
            fmt3(&worker_rss, 0),
            fmt3(&api_rss, 0),
            n = o.integrations,
            rec = o.records,
        ));
    }
    println!(
        "| worker processes | runs | records/run | runs/s median (min–max) | PG transactions/run | CPU µs/run api / workers / Redis / PostgreSQL | worker peak RSS MB | api peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for l in table {
        println!("{l}");
    }
}

/// The event ids a [`Sink`] got, and when the last request came.
type Seen = (
    std::collections::HashSet<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// A webhook receiver: counts the distinct event ids it got and when the last one came.
#[derive(Clone, Default)]
struct Sink {
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

impl Sink {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        // Endpoints add `/<n>` to it.
        let me = self.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let me = me.clone();
                async move {
                    // One count per endpoint (path) and event.
                    let id = format!(
                        "{} {}",
                        uri.path(),
                        headers
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                    );
                    let mut g = me.seen.lock().unwrap();
                    g.0.insert(id);
                    g.1 = Some(chrono::Utc::now());
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().0.len()
    }

    fn last(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.seen.lock().unwrap().1
    }
}

/// A shared source goes down while a healthy wave runs; see the module docs.
async fn storm(o: &Opts) {
    let w = o.workers.first().copied().unwrap_or(4);
    let (healthy, failing) = (o.healthy, o.integrations);
    let (mut alone, mut beside, mut delivered_s, mut p99_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        for with_storm in [false, true] {
            let sink = Sink::default();
            let url = sink.start().await;
            let allow = [("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true".to_owned())];
            let mut f = BenchFleet::start(o, &allow).await;
            f.add_workers(w).await;
            f.seed_group(
                "h",
                healthy,
                86_400,
                "'{\"records\": 0}'::jsonb",
                "t0 + interval '1 day'",
                "NULL",
            )
            .await;
            if with_storm {
                f.seed_group(
                    "s",
                    failing,
                    86_400,
                    "'{\"failAlways\": true, \"errorClass\": \"config\"}'::jsonb",
                    "t0 + interval '1 day'",
                    "NULL",
                )
                .await;
                f.exec(&format!(
                    "INSERT INTO notification_endpoints (id, workspace_id, url, description, event_types, enabled, format, \
                       secret, created_at, updated_at) \
                     SELECT gen_random_uuid(), w.id, '{url}/' || k, 'storm', '[\"integration.disabled\"]', true, 'standard', \
                       'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', now(), now() \
                     FROM (SELECT id FROM workspaces ORDER BY created_at LIMIT 1) w, generate_series(1, {}) k",
                    o.endpoints
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            f.exec("UPDATE integrations SET next_sync_at = date_trunc('second', now()) + interval '3 seconds'")
                .await;
            let t0: chrono::DateTime<chrono::Utc> = f
                .one("SELECT min(next_sync_at) AS t FROM integrations", "t")
                .await;
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let done: i64 = f
                    .one(
                        "SELECT count(*) AS n FROM run_history r JOIN integrations i ON i.id = r.integration_id \
                         WHERE r.status = 'SUCCESS' AND i.name LIKE 'h %'",
                        "n",
                    )
                    .await;
                let events_in = !with_storm || sink.count() as u64 >= failing * o.endpoints;
                if done as u64 >= healthy && events_in {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "storm round timed out at {done}/{healthy} healthy runs, {}/{} deliveries",
                    sink.count(),
                    failing * o.endpoints
                );
            }
            let secs: f64 = f
                .one(
                    &format!(
                        "SELECT extract(epoch FROM max(r.completed_at) - '{t0}'::timestamptz)::float8 AS s \
                         FROM run_history r JOIN integrations i ON i.id = r.integration_id WHERE i.name LIKE 'h %'"
                    ),
                    "s",
                )
                .await;
            let rate = healthy as f64 / secs;
            if with_storm {
                let last = sink.last().expect("events arrived");
                let after = (last - t0).num_milliseconds() as f64 / 1000.0;
                // Event written (the failed run's finish) → delivered (the attempt's finish).
                let p99: f64 = f
                    .one(
                        "SELECT (percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.finished_at - e.created_at)))::float8 AS p \
                         FROM delivery_attempts a JOIN notification_deliveries d ON d.id = a.delivery_id \
                         JOIN events e ON e.id = d.event_id WHERE a.outcome = 'delivered'",
                        "p",
                    )
                    .await;
                let disabled: i64 = f
                    .one(
                        "SELECT count(*) AS n FROM integrations WHERE health = 'disabled'",
                        "n",
                    )
                    .await;
                assert_eq!(
                    disabled as u64, failing,
                    "every failing integration disabled"
                );
                eprintln!(
                    "storm round {}: {failing} disabled, {} deliveries, the last {after:.1} s after the due instant \
                     (event → delivered p99 {p99:.2} s); healthy wave {rate:.0} runs/s",
                    round + 1,
                    sink.count(),
                );
                beside.push(rate);
                delivered_s.push(after);
                p99_s.push(p99);
            } else {
                eprintln!(
                    "storm round {} (healthy wave alone): {rate:.0} runs/s",
                    round + 1
                );
                alone.push(rate);
            }
            f.stop().await;
        }
    }
    let (a, b) = (median(&alone).0, median(&beside).0);
    println!(
        "| workers | healthy runs | failing (disabled) × endpoints | last event delivered after due, s | event → delivered p99, s | healthy runs/s alone | healthy runs/s in the storm | slowdown |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {w} | {healthy} | {failing} × {} | {} | {} | {} | {} | {:.1} % |",
        o.endpoints,
        fmt3(&delivered_s, 1),
        fmt3(&p99_s, 2),
        fmt3(&alone, 0),
        fmt3(&beside, 0),
        (1.0 - b / a) * 100.0
    );
}

/// `rate` integrations fall due per second for `window` seconds.
async fn lag(o: &Opts) {
    let w = o.workers.first().copied().unwrap_or(2);
    let due = o.rate * o.window;
    let step_us = 1_000_000 / o.rate.max(1);
    let (mut p50s, mut p99s, mut maxs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let mut f = BenchFleet::start(o, &[]).await;
        f.add_workers(w).await;
        f.seed(
            o.integrations,
            86_400,
            "'{\"records\": 0}'::jsonb",
            "t0 + interval '1 day'",
            "NULL",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        f.exec(&format!(
            "UPDATE integrations i SET next_sync_at = date_trunc('second', now()) + interval '3 seconds' \
               + ((g - 1) * {step_us}) * interval '1 microsecond' \
             FROM (SELECT md5('i' || g)::uuid AS id, g FROM generate_series(1, {due}) g) s WHERE i.id = s.id"
        ))
        .await;
        let deadline = Instant::now() + Duration::from_secs(o.window + 120);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let done: i64 = f
                .one(
                    "SELECT count(*) AS n FROM sync_logs WHERE status = 'SUCCESS'",
                    "n",
                )
                .await;
            if done as u64 >= due {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lag round timed out at {done}/{due}"
            );
        }
        let r = &f
            .rows(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l) AS p50, \
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY l) AS p99, max(l) AS mx, count(*) AS n \
                 FROM (SELECT extract(epoch FROM started_at - scheduled_for)::float8 * 1000 AS l FROM sync_logs) s",
            )
            .await[0];
        let (p50, p99, mx): (f64, f64, f64) = (
            r.try_get("", "p50").unwrap(),
            r.try_get("", "p99").unwrap(),
            r.try_get("", "mx").unwrap(),
        );
        eprintln!(
            "lag round {}: {due} runs at {}/s: p50 {p50:.1} ms, p99 {p99:.1} ms, max {mx:.1} ms",
            round + 1,
            o.rate
        );
        // Where in the window the worst runs fell, and the second-by-second p99: a tail
        // at the start is the fleet warming up (connections, prepared statements), one
        // spread over the window is steady state.
        let worst = f
            .rows(
                "WITH l AS (SELECT extract(epoch FROM scheduled_for - min(scheduled_for) OVER ())::float8 AS at, \
                   extract(epoch FROM started_at - scheduled_for)::float8 * 1000 AS l FROM sync_logs) \
                 SELECT floor(at)::bigint AS sec, percentile_cont(0.99) WITHIN GROUP (ORDER BY l) AS p99, max(l) AS mx \
                 FROM l GROUP BY 1 ORDER BY mx DESC LIMIT 5",
            )
            .await;
        let worst: Vec<String> = worst
            .iter()
            .map(|r| {
                let sec: i64 = r.try_get("", "sec").unwrap();
                let p99: f64 = r.try_get("", "p99").unwrap();
                let mx: f64 = r.try_get("", "mx").unwrap();
                format!("second {sec}: p99 {p99:.1} max {mx:.1}")
            })
            .collect();
        eprintln!(
            "lag round {}: worst seconds: {}",
            round + 1,
            worst.join("; ")
        );
        p50s.push(p50);
        p99s.push(p99);
        maxs.push(mx);
        f.stop().await;
    }
    println!(
        "| integrations | due/s × s | worker processes | lag p50 ms | lag p99 ms | lag max ms |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} × {} | {w} | {} | {} | {} |",
        o.integrations,
        o.rate,
        o.window,
        fmt3(&p50s, 1),
        fmt3(&p99s, 1),
        fmt3(&maxs, 1)
    );
}

/// Steady state on `interval`, 5% of sources failing forever.
async fn freshness(o: &Opts) {
    let w = o.workers.first().copied().unwrap_or(2);
    let i_ms = o.interval * 1000;
    let (mut p99s, mut maxes, mut bad_gaps, mut undisabled) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let mut f = BenchFleet::start(o, &[]).await;
        f.add_workers(w).await;
        // Each integration's first slot is spread over one interval, and its last success
        // one interval before that: the fleet starts in steady state.
        f.seed(
            o.integrations,
            o.interval,
            "CASE WHEN g % 20 = 0 THEN '{\"records\": 0, \"failAlways\": true}'::jsonb ELSE '{\"records\": 0}'::jsonb END",
            &format!("t0 + interval '5 seconds' + ((g * 7919) % {i_ms}) * interval '1 millisecond'"),
            &format!(
                "t0 + interval '5 seconds' + ((g * 7919) % {i_ms}) * interval '1 millisecond' - interval '{} seconds'",
                o.interval
            ),
        )
        .await;
        let healthy = "NOT (config ? 'failAlways')";
        let end = Instant::now() + Duration::from_secs(o.duration);
        let mut worst_p99: f64 = 0.0;
        let mut worst_max: f64 = 0.0;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let r = &f
                .rows(&format!(
                    "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99, max(s) AS mx \
                     FROM (SELECT extract(epoch FROM now() - last_success_at)::float8 AS s \
                           FROM integrations WHERE {healthy}) x"
                ))
                .await[0];
            let (p99, mx): (f64, f64) =
                (r.try_get("", "p99").unwrap(), r.try_get("", "mx").unwrap());
            worst_p99 = worst_p99.max(p99);
            worst_max = worst_max.max(mx);
        }
        // Failing ones: every retry no earlier than its backoff after the failure before,
        // and disabled once they reach their maximum.
        let base_ms = o.retry_base_ms;
        let gaps: i64 = f
            .one(
                &format!(
                    "SELECT count(*) AS n FROM (\
                       SELECT s.attempt, s.scheduled_for, lag(s.completed_at) OVER (PARTITION BY s.integration_id ORDER BY s.scheduled_for) AS prev \
                       FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE NOT ({healthy})) x \
                     WHERE prev IS NOT NULL AND attempt >= 2 \
                       AND scheduled_for < prev + least({base_ms} * power(2, attempt - 2), 1800000) * interval '1 millisecond'"
                ),
                "n",
            )
            .await;
        let failing_runs: i64 = f
            .one(
                &format!(
                    "SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE NOT ({healthy})"
                ),
                "n",
            )
            .await;
        // Integrations whose first failure came early enough to exhaust their retries.
        let not_disabled: i64 = f
            .one(
                &format!(
                    "SELECT count(*) AS n FROM integrations i WHERE NOT ({healthy}) AND sync_enabled \
                     AND (SELECT min(completed_at) FROM sync_logs s WHERE s.integration_id = i.id) \
                         < now() - ({base_ms} * 8 + 5000) * interval '1 millisecond'"
                ),
                "n",
            )
            .await;
        let disabled: i64 = f
            .one(
                &format!("SELECT count(*) AS n FROM integrations WHERE NOT ({healthy}) AND NOT sync_enabled AND health = 'disabled'"),
                "n",
            )
            .await;
        let healthy_failed: i64 = f
            .one(
                &format!("SELECT count(*) AS n FROM sync_logs s JOIN integrations i ON i.id = s.integration_id WHERE {healthy} AND s.status <> 'SUCCESS' AND s.status <> 'PENDING' AND s.status <> 'RUNNING'"),
                "n",
            )
            .await;
        let runs: i64 = f
            .one(
                "SELECT count(*) AS n FROM sync_logs WHERE completed_at IS NOT NULL",
                "n",
            )
            .await;
        eprintln!(
            "freshness round {}: {runs} runs in {} s; healthy staleness p99 {worst_p99:.2} s, max {worst_max:.2} s \
             (interval {} s); failing: {failing_runs} runs, {gaps} retries earlier than their backoff, \
             {disabled} disabled, {not_disabled} past their maximum yet enabled; healthy non-success runs {healthy_failed}",
            round + 1,
            o.duration,
            o.interval
        );
        p99s.push(worst_p99);
        maxes.push(worst_max);
        bad_gaps.push(gaps as f64);
        undisabled.push(not_disabled as f64);
        f.stop().await;
    }
    println!(
        "| integrations | interval s | duration s | healthy staleness p99 s | max s | retries before backoff | failing past max still enabled |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        o.integrations,
        o.interval,
        o.duration,
        fmt3(&p99s, 2),
        fmt3(&maxes, 2),
        fmt3(&bad_gaps, 0),
        fmt3(&undisabled, 0)
    );
}

/// Idle and loaded RSS, PostgreSQL bytes per 1M runs, Redis memory after `runs` runs and
/// after the retention window.
async fn footprint(o: &Opts) {
    let w = o.workers.first().copied().unwrap_or(2);
    let mut f = BenchFleet::start(o, &[("SYNCFLEET_REAPER_PERIOD_MS", "2000".to_owned())]).await;
    f.add_workers(w).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (idle_api, idle_workers) = f.rss();
    let redis_idle = f.redis_used_memory().await;
    f.seed(
        o.integrations,
        o.interval,
        &format!("jsonb_build_object('records', {})", o.records),
        "t0 + interval '1 second'",
        "NULL",
    )
    .await;
    let began = Instant::now();
    let (mut peak_api, mut peak_worker): (f64, f64) = (0.0, 0.0);
    let mut last_print = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (a, ws) = f.rss();
        peak_api = peak_api.max(a);
        peak_worker = peak_worker.max(max_of(&ws));
        let done: i64 = f
            .one("SELECT sum(runs_total)::bigint AS n FROM integrations", "n")
            .await;
        if last_print.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "footprint: {done} runs scheduled after {:.0} s",
                began.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if done as u64 >= o.runs {
            break;
        }
    }
    // Stop scheduling, let the queue drain.
    // Rows locked in id order, as the workers' batched finishes lock them.
    f.exec(
        "UPDATE integrations SET sync_enabled = false, health = 'paused', next_sync_at = NULL \
         WHERE id IN (SELECT id FROM integrations ORDER BY id FOR UPDATE)",
    )
    .await;
    loop {
        let live: i64 = f.one("SELECT count(*) AS n FROM live_runs", "n").await;
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = began.elapsed().as_secs_f64();
    let runs: i64 = f.one("SELECT count(*) AS n FROM sync_logs", "n").await;
    let redis_loaded = f.redis_used_memory().await;
    let (pa, pw) = f.peak_rss();
    let bytes: i64 = f
        .one(
            "SELECT pg_total_relation_size('sync_logs')::bigint AS b",
            "b",
        )
        .await;
    // Past the retention window, then until the hygiene passes stop finding anything
    // (each pass scans a bounded slice of the finished set; at most 5 minutes).
    tokio::time::sleep(Duration::from_millis(o.retention_ms)).await;
    let drained_at = Instant::now();
    let mut last = f.redis_used_memory().await;
    let mut settle_secs = 0.0;
    while drained_at.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = f.redis_used_memory().await;
        if now >= last {
            settle_secs = drained_at.elapsed().as_secs_f64();
            break;
        }
        last = now;
    }
    let redis_after = f.redis_used_memory().await;
    let (idle2_api, idle2_workers) = f.rss();
    f.stop().await;
    let mb = |b: u64| b as f64 / 1_048_576.0;
    println!("| measure | value |");
    println!("|---|---|");
    println!("| worker processes | {w} |");
    println!(
        "| runs completed | {runs} in {secs:.0} s ({:.0} runs/s sustained) |",
        runs as f64 / secs
    );
    println!(
        "| api RSS idle / peak / idle after | {idle_api:.0} / {:.0} / {idle2_api:.0} MB |",
        pa.max(peak_api)
    );
    println!(
        "| worker RSS idle / peak / idle after | {:.0} / {:.0} / {:.0} MB |",
        max_of(&idle_workers),
        max_of(&pw).max(peak_worker),
        max_of(&idle2_workers)
    );
    println!(
        "| PostgreSQL `sync_logs` per 1M runs | 1,000,000 rows, {:.0} MB (table + indexes) |",
        bytes as f64 / runs as f64 * 1e6 / 1_048_576.0
    );
    println!(
        "| Redis used_memory idle / after {runs} runs / after retention | {:.2} / {:.2} / {:.2} MB (settled {settle_secs:.0} s after the retention window) |",
        mb(redis_idle),
        mb(redis_loaded),
        mb(redis_after)
    );
}

#[tokio::main]
async fn main() {
    let o = opts();
    eprintln!("fleet-bench {o:?}");
    match o.scenario.as_str() {
        "throughput" => throughput(&o).await,
        "lag" => lag(&o).await,
        "freshness" => freshness(&o).await,
        "footprint" => footprint(&o).await,
        "storm" => storm(&o).await,
        _ => unreachable!(),
    }
}
