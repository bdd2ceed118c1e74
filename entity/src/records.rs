//! The synced data the dashboard reads locally.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub integration_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub external_id: String,
    pub data: Json,
    /// Hash of the canonical JSON; an unchanged row is not rewritten.
    pub content_hash: String,
    /// Bumped on every content change.
    pub version: i32,
    /// Soft delete: the row disappeared from a full sync.
    pub deleted_at: Option<DateTimeUtc>,
    pub synced_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
