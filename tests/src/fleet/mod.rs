//! The fleet under test, shared by `fleet-bench` and `chaos`: the real `syncfleet api`
//! and `syncfleet worker` processes against one database and a private `redis-server`,
//! seeded by SQL and measured from the outside (rows, `/proc`, Redis, `/metrics`).
//!
//! Where the database comes from is the caller's business (fleet-bench creates one on
//! the machine's PostgreSQL, chaos on a cluster of its own). Every process is a
//! [`Member`] that remembers its role, label and environment, so a harness can kill one
//! and start it again exactly as it was. Processes are only ever signalled by PID.

pub mod redis_keys;
pub mod sys;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, QueryResult, Statement};

use crate::procs::{self, Proc, RedisServer};

/// The admin API key every fleet process is started with.
pub const TOKEN: &str = "bench-admin-token-0123456789";
/// The key for connector secrets at rest.
pub const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The Redis key prefix of every fleet.
pub const PREFIX: &str = "bench";

/// One `syncfleet` process of the fleet.
pub struct Member {
    /// `api` or `worker`.
    pub role: &'static str,
    /// Its `HOSTNAME`: worker ids (`sync_logs.worker_id`) start with `<label>-<pid>-`.
    pub label: String,
    /// Settings on top of the fleet's.
    pub env: Vec<(String, String)>,
    /// `SYNCFLEET_LISTEN` (api) or `SYNCFLEET_WORKER_LISTEN` (worker).
    pub port: u16,
    pub proc: Proc,
}

impl Member {
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Still running (not exited; a stopped process is alive).
    pub fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// `sync_logs.worker_id` / `lease_owner` pattern of this process (SQL `LIKE`).
    pub fn owner_like(&self) -> String {
        format!("{}-{}-%", self.label, self.pid())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

pub struct Fleet {
    pub db: DatabaseConnection,
    pub db_url: String,
    pub redis: RedisServer,
    /// The environment of every process (members add their own on top).
    pub vars: HashMap<String, String>,
    pub apis: Vec<Member>,
    pub workers: Vec<Member>,
    /// Where each process's stderr goes (`<label>.log`), if anywhere.
    pub log_dir: Option<PathBuf>,
}

/// The settings every fleet process needs: database, Redis, prefix, keys, log level.
pub fn base_vars(db_url: &str, redis_url: &str) -> HashMap<String, String> {
    [
        ("DATABASE_URL", db_url.to_owned()),
        ("REDIS_URL", redis_url.to_owned()),
        ("SYNCFLEET_REDIS_PREFIX", PREFIX.to_owned()),
        ("SYNCFLEET_ADMIN_TOKEN", TOKEN.to_owned()),
        ("SYNCFLEET_SECRET_KEY", KEY.to_owned()),
        ("SYNCFLEET_MIN_INTERVAL_SECS", "1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Polls `http://127.0.0.1:<port><path>` until it answers 200 or `within` passes.
pub async fn wait_http(port: u16, path: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A counter or gauge summed over its label sets in a process's `/metrics`; `None`
/// when the endpoint does not answer.
pub async fn scrape(port: u16, name: &str) -> Option<f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

impl Fleet {
    /// Connects to `db_url` (migrated by the caller); no process is started yet.
    pub async fn new(db_url: &str, redis: RedisServer, vars: HashMap<String, String>) -> Self {
        let db = Database::connect(db_url).await.expect("fleet database");
        Self {
            db,
            db_url: db_url.to_owned(),
            redis,
            vars,
            apis: Vec::new(),
            workers: Vec::new(),
            log_dir: None,
        }
    }

    /// Starts a `role` process labelled `label` with `env` on top of the fleet's settings.
    pub fn spawn(&self, role: &'static str, label: &str, env: &[(String, String)]) -> Member {
        let port = procs::free_port();
        let mut v = self.vars.clone();
        for (k, val) in env {
            v.insert(k.clone(), val.clone());
        }
        let listen = if role == "api" {
            "SYNCFLEET_LISTEN"
        } else {
            "SYNCFLEET_WORKER_LISTEN"
        };
        v.insert(listen.into(), format!("127.0.0.1:{port}"));
        v.insert("HOSTNAME".into(), label.to_owned());
        let log = self
            .log_dir
            .as_ref()
            .map(|d| d.join(format!("{label}.log")));
        Member {
            role,
            label: label.to_owned(),
            env: env.to_vec(),
            port,
            proc: procs::syncfleet_logged(role, &v, log.as_deref()),
        }
    }

    /// The same process again (after it died or was killed), on a new port.
    pub fn respawn(&self, m: &Member) -> Member {
        self.spawn(m.role, &m.label, &m.env)
    }

    /// Starts an api and waits for its `/readyz`; returns its index in `apis`.
    pub async fn add_api(&mut self, env: &[(String, String)]) -> usize {
        let label = format!("api{}", self.apis.len());
        let m = self.spawn("api", &label, env);
        assert!(
            wait_http(m.port, "/readyz", Duration::from_secs(30)).await,
            "api on port {} did not become ready",
            m.port
        );
        self.apis.push(m);
        self.apis.len() - 1
    }

    /// Starts a worker and waits for its `/metrics`; returns its index in `workers`.
    pub async fn add_worker(&mut self, label: &str, env: &[(String, String)]) -> usize {
        let m = self.spawn("worker", label, env);
        assert!(
            wait_http(m.port, "/metrics", Duration::from_secs(30)).await,
            "worker {label} did not come up"
        );
        self.workers.push(m);
        self.workers.len() - 1
    }

    pub async fn add_workers(&mut self, n: usize) {
        for _ in 0..n {
            let label = format!("w{}", self.workers.len());
            self.add_worker(&label, &[]).await;
        }
    }

    /// The first api (fleet-bench runs exactly one).
    pub fn api(&self) -> &Member {
        &self.apis[0]
    }

    pub async fn try_rows(&self, sql: &str) -> Result<Vec<QueryResult>, DbErr> {
        self.db
            .query_all_raw(Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                sql.to_owned(),
            ))
            .await
    }

    pub async fn rows(&self, sql: &str) -> Vec<QueryResult> {
        self.try_rows(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Column `col` of the first row.
    pub async fn one<T: sea_orm::TryGetable>(&self, sql: &str, col: &str) -> T {
        self.rows(sql).await[0]
            .try_get("", col)
            .unwrap_or_else(|e| panic!("{sql}: {col}: {e}"))
    }

    /// `SELECT count(*) AS n …` style scalars: column `n` of the first row.
    pub async fn n(&self, sql: &str) -> i64 {
        self.one(sql, "n").await
    }

    pub async fn exec(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Seeds `n` synthetic integrations with ids `md5(tag || g)`, `g` in 1..=n: `config`,
    /// `next_sync_at` and `last_success_at` are SQL expressions over `g` and `t0` (a
    /// timestamptz).
    pub async fn seed_group(
        &self,
        tag: &str,
        n: u64,
        interval: u64,
        config: &str,
        next: &str,
        last_success: &str,
    ) {
        let ws: uuid::Uuid = self
            .one(
                "SELECT id FROM workspaces ORDER BY created_at LIMIT 1",
                "id",
            )
            .await;
        self.exec(&format!(
            "INSERT INTO integrations (id, workspace_id, name, kind, config, sync_interval_secs, sync_enabled, \
               health, next_sync_at, last_success_at, created_at, updated_at, stale_after_secs) \
             SELECT md5('{tag}' || g)::uuid, '{ws}', '{tag} ' || g, 'synthetic', {config}, {interval}, true, \
               'healthy', {next}, {last_success}, now(), now(), 2 * {interval} + 60 \
             FROM generate_series(1, {n}) g, (SELECT now() AS t0) t"
        ))
        .await;
        self.exec("ANALYZE integrations").await;
    }

    /// [`Self::seed_group`] with tag `i` (the ids fleet-bench's scenarios address).
    pub async fn seed(&self, n: u64, interval: u64, config: &str, next: &str, last_success: &str) {
        self.seed_group("i", n, interval, config, next, last_success)
            .await;
    }

    /// RSS of the first api and of every worker, MB.
    pub fn rss(&self) -> (f64, Vec<f64>) {
        self.memory("VmRSS")
    }

    /// Peak RSS of the first api and of every worker, MB.
    pub fn peak_rss(&self) -> (f64, Vec<f64>) {
        self.memory("VmHWM")
    }

    fn memory(&self, field: &str) -> (f64, Vec<f64>) {
        (
            sys::rss_mb(self.api().pid(), field),
            self.workers
                .iter()
                .map(|m| sys::rss_mb(m.pid(), field))
                .collect(),
        )
    }

    /// Sum of a counter over the workers' `/metrics` (workers that do not answer add 0).
    pub async fn worker_counter(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for m in &self.workers {
            sum += scrape(m.port, name).await.unwrap_or(0.0);
        }
        sum
    }

    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis.url()).expect("redis url");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    pub async fn redis_used_memory(&self) -> u64 {
        let mut c = self.redis_conn().await;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c)
            .await
            .expect("INFO memory");
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM every process (workers first) and wait for each, up to `within` apiece.
    pub async fn stop(&mut self, within: Duration) {
        for m in self.workers.iter_mut().chain(self.apis.iter_mut()) {
            if !m.alive() {
                continue;
            }
            if matches!(crate::fleet::sys::state(m.pid()), Some('T')) {
                m.proc.signal("CONT");
            }
            m.proc.terminate(within);
        }
        let _ = self.db.close_by_ref().await;
        self.redis.stop();
    }
}
