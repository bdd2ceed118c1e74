//! Benchmark of the web console (BENCHMARKS.md, "Console"). Seeds PostgreSQL (once; the
//! database is kept for later runs) with 10,000 integrations, one of which has 1,000,000
//! runs, starts the real API role and a worker in this process, logs in like a browser,
//! and measures:
//!
//! 1. the overview's first page (`GET /`) and the detail page of the 1M-run integration
//!    (`GET /integrations/{id}`): sequential requests on one keep-alive connection over
//!    loopback, p50/p99/max;
//! 2. the overview's weight: the HTML and every asset it references, gzip as served;
//! 3. how long a finished run takes to reach an open console: 100 SSE streams open,
//!    a synthetic run triggered through the API, from the run's `completed_at` to the
//!    arrival of its card event on a stream;
//! 4. the database load of 100 idle open consoles: transactions per second in
//!    `pg_stat_database` with none and with 100 streams open.
//!
//! cargo run --release -p tests --bin console-bench -- [requests] [rounds]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use syncfleet_api::app::{self, Started};
use syncfleet_api::config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DB: &str = "sf_console_bench";
const INTEGRATIONS: u64 = 10_000;
const BIG_RUNS: u64 = 1_000_000;
const BIG: &str = "00000000-0000-7000-8000-00000000b16b";

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

async fn database() -> String {
    let admin_url = tests::env::database_admin_url();
    let admin = Database::connect(&admin_url).await.expect("postgres");
    let exists = scalar(
        &admin,
        &format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{DB}'"),
    )
    .await;
    if exists == 0 {
        admin
            .execute_unprepared(&format!("CREATE DATABASE {DB}"))
            .await
            .unwrap();
    }
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(DB);
    url.to_string()
}

async fn seed(db: &DatabaseConnection) {
    use migration::MigratorTrait;
    migration::Migrator::up(db, None).await.unwrap();
    let have_i = scalar(db, "SELECT COUNT(*) FROM integrations").await as u64;
    let have_r = scalar(
        db,
        &format!("SELECT COUNT(*) FROM sync_logs WHERE integration_id = '{BIG}'"),
    )
    .await as u64;
    if have_i == INTEGRATIONS + 1 && have_r == BIG_RUNS {
        eprintln!("seed: reusing {have_i} integrations, {have_r} runs of the big one");
        return;
    }
    eprintln!("seed: {INTEGRATIONS} integrations + one with {BIG_RUNS} runs (once) …");
    let started = Instant::now();
    db.execute_unprepared("TRUNCATE integrations CASCADE")
        .await
        .unwrap();
    let ws = syncfleet_api::db::default_workspace(db).await.unwrap();
    // A mix of health states; each with one successful run (records held) and, for the
    // unhealthy ones, a failed one; manual-only, so nothing is scheduled meanwhile.
    db.execute_unprepared(&format!(
        "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, health, \
           retry_count, max_retries, last_sync_at, last_success_at, last_error, created_at, updated_at) \
         SELECT md5('i' || g)::uuid, '{ws}', 'bench integration ' || g, \
           (ARRAY['synthetic','http_json','csv','google_sheets','firestore','sql'])[1 + g % 6], '{{}}', NULL, \
           g % 17 <> 0, CASE WHEN g % 17 = 0 THEN 'paused' WHEN g % 23 = 0 THEN 'degraded' WHEN g % 29 = 0 THEN 'disabled' ELSE 'healthy' END, \
           CASE WHEN g % 23 = 0 THEN 1 ELSE 0 END, 3, now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval, \
           CASE WHEN g % 23 = 0 OR g % 29 = 0 THEN 'transient: upstream answered 503' END, now() - (g || ' seconds')::interval, now() \
         FROM generate_series(1, {INTEGRATIONS}) g"
    ))
    .await
    .unwrap();
    db.execute_unprepared(
        "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, \
           started_at, completed_at, duration_ms, records_count, records_inserted, created_at) \
         SELECT (lpad(to_hex((extract(epoch FROM i.created_at) * 1000)::bigint), 12, '0') || '7' || substr(md5(i.id::text), 1, 3) || '8' || substr(md5(i.id::text), 4, 15))::uuid, \
           i.id, 'SUCCESS', 'schedule', i.created_at, 1, 1, 1, i.created_at, i.created_at + interval '40 ms', 40, 250, 250, i.created_at \
         FROM integrations i",
    )
    .await
    .unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, health, \
           last_sync_at, last_success_at, created_at, updated_at) \
         VALUES ('{BIG}', '{ws}', 'a very busy integration', 'synthetic', '{{}}', NULL, true, 'healthy', now(), now(), now() - interval '1 year', now())"
    ))
    .await
    .unwrap();
    let chunk = 250_000u64;
    let mut done = 0;
    while done < BIG_RUNS {
        let n = chunk.min(BIG_RUNS - done);
        db.execute_unprepared(&format!(
            "INSERT INTO run_history (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, \
               started_at, completed_at, duration_ms, records_count, records_inserted, error_class, error_message, created_at) \
             SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid, \
               '{BIG}', CASE WHEN g % 10 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, 'schedule', t, 1, 1, 1, t, t + ((20 + g % 80) || ' ms')::interval, \
               20 + g % 80, 100, 0, CASE WHEN g % 10 = 0 THEN 'transient' END, CASE WHEN g % 10 = 0 THEN 'upstream answered 503' END, t \
             FROM (SELECT g, now() - ((({BIG_RUNS}::bigint - g) * 30)::text || ' seconds')::interval AS t, md5('b' || g::text) AS h \
                   FROM generate_series({from}, {to}) g) s",
            from = done + 1,
            to = done + n,
        ))
        .await
        .unwrap();
        done += n;
        eprintln!(
            "seed: {done} runs ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    db.execute_unprepared(
        "UPDATE integrations SET runs_total = (SELECT COUNT(*) FROM sync_logs s WHERE s.integration_id = integrations.id)",
    )
    .await
    .unwrap();
    db.execute_unprepared("VACUUM ANALYZE").await.unwrap();
    eprintln!("seed: done in {:.0} s", started.elapsed().as_secs_f64());
}

fn cookie_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
}

/// Logs in like the browser does; returns the `Cookie` header value.
async fn login(http: &reqwest::Client, base: &str, key: &str) -> String {
    let r = http.get(format!("{base}/login")).send().await.unwrap();
    let login = cookie_value(&r, "sf_login").expect("login cookie");
    let body = r.text().await.unwrap();
    let csrf = body
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf")
        .to_owned();
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", format!("sf_login={login}"))
        .form(&[("key", key), ("_csrf", &csrf)])
        .send()
        .await
        .unwrap();
    let session = cookie_value(&r, "sf_session").expect("session cookie");
    format!("sf_session={session}")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(http: &reqwest::Client, url: &str, cookie: &str, n: u64) -> (f64, f64, f64) {
    let mut ms = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).header("cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let _ = r.bytes().await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (pct(&ms, 0.5), pct(&ms, 0.99), ms[ms.len() - 1])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes of `path` as served with `Accept-Encoding: gzip` (reqwest does not decode it).
async fn weight(http: &reqwest::Client, base: &str, path: &str, cookie: &str) -> (usize, String) {
    let r = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    let enc = r
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_owned();
    (r.bytes().await.unwrap().len(), enc)
}

async fn xact(db: &DatabaseConnection) -> i64 {
    scalar(
        db,
        &format!("SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = '{DB}'"),
    )
    .await
}

#[tokio::main]
async fn main() {
    let requests = arg(1, 400);
    let rounds = arg(2, 3);
    let db_url = database().await;
    let db = Database::connect(&db_url).await.unwrap();
    seed(&db).await;
    let token = "console-bench-admin-token-0123456789";
    let prefix = format!("sfcb{}", std::process::id());
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", db_url.as_str()),
        ("REDIS_URL", tests::env::redis_url().as_str()),
        ("SYNCFLEET_REDIS_PREFIX", prefix.as_str()),
        ("SYNCFLEET_ADMIN_TOKEN", token),
        ("SYNCFLEET_SECRET_KEY", tests::env::TEST_SECRET_KEY),
        ("SYNCFLEET_API_RATE_PER_SEC", "100000"),
        ("SYNCFLEET_API_RATE_BURST", "100000"),
        ("SYNCFLEET_MIN_INTERVAL_SECS", "1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let config = Config::from_map(&vars).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<Started>();
    let stop = shutdown.clone();
    let api = tokio::spawn(async move {
        app::run_api(config.clone(), listener, stop, move |s| {
            let _ = tx.send(s);
        })
        .await
    });
    let base = rx.await.unwrap().url;
    let wtoken = CancellationToken::new();
    let worker = tokio::spawn(app::run_worker(
        Config::from_map(&vars).unwrap(),
        wtoken.clone(),
    ));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(4)
        .build()
        .unwrap();
    let cookie = login(&http, &base, token).await;

    // 1. Server time of the two pages (warm-up first).
    let overview = format!("{base}/");
    let detail = format!("{base}/integrations/{BIG}");
    latency(&http, &overview, &cookie, 20).await;
    latency(&http, &detail, &cookie, 20).await;
    let (mut o50, mut o99, mut d50, mut d99) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let (a, b, c) = latency(&http, &overview, &cookie, requests).await;
        let (d, e, f) = latency(&http, &detail, &cookie, requests).await;
        eprintln!(
            "round {round}: overview p50 {a:.1} ms p99 {b:.1} ms max {c:.1} ms | detail (1M runs) p50 {d:.1} ms p99 {e:.1} ms max {f:.1} ms"
        );
        o50.push(a);
        o99.push(b);
        d50.push(d);
        d99.push(e);
    }

    // 2. Page weight of the overview: the HTML and everything it references.
    let html = http
        .get(&overview)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut total = 0;
    let (n, enc) = weight(&http, &base, "/", &cookie).await;
    eprintln!("weight: / {n} B ({enc})");
    total += n;
    for part in html.split("/assets/").skip(1) {
        let path = format!("/assets/{}", part.split('"').next().unwrap_or(""));
        let (n, enc) = weight(&http, &base, &path, &cookie).await;
        eprintln!("weight: {path} {n} B ({enc})");
        total += n;
    }

    // 4. Database load of idle open consoles.
    let idle = |secs: u64| {
        let db = db.clone();
        async move {
            let a = xact(&db).await;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            (xact(&db).await - a - 2) as f64 / secs as f64
        }
    };
    let none = idle(20).await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        let r = http
            .get(format!("{base}/console/events"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let hundred = idle(20).await;
    eprintln!(
        "db load: {none:.1} transactions/s with no console, {hundred:.1} with 100 open consoles"
    );

    // 3. A finished run reaching an open console (all 100 streams open; read one).
    let (s, v) = {
        let r = http
            .post(format!("{base}/api/integrations"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "live probe", "kind": "synthetic", "config": {"records": 5}, "syncInterval": null}))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(s, 201, "{v}");
    let probe = v["id"].as_str().unwrap().to_owned();
    let mut stream = streams.pop().unwrap();
    let mut lat = Vec::new();
    let mut buf = String::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..100 {
        // Drain what is queued, then trigger and wait for the finished card.
        while let Ok(Ok(Some(_))) =
            tokio::time::timeout(Duration::from_millis(50), stream.chunk()).await
        {}
        buf.clear();
        let r = http
            .post(format!("{base}/api/integrations/{probe}/sync"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let run: serde_json::Value = r.json().await.unwrap();
        let run_id = run["run"]["id"].as_str().unwrap().to_owned();
        let arrived = loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
                .await
                .expect("no event within 10 s")
                .unwrap()
                .expect("stream ended");
            let at = chrono::Utc::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            let done = buf.split("\n\n").any(|ev| {
                ev.contains("event: card")
                    && ev.contains(&probe)
                    && !ev.contains("queued")
                    && !ev.contains("syncing now")
            });
            if done {
                // The run's own finish, not an earlier change of the integration.
                let rows = syncfleet_worker::db::query(
                    &db,
                    "SELECT completed_at FROM sync_logs WHERE id = $1::uuid",
                    [run_id.clone().into()],
                )
                .await
                .unwrap();
                let completed: Option<chrono::DateTime<chrono::Utc>> =
                    rows[0].try_get("", "completed_at").unwrap();
                if let Some(c) = completed {
                    break (at, c);
                }
                buf.clear();
            }
        };
        let (arrived, completed) = arrived;
        lat.push((arrived - completed).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    eprintln!(
        "finished run → console: p50 {:.1} ms p99 {:.1} ms max {:.1} ms over {} runs, 100 consoles open",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat[lat.len() - 1],
        lat.len()
    );
    println!(
        "console-bench: overview (10,000 integrations) p50 {:.1} ms p99 {:.1} ms; detail (1M runs) p50 {:.1} ms p99 {:.1} ms (medians of {rounds} rounds of {requests}); \
         overview weight {:.1} KB gzip; finished run → console p50 {:.0} ms p99 {:.0} ms; db load {none:.1} → {hundred:.1} transactions/s with 100 idle consoles",
        median(o50),
        median(o99),
        median(d50),
        median(d99),
        total as f64 / 1024.0,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
    );
    drop(streams);
    drop(stream);
    let r = http
        .delete(format!("{base}/api/integrations/{probe}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wtoken.cancel();
    let _ = worker.await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), api).await;
}
