//! The public JSON shapes of the API (camelCase), each with its OpenAPI schema.

use chrono::{DateTime, Utc};
use entity::integrations;
use sea_orm::{ActiveEnum, QueryResult};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use syncfleet_worker::connectors;

/// Shown instead of a secret configuration value.
pub const MASK: &str = "********";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationView {
    pub id: Uuid,
    pub name: String,
    /// Connector: `synthetic`, `http_json`, `csv`, `google_sheets`, `firestore`, `sql`.
    pub kind: String,
    /// Connector configuration; secret fields are masked.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Seconds between syncs; `null` = manual syncs only.
    pub sync_interval: Option<i64>,
    pub sync_enabled: bool,
    pub next_sync_at: Option<DateTime<Utc>>,
    /// Consecutive failures.
    pub retry_count: i32,
    pub max_retries: i32,
    /// `healthy`, `degraded`, `at_risk`, `disabled` or `paused`.
    pub health: String,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Freshness objective in force, seconds (`null` = none); `staleAfterCustom` = set
    /// by hand, else twice the interval plus the lease.
    pub stale_after: Option<i64>,
    pub stale_after_custom: bool,
    /// The objective is breached (since `staleSince`).
    pub stale: bool,
    pub stale_since: Option<DateTime<Utc>>,
    /// Seconds since the last success (or since creation, before the first one).
    pub staleness_seconds: i64,
    /// What settles a conflict between a local and a cloud change of a record:
    /// `cloud_wins`, `local_wins`, `newest_wins` or `manual`.
    pub conflict_strategy: String,
    /// Optimistic-locking version: send it back with a PATCH.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Replaces every secret field of a connector config with [`MASK`]. A config that is
/// not an object (never accepted, but masking must not depend on it) is masked whole.
pub fn mask_config(kind: entity::ConnectorKind, mut config: Value) -> Value {
    if !config.is_object() && !connectors::secret_fields(kind).is_empty() {
        return Value::String(MASK.into());
    }
    if let Some(obj) = config.as_object_mut() {
        for field in connectors::secret_fields(kind) {
            if let Some(v) = obj.get_mut(*field)
                && !v.is_null()
            {
                *v = Value::String(MASK.into());
            }
        }
    }
    config
}

impl From<integrations::Model> for IntegrationView {
    fn from(m: integrations::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            kind: m.kind.as_str().to_owned(),
            config: mask_config(m.kind, m.config),
            sync_interval: m.sync_interval_secs,
            sync_enabled: m.sync_enabled,
            next_sync_at: m.next_sync_at,
            retry_count: m.retry_count,
            max_retries: m.max_retries,
            health: m.health.to_value(),
            last_sync_at: m.last_sync_at,
            last_success_at: m.last_success_at,
            last_error: m.last_error,
            stale_after: m.stale_after_secs,
            stale_after_custom: m.stale_after_custom,
            stale: m.stale_since.is_some(),
            stale_since: m.stale_since,
            // Display only: the process clock is good enough for an age.
            staleness_seconds: (Utc::now() - m.last_success_at.unwrap_or(m.created_at))
                .num_seconds()
                .max(0),
            conflict_strategy: m.conflict_strategy,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// One run (a `sync_logs` row).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: Uuid,
    pub integration_id: Uuid,
    /// `PENDING`, `RUNNING`, `SUCCESS`, `FAILED`, `RATE_LIMITED` or `CANCELLED`.
    pub status: String,
    /// `schedule`, `manual`, `retry` or `webhook`.
    pub trigger: String,
    pub scheduled_for: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Milliseconds.
    pub duration: Option<i64>,
    pub records_count: i64,
    pub records_inserted: i64,
    pub records_updated: i64,
    pub records_unchanged: i64,
    pub records_deleted: i64,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// 1 for a first try, n for the n-th consecutive try after failures.
    pub attempt: i32,
    /// Times a worker claimed this run (crash recoveries).
    pub claims: i32,
    pub worker_id: Option<String>,
}

/// The columns [`RunView::from_row`] reads.
pub const RUN_COLUMNS: &str = "id, integration_id, status, \"trigger\", scheduled_for, started_at, completed_at, \
     duration_ms, records_count, records_inserted, records_updated, records_unchanged, records_deleted, \
     error_class, error_message, attempt, claims, worker_id";

impl RunView {
    pub fn from_row(r: &QueryResult) -> Result<Self, sea_orm::DbErr> {
        Ok(Self {
            id: r.try_get("", "id")?,
            integration_id: r.try_get("", "integration_id")?,
            status: r.try_get("", "status")?,
            trigger: r.try_get("", "trigger")?,
            scheduled_for: r.try_get("", "scheduled_for")?,
            started_at: r.try_get("", "started_at")?,
            completed_at: r.try_get("", "completed_at")?,
            duration: r.try_get("", "duration_ms")?,
            records_count: r.try_get("", "records_count")?,
            records_inserted: r.try_get("", "records_inserted")?,
            records_updated: r.try_get("", "records_updated")?,
            records_unchanged: r.try_get("", "records_unchanged")?,
            records_deleted: r.try_get("", "records_deleted")?,
            error_class: r.try_get("", "error_class")?,
            error_message: r.try_get("", "error_message")?,
            attempt: r.try_get("", "attempt")?,
            claims: r.try_get("", "claims")?,
            worker_id: r.try_get("", "worker_id")?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationList {
    pub integrations: Vec<IntegrationView>,
    pub total: u64,
    pub page: u64,
    pub page_size: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncHistory {
    pub logs: Vec<RunView>,
    /// Matching runs; capped at 10,000 (then `totalIsExact` is false) so deep
    /// histories never cost a full count.
    pub total: u64,
    pub total_is_exact: bool,
    pub page: u64,
    pub page_size: u64,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to a trigger.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerResult {
    pub run: RunView,
    /// A run was already pending or running; this is it.
    pub coalesced: bool,
    /// The live run is running: one follow-up run will start when it ends.
    pub followup_requested: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    pub external_id: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub version: i32,
    pub deleted_at: Option<DateTime<Utc>>,
    pub synced_at: DateTime<Utc>,
    /// `synced`, `pending` (a local change waits in the outbox), `pushing`, `conflict` or `failed`.
    pub sync_state: String,
    /// What the cloud last said: its version (an ETag, a number or a timestamp) and id.
    pub cloud_version: Option<String>,
    pub cloud_id: Option<String>,
    /// The last local write, and who made it.
    pub modified_at: Option<DateTime<Utc>>,
    pub modified_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordPage {
    pub records: Vec<RecordView>,
    pub page_size: u64,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: Uuid,
    pub integration_id: Option<Uuid>,
    /// `key:<id>` of the key that acted, or `system`.
    pub actor: String,
    /// The acting key's name (absent for the system and for events before names were kept).
    pub actor_name: Option<String>,
    pub action: String,
    pub reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub events: Vec<AuditView>,
    pub page_size: u64,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn masking_does_not_depend_on_the_shape() {
        let kind = entity::ConnectorKind::HttpJson;
        let array = json!(["http://h/x", "GET", {}, { "type": "bearer", "token": "S" }]);
        assert_eq!(mask_config(kind, array), json!(MASK));
        assert_eq!(mask_config(kind, json!("S")), json!(MASK));
        let masked = mask_config(kind, json!({ "url": "u", "auth": { "token": "S" } }));
        assert_eq!(masked, json!({ "url": "u", "auth": MASK }));
        // A kind without secrets shows what it has.
        assert_eq!(
            mask_config(entity::ConnectorKind::Synthetic, json!([1])),
            json!([1])
        );
    }
}
