//! API keys, stored as keyed hashes (HMAC-SHA256 under a server key); the plain key is
//! shown once at creation.

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
    /// The key's non-secret id (`sf_` + 8 hex characters, the start of the key), to
    /// recognise it in listings; empty for keys without one (the bootstrap token, keys
    /// made before key ids).
    pub key_prefix: String,
    /// 1 = unsalted SHA-256 (legacy, rehashed on first use), 2 = HMAC-SHA256.
    pub hash_version: i16,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
