//! Benchmark of the record store: an `http_json` run of N records from a local server,
//! first sync (all inserted) and unchanged re-sync (all unchanged), through the real
//! `syncfleet api` and one `syncfleet worker` process. Reports records/s (from the run's
//! `duration_ms`: claim to finish, fetch and writes included) and the worker's peak RSS.
//!
//! cargo run --release -p tests --bin records-bench -- [records] [rounds]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tests::{ApiClient, procs};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb(pid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn wait_runs(client: &ApiClient, id: uuid::Uuid, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let h = client.history(id).await;
        if h.iter()
            .filter(|l| l["status"] == "SUCCESS" || l["status"] == "FAILED")
            .count()
            >= n
        {
            return h;
        }
        assert!(Instant::now() < deadline, "run did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let records = arg(1, 100_000);
    let rounds = arg(2, 3);
    let body: Value = json!({ "items": (0..records).map(|i| json!({
        "id": format!("r{i}"), "sku": format!("SKU-{:06}", i % 5000), "qty": i % 17, "price": (i % 997) as f64 / 10.0,
        "outlet": format!("outlet-{}", i % 40), "soldAt": "2026-11-21T10:00:00Z"
    })).collect::<Vec<_>>() });
    let payload = std::sync::Arc::new(body.to_string());
    let p = payload.clone();
    let server = Router::new().route(
        "/items",
        get(move || {
            let p = p.clone();
            async move { ([("content-type", "application/json")], (*p).clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = format!("http://{}/items", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server).await });

    let admin = std::env::var("SYNCFLEET_BENCH_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("syncfleet_bench_records_{}", std::process::id());
    let admin_db = Database::connect(&admin).await.unwrap();
    admin_db
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    let db_url = url.to_string();
    {
        use migration::MigratorTrait;
        let db = Database::connect(&db_url).await.unwrap();
        migration::Migrator::up(&db, None).await.unwrap();
    }
    let port = procs::free_port();
    let token = "bench-admin-token-0123456789";
    let vars: std::collections::HashMap<String, String> = [
        ("DATABASE_URL", db_url.as_str()),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        (
            "SYNCFLEET_REDIS_PREFIX",
            &format!("bench-records-{}", std::process::id()),
        ),
        ("SYNCFLEET_ADMIN_TOKEN", token),
        (
            "SYNCFLEET_SECRET_KEY",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ),
        ("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", "true"),
        ("SYNCFLEET_LISTEN", &format!("127.0.0.1:{port}")),
        ("RUST_LOG", "warn"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut api = procs::syncfleet("api", &vars);
    let mut worker = procs::syncfleet("worker", &vars);
    let client = ApiClient::new(&format!("http://127.0.0.1:{port}"), token);
    for _ in 0..200 {
        if reqwest::get(format!("{}/readyz", client.base))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut first, mut resync) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let cfg = json!({ "url": source, "recordsPointer": "/items", "idPointer": "/id", "maxResponseBytes": 268_435_456 });
        let id = client
            .create(&format!("bench {round}"), "http_json", cfg, None)
            .await;
        let h = wait_runs(&client, id, 1).await;
        assert_eq!(h[0]["recordsInserted"], records, "{}", h[0]);
        first.push(records as f64 / (h[0]["duration"].as_f64().unwrap() / 1000.0));
        client.trigger(id).await;
        let h = wait_runs(&client, id, 2).await;
        assert_eq!(h[0]["recordsUnchanged"], records, "{}", h[0]);
        resync.push(records as f64 / (h[0]["duration"].as_f64().unwrap() / 1000.0));
        eprintln!(
            "round {}: first sync {:.0} records/s, unchanged re-sync {:.0} records/s",
            round + 1,
            first[round as usize],
            resync[round as usize]
        );
    }
    let rss = peak_rss_mb(worker.pid());
    worker.terminate(Duration::from_secs(10));
    api.terminate(Duration::from_secs(10));
    let _ = admin_db
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (f, fmin, fmax) = med(&mut first);
    let (r, rmin, rmax) = med(&mut resync);
    println!(
        "| records | first sync rec/s median (min–max) | unchanged re-sync rec/s median (min–max) | worker peak RSS MB |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {records} | {f:.0} ({fmin:.0}–{fmax:.0}) | {r:.0} ({rmin:.0}–{rmax:.0}) | {rss:.0} |"
    );
}
