//! Connecting to the database, checking migrations, and first-start bootstrap
//! (the default workspace and the admin API key).

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use rand::RngCore;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};

use crate::keyhash::{self, KeyHasher};

/// How a role's pool behaves.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub max_connections: u32,
    /// Shown as `application_name` on PostgreSQL (`syncfleet-<role>:<pid>`).
    pub role: &'static str,
    /// The run lease, when the pool serves the run protocol: sessions then carry a
    /// `lock_timeout` and an `idle_in_transaction_session_timeout` below it, so a frozen
    /// process cannot hold row locks past its lease nor make others wait on them.
    pub lease: Option<Duration>,
    /// Longest wait for a connection: a request during a database outage fails after
    /// this (503 `database_unavailable`) instead of hanging.
    pub acquire: Duration,
}

impl Pool {
    pub fn new(role: &'static str, max_connections: u32) -> Self {
        Self {
            max_connections,
            role,
            lease: None,
            acquire: Duration::from_secs(10),
        }
    }

    pub fn protocol(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    pub fn acquire(mut self, within: Duration) -> Self {
        self.acquire = within;
        self
    }
}

/// `lock_timeout` and `idle_in_transaction_session_timeout` for a protocol pool (ms).
pub fn session_timeouts(lease: Duration) -> (u128, u128) {
    let lease = lease.as_millis();
    ((lease / 4).clamp(200, 10_000), (lease / 2).max(300))
}

/// Opens a pool. SQLite gets WAL (readers never block the writer) and room for the
/// embedded queue to share the pool.
pub async fn connect(url: &str, pool: Pool) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(pool.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(pool.acquire)
        .sqlx_logging(false);
    if !url.starts_with("sqlite") {
        let app = format!("syncfleet-{}:{}", pool.role, std::process::id());
        let timeouts = pool.lease.map(session_timeouts);
        opts.map_sqlx_postgres_opts(move |o| {
            let o = o.application_name(&app);
            match timeouts {
                Some((lock, idle)) => o.options([
                    ("lock_timeout", format!("{lock}ms")),
                    ("idle_in_transaction_session_timeout", format!("{idle}ms")),
                ]),
                None => o,
            }
        });
    }
    if url.starts_with("sqlite") {
        if let Some(path) = sqlite_file(url) {
            create_owner_only(&path)
                .map_err(|e| DbErr::Custom(format!("creating {}: {e}", path.display())))?;
        }
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .create_if_missing(true)
        });
    }
    Database::connect(opts).await
}

/// The file of a SQLite URL (`sqlite://path?…`, `sqlite:path`); `None` for an
/// in-memory database.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    if file.is_empty() || file.starts_with(':') || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(file))
}

/// Creates the database file readable by its owner only (SQLite gives its WAL and
/// shared-memory files the same mode), unless it exists already. The database holds
/// the API key hashes and the sealed secrets: it is as private as the key file beside it.
fn create_owner_only(path: &std::path::Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "the database file is readable by other users; `chmod 600` it (and its -wal/-shm files)"
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Fails unless every migration has been applied (the production roles never migrate
/// silently; `syncfleet migrate` does).
pub async fn ensure_migrated(db: &DatabaseConnection) -> anyhow::Result<()> {
    let pending = Migrator::get_pending_migrations_read_only(db).await?;
    if !pending.is_empty() {
        anyhow::bail!(
            "the database is not migrated ({} pending migration(s)); run `syncfleet migrate` first",
            pending.len()
        );
    }
    Ok(())
}

/// A new random API key, `sf_<id>_<secret>`: 8 hex characters of non-secret id (shown
/// in listings, to recognise the key) and 40 of secret (160 bits). Returns the key and
/// its id (`sf_<id>`).
pub fn new_key() -> (String, String) {
    let mut id = [0u8; 4];
    let mut secret = [0u8; 20];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = format!("sf_{}", hex::encode(id));
    (format!("{id}_{}", hex::encode(secret)), id)
}

/// Creates the default workspace if there is none; returns its id.
pub async fn default_workspace(db: &impl ConnectionTrait) -> Result<Uuid, DbErr> {
    let rows = q::query(
        db,
        "SELECT id FROM workspaces ORDER BY created_at LIMIT 1",
        [],
    )
    .await?;
    if let Some(r) = rows.first() {
        return r.try_get("", "id");
    }
    let id = Uuid::now_v7();
    let now = Dialect::of(db).now();
    q::exec(
        db,
        format!("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'default', {now})"),
        [id.into()],
    )
    .await?;
    Ok(id)
}

/// What bootstrap did about the admin key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKey {
    /// `SYNCFLEET_ADMIN_TOKEN` was given (and is now registered).
    Given,
    /// A key was generated on this start; it is shown once.
    Generated(String),
    /// An admin key already exists.
    Existing,
}

/// Ensures an admin key exists: the configured token, or a generated one on first start.
pub async fn bootstrap_admin(
    db: &impl ConnectionTrait,
    token: Option<&str>,
    hasher: &KeyHasher,
) -> Result<AdminKey, DbErr> {
    let ws = default_workspace(db).await?;
    let d = Dialect::of(db);
    let insert = format!(
        "INSERT INTO api_keys (id, workspace_id, name, role, key_hash, key_prefix, hash_version, created_at) \
         VALUES ($1, $2, $3, 'operator', $4, $5, {}, {}) ON CONFLICT DO NOTHING",
        keyhash::HMAC_VERSION,
        d.now()
    );
    if let Some(t) = token {
        // Registered the old way by an earlier start: rehash that row.
        q::exec(
            db,
            format!(
                "UPDATE api_keys SET key_hash = $1, hash_version = {} WHERE key_hash = $2 AND hash_version = {}",
                keyhash::HMAC_VERSION,
                keyhash::LEGACY_VERSION
            ),
            [hasher.hash(t).into(), keyhash::legacy_hash(t).into()],
        )
        .await?;
        // A token chosen by the operator has no id: nothing of it is stored in clear.
        q::exec(
            db,
            &insert,
            [
                Uuid::now_v7().into(),
                ws.into(),
                "bootstrap".into(),
                hasher.hash(t).into(),
                "".into(),
            ],
        )
        .await?;
        return Ok(AdminKey::Given);
    }
    let rows = q::query(
        db,
        "SELECT id FROM api_keys WHERE role IN ('operator', 'admin') AND revoked_at IS NULL LIMIT 1",
        [],
    )
    .await?;
    if !rows.is_empty() {
        return Ok(AdminKey::Existing);
    }
    let (key, key_id) = new_key();
    q::exec(
        db,
        &insert,
        [
            Uuid::now_v7().into(),
            ws.into(),
            "generated admin".into(),
            hasher.hash(&key).into(),
            key_id.into(),
        ],
    )
    .await?;
    Ok(AdminKey::Generated(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_found_in_their_urls() {
        let f = |u: &str| sqlite_file(u).map(|p| p.display().to_string());
        assert_eq!(
            f("sqlite://syncfleet.db?mode=rwc").as_deref(),
            Some("syncfleet.db")
        );
        assert_eq!(f("sqlite:///tmp/x/s.db").as_deref(), Some("/tmp/x/s.db"));
        assert_eq!(f("sqlite:data.db").as_deref(), Some("data.db"));
        assert_eq!(f("sqlite::memory:"), None);
        assert_eq!(f("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(f("postgres://h/db"), None);
    }

    #[test]
    fn new_keys_carry_a_non_secret_id() {
        let (key, id) = new_key();
        assert!(key.starts_with(&format!("{id}_")), "{key} {id}");
        assert_eq!((id.len(), key.len()), (11, 52));
        assert_ne!(new_key().0, key);
    }
}
