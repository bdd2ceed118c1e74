//! Per-provider rate limits that hold across the whole fleet.
//!
//! A provider is a connector kind plus its credential (a hash of the secret fields and
//! the source host), so two integrations sharing a Google token share its quota. With
//! Redis, every worker process draws from one GCRA bucket per provider (one Lua script,
//! Redis clock) and a provider's 429 pauses it for every worker until the reset; the
//! embedded mode uses governor in process. Limits are configured per kind
//! (`SYNCFLEET_RATE_LIMITS`, e.g. `google_sheets=60/60s:10`) and hold per request: every
//! request of a run takes a token ([`RequestGate`]). A kind may also cap how many runs
//! of one provider go at once across the fleet (`SYNCFLEET_PROVIDER_CONCURRENCY`,
//! [`slots`]).

mod gate;
pub mod slots;

pub use gate::RequestGate;
pub use slots::{Slot, parse_caps};

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use entity::ConnectorKind;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

/// `requests` per `per`, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Limit {
    fn emission_ms(self) -> u64 {
        (u64::try_from(self.per.as_millis()).unwrap_or(u64::MAX) / u64::from(self.requests.max(1)))
            .max(1)
    }
}

/// Parses `kind=N/Ds[:burst]` pairs, comma-separated (`s`, `m` or `h` units).
pub fn parse_limits(text: &str) -> Result<HashMap<ConnectorKind, Limit>, String> {
    let mut out = HashMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not like google_sheets=60/60s:10");
        let (kind, rest) = part.split_once('=').ok_or_else(bad)?;
        let kind: ConnectorKind =
            serde_json::from_value(serde_json::Value::String(kind.trim().into()))
                .map_err(|_| bad())?;
        let (rate, burst) = match rest.split_once(':') {
            Some((r, b)) => (r, b.trim().parse::<u32>().map_err(|_| bad())?),
            None => (rest, 1),
        };
        let (n, per) = rate.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let (num, unit) = per.split_at(per.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let num: u64 = if num.is_empty() {
            1
        } else {
            num.parse().map_err(|_| bad())?
        };
        let secs = match unit {
            "s" => num,
            "m" => num * 60,
            "h" => num * 3600,
            _ => return Err(bad()),
        };
        if n == 0 || secs == 0 || burst == 0 {
            return Err(bad());
        }
        out.insert(
            kind,
            Limit {
                requests: n,
                per: Duration::from_secs(secs),
                burst,
            },
        );
    }
    Ok(out)
}

/// The provider key of a run: kind + a hash of its credential and source host
/// (`urls` from the run's already-built connector).
pub fn provider_key(
    kind: ConnectorKind,
    opened_config: &serde_json::Value,
    urls: &[url::Url],
) -> String {
    let mut h = Sha256::new();
    for field in crate::connectors::secret_fields(kind) {
        if let Some(v) = opened_config.get(*field) {
            h.update(field.as_bytes());
            h.update(v.to_string().as_bytes());
        }
    }
    for url in urls {
        h.update(url.host_str().unwrap_or_default().as_bytes());
    }
    let digest = h.finalize();
    format!("{}:{}", kind.as_str(), hex::encode(&digest[..8]))
}

type Local = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Draws tokens for providers; `None` limits mean "unlimited".
#[derive(Clone)]
pub struct Limiter {
    limits: Arc<HashMap<ConnectorKind, Limit>>,
    backend: Backend,
    slots: slots::Slots,
}

#[derive(Clone)]
enum Backend {
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
    Local {
        buckets: Arc<std::sync::Mutex<HashMap<ConnectorKind, Arc<Local>>>>,
        pauses: Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
    },
}

/// The GCRA bucket of `provider` under `base` (the queue's `{prefix:sync}`, so it shares
/// the queue's hash slot: docs/architecture.md §5.7).
pub(crate) fn tat_key(base: &str, provider: &str) -> String {
    format!("{base}:rl:tat:{provider}")
}

/// The fleet-wide 429 pause of `provider` under `base` (docs/architecture.md §5.7).
pub(crate) fn pause_key(base: &str, provider: &str) -> String {
    format!("{base}:rl:pause:{provider}")
}

/// What every pause key starts with; the console scans for it to list paused providers.
pub fn pause_key_prefix(base: &str) -> String {
    pause_key(base, "")
}

/// KEYS[1] the bucket ([`tat_key`]), KEYS[2] the pause ([`pause_key`]): both of one
/// provider under one base, so one hash slot (Redis Cluster, docs/architecture.md §5.7).
pub(crate) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return pause end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - interval * burst
if allow_at > now then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return 0
";

/// A fetch let through its provider's fleet-wide limits ([`Limiter::admit`]): the
/// provider's concurrency slot, held while this lives, and the gate its requests draw
/// their tokens from (the first one already taken).
pub struct Admission {
    pub gate: RequestGate,
    /// `None` when the limiter's store was unreachable (the fetch goes on without it).
    pub slot: Option<Slot>,
}

/// Why a fetch may not go now; either way it should come back later, not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred {
    /// Every concurrency slot of the provider stayed busy for the whole wait.
    Busy { message: String },
    /// The provider's rate is spent, or it is paused after a 429.
    Limited {
        retry_after: Option<Duration>,
        message: String,
    },
}

impl Deferred {
    pub fn message(&self) -> &str {
        match self {
            Self::Busy { message } | Self::Limited { message, .. } => message,
        }
    }
}

impl Limiter {
    pub fn redis(
        conn: ConnectionManager,
        prefix: &str,
        limits: HashMap<ConnectorKind, Limit>,
    ) -> Self {
        Self {
            limits: Arc::new(limits),
            slots: slots::Slots::redis(conn.clone(), prefix, HashMap::new()),
            backend: Backend::Redis {
                conn,
                prefix: prefix.to_owned(),
            },
        }
    }

    pub fn local(limits: HashMap<ConnectorKind, Limit>) -> Self {
        Self {
            limits: Arc::new(limits),
            backend: Backend::Local {
                buckets: Arc::default(),
                pauses: Arc::default(),
            },
            slots: slots::Slots::local(HashMap::new()),
        }
    }

    /// Caps the runs of one provider at once by kind (fleet-wide beside Redis).
    #[must_use]
    pub fn with_caps(mut self, caps: HashMap<ConnectorKind, u32>) -> Self {
        self.slots = match &self.backend {
            Backend::Redis { conn, prefix } => slots::Slots::redis(conn.clone(), prefix, caps),
            Backend::Local { .. } => slots::Slots::local(caps),
        };
        self
    }

    /// Lets one fetch of `provider` go under its limits, as every run does and the
    /// console's Test connection too: a concurrency slot (held `lease` at a time, renewed
    /// until dropped) and the first request's token, waiting at most `max_wait` in all.
    /// Every wait and deferral of a token counts in `waits`.
    pub async fn admit(
        &self,
        kind: ConnectorKind,
        provider: &str,
        lease: Duration,
        max_wait: Duration,
        waits: prometheus::IntCounter,
    ) -> Result<Admission, Deferred> {
        let began = std::time::Instant::now();
        let slot = match self.acquire_slot(kind, provider, lease, max_wait).await {
            Ok(Some(slot)) => Some(slot),
            Ok(None) => {
                return Err(Deferred::Busy {
                    message: format!(
                        "provider concurrency cap: no slot free within {} ms",
                        max_wait.as_millis()
                    ),
                });
            }
            // The limiter's store is unreachable: go rather than stall the fleet.
            Err(e) => {
                tracing::warn!(error = %e, "provider concurrency cap unavailable; running without it");
                None
            }
        };
        let gate = RequestGate::new(self.clone(), kind, provider.to_owned(), max_wait, waits);
        if let Err(e) = gate.reserve(max_wait.saturating_sub(began.elapsed())).await {
            return Err(Deferred::Limited {
                retry_after: e.retry_after,
                message: e.message,
            });
        }
        Ok(Admission { gate, slot })
    }

    /// A concurrency slot of `provider` (always granted when its kind has no cap),
    /// waiting up to `wait`; `Ok(None)` when every slot stayed busy. It is held for
    /// `lease` and renewed until the returned [`Slot`] is dropped.
    pub async fn acquire_slot(
        &self,
        kind: ConnectorKind,
        provider: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Slot>, redis::RedisError> {
        self.slots.acquire(kind, provider, lease, wait).await
    }

    /// Takes a token for `provider`: `Ok(None)` = go now, `Ok(Some(wait))` = not before
    /// `wait` (rate exhausted or the provider paused after a 429).
    pub async fn try_acquire(
        &self,
        kind: ConnectorKind,
        provider: &str,
    ) -> Result<Option<Duration>, redis::RedisError> {
        let limit = self.limits.get(&kind).copied();
        match &self.backend {
            Backend::Redis { conn, prefix } => {
                let Some(limit) = limit else {
                    // No rate, but a 429 pause still applies.
                    let mut c = conn.clone();
                    let ms: i64 = redis::cmd("PTTL")
                        .arg(pause_key(prefix, provider))
                        .query_async(&mut c)
                        .await?;
                    return Ok((ms > 0).then(|| Duration::from_millis(ms as u64)));
                };
                let mut c = conn.clone();
                let wait: i64 = redis::Script::new(GCRA)
                    .key(tat_key(prefix, provider))
                    .key(pause_key(prefix, provider))
                    .arg(limit.emission_ms())
                    .arg(limit.burst)
                    .invoke_async(&mut c)
                    .await?;
                Ok((wait > 0).then(|| Duration::from_millis(wait as u64)))
            }
            Backend::Local { buckets, pauses } => {
                if let Some(until) = pauses.lock().ok().and_then(|p| p.get(provider).copied()) {
                    let now = std::time::Instant::now();
                    if until > now {
                        return Ok(Some(until - now));
                    }
                }
                let Some(limit) = limit else { return Ok(None) };
                let bucket = {
                    let Ok(mut map) = buckets.lock() else {
                        return Ok(None);
                    };
                    map.entry(kind)
                        .or_insert_with(|| {
                            let per = Duration::from_millis(limit.emission_ms());
                            let quota = Quota::with_period(per)
                                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
                            Arc::new(RateLimiter::keyed(quota.allow_burst(
                                NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN),
                            )))
                        })
                        .clone()
                };
                Ok(bucket
                    .check_key(&provider.to_owned())
                    .err()
                    .map(|nu| nu.wait_time_from(DefaultClock::default().now())))
            }
        }
    }

    /// A 429 from `provider`: pause it for every worker for `wait`.
    pub async fn pause(&self, provider: &str, wait: Duration) -> Result<(), redis::RedisError> {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        match &self.backend {
            Backend::Redis { conn, prefix } => {
                let mut c = conn.clone();
                // Never shorten a longer pause another worker already set.
                let key = pause_key(prefix, provider);
                let current: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut c).await?;
                if current < ms as i64 {
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(1)
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut c)
                        .await?;
                }
                Ok(())
            }
            Backend::Local { pauses, .. } => {
                if let Ok(mut p) = pauses.lock() {
                    p.insert(provider.to_owned(), std::time::Instant::now() + wait);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_limits() {
        let l = parse_limits("google_sheets=60/60s:10, synthetic=5/s").unwrap();
        assert_eq!(
            l[&ConnectorKind::GoogleSheets],
            Limit {
                requests: 60,
                per: Duration::from_secs(60),
                burst: 10
            }
        );
        assert_eq!(
            l[&ConnectorKind::Synthetic],
            Limit {
                requests: 5,
                per: Duration::from_secs(1),
                burst: 1
            }
        );
        for bad in [
            "ftp=1/s",
            "synthetic=0/s",
            "synthetic=5",
            "synthetic=5/1x",
            "synthetic=5/s:0",
        ] {
            assert!(parse_limits(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn local_limits_and_pauses() {
        let lim = Limiter::local(parse_limits("synthetic=2/s:2").unwrap());
        assert_eq!(
            lim.try_acquire(ConnectorKind::Synthetic, "p")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            lim.try_acquire(ConnectorKind::Synthetic, "p")
                .await
                .unwrap(),
            None
        );
        assert!(
            lim.try_acquire(ConnectorKind::Synthetic, "p")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            lim.try_acquire(ConnectorKind::HttpJson, "q").await.unwrap(),
            None,
            "unlimited kind"
        );
        lim.pause("q", Duration::from_secs(5)).await.unwrap();
        assert!(
            lim.try_acquire(ConnectorKind::HttpJson, "q")
                .await
                .unwrap()
                .is_some()
        );
    }
}
