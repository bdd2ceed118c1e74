//! push-bench: how fast local changes reach the cloud, one request per change and in
//! batches, and what a local write costs while pushes flow (BENCHMARKS.md, "Pushes").
//!
//! ```text
//! cargo build --release -p syncfleet-api --bin syncfleet
//! cargo run --release -p tests --bin push-bench -- [--records 20000] [--rounds 3] [--workers 2] [--rate 500] [--seconds 10]
//! ```
//!
//! Each round runs on a fresh database and Redis against the real `syncfleet api` and
//! `syncfleet worker` processes and the suite's fake cloud (`tests::cloud`, in-process):
//!
//! - **drain**: `--records` changes written through `records:batch` (1,000 a request)
//!   with no worker running (the outbox holds them, as during an outage), then
//!   `--workers` workers started: changes/s = changes pushed ÷ (last push finished −
//!   first push finished), from the outbox's `finished_at`. Once with one request per
//!   change, once with `config.push.batch` of 100. The tables are analyzed before the
//!   workers start, as autovacuum has done by the end of a real outage.
//! - **write**: from a steady state (2,000 records written, pushed and analyzed),
//!   single-record `PUT`s at `--rate` per second for `--seconds`, open loop
//!   (each request started on its own schedule), with workers pushing them to the cloud
//!   as they come: latency p50 / p99 / max of the API's answer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tests::cloud::FakeCloud;
use tests::fleet::{self, Fleet};
use tests::procs::RedisServer;

struct Opts {
    records: usize,
    rounds: usize,
    workers: usize,
    rate: u64,
    seconds: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        records: 20_000,
        rounds: 3,
        workers: 2,
        rate: 500,
        seconds: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or_default();
        let n: u64 = v
            .parse()
            .unwrap_or_else(|_| panic!("{}: a number", pair[0]));
        match pair[0].as_str() {
            "--records" => o.records = n as usize,
            "--rounds" => o.rounds = n as usize,
            "--workers" => o.workers = n as usize,
            "--rate" => o.rate = n,
            "--seconds" => o.seconds = n,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn admin_url() -> String {
    std::env::var("SYNCFLEET_BENCH_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fleet on a fresh database: one api, no worker yet.
async fn fleet() -> (Fleet, String) {
    let admin = Database::connect(admin_url()).await.expect("PostgreSQL");
    let name = format!(
        "syncfleet_pushbench_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url()).unwrap();
    url.set_path(&name);
    {
        let db = Database::connect(url.as_str()).await.unwrap();
        use migration::MigratorTrait;
        migration::Migrator::up(&db, None).await.unwrap();
        let _ = db.close().await;
    }
    let redis = RedisServer::start().expect("redis-server");
    let mut vars = fleet::base_vars(url.as_str(), &redis.url());
    for (k, v) in [
        ("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true"),
        ("SYNCFLEET_NOTIFY_PUMP_MS", "50"),
        // The write phase's rate is the point; the per-key API limit is not measured.
        ("SYNCFLEET_API_RATE_PER_SEC", "100000"),
        ("SYNCFLEET_API_RATE_BURST", "100000"),
    ] {
        vars.insert(k.into(), v.into());
    }
    let mut f = Fleet::new(url.as_str(), redis, vars).await;
    // Each process's stderr (`RUST_LOG=warn`) in this directory, to see why a write was
    // refused.
    f.log_dir = std::env::var_os("PUSH_BENCH_LOGS").map(std::path::PathBuf::from);
    f.add_api(&[]).await;
    (f, name)
}

async fn drop_db(name: &str) {
    let admin = Database::connect(admin_url()).await.expect("PostgreSQL");
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

async fn post(c: &reqwest::Client, f: &Fleet, path: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(f.api().url(path))
        .bearer_auth(fleet::TOKEN)
        .json(body)
        .send()
        .await
        .expect("api");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A manual-only http_json integration pushing to `cloud`, batched if `batch`.
async fn integration(c: &reqwest::Client, f: &Fleet, cloud: &FakeCloud, batch: bool) -> String {
    let mut push = json!({
        "url": format!("{}/items/{{externalId}}", cloud.url),
        "versionPointer": "/version", "idPointer": "/id"
    });
    if batch {
        push["batch"] = json!({ "url": format!("{}/batch", cloud.url), "maxOperations": 100 });
    }
    let (s, v) = post(
        c,
        f,
        "/api/integrations",
        &json!({
            "name": "bench outlet", "kind": "http_json", "syncEnabled": false,
            "config": { "url": format!("{}/items", cloud.url), "recordsPointer": "/items",
                        "idPointer": "/id", "push": push }
        }),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("id").to_owned()
}

/// Writes operations `op(0..n)` to integration `id` through `records:batch`, 1,000 a
/// request.
async fn put_all(c: &reqwest::Client, f: &Fleet, id: &str, n: usize, op: impl Fn(usize) -> Value) {
    for chunk in 0..n.div_ceil(1000) {
        let ops: Vec<Value> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(&op)
            .collect();
        let (s, v) = post(
            c,
            f,
            &format!("/api/integrations/{id}/records:batch"),
            &json!({ "operations": ops }),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
}

/// Waits until every record is `synced` (pushed and agreed), at most `secs`.
async fn all_synced(f: &Fleet, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = f
            .n("SELECT COUNT(*) AS n FROM records WHERE sync_state <> 'synced'")
            .await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} changes not pushed in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Changes/s of one drain of `records` changes.
async fn drain(o: &Opts, batch: bool) -> f64 {
    let (mut f, name) = fleet().await;
    let c = client();
    let cloud = FakeCloud::start().await;
    let id = integration(&c, &f, &cloud, batch).await;
    put_all(
        &c,
        &f,
        &id,
        o.records,
        |k| json!({ "op": "put", "externalId": format!("sale-{k}"), "data": { "total": k } }),
    )
    .await;
    // A backlog built over an outage has been analyzed by autovacuum by the time the
    // cloud returns; one written a moment ago has not.
    f.exec("ANALYZE").await;
    f.add_workers(o.workers).await;
    all_synced(&f, 600).await;
    let secs: f64 = f
        .one(
            "SELECT extract(epoch FROM max(finished_at) - min(finished_at))::float8 AS s \
             FROM outbox WHERE status = 'pushed'",
            "s",
        )
        .await;
    let pushed = f
        .n("SELECT COUNT(*) AS n FROM outbox WHERE status = 'pushed'")
        .await;
    let (applied, batches) = cloud.get(|c| (c.applied.len(), c.batches));
    assert_eq!(applied as i64, pushed, "each change applied once");
    eprintln!("  drain batch={batch}: {pushed} changes in {secs:.2} s, {batches} batch requests");
    f.stop(Duration::from_secs(30)).await;
    drop_db(&name).await;
    pushed as f64 / secs.max(0.001)
}

/// Latencies (ms) of single-record writes at `rate`/s while workers push them.
async fn writes(o: &Opts) -> Vec<f64> {
    let (mut f, name) = fleet().await;
    let c = client();
    let cloud = FakeCloud::start().await;
    let id = integration(&c, &f, &cloud, true).await;
    f.add_workers(o.workers).await;
    // A steady state, not a first load: the 2,000 records exist and are synced, and the
    // tables have statistics (autovacuum's analyze comes a minute after a table grows,
    // and a plan made for an empty table scans every row of the integration).
    put_all(
        &c,
        &f,
        &id,
        2000,
        |k| json!({ "op": "put", "externalId": format!("r-{k}"), "data": { "n": -1 } }),
    )
    .await;
    all_synced(&f, 120).await;
    f.exec("ANALYZE").await;
    let url = f.api().url(&format!("/api/integrations/{id}/records/"));
    let every = Duration::from_micros(1_000_000 / o.rate.max(1));
    let n = o.rate * o.seconds;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for k in 0..n {
        tokio::time::sleep_until(start + every * k as u32).await;
        let (c, url) = (c.clone(), format!("{url}r-{}", k % 2000));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c
                .put(url)
                .bearer_auth(fleet::TOKEN)
                .json(&json!({ "n": k }))
                .send()
                .await
                .expect("api");
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            (t.elapsed().as_secs_f64() * 1000.0, status)
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut refused: std::collections::BTreeMap<u16, usize> = std::collections::BTreeMap::new();
    for t in tasks {
        let (ms, status) = t.await.unwrap();
        if !(200..300).contains(&status) {
            *refused.entry(status).or_default() += 1;
        }
        lat.push(ms);
    }
    // Refused writes are reported, not hidden: their latency counts too.
    eprintln!(
        "  writes: {} sent, refused by status {refused:?}",
        lat.len()
    );
    f.stop(Duration::from_secs(30)).await;
    drop_db(&name).await;
    lat.sort_by(f64::total_cmp);
    lat
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

#[tokio::main]
async fn main() {
    let o = opts();
    let (mut single, mut batched, mut p50, mut p99, mut max) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        eprintln!("round {}", round + 1);
        single.push(drain(&o, false).await);
        batched.push(drain(&o, true).await);
        let lat = writes(&o).await;
        p50.push(pct(&lat, 0.5));
        p99.push(pct(&lat, 0.99));
        max.push(pct(&lat, 1.0));
    }
    let show = |v: &[f64], d: usize| {
        let (m, lo, hi) = median(v);
        format!("{m:.d$} ({lo:.d$}–{hi:.d$})")
    };
    println!(
        "| workers | changes | one request per change, changes/s | batches of 100, changes/s | ratio |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {:.1}× |",
        o.workers,
        o.records,
        show(&single, 0),
        show(&batched, 0),
        median(&batched).0 / median(&single).0
    );
    println!();
    println!("| writes/s | for | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} s | {} | {} | {} |",
        o.rate,
        o.seconds,
        show(&p50, 2),
        show(&p99, 2),
        show(&max, 1)
    );
}
