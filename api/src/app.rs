//! The roles of the `syncfleet` binary, each a `run_*` function that takes its config,
//! (for servers) a listener, and a shutdown token, so tests drive the real thing.

use std::sync::Arc;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::DatabaseConnection;
use syncfleet_worker::connectors::ConnectorEnv;
use syncfleet_worker::metrics::Metrics;
use syncfleet_worker::secrets::SecretBox;
use syncfleet_worker::{Engine, Queue, runner};

/// The embedded mode's key for secrets at rest, when `SYNCFLEET_SECRET_KEY` is not set.
pub const KEY_FILE: &str = "syncfleet.key";
/// An API replica waits this long for a database connection before it answers 503
/// `database_unavailable`: during an outage requests fail fast instead of hanging.
const API_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// The key file lives beside the SQLite database file (`./syncfleet.key` by default).
pub fn key_path_for(db_url: &str) -> std::path::PathBuf {
    let file = db_url
        .strip_prefix("sqlite://")
        .or_else(|| db_url.strip_prefix("sqlite:"))
        .unwrap_or("");
    let file = file.split('?').next().unwrap_or("");
    match std::path::Path::new(file).parent() {
        Some(dir) if !file.is_empty() && !file.starts_with(':') => dir.join(KEY_FILE),
        _ => std::path::PathBuf::from(KEY_FILE),
    }
}

/// Reads the key file, creating it (owner-only) with a new random key on first start.
pub fn key_file(path: &std::path::Path) -> anyhow::Result<SecretBox> {
    if !path.exists() {
        let key = SecretBox::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .with_context(|| format!("creating the key file {}", path.display()))?;
        std::io::Write::write_all(&mut f, key.as_bytes())?;
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    SecretBox::parse(&text)
        .with_context(|| format!("the key file {} is not a valid key", path.display()))
}
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DEFAULT_SQLITE_URL};
use crate::db::{self, AdminKey};
use crate::keyhash::KeyHasher;
use crate::routes;
use crate::scheduler;
use crate::state::AppState;

/// What a started server reports back (the standalone banner and the tests use it).
#[derive(Debug, Clone)]
pub struct Started {
    pub url: String,
    pub admin_key: AdminKey,
}

async fn redis_queue(config: &Config) -> anyhow::Result<Queue> {
    let url = config.require_redis()?;
    Queue::redis(url, &config.redis_prefix, std::time::Duration::from_secs(5))
        .await
        .context("cannot connect to Redis (REDIS_URL)")
}

/// API + scheduler + maintenance, and (in standalone) the worker, until `shutdown`.
async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
    with_worker: bool,
    started: impl FnOnce(Started),
    admin_key: AdminKey,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let mut tasks = tokio::task::JoinSet::new();
    if syncfleet_worker::db::Dialect::of(&state.db) == syncfleet_worker::db::Dialect::Postgres {
        tasks.spawn(crate::auth_cache::listen(
            state.auth_cache.clone(),
            state.db.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(u) = &state.config.public_url {
        syncfleet_worker::notifications::events::set_public_url(u.as_str());
    }
    // Freshness objectives that follow the lease get this process's (§4.16).
    match syncfleet_worker::notifications::freshness::align_defaults(&state.db, state.lease_secs())
        .await
    {
        Ok(n) if n > 0 => tracing::info!(integrations = n, "freshness objectives aligned"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not align freshness objectives; the next start will")
        }
    }
    tasks.spawn(scheduler::run_scheduler(state.clone(), shutdown.clone()));
    tasks.spawn(crate::notifications::run_pump(
        state.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(scheduler::run_maintenance(state.clone(), shutdown.clone()));
    tasks.spawn(scheduler::run_history(state.clone(), shutdown.clone()));
    tasks.spawn(crate::console::live::run(state.clone(), shutdown.clone()));
    if with_worker {
        let engine = Engine::new(
            state.db.clone(),
            state.config.protocol.clone(),
            state.metrics.clone(),
            state.config.secret_key.clone(),
            ConnectorEnv {
                net: state.config.net.clone(),
            },
            state.providers.clone(),
        );
        tasks.spawn(runner::run(engine, state.queue.clone(), shutdown.clone()));
    }
    started(Started {
        url: format!("http://{addr}"),
        admin_key,
    });
    let token = shutdown.clone();
    // With the client's address: unknown keys are rate limited by it.
    axum::serve(
        listener,
        routes::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { token.cancelled().await })
    .await?;
    // The HTTP side has drained; the background loops stop on the same token.
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn state(
    db: DatabaseConnection,
    queue: Queue,
    config: Config,
    metrics: Metrics,
    key_hasher: Option<KeyHasher>,
) -> AppState {
    let config_rate = (
        config.api_rate_per_sec,
        config.api_rate_burst,
        config.auth_failures_per_sec,
        config.auth_failures_burst,
    );
    let single_process =
        syncfleet_worker::db::Dialect::of(&db) != syncfleet_worker::db::Dialect::Postgres;
    let providers = queue.limiter(
        config.rate_limits.clone(),
        config.provider_concurrency.clone(),
    );
    AppState {
        providers,
        db,
        queue,
        metrics,
        config: Arc::new(config),
        scheduler_wake: Arc::new(Notify::new()),
        limiter: crate::state::key_limiter(config_rate.0, config_rate.1),
        // On PostgreSQL (several replicas) cached keys are served only while the
        // revocation listener is up; one SQLite process revokes in its own cache.
        auth_cache: Arc::new(crate::auth_cache::AuthCache::new(single_process)),
        key_hasher: key_hasher.map(Arc::new),
        address_guard: Arc::new(crate::state::AddressGuard::new(
            config_rate.2,
            config_rate.3,
        )),
        live: Arc::default(),
    }
}

/// The API key hasher of a process that authenticates requests (it needs the key for
/// secrets at rest, which seals the hashing key in the database).
async fn key_hasher(db: &DatabaseConnection, config: &Config) -> anyhow::Result<KeyHasher> {
    crate::keyhash::load_or_create(db, config.require_secret_key()?).await
}

/// The embedded default: one process, SQLite file, embedded queue; migrates itself.
pub async fn run_standalone(
    mut config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    started: impl FnOnce(Started),
) -> anyhow::Result<()> {
    if config.secret_key.is_none() {
        let db_url = config
            .database_url
            .as_ref()
            .map_or(DEFAULT_SQLITE_URL, |u| u.expose());
        config.secret_key = Some(key_file(&key_path_for(db_url))?);
    }
    let url = config
        .database_url
        .as_ref()
        .map_or(DEFAULT_SQLITE_URL, |u| u.expose())
        .to_owned();
    let pool = db::Pool::new("standalone", 8).protocol(config.protocol.lease);
    let db = db::connect(&url, pool)
        .await
        .with_context(|| "cannot open the database (DATABASE_URL)")?;
    Migrator::up(&db, None)
        .await
        .context("migrating the database")?;
    let queue = match (&config.redis_url, url.starts_with("sqlite")) {
        (Some(_), _) => redis_queue(&config).await?,
        (None, true) => Queue::sqlite(db.get_sqlite_connection_pool().clone())
            .await
            .context("setting up the embedded queue")?,
        (None, false) => anyhow::bail!("REDIS_URL is required when DATABASE_URL is not SQLite"),
    };
    let hasher = key_hasher(&db, &config).await?;
    let admin = db::bootstrap_admin(
        &db,
        config.admin_token.as_ref().map(|s| s.expose()),
        &hasher,
    )
    .await?;
    serve(
        state(db, queue, config, Metrics::new(), Some(hasher)),
        listener,
        shutdown,
        true,
        started,
        admin,
    )
    .await
}

/// A production API replica (PostgreSQL + Redis); refuses an unmigrated database.
pub async fn run_api(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    started: impl FnOnce(Started),
) -> anyhow::Result<()> {
    let pool = db::Pool::new("api", 16)
        .protocol(config.protocol.lease)
        .acquire(API_ACQUIRE_TIMEOUT);
    let db = db::connect(config.require_database()?, pool)
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
    db::ensure_migrated(&db).await?;
    let queue = redis_queue(&config).await?;
    let hasher = key_hasher(&db, &config).await?;
    let admin = db::bootstrap_admin(
        &db,
        config.admin_token.as_ref().map(|s| s.expose()),
        &hasher,
    )
    .await?;
    serve(
        state(db, queue, config, Metrics::new(), Some(hasher)),
        listener,
        shutdown,
        false,
        started,
        admin,
    )
    .await
}

/// A production worker process; serves `/healthz` and `/metrics` on `SYNCFLEET_WORKER_LISTEN` if set.
pub async fn run_worker(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Claims and finishes are batched, so the pool need not grow with concurrency.
    let conns = u32::try_from((config.protocol.worker_concurrency + 4).min(16)).unwrap_or(16);
    let pool = db::Pool::new("worker", conns).protocol(config.protocol.lease);
    let db = db::connect(config.require_database()?, pool)
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
    db::ensure_migrated(&db).await?;
    let queue = redis_queue(&config).await?;
    let metrics = Metrics::new();
    if let Some(u) = &config.public_url {
        syncfleet_worker::notifications::events::set_public_url(u.as_str());
    }
    let engine = Engine::new(
        db.clone(),
        config.protocol.clone(),
        metrics.clone(),
        Some(config.require_secret_key()?.clone()),
        ConnectorEnv {
            net: config.net.clone(),
        },
        queue.limiter(
            config.rate_limits.clone(),
            config.provider_concurrency.clone(),
        ),
    );
    let mut side = None;
    if let Some(addr) = config.worker_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let st = state(db, queue.clone(), config.clone(), metrics, None);
        let token = shutdown.clone();
        let router = axum::Router::new()
            .merge(routes::health::router())
            .with_state(st);
        side = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        }));
    }
    runner::run(engine, queue, shutdown).await;
    if let Some(s) = side {
        let _ = s.await;
    }
    Ok(())
}

/// Applies every pending migration.
pub async fn run_migrate(config: Config) -> anyhow::Result<usize> {
    let url = config
        .database_url
        .as_ref()
        .map_or(DEFAULT_SQLITE_URL, |u| u.expose())
        .to_owned();
    let db = db::connect(&url, db::Pool::new("migrate", 2))
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let pending = Migrator::get_pending_migrations(&db).await?.len();
    Migrator::up(&db, None).await?;
    Ok(pending)
}

/// Re-encrypts every stored secret under `new_key` in one transaction; returns how many
/// integrations were rewritten. Afterwards, set `SYNCFLEET_SECRET_KEY` to the new key.
pub async fn run_rotate_key(config: Config, new_key: &str) -> anyhow::Result<u64> {
    let new =
        SecretBox::parse(new_key).map_err(|e| anyhow::anyhow!("SYNCFLEET_NEW_SECRET_KEY: {e}"))?;
    let url = config
        .database_url
        .as_ref()
        .map_or(DEFAULT_SQLITE_URL, |u| u.expose())
        .to_owned();
    let old = match &config.secret_key {
        Some(k) => k.clone(),
        None if url.starts_with("sqlite") => key_file(&key_path_for(&url))?,
        None => anyhow::bail!("SYNCFLEET_SECRET_KEY (the current key) is required"),
    };
    let db = db::connect(&url, db::Pool::new("rotate-key", 2))
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    db::ensure_migrated(&db).await?;
    use sea_orm::{EntityTrait, TransactionTrait};
    let txn = db.begin().await?;
    // The API key hashing key is sealed by the same key: re-seal it, or every API key
    // would stop working with the new one.
    crate::keyhash::reseal(&txn, &old, &new)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    // So are the secrets webhooks from the cloud are verified with, and those the
    // notification deliveries are signed with.
    crate::control::webhooks::reseal(&txn, &old, &new)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    syncfleet_worker::notifications::deliver::reseal(&txn, &old, &new)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    let mut rewritten = 0;
    for m in entity::integrations::Entity::find().all(&txn).await? {
        let fields = syncfleet_worker::connectors::secret_fields(m.kind);
        if !fields
            .iter()
            .any(|f| m.config.get(*f).is_some_and(SecretBox::is_encrypted))
        {
            continue;
        }
        let mut plain = old
            .open_config(m.kind, m.id, &m.config)
            .map_err(|e| anyhow::anyhow!("integration {}: {e}; nothing was changed", m.id))?;
        new.seal_config(m.kind, m.id, &mut plain, None, crate::views::MASK);
        syncfleet_worker::db::exec(
            &txn,
            "UPDATE integrations SET config = $2 WHERE id = $1",
            [m.id.into(), plain.into()],
        )
        .await?;
        rewritten += 1;
    }
    txn.commit().await?;
    Ok(rewritten)
}
