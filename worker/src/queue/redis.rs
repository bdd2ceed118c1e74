//! The Redis side of the queue: a sorted set of run ids and the few scripts around it.
//!
//! Why not apalis-redis's storage: four of its behaviours each broke a fault test here
//! (docs/architecture.md §5.8). Its stream ends for good on any Redis error, which drops
//! the runs a worker is driving; its `fetch_next` promotes every due task in one `unpack`
//! and dies past ~8,000 (a re-enqueuer after a worker outage reaches that); its heartbeats
//! and orphan cut-offs use each worker's own clock; finished tasks stay in Redis forever.
//!
//! What this layout guarantees instead:
//! - **At most one entry per run.** `ready` is a sorted set keyed by run id, scored by the
//!   Redis clock at its first push; a push of an id already there changes nothing
//!   (`ZADD NX`), so producers may re-push on a timer and the set stays bounded by the
//!   number of PENDING runs (at most one per integration).
//! - **Bounded work per call.** A fetch pops at most `n` ids (`ZPOPMIN`); a push takes
//!   at most [`PUSH_CHUNK`] ids per script call. Nothing promotes or scans a whole set.
//! - **No acknowledgements.** A popped id is gone from Redis: the database is the truth,
//!   the claim is a compare-and-set, and a PENDING run whose entry was lost (a worker that
//!   died between pop and claim, a flushed Redis) is pushed again by the re-enqueuer.
//! - **One clock.** Scores, heartbeats and the epoch use Redis `TIME`, never a process's.
//! - **One hash slot.** Every key of a queue shares the hash tag `{prefix:queue}`, so the
//!   scripts work on Redis Cluster.

use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::QueueError;

/// Ids per push script call: bounded work per call whatever the caller passes.
pub const PUSH_CHUNK: usize = 500;
/// Most ids one fetch pops.
pub const FETCH_MAX: usize = 256;

/// The keys of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `{prefix:queue}`: also the namespace the rate limiter keys live under.
    pub base: String,
    ready: String,
    workers: String,
    epoch: String,
}

impl Keys {
    pub fn new(prefix: &str, queue: &str) -> Self {
        let base = format!("{{{prefix}:{queue}}}");
        Self {
            ready: format!("{base}:ready"),
            workers: format!("{base}:workers"),
            epoch: format!("{base}:epoch"),
            base,
        }
    }
}

/// Adds each id that has no entry yet, scored by the Redis clock (ms); returns how many.
const PUSH_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
for i = 1, #ARGV do
  added = added + redis.call('ZADD', KEYS[1], 'NX', now, ARGV[i])
end
return added
";

/// Stamps a worker process's heartbeat with the Redis clock (s) and forgets processes
/// silent for longer than ARGV[2] seconds.
const HEARTBEAT_LUA: &str = r"
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return now
";

pub async fn push(conn: &ConnectionManager, keys: &Keys, ids: &[Uuid]) -> Result<u64, QueueError> {
    let script = redis::Script::new(PUSH_LUA);
    let mut added = 0;
    for chunk in ids.chunks(PUSH_CHUNK) {
        let mut inv = script.prepare_invoke();
        inv.key(&keys.ready);
        for id in chunk {
            inv.arg(id.to_string());
        }
        let n: u64 = inv.invoke_async(&mut conn.clone()).await?;
        added += n;
    }
    Ok(added)
}

/// Pops up to `n` ids, oldest first. Entries that are not run ids are dropped.
pub async fn fetch(
    conn: &ConnectionManager,
    keys: &Keys,
    n: usize,
) -> Result<Vec<Uuid>, QueueError> {
    let popped: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
        .arg(&keys.ready)
        .arg(n.clamp(1, FETCH_MAX))
        .query_async(&mut conn.clone())
        .await?;
    Ok(popped
        .into_iter()
        .filter_map(|(id, _)| match id.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                tracing::warn!(entry = %id, "dropping a queue entry that is not a run id");
                None
            }
        })
        .collect())
}

/// Longest a blocking pop waits before it returns empty-handed (and the fetcher looks
/// at its free slots and the isolation flag again).
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits up to [`WAIT`] for an entry and pops it (`BZPOPMIN`): an idle fetcher wakes the
/// moment a run is pushed instead of on its next poll. Use a connection of its own.
pub async fn wait(conn: &ConnectionManager, keys: &Keys) -> Result<Option<Uuid>, QueueError> {
    let popped: Option<(String, String, f64)> = redis::cmd("BZPOPMIN")
        .arg(&keys.ready)
        .arg(WAIT.as_secs_f64())
        .query_async(&mut conn.clone())
        .await?;
    Ok(popped.and_then(|(_, id, _)| match id.parse() {
        Ok(id) => Some(id),
        Err(_) => {
            tracing::warn!(entry = %id, "dropping a queue entry that is not a run id");
            None
        }
    }))
}

pub async fn depth(conn: &ConnectionManager, keys: &Keys) -> Result<u64, QueueError> {
    Ok(redis::cmd("ZCARD")
        .arg(&keys.ready)
        .query_async(&mut conn.clone())
        .await?)
}

pub async fn heartbeat(
    conn: &ConnectionManager,
    keys: &Keys,
    process: &str,
    forget_after_secs: u64,
) -> Result<(), QueueError> {
    let _: i64 = redis::Script::new(HEARTBEAT_LUA)
        .key(&keys.workers)
        .arg(process)
        .arg(forget_after_secs)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(())
}

/// Worker processes whose heartbeat is at most `within_secs` old by the Redis clock.
pub async fn workers_alive(
    conn: &ConnectionManager,
    keys: &Keys,
    within_secs: u64,
) -> Result<u64, QueueError> {
    let mut c = conn.clone();
    let (now, _): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
    Ok(redis::cmd("ZCOUNT")
        .arg(&keys.workers)
        .arg(now.saturating_sub(within_secs))
        .arg("+inf")
        .query_async(&mut c)
        .await?)
}

/// `true` while the epoch marker is missing: Redis is new, was restarted empty or
/// flushed, so every entry it held is gone and every PENDING run must be pushed again.
pub async fn epoch_missing(conn: &ConnectionManager, keys: &Keys) -> Result<bool, QueueError> {
    let n: i64 = redis::cmd("EXISTS")
        .arg(&keys.epoch)
        .query_async(&mut conn.clone())
        .await?;
    Ok(n == 0)
}

/// Sets the epoch marker once every PENDING run has been pushed again.
pub async fn set_epoch(conn: &ConnectionManager, keys: &Keys) -> Result<(), QueueError> {
    let _: () = redis::cmd("SET")
        .arg(&keys.epoch)
        .arg(Uuid::new_v4().to_string())
        .query_async(&mut conn.clone())
        .await?;
    Ok(())
}

pub async fn ping(conn: &ConnectionManager) -> Result<(), QueueError> {
    let _: String = redis::cmd("PING").query_async(&mut conn.clone()).await?;
    Ok(())
}
