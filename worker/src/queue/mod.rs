//! The queue: our own Redis layout in production (see [`redis`]), apalis-sqlite in the
//! embedded mode.
//!
//! Only "run `run_id` now" hints travel through it; a lost, duplicated or replayed hint
//! is harmless because the claim is a compare-and-set in the database. What this module
//! adds on top of apalis:
//! - on Redis, at most one entry per run, bounded fetches, the Redis clock only, and a
//!   stream that survives Redis restarts ([`redis`], [`backend`]);
//! - bulk pushes in one round trip per chunk;
//! - a depth probe for the scheduler's backpressure and the metrics;
//! - an epoch marker that tells the maintenance pass when Redis lost its data;
//! - hygiene for apalis-sqlite: completed entries older than a retention window are
//!   deleted (it keeps every finished task forever).

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use apalis::prelude::TaskSink;
use apalis_sqlite::SqliteStorage;
use sea_orm::sqlx::SqlitePool;
use uuid::Uuid;

use crate::job::SyncJob;

pub mod backend;
pub mod redis;

pub use self::redis::Keys;

/// The queue name inside a Redis key prefix / the SQLite `Jobs.job_type`.
pub const QUEUE: &str = "sync";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("queue push: {0}")]
    Push(String),
    #[error("sqlite queue: {0}")]
    Sqlite(String),
}

#[derive(Clone)]
pub enum Queue {
    Redis {
        conn: ConnectionManager,
        /// For connections of their own (the fetchers' wake-up subscription).
        client: ::redis::Client,
        keys: Keys,
        /// How often each worker process stamps its heartbeat.
        heartbeat: Duration,
    },
    Sqlite {
        storage: SqliteStorage<SyncJob>,
        pool: SqlitePool,
    },
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis { keys, .. } => write!(f, "Queue::Redis({})", keys.base),
            Self::Sqlite { .. } => write!(f, "Queue::Sqlite"),
        }
    }
}

impl Queue {
    /// Connects to Redis; every key lives under `{prefix:sync}` so deployments and tests
    /// can share a server (and a Redis Cluster keeps the queue in one hash slot).
    pub async fn redis(url: &str, prefix: &str, heartbeat: Duration) -> Result<Self, QueueError> {
        let client = ::redis::Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Ok(Self::Redis {
            conn,
            client,
            keys: Keys::new(prefix, QUEUE),
            heartbeat,
        })
    }

    /// The embedded queue in the application's SQLite file (creates its tables).
    pub async fn sqlite(pool: SqlitePool) -> Result<Self, QueueError> {
        SqliteStorage::setup(&pool)
            .await
            .map_err(|e| QueueError::Sqlite(e.to_string()))?;
        let storage = SqliteStorage::new(&pool)
            .with_config(apalis_sqlite::Config::default().queue(QUEUE).batch_size(16));
        Ok(Self::Sqlite { storage, pool })
    }

    /// Pushes one hint per run id. On Redis a run that already has an entry keeps it (and
    /// its place in line), so pushing again is always safe.
    pub async fn push(&self, run_ids: &[Uuid]) -> Result<(), QueueError> {
        self.push_work(&crate::protocol::RUNS, run_ids).await
    }

    /// Pushes one hint per item of the kind `w` (the same queue carries every kind).
    pub async fn push_work(&self, w: &crate::work::Work, ids: &[Uuid]) -> Result<(), QueueError> {
        let jobs: Vec<SyncJob> = ids.iter().map(|&id| SyncJob::of(w, id)).collect();
        self.push_jobs(&jobs).await
    }

    /// Pushes these hints.
    pub async fn push_jobs(&self, jobs: &[SyncJob]) -> Result<(), QueueError> {
        match self {
            Self::Redis { conn, keys, .. } => {
                self::redis::push(conn, keys, jobs).await?;
            }
            Self::Sqlite { storage, .. } => {
                for chunk in jobs.chunks(self::redis::PUSH_CHUNK) {
                    storage
                        .clone()
                        .push_bulk(chunk.to_vec())
                        .await
                        .map_err(|e| QueueError::Push(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// Drops the entries of these hints that are still waiting (Redis; one round trip per
    /// chunk). For work a worker claimed along with another item (a push batched with
    /// the one it popped): their entries would only be popped later to find the item
    /// claimed. Best effort, like every hint: an entry not dropped is a no-op delivery,
    /// and one dropped for an item that is later given back or reaped is pushed again by
    /// the recovery pass. The embedded queue keeps them (each costs one local claim).
    pub async fn forget(&self, jobs: &[SyncJob]) -> Result<(), QueueError> {
        match self {
            Self::Redis { conn, keys, .. } => self::redis::forget(conn, keys, jobs).await,
            Self::Sqlite { .. } => Ok(()),
        }
    }

    /// Tasks waiting to be fetched.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        match self {
            Self::Redis { conn, keys, .. } => self::redis::depth(conn, keys).await,
            Self::Sqlite { pool, .. } => {
                let n: i64 = sea_orm::sqlx::query_scalar(
                    "SELECT COUNT(*) FROM Jobs WHERE job_type = ? AND status IN ('Pending', 'Queued')",
                )
                .bind(QUEUE)
                .fetch_one(pool)
                .await
                .map_err(|e| QueueError::Sqlite(e.to_string()))?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    }

    /// The fleet-wide provider limits (rates and concurrency caps) matching this queue:
    /// Redis-backed beside a Redis queue, in-process in the embedded mode.
    pub fn limiter(
        &self,
        limits: std::collections::HashMap<entity::ConnectorKind, crate::ratelimit::Limit>,
        caps: std::collections::HashMap<entity::ConnectorKind, u32>,
    ) -> crate::ratelimit::Limiter {
        match self {
            Self::Redis { conn, keys, .. } => {
                crate::ratelimit::Limiter::redis(conn.clone(), &keys.base, limits)
            }
            Self::Sqlite { .. } => crate::ratelimit::Limiter::local(limits),
        }
        .with_caps(caps)
    }

    /// Stamps this worker process's heartbeat (Redis clock). The embedded queue keeps
    /// its own worker registry.
    pub async fn heartbeat(&self, process: &str) -> Result<(), QueueError> {
        match self {
            Self::Redis {
                conn,
                keys,
                heartbeat,
                ..
            } => {
                // Entries silent for a minute (and at least 12 heartbeats) are forgotten.
                let forget = (heartbeat.as_secs().max(1) * 12).max(60);
                self::redis::heartbeat(conn, keys, process, forget).await
            }
            Self::Sqlite { .. } => Ok(()),
        }
    }

    /// Worker processes whose heartbeat is recent (three heartbeat periods).
    pub async fn workers_alive(&self) -> Result<u64, QueueError> {
        match self {
            Self::Redis {
                conn,
                keys,
                heartbeat,
                ..
            } => self::redis::workers_alive(conn, keys, heartbeat.as_secs().max(1) * 3).await,
            Self::Sqlite { pool, .. } => {
                let n: i64 = sea_orm::sqlx::query_scalar(
                    "SELECT COUNT(*) FROM Workers WHERE worker_type = ? AND last_seen >= CAST(strftime('%s', 'now') AS INTEGER) - 90",
                )
                .bind(QUEUE)
                .fetch_one(pool)
                .await
                .map_err(|e| QueueError::Sqlite(e.to_string()))?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    }

    /// `true` when the queue may have lost entries (Redis new, restarted empty or
    /// flushed) and nobody has pushed every PENDING run again since: the caller does, then
    /// calls [`Self::entries_restored`]. Until then every pass sees `true`, so a push that
    /// failed halfway is completed by the next pass.
    pub async fn lost_entries(&self) -> Result<bool, QueueError> {
        match self {
            Self::Redis { conn, keys, .. } => self::redis::epoch_missing(conn, keys).await,
            Self::Sqlite { .. } => Ok(false),
        }
    }

    /// Every PENDING run has been pushed again after [`Self::lost_entries`].
    pub async fn entries_restored(&self) -> Result<(), QueueError> {
        match self {
            Self::Redis { conn, keys, .. } => self::redis::set_epoch(conn, keys).await,
            Self::Sqlite { .. } => Ok(()),
        }
    }

    /// Reachability probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Self::Redis { conn, .. } => self::redis::ping(conn).await,
            Self::Sqlite { pool, .. } => sea_orm::sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| QueueError::Sqlite(e.to_string())),
        }
    }

    /// Deletes finished queue entries older than `retention`; returns how many. Redis
    /// keeps none (a fetch removes the entry), so only the embedded queue has any.
    pub async fn cleanup(&self, retention: Duration) -> Result<u64, QueueError> {
        match self {
            Self::Redis { .. } => Ok(0),
            Self::Sqlite { pool, .. } => {
                let r = sea_orm::sqlx::query(
                    "DELETE FROM Jobs WHERE job_type = ? AND status IN ('Done', 'Killed') \
                     AND done_at IS NOT NULL AND done_at < CAST(strftime('%s', 'now') AS INTEGER) - ?",
                )
                .bind(QUEUE)
                .bind(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX))
                .execute(pool)
                .await
                .map_err(|e| QueueError::Sqlite(e.to_string()))?;
                Ok(r.rows_affected())
            }
        }
    }
}
