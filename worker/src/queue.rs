//! The queue: Redis (apalis-redis) in production, apalis-sqlite in the embedded mode.
//!
//! Only "run `run_id` now" hints travel through it; a lost, duplicated or replayed hint
//! is harmless because the claim is a compare-and-set in the database. What this module
//! adds on top of apalis:
//! - bulk pushes in one round trip, chunked below the size where apalis-redis's
//!   `fetch_next` Lua would overflow `unpack` (it promotes every due task at once);
//! - a depth probe for the scheduler's backpressure and the metrics;
//! - hygiene: completed entries older than a retention window are deleted. apalis-redis
//!   keeps every finished task forever and its `vacuum()` would also delete the payload
//!   of a task waiting for a backend retry; our handler never returns `Err`, and the
//!   cleanup below only touches ids in the `done`/`dead` sets, which can never run again.

use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::SqliteStorage;
use sea_orm::sqlx::SqlitePool;
use uuid::Uuid;

use crate::job::SyncJob;

/// Ids per push: far below the Lua `unpack` limit (~8000) of apalis-redis.
const PUSH_CHUNK: usize = 500;
/// The queue name inside a Redis key prefix / the SQLite `Jobs.job_type`.
pub const QUEUE: &str = "sync";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue push: {0}")]
    Push(String),
    #[error("sqlite queue: {0}")]
    Sqlite(String),
}

#[derive(Clone)]
pub enum Queue {
    Redis {
        storage: RedisStorage<SyncJob>,
        conn: ConnectionManager,
        name: String,
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
            Self::Redis { name, .. } => write!(f, "Queue::Redis({name})"),
            Self::Sqlite { .. } => write!(f, "Queue::Sqlite"),
        }
    }
}

/// apalis-redis settings that matter to the protocol.
pub fn redis_config(prefix: &str, heartbeat: Duration) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(format!("{prefix}:{QUEUE}"))
        .batch_size(16)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(3)
        .idempotency_ttl(Some(Duration::from_secs(24 * 3600)))
}

impl Queue {
    /// Connects to Redis; every key lives under `prefix:` so deployments and tests can share a server.
    pub async fn redis(url: &str, prefix: &str, heartbeat: Duration) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        let config = redis_config(prefix, heartbeat);
        let name = format!("{prefix}:{QUEUE}");
        let storage = RedisStorage::new(conn.clone()).with_config(config);
        Ok(Self::Redis {
            storage,
            conn,
            name,
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

    /// Pushes one hint per run id.
    pub async fn push(&self, run_ids: &[Uuid]) -> Result<(), QueueError> {
        for chunk in run_ids.chunks(PUSH_CHUNK) {
            let jobs: Vec<SyncJob> = chunk.iter().map(|&run_id| SyncJob::V1 { run_id }).collect();
            match self {
                Self::Redis { storage, .. } => storage
                    .clone()
                    .push_bulk(jobs)
                    .await
                    .map_err(|e| QueueError::Push(e.to_string()))?,
                Self::Sqlite { storage, .. } => storage
                    .clone()
                    .push_bulk(jobs)
                    .await
                    .map_err(|e| QueueError::Push(e.to_string()))?,
            }
        }
        Ok(())
    }

    /// Tasks waiting to be fetched (due or scheduled).
    pub async fn depth(&self) -> Result<u64, QueueError> {
        match self {
            Self::Redis { conn, name, .. } => {
                let mut c = conn.clone();
                let (active, scheduled): (u64, u64) = redis::pipe()
                    .cmd("LLEN")
                    .arg(format!("{name}:active"))
                    .cmd("ZCARD")
                    .arg(format!("{name}:scheduled"))
                    .query_async(&mut c)
                    .await?;
                Ok(active + scheduled)
            }
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
            Self::Redis { conn, name, .. } => {
                crate::ratelimit::Limiter::redis(conn.clone(), name, limits)
            }
            Self::Sqlite { .. } => crate::ratelimit::Limiter::local(limits),
        }
        .with_caps(caps)
    }

    /// Queue workers whose heartbeat is recent (three heartbeat periods).
    pub async fn workers_alive(&self) -> Result<u64, QueueError> {
        match self {
            Self::Redis {
                conn,
                name,
                heartbeat,
                ..
            } => {
                let mut c = conn.clone();
                let (now, _): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
                let cutoff = now.saturating_sub(heartbeat.as_secs().max(1) * 3);
                let n: u64 = redis::cmd("ZCOUNT")
                    .arg(format!("{name}:workers"))
                    .arg(cutoff)
                    .arg("+inf")
                    .query_async(&mut c)
                    .await?;
                Ok(n)
            }
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

    /// Reachability probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Self::Redis { conn, .. } => {
                let mut c = conn.clone();
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            }
            Self::Sqlite { pool, .. } => sea_orm::sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| QueueError::Sqlite(e.to_string())),
        }
    }

    /// Deletes finished queue entries older than `retention`; returns how many.
    pub async fn cleanup(&self, retention: Duration) -> Result<u64, QueueError> {
        match self {
            Self::Redis { conn, name, .. } => {
                let mut total = 0;
                for set in ["done", "dead"] {
                    total += cleanup_redis_set(conn, name, set, retention).await?;
                }
                Ok(total)
            }
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

/// Deletes payload, meta and set membership of finished tasks whose `done_at` is older
/// than `retention` (by the Redis clock). Bounded work per call.
const CLEANUP_LUA: &str = r"
local now = tonumber(redis.call('TIME')[1])
local cutoff = now - tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta = KEYS[3] .. id
  local done_at = tonumber(redis.call('HGET', meta, 'done_at'))
  if done_at == nil or done_at <= cutoff then
    redis.call('HDEL', KEYS[2], id)
    redis.call('DEL', meta)
    redis.call('SREM', KEYS[1], id)
    removed = removed + 1
  end
end
return removed
";

async fn cleanup_redis_set(
    conn: &ConnectionManager,
    name: &str,
    set: &str,
    retention: Duration,
) -> Result<u64, QueueError> {
    let mut c = conn.clone();
    let script = redis::Script::new(CLEANUP_LUA);
    let set_key = format!("{name}:{set}");
    // The scan resumes where the previous call stopped (the cursor is kept in Redis, so
    // every API replica shares it): restarting at 0 would revisit the same young entries
    // on every pass and never reach old ones behind them in a large set.
    let cursor_key = format!("{name}:cleanup-cursor:{set}");
    let mut cursor: u64 = redis::cmd("GET")
        .arg(&cursor_key)
        .query_async::<Option<u64>>(&mut c)
        .await?
        .unwrap_or(0);
    let mut removed = 0u64;
    // At most 200 × 500 ids per call; the next call continues.
    for _ in 0..200 {
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(&set_key)
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut c)
            .await?;
        if !ids.is_empty() {
            let mut inv = script.prepare_invoke();
            inv.key(&set_key)
                .key(format!("{name}:data"))
                .key(format!("{name}:meta:"));
            inv.arg(retention.as_secs());
            for id in &ids {
                inv.arg(id);
            }
            let n: u64 = inv.invoke_async(&mut c).await?;
            removed += n;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let _: () = redis::cmd("SET")
        .arg(&cursor_key)
        .arg(cursor)
        .query_async(&mut c)
        .await?;
    Ok(removed)
}
