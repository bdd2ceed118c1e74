//! One row per run: the run's state while it lives and its history afterwards.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{ErrorClass, SyncStatus, Trigger};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "sync_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub integration_id: Uuid,
    pub status: SyncStatus,
    pub trigger: Trigger,
    /// The slot this run was scheduled for; unique per integration.
    pub scheduled_for: DateTimeUtc,
    /// 1 for a first try, n for the n-th consecutive try after failures.
    pub attempt: i32,
    /// How many times a worker claimed this run (crash recoveries).
    pub claims: i32,
    /// Claims executed alone in their process; a run that lost its worker this way
    /// `max_claims` times is a poison run.
    pub solo_claims: i32,
    /// Monotonic lease token; every write of a claim is conditioned on it.
    pub fence: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    /// When the run was last pushed to the queue (the re-enqueuer's clock).
    pub enqueued_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub duration_ms: Option<i64>,
    pub records_count: i64,
    pub records_inserted: i64,
    pub records_updated: i64,
    pub records_unchanged: i64,
    pub records_deleted: i64,
    pub error_class: Option<ErrorClass>,
    pub error_message: Option<String>,
    pub worker_id: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::integrations::Entity",
        from = "Column::IntegrationId",
        to = "super::integrations::Column::Id",
        on_delete = "Cascade"
    )]
    Integration,
}

impl Related<super::integrations::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Integration.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
