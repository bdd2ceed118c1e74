//! Per-test isolation: a fresh PostgreSQL database and a random Redis prefix.

use std::collections::HashMap;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use syncfleet_api::app::{self, Started};
use syncfleet_api::config::Config;
use syncfleet_api::db::AdminKey;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::ApiClient;

pub fn database_admin_url() -> String {
    std::env::var("SYNCFLEET_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("SYNCFLEET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Skips (or, under `CI=true`, fails) a test whose services are unreachable.
pub fn skip_or_fail(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is unreachable and CI=true: failing instead of skipping");
    }
    eprintln!("\n======== SKIPPED: {what} is unreachable; set it up to run this test ========\n");
}

/// Everything one test owns.
///
/// A test that ends with runs PENDING or RUNNING, or with entries in its queue, fails
/// when its `TestEnv` drops (as a job queue's own test harness should: work left behind
/// is a bug until a test says otherwise with [`TestEnv::leaves_work`]).
pub struct TestEnv {
    pub db_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub db: DatabaseConnection,
    db_name: String,
    leftovers: std::sync::Mutex<Option<String>>,
}

/// A fresh, migrated database and a random Redis prefix; `None` = skipped.
pub async fn test_env() -> Option<TestEnv> {
    let admin_url = database_admin_url();
    let admin =
        match tokio::time::timeout(Duration::from_secs(5), Database::connect(&admin_url)).await {
            Ok(Ok(db)) => db,
            _ => {
                skip_or_fail(&format!("PostgreSQL ({admin_url})"));
                return None;
            }
        };
    let redis_url = redis_url();
    let redis_ok = async {
        let client = redis::Client::open(redis_url.as_str()).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    };
    if tokio::time::timeout(Duration::from_secs(5), redis_ok)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        skip_or_fail(&format!("Redis ({redis_url})"));
        return None;
    }
    let db_name = format!("sf_test_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {db_name}"))
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url).expect("admin url");
    url.set_path(&db_name);
    let db_url = url.to_string();
    let db = Database::connect(&db_url)
        .await
        .expect("connect test database");
    Migrator::up(&db, None)
        .await
        .expect("migrate test database");
    let prefix = format!("sft{}", &Uuid::new_v4().simple().to_string()[..12]);
    Some(TestEnv {
        db_url,
        redis_url,
        prefix,
        db,
        db_name,
        leftovers: std::sync::Mutex::new(None),
    })
}

/// The key for secrets at rest in tests.
pub const TEST_SECRET_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Compressed protocol timings for tests.
pub const FAST: &[(&str, &str)] = &[
    ("SYNCFLEET_SCHEDULER_TICK_MS", "100"),
    ("SYNCFLEET_LEASE_MS", "1500"),
    ("SYNCFLEET_REAPER_PERIOD_MS", "250"),
    ("SYNCFLEET_REENQUEUE_AFTER_MS", "2000"),
    ("SYNCFLEET_RETRY_BASE_MS", "300"),
    ("SYNCFLEET_RETRY_CAP_MS", "2000"),
    ("SYNCFLEET_POLL_INTERVAL_MS", "20"),
    ("SYNCFLEET_SHUTDOWN_GRACE_MS", "2000"),
    ("SYNCFLEET_MIN_INTERVAL_SECS", "1"),
];

impl TestEnv {
    /// Says this test means to end with live runs or queue entries (why, for the reader).
    pub fn leaves_work(&self, why: &str) {
        if let Ok(mut l) = self.leftovers.lock() {
            *l = Some(why.to_owned());
        }
    }

    /// Live runs and queue entries left now: `(pending, running, queued)`.
    pub async fn leftovers(&self) -> (i64, i64, i64) {
        leftovers_of(&self.db, &self.redis_url, &self.prefix).await
    }

    /// The environment a syncfleet process of this test gets: isolation, then `FAST`,
    /// then `overrides`.
    pub fn vars(&self, overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = HashMap::new();
        m.insert("DATABASE_URL".into(), self.db_url.clone());
        m.insert("REDIS_URL".into(), self.redis_url.clone());
        m.insert("SYNCFLEET_REDIS_PREFIX".into(), self.prefix.clone());
        m.insert(
            "SYNCFLEET_ADMIN_TOKEN".into(),
            format!("test-admin-{}", self.prefix),
        );
        m.insert("SYNCFLEET_SECRET_KEY".into(), TEST_SECRET_KEY.into());
        for (k, v) in FAST.iter().chain(overrides) {
            m.insert((*k).into(), (*v).into());
        }
        m
    }

    pub fn config(&self, overrides: &[(&str, &str)]) -> Config {
        Config::from_map(&self.vars(overrides)).expect("test config")
    }

    pub fn admin_token(&self) -> String {
        format!("test-admin-{}", self.prefix)
    }

    /// Starts the real API role (scheduler included) in-process on port 0.
    pub async fn spawn_app(&self, overrides: &[(&str, &str)]) -> TestApp {
        let config = self.config(overrides);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<Started>();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            app::run_api(config, listener, token, move |s| {
                let _ = tx.send(s);
            })
            .await
        });
        let started = rx.await.expect("app started");
        assert_eq!(started.admin_key, AdminKey::Given);
        TestApp {
            client: ApiClient::new(&started.url, &self.admin_token()),
            url: started.url,
            shutdown,
            handle,
        }
    }

    /// Starts an in-process worker (the same code as `syncfleet worker`).
    pub fn spawn_worker(
        &self,
        overrides: &[(&str, &str)],
    ) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
        let config = self.config(overrides);
        let token = CancellationToken::new();
        let t = token.clone();
        (
            token,
            tokio::spawn(async move { app::run_worker(config, t).await }),
        )
    }

    /// Redis connection for assertions.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect")
    }
}

async fn leftovers_of(db: &DatabaseConnection, redis_url: &str, prefix: &str) -> (i64, i64, i64) {
    let counts = async {
        let rows = db
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT (SELECT COUNT(*) FROM live_runs WHERE status = 'PENDING') AS p, \
                        (SELECT COUNT(*) FROM live_runs WHERE status = 'RUNNING') AS r",
            ))
            .await
            .ok()?;
        let row = rows.first()?;
        Some((
            row.try_get::<i64>("", "p").ok()?,
            row.try_get::<i64>("", "r").ok()?,
        ))
    };
    let (p, r) = counts.await.unwrap_or((0, 0));
    let queued = async {
        let client = redis::Client::open(redis_url).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("ZCARD")
            .arg(format!("{{{prefix}:sync}}:ready"))
            .query_async::<i64>(&mut c)
            .await
            .ok()
    };
    (p, r, queued.await.unwrap_or(0))
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let allowed = self.leftovers.lock().map(|l| l.is_some()).unwrap_or(true);
        let left = if allowed || std::thread::panicking() {
            None
        } else {
            let (db_url, redis_url, prefix) = (
                self.db_url.clone(),
                self.redis_url.clone(),
                self.prefix.clone(),
            );
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async move {
                    let db = Database::connect(&db_url).await.ok()?;
                    let left = leftovers_of(&db, &redis_url, &prefix).await;
                    let _ = db.close().await;
                    Some(left)
                })
            })
            .join()
            .ok()
            .flatten()
        };
        // Async cleanup from a sync Drop: a short-lived runtime on its own thread.
        let (admin, name, redis_url, prefix) = (
            database_admin_url(),
            self.db_name.clone(),
            self.redis_url.clone(),
            self.prefix.clone(),
        );
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(db) = Database::connect(&admin).await {
                    let _ = db
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
                if let Ok(client) = redis::Client::open(redis_url.as_str())
                    && let Ok(mut c) = client.get_multiplexed_async_connection().await
                {
                    // Queue keys carry a hash tag: `{prefix:sync}:…`.
                    let mut keys: Vec<String> = Vec::new();
                    for pattern in [format!("{prefix}:*"), format!("{{{prefix}:*")] {
                        let found: Vec<String> = redis::cmd("KEYS")
                            .arg(pattern)
                            .query_async(&mut c)
                            .await
                            .unwrap_or_default();
                        keys.extend(found);
                    }
                    for chunk in keys.chunks(500) {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(chunk).query_async(&mut c).await;
                    }
                }
            });
        })
        .join();
        if let Some((pending, running, queued)) = left
            && (pending, running, queued) != (0, 0, 0)
        {
            panic!(
                "the test left work behind: {pending} PENDING and {running} RUNNING runs, {queued} queue entries \
                 (drain it, or call `env.leaves_work(why)` if that is the point)"
            );
        }
    }
}

/// A running API role.
pub struct TestApp {
    pub url: String,
    pub client: ApiClient,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}
