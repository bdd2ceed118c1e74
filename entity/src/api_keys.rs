//! API keys, stored as SHA-256 hashes; the plain key is shown once at creation.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::Role;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `None` = an operator key spanning every workspace.
    pub workspace_id: Option<Uuid>,
    pub name: String,
    pub role: Role,
    #[sea_orm(unique)]
    pub key_hash: String,
    /// First characters of the key, to recognise it in listings.
    pub key_prefix: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
