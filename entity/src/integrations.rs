//! An integration: one data source with its sync schedule and retry state.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{ConnectorKind, HealthState, Trigger};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "integrations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub kind: ConnectorKind,
    /// Connector configuration; secret fields are encrypted at rest.
    pub config: Json,
    /// `None` = manual syncs only.
    pub sync_interval_secs: Option<i64>,
    pub sync_enabled: bool,
    /// When the next scheduled run is due; `None` while a run is live or when not scheduled.
    pub next_sync_at: Option<DateTimeUtc>,
    /// Trigger of the next run the scheduler creates (`schedule`, or `retry` after a failure).
    pub next_trigger: Trigger,
    /// A manual trigger arrived while a run was live: run once more right after it.
    pub followup_requested: bool,
    /// Consecutive failures.
    pub retry_count: i32,
    /// Times the reaper took this integration's runs back after their lease expired,
    /// since its last success; at 2 its runs run alone in their process (a suspect).
    pub lost_leases: i32,
    pub max_retries: i32,
    pub health: HealthState,
    pub last_sync_at: Option<DateTimeUtc>,
    pub last_success_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    /// Incremental-sync watermark, advanced only by a successful run.
    pub watermark: Option<String>,
    /// Runs this integration has had (maintained where runs are created).
    pub runs_total: i64,
    /// Freshness objective in force, seconds (`None` = none). Unless `stale_after_custom`,
    /// the API keeps it at twice the interval plus the lease.
    pub stale_after_secs: Option<i64>,
    pub stale_after_custom: bool,
    /// When the objective is breached unless a success comes first (indexed due time).
    pub stale_at: Option<DateTimeUtc>,
    /// Breached since (an `integration.stale` event was written).
    pub stale_since: Option<DateTimeUtc>,
    /// An open failure streak, disable or breach: the next success is a recovery.
    pub unhealthy_since: Option<DateTimeUtc>,
    /// What settles a conflict between a local change and a cloud change:
    /// `cloud_wins`, `local_wins`, `newest_wins` or `manual`.
    pub conflict_strategy: String,
    /// Optimistic-locking version of the settings.
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::sync_logs::Entity")]
    SyncLogs,
}

impl Related<super::sync_logs::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::SyncLogs.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
