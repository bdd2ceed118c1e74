//! Connectors: how a run fetches records from a source.
//!
//! A connector validates its own configuration (so the API can reject a bad one with
//! field-level errors before anything is stored) and fetches records, reporting failures
//! with a typed [`ErrorClass`] that the run protocol turns into retry, wait or disable.

pub mod csv;
pub mod firestore;
pub mod google_sheets;
pub mod http;
pub mod http_json;
mod record;
pub mod schema;
pub mod sql;
pub mod synthetic;
pub mod watermark;

use std::time::Duration;

use async_trait::async_trait;
use entity::{ConnectorKind, ErrorClass};
use serde_json::Value;
use uuid::Uuid;

pub use record::{RecordJson, SourceRecord};

/// The result of a successful fetch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    pub records: Vec<SourceRecord>,
    /// `true` when `records` is the whole data set (rows missing from it are soft-deleted).
    pub full: bool,
    /// The new incremental watermark, stored only if the run succeeds.
    pub watermark: Option<String>,
}

/// A failed fetch. `message` must never contain a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class:?}: {message}")]
pub struct FetchError {
    pub class: ErrorClass,
    pub message: String,
    /// For `rate_limited`: how long the provider asked us to wait.
    pub retry_after: Option<Duration>,
}

impl FetchError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A problem with one configuration field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a run hands the connector.
#[derive(Debug, Clone)]
pub struct FetchContext {
    pub integration_id: Uuid,
    pub run_id: Uuid,
    /// 1 for a first try, n for the n-th consecutive try after failures.
    pub attempt: i32,
    /// How many runs of this integration came before (any outcome).
    pub previous_runs: i64,
    pub watermark: Option<String>,
    /// The provider's rate limit, taken before every request (`None`: unlimited).
    pub gate: Option<crate::ratelimit::RequestGate>,
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// Fetches the records of one run.
    async fn fetch(&self, ctx: &FetchContext) -> Result<Fetched, FetchError>;

    /// The URLs this connector connects to (the SSRF check at save, the provider key).
    fn urls(&self) -> Vec<url::Url> {
        Vec::new()
    }

    /// Whether `FetchContext::previous_runs` must be counted (it costs a query).
    fn wants_run_count(&self) -> bool {
        false
    }
}

/// Configuration fields of `kind` that hold secrets (never shown, logged or queued).
pub fn secret_fields(kind: ConnectorKind) -> &'static [&'static str] {
    match kind {
        ConnectorKind::Synthetic => &[],
        // Request headers carry credentials as often as not (`Authorization`,
        // `X-Api-Key`, cookies): they are secret for every HTTP connector, whole.
        ConnectorKind::Csv => &["headers"],
        ConnectorKind::HttpJson => &["auth", "headers"],
        ConnectorKind::GoogleSheets => &["apiKey", "token"],
        ConnectorKind::Firestore => &["token"],
        ConnectorKind::Sql => &["url"],
    }
}

/// `config` (an object) without `secrets`, for serde to read the rest: serde's
/// messages quote the offending value, which must never happen for a secret.
pub(crate) fn without_secrets(config: &Value, secrets: &[&str]) -> Value {
    let mut rest = config.clone();
    if let Some(obj) = rest.as_object_mut() {
        for key in secrets {
            obj.remove(*key);
        }
    }
    rest
}

/// Reads the secret field `key` of `config` as `T` (absent or null: `None`). A value
/// of the wrong type or shape is reported as `config.<key>` with `expected` — what it
/// must be —, never with serde's message, which would quote the value.
pub(crate) fn secret_field<T: serde::de::DeserializeOwned>(
    config: &Value,
    key: &str,
    expected: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let v = config.get(key).filter(|v| !v.is_null())?;
    match serde_json::from_value(v.clone()) {
        Ok(t) => Some(t),
        Err(_) => {
            errors.push(FieldError::new(format!("config.{key}"), expected));
            None
        }
    }
}

/// What connectors get from the process: the outbound network policy (SSRF guard).
#[derive(Debug, Clone, Default)]
pub struct ConnectorEnv {
    pub net: crate::net::NetPolicy,
}

/// Validates the shape of `config` for `kind`, listing every offending field.
pub fn validate(kind: ConnectorKind, config: &Value) -> Result<(), Vec<FieldError>> {
    build(kind, config, &ConnectorEnv::default()).map(|_| ())
}

/// The URLs a config connects to, for the SSRF check when it is saved.
pub fn urls(kind: ConnectorKind, config: &Value) -> Vec<url::Url> {
    if !config.is_object() {
        return Vec::new();
    }
    match kind {
        ConnectorKind::HttpJson => http_json::HttpJson::from_config(config, None)
            .map(|c| c.urls())
            .unwrap_or_default(),
        ConnectorKind::Csv => csv::Csv::from_config(config, None)
            .map(|c| c.urls())
            .unwrap_or_default(),
        ConnectorKind::GoogleSheets => google_sheets::GoogleSheets::from_config(config, None)
            .map(|c| c.urls())
            .unwrap_or_default(),
        ConnectorKind::Firestore => firestore::Firestore::from_config(config, None)
            .map(|c| c.urls())
            .unwrap_or_default(),
        ConnectorKind::Sql => sql::Sql::from_config(config, None)
            .map(|c| c.urls())
            .unwrap_or_default(),
        ConnectorKind::Synthetic => Vec::new(),
    }
}

/// Builds the connector of `kind` from its (decrypted) configuration.
pub fn build(
    kind: ConnectorKind,
    config: &Value,
    env: &ConnectorEnv,
) -> Result<Box<dyn Connector>, Vec<FieldError>> {
    // serde reads a struct from an array too (fields by position): a config in any
    // shape but an object would slip past the per-field handling of secrets.
    if !config.is_object() {
        return Err(vec![FieldError::new(
            "config",
            "must be a JSON object of the connector's fields",
        )]);
    }
    match kind {
        ConnectorKind::Synthetic => Ok(Box::new(synthetic::Synthetic::from_config(config)?)),
        ConnectorKind::HttpJson => Ok(Box::new(http_json::HttpJson::from_config(
            config,
            Some(env),
        )?)),
        ConnectorKind::Csv => Ok(Box::new(csv::Csv::from_config(config, Some(env))?)),
        ConnectorKind::GoogleSheets => Ok(Box::new(google_sheets::GoogleSheets::from_config(
            config,
            Some(env),
        )?)),
        ConnectorKind::Firestore => Ok(Box::new(firestore::Firestore::from_config(
            config,
            Some(env),
        )?)),
        ConnectorKind::Sql => Ok(Box::new(sql::Sql::from_config(config, Some(env))?)),
    }
}
