//! Pull meets push: what happens when the cloud's copy of a record changed while the
//! local copy has a change not pushed yet (docs/architecture.md §4.18).
//!
//! A conflict is found in three places, always inside the transaction that holds the
//! record's row: a pull's finish or a webhook's changes ([`meet`], called by
//! `store::apply_many`), and a push the cloud answered 409/412 (`push::finish_one`). Each is
//! settled by the integration's strategy at once (`cloud_wins`, `local_wins`,
//! `newest_wins`) or held for a person (`manual`: the record's push is held and an open
//! conflict shows both copies until [`resolve`]). Every conflict is a `conflicts` row
//! and an audit event; an open one also raises `conflict.detected`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::connectors::{RecordJson, SourceRecord};
use crate::db::{self, Dialect};
use crate::notifications::events::{self, EventType, NewEvent};
use crate::work::placeholders;

/// How an integration settles a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The cloud copy replaces the local one; the pending push is dropped.
    CloudWins,
    /// The local copy stays and is pushed over the cloud's new version.
    LocalWins,
    /// The later of the local `modifiedAt` and the cloud's timestamp wins; a tie, or a
    /// cloud copy without a readable timestamp, goes to the cloud.
    NewestWins,
    /// Both copies kept, the push held, a conflict opened for a person.
    Manual,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Self::CloudWins,
        Self::LocalWins,
        Self::NewestWins,
        Self::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloudWins => "cloud_wins",
            Self::LocalWins => "local_wins",
            Self::NewestWins => "newest_wins",
            Self::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Where a conflict was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Pull,
    Push,
    Webhook,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Webhook => "webhook",
        }
    }
}

/// An integration's conflict rules: its strategy and where a cloud record holds its
/// version and its modification time (`config.push.versionPointer`,
/// `config.push.updatedAtPointer`).
#[derive(Debug, Clone)]
pub struct Rules {
    pub strategy: Strategy,
    pub version_pointer: Option<String>,
    pub updated_at_pointer: Option<String>,
}

impl Rules {
    /// The rules of an integration row's `conflict_strategy` and `config`.
    pub fn of(strategy: &str, config: &Json) -> Self {
        let ptr = |k: &str| {
            config
                .pointer(&format!("/push/{k}"))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        Self {
            strategy: Strategy::parse(strategy).unwrap_or(Strategy::Manual),
            version_pointer: ptr("versionPointer"),
            updated_at_pointer: ptr("updatedAtPointer"),
        }
    }

    /// The cloud's copy of a record it sent (a pull, a webhook, a conflict answer).
    pub fn cloud_of(&self, data: &RecordJson) -> Cloud {
        let value = data.to_value().ok();
        let text_at = |p: &Option<String>| -> Option<String> {
            match value.as_ref()?.pointer(p.as_deref()?)? {
                Json::String(s) => Some(s.clone()),
                Json::Null => None,
                other => Some(other.to_string()),
            }
        };
        Cloud {
            known: true,
            data: Some(data.as_str().to_owned()),
            hash: Some(data.content_hash_hex()),
            version: text_at(&self.version_pointer),
            updated_at: text_at(&self.updated_at_pointer).and_then(|s| parse_time(&s)),
        }
    }
}

/// An RFC 3339 time, or Unix seconds / milliseconds.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let n: i64 = s.parse().ok()?;
    if n > 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

/// The rules of the integrations `ids` (one statement).
pub async fn rules_of(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Rules>, DbErr> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows = db::query(
        db,
        format!(
            "SELECT id, conflict_strategy, config FROM integrations WHERE id IN ({})",
            placeholders(1, ids.len())
        ),
        ids.iter().map(|id| Value::from(*id)),
    )
    .await?;
    for r in rows {
        let config: Json = r.try_get("", "config")?;
        out.insert(
            r.try_get("", "id")?,
            Rules::of(&r.try_get::<String>("", "conflict_strategy")?, &config),
        );
    }
    Ok(out)
}

/// The cloud's side of a conflict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cloud {
    /// Whether the cloud's copy is known (a 409 answer need not carry it: then the next
    /// pull brings it).
    pub known: bool,
    /// Canonical JSON; `None` with `known` = deleted at the cloud.
    pub data: Option<String>,
    pub hash: Option<String>,
    pub version: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Cloud {
    /// The cloud deleted the record.
    pub fn deleted() -> Self {
        Self {
            known: true,
            ..Self::default()
        }
    }

    /// The cloud refused the change but did not say what it holds.
    pub fn unknown(version: Option<String>) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }
}

/// The local side: a record with a change the cloud has not taken, read under its lock.
#[derive(Debug, Clone)]
pub struct Local {
    pub external_id: String,
    pub data: Option<String>,
    pub deleted: bool,
    pub content_hash: String,
    pub agreed_hash: Option<String>,
    pub sync_state: String,
    pub modified_at: Option<DateTime<Utc>>,
    pub cloud_id: Option<String>,
}

/// The columns [`Local::read`] needs.
pub const LOCAL_COLUMNS: &str = "external_id, CAST(data AS TEXT) AS data_text, deleted_at IS NOT NULL AS deleted, \
     content_hash, agreed_hash, sync_state, modified_at, cloud_id";

impl Local {
    pub fn read(r: &QueryResult) -> Result<Self, DbErr> {
        Ok(Self {
            external_id: r.try_get("", "external_id")?,
            data: r.try_get("", "data_text")?,
            deleted: r.try_get("", "deleted")?,
            content_hash: r.try_get("", "content_hash")?,
            agreed_hash: r.try_get("", "agreed_hash")?,
            sync_state: r.try_get("", "sync_state")?,
            modified_at: r.try_get("", "modified_at")?,
            cloud_id: r.try_get("", "cloud_id")?,
        })
    }

    /// Never in the cloud: created locally and not pushed yet.
    fn local_only(&self) -> bool {
        self.agreed_hash.is_none() && self.cloud_id.is_none()
    }
}

/// The records of integration `integration` among `ids` whose local copy is not
/// `synced`, locked (PostgreSQL) for the caller's transaction.
pub async fn locals(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    ids: &[&str],
) -> Result<Vec<Local>, DbErr> {
    let mut out = Vec::new();
    let lock = match Dialect::of(txn) {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    for chunk in ids.chunks(500) {
        let rows = db::query(
            txn,
            format!(
                "SELECT {LOCAL_COLUMNS} FROM records WHERE integration_id = $1 AND sync_state <> 'synced' \
                 AND external_id IN ({}){lock}",
                placeholders(2, chunk.len())
            ),
            std::iter::once(Value::from(integration))
                .chain(chunk.iter().map(|s| Value::from(s.to_string()))),
        )
        .await?;
        for r in &rows {
            out.push(Local::read(r)?);
        }
    }
    Ok(out)
}

/// How one conflict was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Not a conflict (the cloud did not change, or both sides agree, or the record's
    /// push is in flight and will settle it).
    NoConflict,
    Cloud,
    Local,
    /// Held for a person: the open conflict's id.
    Open(Uuid),
}

/// What [`meet`] did, for the caller's counts and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Met {
    pub conflicts: u64,
    pub opened: u64,
}

/// A pull's (or a webhook's) cloud copies of records whose local copy is not `synced`
/// ([`locals`], locked by the caller's transaction): each conflict settled by the
/// integration's rules. `incoming` maps an external id to the cloud's copy (deleted =
/// the cloud no longer has it).
pub async fn meet(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    rules: &Rules,
    locals: &[Local],
    incoming: &HashMap<&str, Cloud>,
    source: Source,
) -> Result<Met, DbErr> {
    let mut met = Met::default();
    for local in locals {
        let Some(cloud) = incoming.get(local.external_id.as_str()) else {
            continue;
        };
        let cloud_deleted = cloud.data.is_none();
        // Not conflicts: the cloud did not change since the two sides agreed; a record
        // created here that the cloud never had; both sides already equal; a push in
        // flight (its answer, 2xx or 409, settles the record).
        if local.sync_state == "pushing"
            || (!cloud_deleted && cloud.hash == local.agreed_hash)
            || (cloud_deleted && local.local_only())
            || (cloud_deleted && local.deleted)
        {
            continue;
        }
        if !cloud_deleted && !local.deleted && cloud.hash.as_deref() == Some(&local.content_hash) {
            agree(txn, integration, local, cloud).await?;
            continue;
        }
        // A record already held: the open conflict shows the cloud's newest copy.
        if local.sync_state == "conflict" {
            refresh_open(txn, integration, &local.external_id, cloud).await?;
            continue;
        }
        let s = settle(txn, integration, rules, local, cloud, source).await?;
        met.conflicts += 1;
        if matches!(s, Settled::Open(_)) {
            met.opened += 1;
        }
    }
    Ok(met)
}

/// What `rules` decide for a conflict between `local` and `cloud`.
pub fn decide(rules: &Rules, local: &Local, cloud: &Cloud) -> Settled {
    match rules.strategy {
        Strategy::CloudWins => Settled::Cloud,
        Strategy::LocalWins => Settled::Local,
        Strategy::NewestWins => match (local.modified_at, cloud.updated_at) {
            (Some(l), Some(c)) if l > c => Settled::Local,
            _ => Settled::Cloud,
        },
        Strategy::Manual => Settled::Open(Uuid::now_v7()),
    }
}

/// Settles one conflict by `rules` (the record's row is locked by the caller) and
/// records it: a `conflicts` row, an audit event, and for a held one the
/// `conflict.detected` event.
pub async fn settle(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    rules: &Rules,
    local: &Local,
    cloud: &Cloud,
    source: Source,
) -> Result<Settled, DbErr> {
    let winner = decide(rules, local, cloud);
    let id = match winner {
        Settled::Open(id) => id,
        _ => Uuid::now_v7(),
    };
    let (status, resolution) = match winner {
        Settled::Cloud => ("resolved", Some("cloud")),
        Settled::Local => ("resolved", Some("local")),
        _ => ("open", None),
    };
    let now = Dialect::of(txn).now();
    db::exec(
        txn,
        format!(
            "INSERT INTO conflicts (id, integration_id, external_id, status, source, strategy, resolution, local_data, \
               local_deleted, cloud_data, cloud_deleted, cloud_known, cloud_hash, cloud_version, detected_at, resolved_at, resolved_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, {now}, \
               CASE WHEN $4 = 'resolved' THEN {now} END, CASE WHEN $4 = 'resolved' THEN 'system' END)"
        ),
        [
            id.into(),
            integration.into(),
            local.external_id.clone().into(),
            status.into(),
            source.as_str().into(),
            rules.strategy.as_str().into(),
            resolution.map(str::to_owned).into(),
            local.data.clone().into(),
            local.deleted.into(),
            cloud.data.clone().into(),
            (cloud.known && cloud.data.is_none()).into(),
            cloud.known.into(),
            cloud.hash.clone().into(),
            cloud.version.clone().into(),
        ],
    )
    .await?;
    match winner {
        Settled::Cloud => take_cloud(txn, integration, &local.external_id, cloud).await?,
        Settled::Local => keep_local(txn, integration, &local.external_id, cloud).await?,
        Settled::Open(_) => hold(txn, integration, &local.external_id).await?,
        Settled::NoConflict => {}
    }
    crate::audit::record(
        txn,
        crate::audit::Event {
            integration_id: Some(integration),
            workspace_id: None,
            actor: "system".into(),
            actor_name: None,
            action: "conflict.detect".into(),
            reason: Some(format!(
                "found by a {}; {}",
                source.as_str(),
                match resolution {
                    Some(r) => format!("settled by {}: {r}", rules.strategy.as_str()),
                    None => "held for a person (manual)".into(),
                }
            )),
            before: None,
            after: Some(json!({
                "conflictId": id,
                "externalId": local.external_id,
                "source": source.as_str(),
                "strategy": rules.strategy.as_str(),
                "resolution": resolution,
            })),
        },
    )
    .await?;
    if let Settled::Open(id) = winner {
        let mut e = NewEvent::new(EventType::ConflictDetected, integration);
        e.extra = Some(json!({
            "conflictId": id,
            "externalId": local.external_id,
            "source": source.as_str(),
        }));
        events::emit(txn, &[e]).await?;
    }
    Ok(winner)
}

/// Both sides hold the same content: agreed, nothing to push.
async fn agree(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    local: &Local,
    cloud: &Cloud,
) -> Result<(), DbErr> {
    db::exec(
        txn,
        "UPDATE records SET agreed_hash = $3, cloud_version = COALESCE($4, cloud_version), sync_state = 'synced' \
         WHERE integration_id = $1 AND external_id = $2",
        [
            integration.into(),
            local.external_id.clone().into(),
            cloud.hash.clone().into(),
            cloud.version.clone().into(),
        ],
    )
    .await?;
    drop_pushes(
        txn,
        integration,
        &local.external_id,
        "the cloud already holds this content",
    )
    .await
}

/// The cloud's copy replaces the local one and the record's pending pushes are dropped.
/// An unknown cloud copy (a 409 that did not carry it) comes with the next pull.
pub async fn take_cloud(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    cloud: &Cloud,
) -> Result<(), DbErr> {
    let now = Dialect::of(txn).now();
    let d = Dialect::of(txn);
    match (&cloud.data, cloud.known) {
        (Some(data), _) => {
            db::exec(
                txn,
                format!(
                    "UPDATE records SET data = {json}, content_hash = $4, agreed_hash = $4, cloud_version = $5, \
                       version = version + 1, deleted_at = NULL, synced_at = {now}, sync_state = 'synced' \
                     WHERE integration_id = $1 AND external_id = $2",
                    json = d.json_from_text("$3")
                ),
                [
                    integration.into(),
                    external_id.to_owned().into(),
                    data.clone().into(),
                    cloud.hash.clone().into(),
                    cloud.version.clone().into(),
                ],
            )
            .await?;
        }
        (None, true) => {
            db::exec(
                txn,
                format!(
                    "UPDATE records SET deleted_at = {now}, synced_at = {now}, version = version + 1, \
                       agreed_hash = NULL, cloud_version = NULL, sync_state = 'synced' \
                     WHERE integration_id = $1 AND external_id = $2"
                ),
                [integration.into(), external_id.to_owned().into()],
            )
            .await?;
        }
        (None, false) => {
            // Marked synced with no agreed content: the next pull overwrites it with the
            // cloud's copy. (Requesting that pull here would lock the integration's row
            // after the record's, against the fleet's lock order.)
            db::exec(
                txn,
                "UPDATE records SET agreed_hash = NULL, cloud_version = COALESCE($3, cloud_version), sync_state = 'synced' \
                 WHERE integration_id = $1 AND external_id = $2",
                [
                    integration.into(),
                    external_id.to_owned().into(),
                    cloud.version.clone().into(),
                ],
            )
            .await?;
        }
    }
    drop_pushes(
        txn,
        integration,
        external_id,
        "the cloud's copy was kept (conflict)",
    )
    .await
}

/// The local copy stays and is pushed over the cloud's version: the two sides agree on
/// the cloud's content as the base, the waiting changes are based on the cloud's
/// version (no version known: pushed without `If-Match`), and the newest is pushed.
pub async fn keep_local(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    cloud: &Cloud,
) -> Result<(), DbErr> {
    let gone = cloud.known && cloud.data.is_none();
    db::exec(
        txn,
        "UPDATE records SET agreed_hash = $3, cloud_version = $4, \
           cloud_id = CASE WHEN $5 THEN NULL ELSE cloud_id END, sync_state = 'pending' \
         WHERE integration_id = $1 AND external_id = $2",
        [
            integration.into(),
            external_id.to_owned().into(),
            cloud.hash.clone().into(),
            cloud.version.clone().into(),
            gone.into(),
        ],
    )
    .await?;
    release(txn, integration, external_id, cloud.version.clone()).await
}

/// Releases the record's waiting changes (held by a conflict or pending), based on
/// `base` (the cloud version they now push over): the newest becomes the record's push,
/// the others are superseded. A push already waiting is retargeted.
async fn release(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    base: Option<String>,
) -> Result<(), DbErr> {
    let rows = db::query(
        txn,
        "SELECT id FROM outbox WHERE integration_id = $1 AND external_id = $2 AND status IN ('pending', 'conflict') \
         ORDER BY record_version DESC, created_at DESC, id DESC",
        [integration.into(), external_id.to_owned().into()],
    )
    .await?;
    let Some(first) = rows.first() else {
        // Nothing to push (the local change was a create the cloud refused): leave the
        // record pending for a local write or a hand retry.
        return Ok(());
    };
    let newest: Uuid = first.try_get("", "id")?;
    let now = Dialect::of(txn).now();
    db::exec(
        txn,
        format!(
            "UPDATE outbox SET status = 'superseded', finished_at = {now} WHERE integration_id = $1 AND external_id = $2 \
             AND status IN ('pending', 'conflict') AND id <> $3"
        ),
        [
            integration.into(),
            external_id.to_owned().into(),
            newest.into(),
        ],
    )
    .await?;
    db::exec(
        txn,
        "UPDATE outbox SET status = 'pending', base_cloud_version = $2, finished_at = NULL WHERE id = $1",
        [newest.into(), base.into()],
    )
    .await?;
    crate::push::enqueue(txn, integration, external_id, newest).await
}

/// Holds the record's push for a person: its waiting changes are `conflict` in the
/// outbox and its pending push is withdrawn.
async fn hold(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
) -> Result<(), DbErr> {
    db::exec(
        txn,
        "UPDATE records SET sync_state = 'conflict' WHERE integration_id = $1 AND external_id = $2",
        [integration.into(), external_id.to_owned().into()],
    )
    .await?;
    db::exec(
        txn,
        "UPDATE outbox SET status = 'conflict' WHERE integration_id = $1 AND external_id = $2 AND status = 'pending'",
        [integration.into(), external_id.to_owned().into()],
    )
    .await?;
    db::exec(
        txn,
        "DELETE FROM live_pushes WHERE integration_id = $1 AND external_id = $2 AND status = 'PENDING'",
        [integration.into(), external_id.to_owned().into()],
    )
    .await?;
    Ok(())
}

/// Drops the record's waiting changes (superseded, with why) and its pending push.
async fn drop_pushes(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    why: &str,
) -> Result<(), DbErr> {
    let now = Dialect::of(txn).now();
    db::exec(
        txn,
        format!(
            "UPDATE outbox SET status = 'superseded', finished_at = {now}, last_error = $3 \
             WHERE integration_id = $1 AND external_id = $2 AND status IN ('pending', 'conflict')"
        ),
        [
            integration.into(),
            external_id.to_owned().into(),
            why.to_owned().into(),
        ],
    )
    .await?;
    db::exec(
        txn,
        "DELETE FROM live_pushes WHERE integration_id = $1 AND external_id = $2 AND status = 'PENDING'",
        [integration.into(), external_id.to_owned().into()],
    )
    .await?;
    Ok(())
}

/// A held record met a newer cloud copy: the open conflict shows it.
async fn refresh_open(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    cloud: &Cloud,
) -> Result<(), DbErr> {
    db::exec(
        txn,
        "UPDATE conflicts SET cloud_data = $3, cloud_deleted = $4, cloud_known = true, cloud_hash = $5, \
           cloud_version = $6 WHERE integration_id = $1 AND external_id = $2 AND status = 'open'",
        [
            integration.into(),
            external_id.to_owned().into(),
            cloud.data.clone().into(),
            (cloud.data.is_none()).into(),
            cloud.hash.clone().into(),
            cloud.version.clone().into(),
        ],
    )
    .await?;
    Ok(())
}

/// A local write to a held record: the open conflict shows the newest local copy.
pub async fn local_changed(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    external_id: &str,
    data: Option<&str>,
) -> Result<(), DbErr> {
    db::exec(
        txn,
        "UPDATE conflicts SET local_data = $3, local_deleted = $4 \
         WHERE integration_id = $1 AND external_id = $2 AND status = 'open'",
        [
            integration.into(),
            external_id.to_owned().into(),
            data.map(str::to_owned).into(),
            data.is_none().into(),
        ],
    )
    .await?;
    Ok(())
}

/// A person's decision on an open conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Keep the local copy: pushed over the cloud's version.
    Local,
    /// Keep the cloud's copy: the held push is dropped.
    Cloud,
    /// A merged record: written locally and pushed over the cloud's version.
    Merged(Json),
}

impl Resolution {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Cloud => "cloud",
            Self::Merged(_) => "merged",
        }
    }
}

/// Why a conflict could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no such conflict")]
    NotFound,
    #[error("the conflict was already resolved ({0})")]
    AlreadyResolved(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// An open conflict as [`resolve`] saw it before resolving it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub integration_id: Uuid,
    pub external_id: String,
}

/// Resolves open conflict `id` of integration `integration` (the caller checked the
/// caller may) inside the caller's transaction: the record's row is locked first, as
/// every writer of a record does, then the conflict's.
pub async fn resolve(
    txn: &impl ConnectionTrait,
    integration: Uuid,
    id: Uuid,
    resolution: &Resolution,
    actor: &str,
) -> Result<Resolved, ResolveError> {
    let d = Dialect::of(txn);
    let now = d.now();
    let lock = match d {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let rows = db::query(
        txn,
        "SELECT external_id FROM conflicts WHERE id = $1 AND integration_id = $2",
        [id.into(), integration.into()],
    )
    .await?;
    let external_id: String = rows
        .first()
        .ok_or(ResolveError::NotFound)?
        .try_get("", "external_id")?;
    db::query(
        txn,
        format!(
            "SELECT external_id FROM records WHERE integration_id = $1 AND external_id = $2{lock}"
        ),
        [integration.into(), external_id.clone().into()],
    )
    .await?;
    let rows = db::query(
        txn,
        format!(
            "SELECT status, resolution, CAST(cloud_data AS TEXT) AS cloud_data, cloud_known, cloud_hash, \
               cloud_version FROM conflicts WHERE id = $1{lock}"
        ),
        [id.into()],
    )
    .await?;
    let r = rows.first().ok_or(ResolveError::NotFound)?;
    let status: String = r.try_get("", "status")?;
    if status != "open" {
        let was: Option<String> = r.try_get("", "resolution")?;
        return Err(ResolveError::AlreadyResolved(was.unwrap_or(status)));
    }
    let cloud = Cloud {
        known: r.try_get("", "cloud_known")?,
        data: r.try_get("", "cloud_data")?,
        hash: r.try_get("", "cloud_hash")?,
        version: r.try_get("", "cloud_version")?,
        updated_at: None,
    };
    match resolution {
        Resolution::Cloud => take_cloud(txn, integration, &external_id, &cloud).await?,
        Resolution::Local => keep_local(txn, integration, &external_id, &cloud).await?,
        Resolution::Merged(data) => {
            let rec = RecordJson::new(data);
            db::exec(
                txn,
                format!(
                    "UPDATE records SET data = {json}, content_hash = $4, version = version + 1, deleted_at = NULL, \
                       synced_at = {now}, modified_at = {now}, modified_by = $5 \
                     WHERE integration_id = $1 AND external_id = $2",
                    json = d.json_from_text("$3")
                ),
                [
                    integration.into(),
                    external_id.clone().into(),
                    rec.as_str().to_owned().into(),
                    rec.content_hash_hex().into(),
                    actor.to_owned().into(),
                ],
            )
            .await?;
            let version: i32 = db::query(
                txn,
                "SELECT version FROM records WHERE integration_id = $1 AND external_id = $2",
                [integration.into(), external_id.clone().into()],
            )
            .await?
            .first()
            .map(|r| r.try_get("", "version"))
            .transpose()?
            .unwrap_or(1);
            // The merged record is the newest change: the held ones are superseded by it.
            db::exec(
                txn,
                format!(
                    "INSERT INTO outbox (id, integration_id, external_id, operation, data, record_version, base_cloud_version, \
                       status, attempts, created_by, created_at) \
                     VALUES ($1, $2, $3, 'upsert', $4, $5, $6, 'conflict', 0, $7, {now})"
                ),
                [
                    Uuid::now_v7().into(),
                    integration.into(),
                    external_id.clone().into(),
                    rec.as_str().to_owned().into(),
                    version.into(),
                    cloud.version.clone().into(),
                    actor.to_owned().into(),
                ],
            )
            .await?;
            keep_local(txn, integration, &external_id, &cloud).await?;
        }
    }
    db::exec(
        txn,
        format!(
            "UPDATE conflicts SET status = 'resolved', resolution = $2, resolved_at = {now}, resolved_by = $3 WHERE id = $1"
        ),
        [
            id.into(),
            resolution.as_str().into(),
            actor.to_owned().into(),
        ],
    )
    .await?;
    Ok(Resolved {
        integration_id: integration,
        external_id,
    })
}

/// The cloud copies of `records` by the integration's rules (a pull, a webhook).
pub fn clouds_of<'a>(
    rules: &Rules,
    records: impl Iterator<Item = &'a SourceRecord>,
) -> HashMap<&'a str, Cloud> {
    records
        .map(|r| (r.external_id.as_str(), rules.cloud_of(&r.data)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strategies_round_trip_and_default_to_manual() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
        assert_eq!(Rules::of("bogus", &json!({})).strategy, Strategy::Manual);
    }

    #[test]
    fn the_cloud_copy_reads_version_and_time_through_the_pointers() {
        let rules = Rules::of(
            "newest_wins",
            &json!({"push": {"versionPointer": "/v", "updatedAtPointer": "/meta/updated"}}),
        );
        let c = rules.cloud_of(&RecordJson::new(
            &json!({"v": 7, "meta": {"updated": "2026-12-02T10:00:00Z"}}),
        ));
        assert!(c.known);
        assert_eq!(c.version.as_deref(), Some("7"));
        assert_eq!(
            c.updated_at,
            Some(
                DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        assert_eq!(
            parse_time("1764669600"),
            DateTime::from_timestamp(1_764_669_600, 0)
        );
        assert_eq!(
            parse_time("1764669600000"),
            DateTime::from_timestamp(1_764_669_600, 0)
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
