//! Benchmarks of the run history (BENCHMARKS.md "Sync history read path" and "History
//! retention and rollups").
//!
//! The read path (default): seeds PostgreSQL with N `sync_logs` rows over M integrations
//! (once; the database is kept for later runs), starts the real `syncfleet api` process,
//! and drives `GET /api/integrations/{id}/sync-history?pageSize=20` from this (second)
//! process with C concurrent keep-alive clients on random integrations. Prints
//! p50/p99/max latency and requests per second for each round, then the median and range.
//!
//! cargo run --release -p tests --bin history-bench -- [rows] [integrations] [clients] [seconds] [rounds]
//!
//! `retention`: the footprint of the history under the retention and the rollup, in
//! compressed time (see [`retention`]). `partition`: batched deletes against dropping a
//! time partition of the same rows (see [`partition`]).
//!
//! cargo run --release -p tests --bin history-bench -- retention [--runs N] …
//! cargo run --release -p tests --bin history-bench -- partition [--rows N] …

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod history_bench_modes;

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tests::procs;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let r = syncfleet_worker::db::query(db, sql, []).await.expect(sql);
    r.first()
        .map(|r| r.try_get_by_index::<i64>(0).unwrap())
        .unwrap_or(0)
}

async fn seed(db: &DatabaseConnection, rows: u64, integrations: u64) {
    let have_i = scalar(db, "SELECT COUNT(*) FROM integrations").await as u64;
    let have_r = scalar(db, "SELECT COUNT(*) FROM sync_logs").await as u64;
    if have_i == integrations && have_r == rows {
        eprintln!("seed: reusing {have_r} runs over {have_i} integrations");
        return;
    }
    eprintln!("seed: {rows} runs over {integrations} integrations (once) …");
    let started = Instant::now();
    db.execute_unprepared("TRUNCATE integrations CASCADE")
        .await
        .unwrap();
    let ws = syncfleet_api::db::default_workspace(db).await.unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, health, created_at, updated_at) \
         SELECT md5('i' || g)::uuid, '{ws}', 'bench ' || g, 'synthetic', '{{}}', 300, false, 'paused', now(), now() \
         FROM generate_series(1, {integrations}) g"
    ))
    .await
    .unwrap();
    // UUIDv7-shaped ids whose time prefix follows `created_at`, as the service writes them.
    let per_chunk = 1_000_000u64.min(rows);
    let mut done = 0;
    while done < rows {
        let n = per_chunk.min(rows - done);
        db.execute_unprepared(&format!(
            "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, \
               started_at, completed_at, duration_ms, records_count, records_inserted, created_at) \
             SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid, \
               md5('i' || (1 + g % {integrations}))::uuid, \
               CASE WHEN g % 10 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, 'schedule', t, 1, 1, 1, t, t + interval '40 ms', 40, 100, 0, t \
             FROM (SELECT g, now() - ((({rows}::bigint - g) * 300 / {integrations})::text || ' seconds')::interval AS t, md5(g::text) AS h \
                   FROM generate_series({from}, {to}) g) s",
            from = done + 1,
            to = done + n,
        ))
        .await
        .unwrap();
        done += n;
        eprintln!(
            "seed: {done} rows ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    db.execute_unprepared(
        "UPDATE integrations SET runs_total = (SELECT COUNT(*) FROM sync_logs s WHERE s.integration_id = integrations.id)",
    )
    .await
    .unwrap();
    db.execute_unprepared("VACUUM ANALYZE sync_logs")
        .await
        .unwrap();
    db.execute_unprepared("VACUUM ANALYZE integrations")
        .await
        .unwrap();
    eprintln!("seed: done in {:.0} s", started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("retention") => history_bench_modes::retention::run().await,
        Some("partition") => history_bench_modes::partition::run().await,
        _ => read_path().await,
    }
}

async fn read_path() {
    let rows = arg(1, 10_000_000);
    let integrations = arg(2, 10_000);
    let clients = arg(3, 8);
    let seconds = arg(4, 15);
    let rounds = arg(5, 3);
    let admin = std::env::var("SYNCFLEET_BENCH_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = "syncfleet_bench_history";
    let admin_db = Database::connect(&admin).await.expect("PostgreSQL");
    let _ = admin_db
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await;
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(name);
    let db_url = url.to_string();
    let db = Database::connect(&db_url).await.unwrap();
    {
        use migration::MigratorTrait;
        migration::Migrator::up(&db, None).await.unwrap();
    }
    seed(&db, rows, integrations).await;
    let ids: Vec<String> =
        syncfleet_worker::db::query(&db, "SELECT CAST(id AS TEXT) FROM integrations", [])
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap())
            .collect();

    let port = procs::free_port();
    let token = "bench-admin-token-0123456789";
    let vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", db_url.as_str()),
        (
            "REDIS_URL",
            &std::env::var("SYNCFLEET_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ),
        ("SYNCFLEET_REDIS_PREFIX", "bench-history"),
        ("SYNCFLEET_ADMIN_TOKEN", token),
        ("SYNCFLEET_SECRET_KEY", history_bench_modes::SECRET_KEY),
        ("SYNCFLEET_LISTEN", &format!("127.0.0.1:{port}")),
        ("SYNCFLEET_API_RATE_PER_SEC", "1000000"),
        ("SYNCFLEET_API_RATE_BURST", "1000000"),
        ("RUST_LOG", "warn"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut api = procs::syncfleet("api", &vars);
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
    let mut results = Vec::new();
    for round in 0..rounds {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let warmup = Instant::now() + Duration::from_secs(2);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut i = (c as usize * 7919 + round as usize * 104_729) % ids.len();
                let mut errors = 0u64;
                while Instant::now() < deadline {
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
                    if t >= warmup {
                        if ok {
                            lat.push(t.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
        let rps = all.len() as f64 / (seconds as f64 - 2.0);
        eprintln!(
            "round {}: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  errors {errors}",
            round + 1,
            rps,
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        results.push((rps, pct(0.5), pct(0.99), pct(1.0)));
    }
    api.terminate(Duration::from_secs(10));
    let med = |f: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (r, rmin, rmax) = med(|r| r.0);
    let (p50, _, _) = med(|r| r.1);
    let (p99, p99min, p99max) = med(|r| r.2);
    println!(
        "| rows | integrations | clients | req/s median (min–max) | p50 ms | p99 ms median (min–max) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {rows} | {integrations} | {clients} | {r:.0} ({rmin:.0}–{rmax:.0}) | {p50:.2} | {p99:.2} ({p99min:.2}–{p99max:.2}) |"
    );
}
