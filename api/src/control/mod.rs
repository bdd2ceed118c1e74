//! The control plane's domain operations: every change a person makes to an
//! integration, a run, a key or a workspace.
//!
//! Each operation is one transaction that takes the integration's row lock first (the
//! fleet-wide lock order of the run protocol: integration, then run — see
//! docs/architecture.md §4.1, §4.14), writes the change and its audit event together,
//! and returns what the caller renders. A crash or a concurrent finish can therefore
//! never leave a change without its audit event, nor interleave with a finish in the
//! other lock order.
//! The HTTP handlers, the CLI and the console call these functions; apart from the run
//! protocol's own statements, nothing else writes integration state.

use entity::integrations;
use sea_orm::sea_query::LockType;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use syncfleet_worker::audit;
use syncfleet_worker::db::{self as q, Dialect};

use crate::auth::Caller;
use crate::error::ApiError;

pub mod conflicts;
pub mod integration;
pub mod keys;
pub mod notifications;
pub mod outbox;
pub mod records;
pub mod runs;
pub mod settings;
pub mod webhooks;
pub mod workspaces;

/// Locks the caller's integration `id` in `txn` and reads it; another workspace's
/// integration is "not found", exactly as if it did not exist.
pub async fn lock(
    txn: &DatabaseTransaction,
    caller: &Caller,
    id: Uuid,
) -> Result<integrations::Model, ApiError> {
    lock_in(txn, caller.workspace_id, id).await
}

/// Locks integration `id` in `txn` and reads it, if it is in `workspace` (`None`: any
/// workspace — a webhook from the cloud, whose signature is its authority). PostgreSQL:
/// `FOR NO KEY UPDATE`, which excludes every other change of the integration but not
/// the inserts that only reference it (foreign-key checks take `FOR KEY SHARE`).
pub async fn lock_in(
    txn: &DatabaseTransaction,
    workspace: Option<Uuid>,
    id: Uuid,
) -> Result<integrations::Model, ApiError> {
    if Dialect::of(txn) == Dialect::Sqlite {
        // SQLite has no row locks: a write takes the database's write lock now, so the
        // read below cannot go stale before this transaction commits.
        q::exec(
            txn,
            "UPDATE integrations SET version = version WHERE id = $1",
            [id.into()],
        )
        .await?;
    }
    let mut find = integrations::Entity::find_by_id(id);
    if let Some(ws) = workspace {
        find = find.filter(integrations::Column::WorkspaceId.eq(ws));
    }
    if Dialect::of(txn) == Dialect::Postgres {
        find = find.lock(LockType::NoKeyUpdate);
    }
    find.one(txn)
        .await?
        .ok_or(ApiError::NotFound("integration"))
}

/// Reads the caller's integration `id` in `txn` without locking it (another workspace's
/// is "not found"), for an operation that locks only rows below it: the foreign keys of
/// what it inserts still keep the integration from being deleted before it commits.
/// SQLite has no row locks, so there this is [`lock`] (the database's write lock).
pub async fn read_for_rows(
    txn: &DatabaseTransaction,
    caller: &Caller,
    id: Uuid,
) -> Result<integrations::Model, ApiError> {
    if Dialect::of(txn) == Dialect::Sqlite {
        return lock(txn, caller, id).await;
    }
    let mut find = integrations::Entity::find_by_id(id);
    if let Some(ws) = caller.workspace_id {
        find = find.filter(integrations::Column::WorkspaceId.eq(ws));
    }
    find.one(txn)
        .await?
        .ok_or(ApiError::NotFound("integration"))
}

/// Reads integration `id` back inside `txn` (after a write of this transaction).
pub async fn reread(txn: &DatabaseTransaction, id: Uuid) -> Result<integrations::Model, ApiError> {
    integrations::Entity::find_by_id(id)
        .one(txn)
        .await?
        .ok_or(ApiError::NotFound("integration"))
}

/// What one audit event says, written in the caller's transaction.
pub struct Audit<'a> {
    pub action: &'a str,
    pub integration: Option<&'a integrations::Model>,
    /// The workspace when there is no integration (keys, workspaces).
    pub workspace_id: Option<Uuid>,
    pub reason: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Who acts: a person's API key, or a webhook from the cloud (verified by its
/// signature; actor `webhook` in the audit trail).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Key(&'a Caller),
    Webhook,
}

impl Actor<'_> {
    fn id(self) -> String {
        match self {
            Self::Key(c) => c.actor(),
            Self::Webhook => "webhook".into(),
        }
    }

    fn name(self) -> Option<String> {
        match self {
            Self::Key(c) => Some(c.key_name.clone()),
            Self::Webhook => None,
        }
    }
}

pub async fn audit(
    txn: &DatabaseTransaction,
    caller: &Caller,
    a: Audit<'_>,
) -> Result<(), ApiError> {
    audit_as(txn, Actor::Key(caller), a).await
}

/// [`audit`] for any [`Actor`].
pub async fn audit_as(
    txn: &DatabaseTransaction,
    actor: Actor<'_>,
    a: Audit<'_>,
) -> Result<(), ApiError> {
    audit::record(
        txn,
        audit::Event {
            integration_id: a.integration.map(|m| m.id),
            workspace_id: a.integration.map(|m| m.workspace_id).or(a.workspace_id),
            actor: actor.id(),
            actor_name: actor.name(),
            action: a.action.into(),
            reason: a.reason,
            before: a.before,
            after: a.after,
        },
    )
    .await?;
    // Open consoles hear of the change when this transaction commits (§12.3).
    if let Some(m) = a.integration {
        syncfleet_worker::notify::changed(txn, [m.id]).await?;
    }
    Ok(())
}
