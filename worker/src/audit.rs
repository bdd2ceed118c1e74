//! Audit events: who did what, when and why.

use sea_orm::{ConnectionTrait, DbErr};
use uuid::Uuid;

use crate::db::{self, Dialect};

/// One control action. `workspace_id = None` takes the integration's workspace.
#[derive(Debug, Clone)]
pub struct Event {
    pub integration_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    /// `key:<id>` or `system`.
    pub actor: String,
    /// The acting key's name, when a key acted.
    pub actor_name: Option<String>,
    pub action: String,
    pub reason: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub async fn record(db: &impl ConnectionTrait, e: Event) -> Result<(), DbErr> {
    let d = Dialect::of(db);
    let sql = format!(
        "INSERT INTO audit_events (id, workspace_id, integration_id, actor, action, reason, \"before\", \"after\", actor_name, created_at) \
         SELECT $1, COALESCE($2, (SELECT workspace_id FROM integrations WHERE id = $3)), $3, $4, $5, $6, $7, $8, $9, {}",
        d.now()
    );
    db::exec(
        db,
        sql,
        [
            Uuid::now_v7().into(),
            e.workspace_id.into(),
            e.integration_id.into(),
            e.actor.into(),
            e.action.into(),
            e.reason.into(),
            e.before.into(),
            e.after.into(),
            e.actor_name.into(),
        ],
    )
    .await?;
    Ok(())
}
