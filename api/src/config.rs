//! Typed configuration: defaults, then `SYNCFLEET_*` (plus `DATABASE_URL`, `REDIS_URL`)
//! from the environment, validated once at start. A bad value is one clear line naming
//! the variable; `main` prints it and exits with status 2.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use syncfleet_worker::ProtocolConfig;
use syncfleet_worker::history::HistoryConfig;
use syncfleet_worker::net::NetPolicy;
use syncfleet_worker::protocol::policy::RetryPolicy;
use syncfleet_worker::secrets::SecretBox;

/// A value that must never be printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration error: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &str, message: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `None` = the embedded SQLite file (standalone only).
    pub database_url: Option<Secret>,
    /// `None` = the embedded queue (standalone only).
    pub redis_url: Option<Secret>,
    /// Every Redis key lives under this prefix.
    pub redis_prefix: String,
    pub listen: SocketAddr,
    pub admin_token: Option<Secret>,
    /// Key for secrets at rest (standalone falls back to a generated key file).
    pub secret_key: Option<SecretBox>,
    pub log_format: LogFormat,
    pub min_interval_secs: i64,
    pub max_interval_secs: i64,
    /// What connectors may connect to (the SSRF guard).
    pub net: NetPolicy,
    /// Per-provider rate limits by connector kind (`SYNCFLEET_RATE_LIMITS`).
    pub rate_limits:
        std::collections::HashMap<entity::ConnectorKind, syncfleet_worker::ratelimit::Limit>,
    /// Most runs of one provider at once across the fleet, by connector kind
    /// (`SYNCFLEET_PROVIDER_CONCURRENCY`); kinds not listed are not capped.
    pub provider_concurrency: std::collections::HashMap<entity::ConnectorKind, u32>,
    /// Where a `worker` process serves `/metrics` and `/healthz` (none if unset).
    pub worker_listen: Option<SocketAddr>,
    /// Sustained API requests per second per key, and the burst above it.
    pub api_rate_per_sec: u32,
    pub api_rate_burst: u32,
    /// Requests with an unknown key (each a database lookup) per second and client
    /// address, and the burst above it.
    pub auth_failures_per_sec: u32,
    pub auth_failures_burst: u32,
    pub protocol: ProtocolConfig,
    /// Retention of finished runs and their hourly rollup (`SYNCFLEET_HISTORY_*`).
    pub history: HistoryConfig,
    /// The console's public address (`SYNCFLEET_PUBLIC_URL`); `https://` makes its
    /// session cookie `Secure`.
    pub public_url: Option<url::Url>,
    /// How long an `Idempotency-Key`'s answer is kept (`SYNCFLEET_IDEMPOTENCY_WINDOW`).
    pub idempotency_window: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names a webhook's sender
    /// (`SYNCFLEET_TRUSTED_PROXIES`); none by default: the TCP peer is the sender.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a received webhook's id is remembered to refuse its replay
    /// (`SYNCFLEET_WEBHOOK_RECEIPT_WINDOW`).
    pub webhook_receipt_window: Duration,
    /// A console session ends after this long without a request…
    pub console_idle_timeout: Duration,
    /// …and this long after login, whatever happens.
    pub console_session_lifetime: Duration,
}

/// The default embedded database.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://./syncfleet.db?mode=rwc";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads configuration from a map of variables (tests build one without touching
    /// the process environment).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let d = ProtocolConfig::default();
        let ms = |k: &str, default: Duration| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(0) => Err(ConfigError::new(k, "must be greater than 0")),
                    Ok(n) => Ok(Duration::from_millis(n)),
                    Err(_) => Err(ConfigError::new(
                        k,
                        format!("`{v}` is not a whole number of milliseconds"),
                    )),
                },
            }
        };
        let positive = |k: &str, default: u64| -> Result<u64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(0) => Err(ConfigError::new(k, "must be greater than 0")),
                    Ok(n) => Ok(n),
                    Err(_) => Err(ConfigError::new(
                        k,
                        format!("`{v}` is not a positive whole number"),
                    )),
                },
            }
        };
        let database_url = get("DATABASE_URL")
            .map(|v| check_url("DATABASE_URL", &v, &["postgres", "postgresql", "sqlite"]))
            .transpose()?;
        let redis_url = get("REDIS_URL")
            .map(|v| check_url("REDIS_URL", &v, &["redis", "rediss", "redis+unix", "unix"]))
            .transpose()?;
        let listen = parse_addr(
            "SYNCFLEET_LISTEN",
            get("SYNCFLEET_LISTEN")
                .as_deref()
                .unwrap_or("127.0.0.1:8080"),
        )?;
        let worker_listen = get("SYNCFLEET_WORKER_LISTEN")
            .map(|v| parse_addr("SYNCFLEET_WORKER_LISTEN", &v))
            .transpose()?;
        let log_format = match get("SYNCFLEET_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "SYNCFLEET_LOG_FORMAT",
                    format!("`{other}` is not `text` or `json`"),
                ));
            }
        };
        let net = NetPolicy::parse(get("SYNCFLEET_ALLOW_PRIVATE_NETWORKS").as_deref())
            .map_err(|m| ConfigError::new("SYNCFLEET_ALLOW_PRIVATE_NETWORKS", m))?;
        let secret_key = get("SYNCFLEET_SECRET_KEY")
            .map(|k| {
                SecretBox::parse(&k)
                    .map_err(|e| ConfigError::new("SYNCFLEET_SECRET_KEY", e.to_string()))
            })
            .transpose()?;
        let admin_token = get("SYNCFLEET_ADMIN_TOKEN").map(Secret::new);
        if let Some(t) = &admin_token
            && t.expose().len() < 16
        {
            return Err(ConfigError::new(
                "SYNCFLEET_ADMIN_TOKEN",
                "must be at least 16 characters",
            ));
        }
        let redis_prefix = get("SYNCFLEET_REDIS_PREFIX").unwrap_or_else(|| "syncfleet".into());
        if !redis_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(
                "SYNCFLEET_REDIS_PREFIX",
                "may contain only letters, digits, `-`, `_` and `.`",
            ));
        }
        let min_interval_secs = as_i64(
            "SYNCFLEET_MIN_INTERVAL_SECS",
            positive("SYNCFLEET_MIN_INTERVAL_SECS", 60)?,
        )?;
        let max_interval_secs = as_i64(
            "SYNCFLEET_MAX_INTERVAL_SECS",
            positive("SYNCFLEET_MAX_INTERVAL_SECS", 2_592_000)?,
        )?;
        if max_interval_secs < min_interval_secs {
            return Err(ConfigError::new(
                "SYNCFLEET_MAX_INTERVAL_SECS",
                "must not be below SYNCFLEET_MIN_INTERVAL_SECS",
            ));
        }
        let retry = RetryPolicy {
            base: ms("SYNCFLEET_RETRY_BASE_MS", d.retry.base)?,
            cap: ms("SYNCFLEET_RETRY_CAP_MS", d.retry.cap)?,
        };
        if retry.cap < retry.base {
            return Err(ConfigError::new(
                "SYNCFLEET_RETRY_CAP_MS",
                "must not be below SYNCFLEET_RETRY_BASE_MS",
            ));
        }
        let protocol = ProtocolConfig {
            scheduler_tick: ms("SYNCFLEET_SCHEDULER_TICK_MS", d.scheduler_tick)?,
            max_runs_per_tick: positive("SYNCFLEET_MAX_RUNS_PER_TICK", d.max_runs_per_tick)?,
            max_queue_depth: positive("SYNCFLEET_MAX_QUEUE_DEPTH", d.max_queue_depth)?,
            lease: ms("SYNCFLEET_LEASE_MS", d.lease)?,
            reaper_period: ms("SYNCFLEET_REAPER_PERIOD_MS", d.reaper_period)?,
            reenqueue_after: ms("SYNCFLEET_REENQUEUE_AFTER_MS", d.reenqueue_after)?,
            retry,
            max_retries: i32::try_from(positive("SYNCFLEET_MAX_RETRIES", 3)?)
                .map_err(|_| ConfigError::new("SYNCFLEET_MAX_RETRIES", "is too large"))?,
            max_claims: i32::try_from(positive("SYNCFLEET_MAX_CLAIMS", 3)?)
                .map_err(|_| ConfigError::new("SYNCFLEET_MAX_CLAIMS", "is too large"))?,
            worker_concurrency: usize::try_from(positive("SYNCFLEET_WORKER_CONCURRENCY", 16)?)
                .map_err(|_| ConfigError::new("SYNCFLEET_WORKER_CONCURRENCY", "is too large"))?,
            run_timeout: ms("SYNCFLEET_RUN_TIMEOUT_MS", d.run_timeout)?,
            shutdown_grace: ms("SYNCFLEET_SHUTDOWN_GRACE_MS", d.shutdown_grace)?,
            poll_interval: ms("SYNCFLEET_POLL_INTERVAL_MS", d.poll_interval)?,
            queue_retention: ms("SYNCFLEET_QUEUE_RETENTION_MS", d.queue_retention)?,
            notify: {
                let n = d.notify;
                let backoff = RetryPolicy {
                    base: ms("SYNCFLEET_NOTIFY_BACKOFF_BASE_MS", n.backoff.base)?,
                    cap: ms("SYNCFLEET_NOTIFY_BACKOFF_CAP_MS", n.backoff.cap)?,
                };
                if backoff.cap < backoff.base {
                    return Err(ConfigError::new(
                        "SYNCFLEET_NOTIFY_BACKOFF_CAP_MS",
                        "must not be below SYNCFLEET_NOTIFY_BACKOFF_BASE_MS",
                    ));
                }
                syncfleet_worker::config::NotifyConfig {
                    timeout: ms("SYNCFLEET_NOTIFY_TIMEOUT_MS", n.timeout)?,
                    retry_window: match get("SYNCFLEET_NOTIFY_RETRY_WINDOW") {
                        None => n.retry_window,
                        Some(v) => parse_duration("SYNCFLEET_NOTIFY_RETRY_WINDOW", &v)?,
                    },
                    backoff,
                    disable_after: i32::try_from(positive(
                        "SYNCFLEET_NOTIFY_DISABLE_AFTER",
                        u64::try_from(n.disable_after).unwrap_or(10),
                    )?)
                    .map_err(|_| {
                        ConfigError::new("SYNCFLEET_NOTIFY_DISABLE_AFTER", "is too large")
                    })?,
                    pump_period: ms("SYNCFLEET_NOTIFY_PUMP_MS", n.pump_period)?,
                }
            },
        };
        if protocol.lease < Duration::from_millis(30) {
            return Err(ConfigError::new(
                "SYNCFLEET_LEASE_MS",
                "must be at least 30",
            ));
        }
        let hd = HistoryConfig::default();
        let retention = match get("SYNCFLEET_HISTORY_RETENTION") {
            None => hd.retention,
            Some(v) => parse_duration("SYNCFLEET_HISTORY_RETENTION", &v)?,
        };
        // The last hour's raw runs must always be there: the fleet status, the failures
        // page and the scheduler lag read them, and the stats read a window's first,
        // partial hour from them (docs/architecture.md §3.9).
        if retention < Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "SYNCFLEET_HISTORY_RETENTION",
                "must be at least 1h",
            ));
        }
        let history = HistoryConfig {
            retention,
            keep_runs: u32::try_from(positive(
                "SYNCFLEET_HISTORY_KEEP_RUNS",
                u64::from(hd.keep_runs),
            )?)
            .map_err(|_| ConfigError::new("SYNCFLEET_HISTORY_KEEP_RUNS", "is too large"))?,
            period: ms("SYNCFLEET_HISTORY_PERIOD_MS", hd.period)?,
            ..hd
        };
        let public_url = get("SYNCFLEET_PUBLIC_URL")
            .map(|v| {
                url::Url::parse(&v)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "SYNCFLEET_PUBLIC_URL",
                            format!("`{v}` is not an http:// or https:// URL"),
                        )
                    })
            })
            .transpose()?;
        let console_idle_timeout =
            Duration::from_secs(positive("SYNCFLEET_CONSOLE_IDLE_TIMEOUT_SECS", 30 * 60)?);
        let console_session_lifetime = Duration::from_secs(positive(
            "SYNCFLEET_CONSOLE_SESSION_LIFETIME_SECS",
            12 * 3600,
        )?);
        let idempotency_window = match get("SYNCFLEET_IDEMPOTENCY_WINDOW") {
            None => Duration::from_secs(24 * 3600),
            Some(v) => parse_duration("SYNCFLEET_IDEMPOTENCY_WINDOW", &v)?,
        };
        let trusted_proxies = parse_networks(
            "SYNCFLEET_TRUSTED_PROXIES",
            get("SYNCFLEET_TRUSTED_PROXIES").as_deref().unwrap_or(""),
        )?;
        let webhook_receipt_window = match get("SYNCFLEET_WEBHOOK_RECEIPT_WINDOW") {
            None => Duration::from_secs(24 * 3600),
            Some(v) => parse_duration("SYNCFLEET_WEBHOOK_RECEIPT_WINDOW", &v)?,
        };
        // A timestamp passes within 5 minutes either side of the clock, so a signed
        // webhook can be sent again for up to 10 minutes: its receipt must outlive that
        // (docs/architecture.md §4.19).
        if webhook_receipt_window < Duration::from_secs(600) {
            return Err(ConfigError::new(
                "SYNCFLEET_WEBHOOK_RECEIPT_WINDOW",
                "must be at least 10m",
            ));
        }
        Ok(Self {
            idempotency_window,
            trusted_proxies,
            webhook_receipt_window,
            public_url,
            console_idle_timeout,
            console_session_lifetime,
            database_url,
            redis_url,
            redis_prefix,
            listen,
            admin_token,
            secret_key,
            log_format,
            min_interval_secs,
            max_interval_secs,
            net,
            rate_limits: syncfleet_worker::ratelimit::parse_limits(
                get("SYNCFLEET_RATE_LIMITS").as_deref().unwrap_or(""),
            )
            .map_err(|m| ConfigError::new("SYNCFLEET_RATE_LIMITS", m))?,
            provider_concurrency: syncfleet_worker::ratelimit::parse_caps(
                get("SYNCFLEET_PROVIDER_CONCURRENCY")
                    .as_deref()
                    .unwrap_or(""),
            )
            .map_err(|m| ConfigError::new("SYNCFLEET_PROVIDER_CONCURRENCY", m))?,
            worker_listen,
            api_rate_per_sec: u32::try_from(positive("SYNCFLEET_API_RATE_PER_SEC", 100)?)
                .map_err(|_| ConfigError::new("SYNCFLEET_API_RATE_PER_SEC", "is too large"))?,
            api_rate_burst: u32::try_from(positive("SYNCFLEET_API_RATE_BURST", 200)?)
                .map_err(|_| ConfigError::new("SYNCFLEET_API_RATE_BURST", "is too large"))?,
            auth_failures_per_sec: u32::try_from(positive("SYNCFLEET_AUTH_FAILURES_PER_SEC", 10)?)
                .map_err(|_| ConfigError::new("SYNCFLEET_AUTH_FAILURES_PER_SEC", "is too large"))?,
            auth_failures_burst: u32::try_from(positive("SYNCFLEET_AUTH_FAILURES_BURST", 20)?)
                .map_err(|_| ConfigError::new("SYNCFLEET_AUTH_FAILURES_BURST", "is too large"))?,
            protocol,
            history,
        })
    }

    /// The database URL of the production roles, which have no embedded default.
    pub fn require_database(&self) -> Result<&str, ConfigError> {
        match &self.database_url {
            Some(u) if u.expose().starts_with("postgres") => Ok(u.expose()),
            Some(_) => Err(ConfigError::new(
                "DATABASE_URL",
                "the api and worker roles need a postgres:// URL",
            )),
            None => Err(ConfigError::new(
                "DATABASE_URL",
                "is required for this role (postgres://…)",
            )),
        }
    }

    /// The key for secrets at rest of the production roles (no key file there).
    pub fn require_secret_key(&self) -> Result<&SecretBox, ConfigError> {
        self.secret_key.as_ref().ok_or_else(|| {
            ConfigError::new(
                "SYNCFLEET_SECRET_KEY",
                "is required for this role (32 bytes, as 64 hex characters)",
            )
        })
    }

    pub fn require_redis(&self) -> Result<&str, ConfigError> {
        self.redis_url
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| ConfigError::new("REDIS_URL", "is required for this role (redis://…)"))
    }
}

/// A duration written as a whole number and a unit: `ms`, `s`, `m`, `h` or `d`
/// (`30d`, `12h`, `90m`), greater than 0 and at most 100 years.
fn parse_duration(var: &str, v: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::new(
            var,
            format!(
                "`{v}` is not a duration like 30d, 12h or 90m (a whole number and one of ms, s, m, h, d)"
            ),
        )
    };
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let total = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if total == 0 {
        return Err(ConfigError::new(var, "must be greater than 0"));
    }
    if total > 100 * 365 * 86_400_000 {
        return Err(ConfigError::new(var, "must be at most 100 years"));
    }
    Ok(Duration::from_millis(total))
}

/// A comma-separated list of networks (`10.0.0.0/8`) or single addresses (`10.1.2.3`,
/// `::1`); empty = none.
pub fn parse_networks(var: &str, v: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            parse_network(s).ok_or_else(|| {
                ConfigError::new(
                    var,
                    format!("`{s}` is not a network like 10.0.0.0/8 or an address"),
                )
            })
        })
        .collect()
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address (a /32 or /128). Host bits are
/// cleared: `10.1.2.3/8` is `10.0.0.0/8`.
pub fn parse_network(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ipnet::IpNet::from(ip.to_canonical()))
}

fn as_i64(var: &str, v: u64) -> Result<i64, ConfigError> {
    i64::try_from(v).map_err(|_| ConfigError::new(var, "is too large"))
}

fn parse_addr(var: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    SocketAddr::from_str(v)
        .map_err(|_| ConfigError::new(var, format!("`{v}` is not an address like 127.0.0.1:8080")))
}

fn check_url(var: &str, v: &str, schemes: &[&str]) -> Result<Secret, ConfigError> {
    let parsed =
        url::Url::parse(v).map_err(|e| ConfigError::new(var, format!("not a URL ({e})")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(ConfigError::new(
            var,
            format!(
                "scheme `{}` is not one of {}",
                parsed.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    Ok(Secret::new(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_map(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = with(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.protocol.max_retries, 3);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("DATABASE_URL", "not-a-url"),
            ("REDIS_URL", "http://x"),
            ("SYNCFLEET_SCHEDULER_TICK_MS", "0"),
            ("SYNCFLEET_LOG_FORMAT", "xml"),
            ("SYNCFLEET_WORKER_CONCURRENCY", "-1"),
            ("SYNCFLEET_LISTEN", "nowhere"),
            ("SYNCFLEET_RATE_LIMITS", "http_json=5"),
            ("SYNCFLEET_PROVIDER_CONCURRENCY", "http_json=0"),
            ("SYNCFLEET_PROVIDER_CONCURRENCY", "ftp=2"),
            ("SYNCFLEET_HISTORY_RETENTION", "30"),
            ("SYNCFLEET_HISTORY_RETENTION", "30 days"),
            ("SYNCFLEET_HISTORY_RETENTION", "59m"),
            ("SYNCFLEET_HISTORY_RETENTION", "0d"),
            ("SYNCFLEET_HISTORY_RETENTION", "-1d"),
            ("SYNCFLEET_HISTORY_RETENTION", "99999999999999999999d"),
            ("SYNCFLEET_HISTORY_KEEP_RUNS", "0"),
            ("SYNCFLEET_HISTORY_KEEP_RUNS", "many"),
            ("SYNCFLEET_HISTORY_PERIOD_MS", "0"),
            ("SYNCFLEET_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
            ("SYNCFLEET_WEBHOOK_RECEIPT_WINDOW", "5m"),
        ] {
            let e = with(&[(k, v)])
                .err()
                .unwrap_or_else(|| panic!("{k} accepted"));
            assert_eq!(e.var, k);
        }
    }

    #[test]
    fn history_settings_parse_with_units() {
        let c = with(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.history.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.history.keep_runs, 100);
        assert_eq!(c.history.period, Duration::from_secs(60));
        for (v, secs) in [
            ("30d", 30 * 86_400),
            ("12h", 12 * 3600),
            ("90m", 5400),
            ("3600s", 3600),
            ("3600000ms", 3600),
        ] {
            let c = with(&[("SYNCFLEET_HISTORY_RETENTION", v)]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.history.retention, Duration::from_secs(secs), "{v}");
        }
        let e = with(&[("SYNCFLEET_HISTORY_RETENTION", "30")])
            .err()
            .unwrap_or_else(|| panic!("a bare number was accepted"));
        assert_eq!(
            e.to_string(),
            "invalid SYNCFLEET_HISTORY_RETENTION: `30` is not a duration like 30d, 12h or 90m \
             (a whole number and one of ms, s, m, h, d)"
        );
        let c = with(&[
            ("SYNCFLEET_HISTORY_KEEP_RUNS", "5"),
            ("SYNCFLEET_HISTORY_PERIOD_MS", "250"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.history.keep_runs, 5);
        assert_eq!(c.history.period, Duration::from_millis(250));
    }

    #[test]
    fn trusted_proxies_are_networks_or_addresses() {
        let c = with(&[("SYNCFLEET_TRUSTED_PROXIES", "10.1.2.3/8, 192.168.0.7 ,::1")])
            .unwrap_or_else(|e| panic!("{e}"));
        let shown: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.0.7/32", "::1/128"]);
        assert!(with(&[]).is_ok_and(|c| c.trusted_proxies.is_empty()));
        assert_eq!(
            with(&[]).map(|c| c.webhook_receipt_window),
            Ok(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = with(&[("SYNCFLEET_ADMIN_TOKEN", "0123456789abcdef-secret")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
