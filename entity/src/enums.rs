//! Domain enums stored in the database as strings.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// State of one run (`sync_logs.status`). A row is both the run's state and its history.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncStatus {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "RUNNING")]
    Running,
    #[sea_orm(string_value = "SUCCESS")]
    Success,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// The run ended because the provider asked us to wait; it is not a failure.
    #[sea_orm(string_value = "RATE_LIMITED")]
    RateLimited,
    /// The run was abandoned without executing (integration paused, disabled or deleted).
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
            Self::RateLimited => "RATE_LIMITED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// Why a run exists.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    #[sea_orm(string_value = "schedule")]
    Schedule,
    #[sea_orm(string_value = "manual")]
    Manual,
    #[sea_orm(string_value = "retry")]
    Retry,
    #[sea_orm(string_value = "webhook")]
    Webhook,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Retry => "retry",
            Self::Webhook => "webhook",
        }
    }
}

/// Health of an integration, derived from its recent runs and its control state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    #[sea_orm(string_value = "healthy")]
    Healthy,
    /// One failure in a row.
    #[sea_orm(string_value = "degraded")]
    Degraded,
    /// One failure away from being disabled.
    #[sea_orm(string_value = "at_risk")]
    AtRisk,
    /// Disabled by the system after too many failures (or a config/auth error).
    #[sea_orm(string_value = "disabled")]
    Disabled,
    /// Paused by a user.
    #[sea_orm(string_value = "paused")]
    Paused,
}

/// The connector an integration uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    #[sea_orm(string_value = "synthetic")]
    Synthetic,
    #[sea_orm(string_value = "http_json")]
    HttpJson,
    #[sea_orm(string_value = "csv")]
    Csv,
    #[sea_orm(string_value = "google_sheets")]
    GoogleSheets,
    #[sea_orm(string_value = "firestore")]
    Firestore,
    #[sea_orm(string_value = "sql")]
    Sql,
}

impl ConnectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::HttpJson => "http_json",
            Self::Csv => "csv",
            Self::GoogleSheets => "google_sheets",
            Self::Firestore => "firestore",
            Self::Sql => "sql",
        }
    }
}

/// Classification of a failed run; it decides what the run protocol does next.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    #[sea_orm(string_value = "transient")]
    Transient,
    #[sea_orm(string_value = "rate_limited")]
    RateLimited,
    #[sea_orm(string_value = "auth")]
    Auth,
    #[sea_orm(string_value = "config")]
    Config,
    #[sea_orm(string_value = "source_data")]
    SourceData,
    #[sea_orm(string_value = "internal")]
    Internal,
    #[sea_orm(string_value = "worker_lost")]
    WorkerLost,
    #[sea_orm(string_value = "timeout")]
    Timeout,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::RateLimited => "rate_limited",
            Self::Auth => "auth",
            Self::Config => "config",
            Self::SourceData => "source_data",
            Self::Internal => "internal",
            Self::WorkerLost => "worker_lost",
            Self::Timeout => "timeout",
        }
    }

    /// Parses the stored/configured name of an error class.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "transient" => Self::Transient,
            "rate_limited" => Self::RateLimited,
            "auth" => Self::Auth,
            "config" => Self::Config,
            "source_data" => Self::SourceData,
            "internal" => Self::Internal,
            "worker_lost" => Self::WorkerLost,
            "timeout" => Self::Timeout,
            _ => return None,
        })
    }
}

/// Role of an API key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Spans every workspace: manages workspaces and keys of any workspace, and can do
    /// whatever an admin can. The bootstrap key of a fresh install is one.
    #[sea_orm(string_value = "operator")]
    Operator,
    /// Writes within one workspace.
    #[sea_orm(string_value = "admin")]
    Admin,
    #[sea_orm(string_value = "viewer")]
    Viewer,
}
