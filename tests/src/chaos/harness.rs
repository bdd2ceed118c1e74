//! What every scenario stands on: a fresh database on the battery's own cluster, a
//! fresh private `redis-server`, compressed protocol timings, and small tools to wait
//! for a condition, sample a figure in the background and supervise workers.
//!
//! Time is compressed only through the product's own settings (`SYNCFLEET_*`), so the
//! processes under test are exactly the production binary.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::pg::PgCluster;
use crate::fleet::{self, Fleet, redis_keys};
use crate::procs::RedisServer;

pub const LEASE_MS: u64 = 3000;
pub const REAPER_MS: u64 = 300;
pub const REENQUEUE_MS: u64 = 1000;
pub const RETRY_BASE_MS: u64 = 500;
pub const RETRY_CAP_MS: u64 = 4000;
pub const GRACE_MS: u64 = 2000;

/// The compressed timings every scenario starts from.
pub const FAST: &[(&str, u64)] = &[
    ("SYNCFLEET_SCHEDULER_TICK_MS", 100),
    ("SYNCFLEET_LEASE_MS", LEASE_MS),
    ("SYNCFLEET_REAPER_PERIOD_MS", REAPER_MS),
    ("SYNCFLEET_REENQUEUE_AFTER_MS", REENQUEUE_MS),
    ("SYNCFLEET_RETRY_BASE_MS", RETRY_BASE_MS),
    ("SYNCFLEET_RETRY_CAP_MS", RETRY_CAP_MS),
    ("SYNCFLEET_POLL_INTERVAL_MS", 20),
    ("SYNCFLEET_SHUTDOWN_GRACE_MS", GRACE_MS),
    ("SYNCFLEET_WORKER_CONCURRENCY", 16),
    ("SYNCFLEET_QUEUE_RETENTION_MS", 60_000),
];

/// The battery's run: options and the cluster every scenario's database lives on.
pub struct Ctx {
    pub short: bool,
    /// `--integrations`: overrides each scenario's own count.
    pub integrations: Option<u64>,
    /// `--seconds`: overrides each scenario's main phase.
    pub seconds: Option<u64>,
    pub pg: PgCluster,
    /// Process logs, `<scenario>/<label>.log`.
    pub logs: PathBuf,
    databases: AtomicU64,
}

impl Ctx {
    pub fn new(
        short: bool,
        integrations: Option<u64>,
        seconds: Option<u64>,
        pg: PgCluster,
        logs: PathBuf,
    ) -> Self {
        Self {
            short,
            integrations,
            seconds,
            pg,
            logs,
            databases: AtomicU64::new(0),
        }
    }

    /// A scenario's integration count: `--integrations`, else its short or long default.
    pub fn n(&self, short: u64, long: u64) -> u64 {
        self.integrations
            .unwrap_or(if self.short { short } else { long })
    }

    /// A scenario's main phase: `--seconds`, else its short or long default.
    pub fn phase(&self, short: u64, long: u64) -> Duration {
        Duration::from_secs(
            self.seconds
                .unwrap_or(if self.short { short } else { long }),
        )
    }

    /// A long or short constant that `--seconds` does not touch.
    pub fn pick<T>(&self, short: T, long: T) -> T {
        if self.short { short } else { long }
    }

    /// A fresh migrated database, a fresh `redis-server` and the fleet's settings
    /// (`FAST`, then `env`). No process is started.
    pub async fn fleet(&self, scenario: &str, env: &[(&str, String)]) -> Fleet {
        let k = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("chaos_{}_{k}", scenario.replace('-', "_"));
        let admin = Database::connect(self.pg.url("postgres"))
            .await
            .expect("chaos cluster");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let _ = admin.close().await;
        let url = self.pg.url(&name);
        {
            let db = Database::connect(&url).await.expect("scenario database");
            use migration::MigratorTrait;
            migration::Migrator::up(&db, None).await.expect("migrate");
            let _ = db.close().await;
        }
        let redis = RedisServer::start().expect("redis-server");
        let mut vars = fleet::base_vars(&url, &redis.url());
        for (k, v) in FAST {
            vars.insert((*k).to_owned(), v.to_string());
        }
        for (k, v) in env {
            vars.insert((*k).to_owned(), v.clone());
        }
        let mut f = Fleet::new(&url, redis, vars).await;
        let dir = self.logs.join(scenario);
        let _ = std::fs::create_dir_all(&dir);
        f.log_dir = Some(dir);
        f
    }
}

/// `(name, value)` pairs as a member's environment.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The database's clock (every protocol timestamp is the database's).
pub async fn db_now(db: &DatabaseConnection) -> Option<DateTime<Utc>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT clock_timestamp() AS t".to_owned(),
        ))
        .await
        .ok()?;
    rows.first()?.try_get("", "t").ok()
}

/// A timestamp as a SQL literal.
pub fn lit(t: DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", t.to_rfc3339())
}

/// A scalar `n` from `sql`, `None` when the database does not answer.
pub async fn try_n(f: &Fleet, sql: &str) -> Option<i64> {
    f.try_rows(sql).await.ok()?.first()?.try_get("", "n").ok()
}

/// Polls `check` every `every` until it returns `Some` or `within` passes; returns the
/// value and how long it took.
pub async fn poll<T, F, Fut>(
    within: Duration,
    every: Duration,
    mut check: F,
) -> Option<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let began = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some((v, began.elapsed()));
        }
        if began.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls until `sql`'s `n` reaches `target` (or `within` passes); the time it took.
pub async fn until_n(f: &Fleet, sql: &str, target: i64, within: Duration) -> Option<Duration> {
    poll(within, Duration::from_millis(100), || async {
        try_n(f, sql).await.filter(|&n| n >= target)
    })
    .await
    .map(|(_, d)| d)
}

/// Restarts every worker that died (what a supervisor does); returns how many.
pub fn revive(f: &mut Fleet) -> usize {
    let mut n = 0;
    for i in 0..f.workers.len() {
        if !f.workers[i].alive() {
            let m = f.respawn(&f.workers[i]);
            f.workers[i] = m;
            n += 1;
        }
    }
    n
}

/// A figure sampled in the background until [`Sampler::stop`]: its maximum and how
/// many samples were taken.
pub struct Sampler<T> {
    stop: CancellationToken,
    state: Arc<Mutex<(T, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + 'static> Sampler<T> {
    pub async fn stop(self) -> (T, u64) {
        self.stop.cancel();
        let _ = self.task.await;
        self.state.lock().await.clone()
    }

    /// The figure so far, without stopping.
    pub async fn peek(&self) -> (T, u64) {
        self.state.lock().await.clone()
    }
}

/// Samples the scalar `n` of `sql` every `every`, keeping the maximum.
pub fn sample_sql_max(db: DatabaseConnection, sql: String, every: Duration) -> Sampler<i64> {
    let stop = CancellationToken::new();
    let state = Arc::new(Mutex::new((0i64, 0u64)));
    let (s, st) = (stop.clone(), state.clone());
    let task = tokio::spawn(async move {
        while !s.is_cancelled() {
            let r = db
                .query_all_raw(Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    sql.clone(),
                ))
                .await;
            if let Some(n) = r
                .ok()
                .and_then(|rows| rows.first()?.try_get::<i64>("", "n").ok())
            {
                let mut g = st.lock().await;
                g.0 = g.0.max(n);
                g.1 += 1;
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = s.cancelled() => {}
            }
        }
    });
    Sampler { stop, state, task }
}

/// Samples every key under the fleet's Redis prefix every `every`, keeping the sample
/// with the largest single-key cardinality (and the most keys seen).
pub fn sample_redis(url: String, every: Duration) -> Sampler<(redis_keys::KeySample, u64)> {
    let stop = CancellationToken::new();
    let state = Arc::new(Mutex::new(((redis_keys::KeySample::default(), 0u64), 0u64)));
    let (s, st) = (stop.clone(), state.clone());
    let task = tokio::spawn(async move {
        let mut conn = None;
        while !s.is_cancelled() {
            if conn.is_none() {
                conn = match redis::Client::open(url.as_str()) {
                    Ok(c) => c.get_multiplexed_async_connection().await.ok(),
                    Err(_) => None,
                };
            }
            if let Some(c) = conn.as_mut() {
                match redis_keys::sample(c, fleet::PREFIX).await {
                    Ok(k) => {
                        let mut g = st.lock().await;
                        let most_keys = g.0.1.max(k.keys);
                        if k.max_card > g.0.0.max_card {
                            g.0.0 = k;
                        }
                        g.0.1 = most_keys;
                        g.1 += 1;
                    }
                    Err(_) => conn = None,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = s.cancelled() => {}
            }
        }
    });
    Sampler { stop, state, task }
}
