//! The `retention` and `partition` modes of `history-bench`.

pub mod partition;
pub mod retention;

use std::collections::HashMap;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// The key for secrets at rest of the bench's API process.
pub const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// `--name value` from the command line.
pub fn flag<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn admin_url() -> String {
    std::env::var("SYNCFLEET_BENCH_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, migrated database `name` (dropped first if it exists) and its URL; the
/// connection has at most `connections` sessions.
pub async fn fresh_db(name: &str, connections: u32) -> (DatabaseConnection, String) {
    let admin = Database::connect(admin_url()).await.expect("PostgreSQL");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop bench database");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create bench database");
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url()).expect("admin url");
    url.set_path(name);
    let db_url = url.to_string();
    let mut opts = ConnectOptions::new(db_url.clone());
    opts.max_connections(connections)
        .min_connections(connections.min(1))
        .sqlx_logging(false);
    let db = Database::connect(opts).await.expect("bench database");
    {
        use migration::MigratorTrait;
        migration::Migrator::up(&db, None).await.expect("migrate");
    }
    (db, db_url)
}

/// Drops the bench database.
pub async fn drop_db(name: &str) {
    if let Ok(admin) = Database::connect(admin_url()).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// `M` paused integrations with ids `md5('i' || 1..M)`, as the read-path bench seeds them.
pub async fn seed_integrations(db: &DatabaseConnection, m: u64) {
    let ws = syncfleet_api::db::default_workspace(db).await.unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, health, created_at, updated_at) \
         SELECT md5('i' || g)::uuid, '{ws}', 'bench ' || g, 'synthetic', '{{}}', 300, false, 'paused', now(), now() \
         FROM generate_series(1, {m}) g"
    ))
    .await
    .unwrap();
}

/// `INSERT … SELECT` of finished runs `g0..=g1` into the history table: run `g` of
/// integration `1 + g % m` completes at `t0 + g · step_us` µs, after 20–419 ms; one in
/// twelve failed, one in fifty rate limited; ids are UUIDv7-shaped from the creation time.
pub fn insert_runs_sql(table: &str, t0: &str, g0: u64, g1: u64, step_us: u64, m: u64) -> String {
    format!(
        "INSERT INTO {table} (id, integration_id, status, \"trigger\", scheduled_for, attempt, claims, fence, \
           started_at, completed_at, duration_ms, records_count, created_at) \
         SELECT (lpad(to_hex((extract(epoch FROM c) * 1000)::bigint), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid, \
           md5('i' || (1 + g % {m}))::uuid, \
           CASE WHEN g % 50 = 0 THEN 'RATE_LIMITED' WHEN g % 12 = 0 THEN 'FAILED' ELSE 'SUCCESS' END, \
           'schedule', c, 1, 1, 1, c, t, d, g % 50, c \
         FROM (SELECT g, t, t - d * interval '1 millisecond' AS c, d, h FROM \
                 (SELECT g, '{t0}'::timestamptz + (g * {step_us}) * interval '1 microsecond' AS t, \
                         20 + (g * 7919) % 400 AS d, md5(g::text) AS h \
                    FROM generate_series(CAST({g0} AS BIGINT), CAST({g1} AS BIGINT)) g) a) s"
    )
}

/// The environment of the bench's `syncfleet api` process.
pub fn api_vars(db_url: &str, port: u16, token: &str) -> HashMap<String, String> {
    [
        ("DATABASE_URL", db_url),
        (
            "REDIS_URL",
            &std::env::var("SYNCFLEET_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ),
        ("SYNCFLEET_REDIS_PREFIX", "bench-history"),
        ("SYNCFLEET_ADMIN_TOKEN", token),
        ("SYNCFLEET_SECRET_KEY", SECRET_KEY),
        ("SYNCFLEET_LISTEN", &format!("127.0.0.1:{port}")),
        ("SYNCFLEET_API_RATE_PER_SEC", "1000000"),
        ("SYNCFLEET_API_RATE_BURST", "1000000"),
        // The bench runs the history passes itself, on its compressed clock.
        ("SYNCFLEET_HISTORY_PERIOD_MS", "86400000"),
        ("RUST_LOG", "warn"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// Median and range.
pub fn median(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
