//! Webhooks from the cloud (docs/architecture.md §4.19): an integration's webhook
//! configuration, changed by an admin (each change one transaction with its audit
//! event; the secret is shown once and never again), and the receipt of a webhook whose
//! signature verified: a pull asked for, or the cloud's changes applied through the
//! record store and the conflict rules, committed with the receipt that refuses its
//! replay.

use std::time::Duration;

use entity::{HealthState, integrations};
use ipnet::IpNet;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, QueryResult, TransactionTrait, Value};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use syncfleet_worker::conflicts::{Met, Source};
use syncfleet_worker::connectors::SourceRecord;
use syncfleet_worker::db::{self as q, Dialect};
use syncfleet_worker::secrets::SecretBox;
use syncfleet_worker::store::{self, Counts};

use super::runs::{self, Triggering};
use super::{Audit, audit, lock, lock_in};
use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem};
use crate::inbound::{self, Scheme, Verified};
use crate::state::AppState;

/// The associated data a webhook secret is sealed under, beside the integration id:
/// a ciphertext copied into a connector config field does not open there.
const SEALED_FIELD: &str = "webhook_secret";
/// Most entries of an allow-list.
const MAX_SOURCES: usize = 100;
/// Longest record id (the `records` primary key's).
const MAX_EXTERNAL_ID: usize = 512;
/// The longest grace a rotated-out secret may keep (7 days).
pub const MAX_GRACE_SECS: i64 = 7 * 86_400;

/// A webhook configuration change; `None` = unchanged.
#[derive(Debug, Default, Clone)]
pub struct Fields {
    pub scheme: Option<String>,
    /// `Some(None)` = any address may send.
    pub allowed_sources: Option<Option<Vec<String>>>,
    pub enabled: Option<bool>,
}

/// `fields`, checked: the allow-list normalised to networks and stored as JSON text.
struct Checked {
    scheme: Option<Scheme>,
    allowed: Option<Option<String>>,
    enabled: Option<bool>,
}

fn check(f: &Fields) -> Result<Checked, ApiError> {
    let mut errors = Vec::new();
    let scheme = match f.scheme.as_deref() {
        None => None,
        Some(s) => match Scheme::parse(s) {
            Some(x) => Some(x),
            None => {
                errors.push(FieldProblem {
                    field: "scheme".into(),
                    message: format!("`{s}` is not `standard` or `cloud`"),
                });
                None
            }
        },
    };
    let allowed = match &f.allowed_sources {
        None => None,
        Some(None) => Some(None),
        Some(Some(list)) => {
            if list.is_empty() || list.len() > MAX_SOURCES {
                errors.push(FieldProblem {
                    field: "allowedSources".into(),
                    message: format!(
                        "1 to {MAX_SOURCES} networks or addresses, or null for any address"
                    ),
                });
            }
            let mut nets = Vec::with_capacity(list.len());
            for (k, s) in list.iter().enumerate() {
                match crate::config::parse_network(s.trim()) {
                    Some(n) => nets.push(n.to_string()),
                    None => errors.push(FieldProblem {
                        field: format!("allowedSources[{k}]"),
                        message: format!(
                            "`{s}` is not a network like 203.0.113.0/24 or an address"
                        ),
                    }),
                }
            }
            Some(Some(json!(nets).to_string()))
        }
    };
    if errors.is_empty() {
        Ok(Checked {
            scheme,
            allowed,
            enabled: f.enabled,
        })
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// A secret as stored: sealed under the deployment's secret key when there is one.
fn seal(secrets: Option<&SecretBox>, integration: Uuid, secret: &str) -> String {
    match secrets {
        Some(b) => b
            .seal(integration, SEALED_FIELD, &Json::String(secret.to_owned()))
            .to_string(),
        None => secret.to_owned(),
    }
}

/// A stored secret, opened.
pub fn open(secrets: Option<&SecretBox>, integration: Uuid, stored: &str) -> Result<String, DbErr> {
    if stored.starts_with(syncfleet_worker::notifications::sign::PREFIX) {
        return Ok(stored.to_owned());
    }
    let value: Json = serde_json::from_str(stored)
        .map_err(|_| DbErr::Custom("a webhook secret is neither whsec_ nor sealed".into()))?;
    let b = secrets.ok_or_else(|| {
        DbErr::Custom("a webhook secret is sealed but SYNCFLEET_SECRET_KEY is not set".into())
    })?;
    match b.open(integration, SEALED_FIELD, &value) {
        Ok(Json::String(s)) => Ok(s),
        Ok(_) => Err(DbErr::Custom(
            "a webhook secret opened to a non-string".into(),
        )),
        Err(e) => Err(DbErr::Custom(format!("a webhook secret: {e}"))),
    }
}

/// Re-seals every stored webhook secret from `old` to `new` in `txn` (`rotate-key`);
/// returns how many webhooks were rewritten.
pub async fn reseal(
    txn: &DatabaseTransaction,
    old: &SecretBox,
    new: &SecretBox,
) -> Result<u64, DbErr> {
    let rows = q::query(
        txn,
        "SELECT integration_id, secret, previous_secret FROM inbound_webhooks",
        [],
    )
    .await?;
    for r in &rows {
        let id: Uuid = r.try_get("", "integration_id")?;
        let secret = open(Some(old), id, &r.try_get::<String>("", "secret")?)?;
        let previous = r
            .try_get::<Option<String>>("", "previous_secret")?
            .map(|p| open(Some(old), id, &p))
            .transpose()?;
        q::exec(
            txn,
            "UPDATE inbound_webhooks SET secret = $2, previous_secret = $3 WHERE integration_id = $1",
            [
                id.into(),
                seal(Some(new), id, &secret).into(),
                previous.map(|p| seal(Some(new), id, &p)).into(),
            ],
        )
        .await?;
    }
    Ok(rows.len() as u64)
}

/// The columns a view reads (`previous_valid`: the rotated-out secret still verifies).
fn columns(d: Dialect) -> String {
    format!(
        "integration_id, scheme, enabled, allowed_sources, secret_set_at, previous_secret_until, \
         (previous_secret IS NOT NULL AND COALESCE(previous_secret_until > {now}, false)) AS previous_valid, created_at, updated_at",
        now = d.now()
    )
}

async fn row(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<QueryResult>, DbErr> {
    let rows = q::query(
        db,
        format!(
            "SELECT {} FROM inbound_webhooks WHERE integration_id = $1",
            columns(Dialect::of(db))
        ),
        [id.into()],
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// The caller's integration `id`'s webhook (another workspace's integration is "not
/// found", as one without a webhook is).
pub async fn read(state: &AppState, caller: &Caller, id: Uuid) -> Result<QueryResult, ApiError> {
    crate::routes::common::load(state, caller, id).await?;
    row(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("webhook"))
}

/// What the audit trail keeps of a configuration (never a secret).
fn summary(r: &QueryResult) -> Result<Json, ApiError> {
    let allowed: Option<String> = r.try_get("", "allowed_sources")?;
    Ok(json!({
        "scheme": r.try_get::<String>("", "scheme")?,
        "enabled": r.try_get::<bool>("", "enabled")?,
        "allowedSources": allowed.and_then(|a| serde_json::from_str::<Json>(&a).ok()),
    }))
}

/// Gives integration `id` a webhook; returns it and its secret (shown this once): the
/// caller's own `secret`, or a new one.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    f: Fields,
    secret: Option<String>,
) -> Result<(QueryResult, String), ApiError> {
    let c = check(&f)?;
    let secret = match secret {
        Some(s) => {
            inbound::check_secret(&s).map_err(|m| ApiError::field("secret", m))?;
            s
        }
        None => inbound::new_secret(),
    };
    let sealed = seal(state.config.secret_key.as_ref(), id, &secret);
    let txn = state.db.begin().await?;
    let m = lock(&txn, caller, id).await?;
    let now = Dialect::of(&txn).now();
    let inserted = q::exec(
        &txn,
        format!(
            "INSERT INTO inbound_webhooks (integration_id, secret, secret_set_at, allowed_sources, scheme, enabled, \
               created_at, updated_at) VALUES ($1, $2, {now}, $3, $4, $5, {now}, {now}) ON CONFLICT DO NOTHING"
        ),
        [
            id.into(),
            sealed.into(),
            c.allowed.flatten().into(),
            c.scheme.unwrap_or(Scheme::Standard).as_str().into(),
            c.enabled.unwrap_or(true).into(),
        ],
    )
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict(
            "the integration has a webhook already: change it with PATCH, or rotate its secret"
                .into(),
        ));
    }
    let after = row(&txn, id).await?.ok_or(ApiError::NotFound("webhook"))?;
    audit(
        &txn,
        caller,
        Audit {
            action: "inbound_webhook.create",
            integration: Some(&m),
            workspace_id: None,
            reason: None,
            before: None,
            after: Some(summary(&after)?),
        },
    )
    .await?;
    txn.commit().await?;
    Ok((after, secret))
}

/// Changes integration `id`'s webhook (scheme, allow-list, enabled).
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    f: Fields,
) -> Result<QueryResult, ApiError> {
    let c = check(&f)?;
    let txn = state.db.begin().await?;
    let m = lock(&txn, caller, id).await?;
    let before = row(&txn, id).await?.ok_or(ApiError::NotFound("webhook"))?;
    let now = Dialect::of(&txn).now();
    q::exec(
        &txn,
        format!(
            "UPDATE inbound_webhooks SET scheme = COALESCE($2, scheme), enabled = COALESCE($3, enabled), \
               allowed_sources = CASE WHEN $4 THEN $5 ELSE allowed_sources END, updated_at = {now} \
             WHERE integration_id = $1"
        ),
        [
            id.into(),
            c.scheme.map(|s| s.as_str().to_owned()).into(),
            c.enabled.into(),
            c.allowed.is_some().into(),
            c.allowed.flatten().into(),
        ],
    )
    .await?;
    let after = row(&txn, id).await?.ok_or(ApiError::NotFound("webhook"))?;
    audit(
        &txn,
        caller,
        Audit {
            action: "inbound_webhook.update",
            integration: Some(&m),
            workspace_id: None,
            reason: None,
            before: Some(summary(&before)?),
            after: Some(summary(&after)?),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

/// Removes integration `id`'s webhook and its receipts: the cloud's webhooks are 404
/// from now on.
pub async fn delete(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    let txn = state.db.begin().await?;
    let m = lock(&txn, caller, id).await?;
    let before = row(&txn, id).await?.ok_or(ApiError::NotFound("webhook"))?;
    // Children first: SQLite's foreign keys may be off.
    q::exec(
        &txn,
        "DELETE FROM webhook_receipts WHERE integration_id = $1",
        [id.into()],
    )
    .await?;
    q::exec(
        &txn,
        "DELETE FROM inbound_webhooks WHERE integration_id = $1",
        [id.into()],
    )
    .await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "inbound_webhook.delete",
            integration: Some(&m),
            workspace_id: None,
            reason: None,
            before: Some(summary(&before)?),
            after: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// A new secret for integration `id`'s webhook (the caller's own, or a new one); the
/// current one keeps verifying beside it for `grace_secs` (0: not at all). A secret
/// rotated out earlier and still in its grace stops verifying now. Returns the new
/// secret (shown this once) and the webhook after the change.
pub async fn rotate(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    grace_secs: i64,
    secret: Option<String>,
) -> Result<(String, QueryResult), ApiError> {
    if !(0..=MAX_GRACE_SECS).contains(&grace_secs) {
        return Err(ApiError::field(
            "graceSeconds",
            format!("must be from 0 to {MAX_GRACE_SECS}"),
        ));
    }
    let secret = match secret {
        Some(s) => {
            inbound::check_secret(&s).map_err(|m| ApiError::field("secret", m))?;
            s
        }
        None => inbound::new_secret(),
    };
    let sealed = seal(state.config.secret_key.as_ref(), id, &secret);
    let txn = state.db.begin().await?;
    let m = lock(&txn, caller, id).await?;
    row(&txn, id).await?.ok_or(ApiError::NotFound("webhook"))?;
    let d = Dialect::of(&txn);
    q::exec(
        &txn,
        format!(
            "UPDATE inbound_webhooks SET previous_secret = CASE WHEN $3 > 0 THEN secret END, \
               previous_secret_until = CASE WHEN $3 > 0 THEN {until} END, secret = $2, secret_set_at = {now}, \
               updated_at = {now} WHERE integration_id = $1",
            until = d.now_plus_ms("($3 * 1000)"),
            now = d.now(),
        ),
        [id.into(), sealed.into(), grace_secs.into()],
    )
    .await?;
    let after = row(&txn, id).await?.ok_or(ApiError::NotFound("webhook"))?;
    let until: Option<chrono::DateTime<chrono::Utc>> =
        after.try_get("", "previous_secret_until")?;
    audit(
        &txn,
        caller,
        Audit {
            action: "inbound_webhook.rotate_secret",
            integration: Some(&m),
            workspace_id: None,
            reason: None,
            before: None,
            after: Some(json!({ "graceSeconds": grace_secs, "previousSecretValidUntil": until })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok((secret, after))
}

/// Deletes the receipts older than `older_than` (the history pass); returns how many.
pub async fn prune_receipts(db: &impl ConnectionTrait, older_than: Duration) -> Result<u64, DbErr> {
    let r = q::exec(
        db,
        format!(
            "DELETE FROM webhook_receipts WHERE received_at < {}",
            Dialect::of(db).now_plus_ms("$1")
        ),
        [Value::from(-syncfleet_worker::config::ms(older_than))],
    )
    .await?;
    Ok(r.rows_affected())
}

/// What verifying a webhook of an integration needs, read before anything is locked.
pub struct Receiver {
    pub scheme: Scheme,
    /// The current secret and, while its grace lasts, the rotated-out one.
    pub secrets: Vec<String>,
    /// `None` = any address may send.
    pub allowed: Option<Vec<IpNet>>,
    /// The database clock, Unix seconds.
    pub now: i64,
}

/// The webhook of integration `id`, if it has one (any workspace: the signature is
/// the authority).
pub async fn receiver(state: &AppState, id: Uuid) -> Result<Option<Receiver>, ApiError> {
    let d = Dialect::of(&state.db);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT scheme, secret, allowed_sources, CASE WHEN previous_secret_until > {now} THEN previous_secret END AS previous, \
               {epoch} AS now_secs FROM inbound_webhooks WHERE integration_id = $1",
            now = d.now(),
            epoch = d.epoch_secs(),
        ),
        [id.into()],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let keys = state.config.secret_key.as_ref();
    let mut secrets = vec![open(keys, id, &r.try_get::<String>("", "secret")?)?];
    if let Some(p) = r.try_get::<Option<String>>("", "previous")? {
        secrets.push(open(keys, id, &p)?);
    }
    let scheme: String = r.try_get("", "scheme")?;
    let allowed = r
        .try_get::<Option<String>>("", "allowed_sources")?
        .map(|text| {
            let list: Vec<String> = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("inbound_webhooks.allowed_sources: {e}"))?;
            list.iter()
                .map(|s| {
                    crate::config::parse_network(s).ok_or_else(|| {
                        anyhow::anyhow!("inbound_webhooks.allowed_sources holds `{s}`")
                    })
                })
                .collect::<Result<Vec<IpNet>, _>>()
        })
        .transpose()?;
    Ok(Some(Receiver {
        scheme: Scheme::parse(&scheme)
            .ok_or_else(|| anyhow::anyhow!("inbound_webhooks.scheme is `{scheme}`"))?,
        secrets,
        allowed,
        now: r.try_get("", "now_secs")?,
    }))
}

/// What a webhook asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A pull.
    Sync,
    /// These records (JSON objects), each read by the integration's `idPointer`.
    Upsert(Vec<Json>),
    /// These record ids deleted.
    Delete(Vec<String>),
}

impl Change {
    /// A webhook body: `{"type": "sync"}`, `{"type": "upsert", "records": […]}` or
    /// `{"type": "delete", "ids": […]}`; other fields are ignored.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let v: Json = crate::extract::json_body(body)?;
        let Json::Object(mut o) = v else {
            return Err(ApiError::field(
                "body",
                "must be a JSON object with a `type`",
            ));
        };
        let kind = o.get("type").and_then(Json::as_str).map(str::to_owned);
        match kind.as_deref() {
            Some("sync") => Ok(Self::Sync),
            Some("upsert") => {
                let Some(Json::Array(records)) = o.remove("records") else {
                    return Err(ApiError::field("records", "must be an array of records"));
                };
                let errors: Vec<FieldProblem> = records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !r.is_object())
                    .map(|(k, _)| FieldProblem {
                        field: format!("records[{k}]"),
                        message: "must be a JSON object".into(),
                    })
                    .collect();
                if !errors.is_empty() {
                    return Err(ApiError::Validation(errors));
                }
                Ok(Self::Upsert(records))
            }
            Some("delete") => {
                let Some(Json::Array(ids)) = o.remove("ids") else {
                    return Err(ApiError::field("ids", "must be an array of record ids"));
                };
                let mut out = Vec::with_capacity(ids.len());
                let mut errors = Vec::new();
                for (k, id) in ids.iter().enumerate() {
                    match id_of(id) {
                        Some(s) => out.push(s),
                        None => errors.push(FieldProblem {
                            field: format!("ids[{k}]"),
                            message: id_rule(),
                        }),
                    }
                }
                if errors.is_empty() {
                    Ok(Self::Delete(out))
                } else {
                    Err(ApiError::Validation(errors))
                }
            }
            _ => Err(ApiError::field(
                "type",
                "must be `sync`, `upsert` or `delete`",
            )),
        }
    }
}

/// A record id as a pull reads one (a non-empty string or a number), within the store's
/// bounds.
fn id_of(v: &Json) -> Option<String> {
    let s = match v {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty() && s.len() <= MAX_EXTERNAL_ID && !s.chars().any(char::is_control)).then_some(s)
}

fn id_rule() -> String {
    format!(
        "a record id is a string of 1 to {MAX_EXTERNAL_ID} bytes without control characters, or a number"
    )
}

/// What a verified webhook did.
#[derive(Debug, Clone, Copy)]
pub enum Received {
    /// Its id was seen before: acknowledged, nothing done.
    Replayed,
    /// A pull was asked for.
    Triggered(Triggering),
    /// The cloud's changes were applied: what they did to the store, and the conflicts
    /// they met.
    Applied(Counts, Met),
}

/// Applies verified webhook `v` of integration `id`: one transaction in the fleet's lock
/// order — the integration's row, its receipt(s), then its records — that commits the
/// change and the receipt together, so a refused or failed webhook leaves neither and a
/// replay finds the receipt.
pub async fn receive(
    state: &AppState,
    id: Uuid,
    v: &Verified,
    change: Change,
) -> Result<Received, ApiError> {
    let txn = state.db.begin().await?;
    let m = match admit(&txn, id, v).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            txn.rollback().await?;
            return Ok(Received::Replayed);
        }
        Err(e) => {
            txn.rollback().await?;
            return Err(e);
        }
    };
    let (upserts, deletes) = match change {
        Change::Sync => {
            return runs::webhook_sync(state, txn, &m, &v.id)
                .await
                .map(Received::Triggered);
        }
        Change::Upsert(records) => match records_of(&m, records) {
            Ok(r) => (r, Vec::new()),
            Err(e) => {
                txn.rollback().await?;
                return Err(e);
            }
        },
        Change::Delete(ids) => (Vec::new(), ids),
    };
    match apply(&txn, id, upserts, deletes).await {
        Ok((counts, met)) => {
            txn.commit().await?;
            Ok(Received::Applied(counts, met))
        }
        Err(e) => {
            txn.rollback().await?;
            Err(e.into())
        }
    }
}

/// Locks the integration, records the receipts (`None`: a replay) and refuses a webhook
/// the integration does not take now.
async fn admit(
    txn: &DatabaseTransaction,
    id: Uuid,
    v: &Verified,
) -> Result<Option<integrations::Model>, ApiError> {
    let m = match lock_in(txn, None, id).await {
        Err(ApiError::NotFound(_)) => return Err(ApiError::NotFound("webhook")),
        other => other?,
    };
    let rows = q::query(
        txn,
        "SELECT enabled FROM inbound_webhooks WHERE integration_id = $1",
        [id.into()],
    )
    .await?;
    let enabled: bool = rows
        .first()
        .ok_or(ApiError::NotFound("webhook"))?
        .try_get("", "enabled")?;
    // The receipt first: a replay is acknowledged whatever the integration's state is
    // now (it was taken the first time).
    let now = Dialect::of(txn).now();
    for key in &v.receipts {
        let r = q::exec(
            txn,
            format!(
                "INSERT INTO webhook_receipts (integration_id, webhook_id, received_at) VALUES ($1, $2, {now}) \
                 ON CONFLICT DO NOTHING"
            ),
            [id.into(), key.clone().into()],
        )
        .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
    }
    if !enabled {
        return Err(ApiError::Conflict(
            "the integration's webhook is disabled; enable it to accept webhooks".into(),
        ));
    }
    if !m.sync_enabled {
        return Err(ApiError::Conflict(format!(
            "the integration is {}; its webhooks are refused until it is resumed",
            if m.health == HealthState::Disabled {
                "disabled"
            } else {
                "paused"
            }
        )));
    }
    Ok(Some(m))
}

/// The records of an upsert, each id read at the integration's `idPointer` as a pull
/// reads it.
fn records_of(m: &integrations::Model, records: Vec<Json>) -> Result<Vec<SourceRecord>, ApiError> {
    let Some(pointer) = m.config.get("idPointer").and_then(Json::as_str) else {
        return Err(ApiError::field(
            "records",
            "this integration's config has no idPointer (http_json) to read record ids with; \
             only deletes by id are accepted",
        ));
    };
    let mut out = Vec::with_capacity(records.len());
    let mut errors = Vec::new();
    for (k, r) in records.iter().enumerate() {
        match r.pointer(pointer).and_then(id_of) {
            Some(id) => out.push(SourceRecord::new(id, r)),
            None => errors.push(FieldProblem {
                field: format!("records[{k}]"),
                message: format!("no record id at {pointer}: {}", id_rule()),
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// The cloud's changes through the record store and the integration's conflict rules,
/// as a pull's (`store::apply_many` with `Source::Webhook`).
async fn apply(
    txn: &DatabaseTransaction,
    id: Uuid,
    upserts: Vec<SourceRecord>,
    deletes: Vec<String>,
) -> Result<(Counts, Met), DbErr> {
    let plan = store::plan_changes(txn, id, upserts, deletes).await?;
    let met = store::apply_many(txn, &[(id, &plan)], Source::Webhook).await?;
    if !plan.is_empty() {
        // Open consoles hear of the change when it commits (§12.3).
        syncfleet_worker::notify::changed(txn, [id]).await?;
    }
    Ok((plan.counts, met))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_name_what_is_wrong() {
        assert_eq!(
            Change::parse(br#"{"type":"sync","at":1}"#).unwrap(),
            Change::Sync
        );
        assert_eq!(
            Change::parse(br#"{"type":"delete","ids":["a",7]}"#).unwrap(),
            Change::Delete(vec!["a".into(), "7".into()])
        );
        let field = |body: &str| match Change::parse(body.as_bytes()) {
            Err(ApiError::Validation(p)) => p[0].field.clone(),
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(field(r#"{"type":"nap"}"#), "type");
        assert_eq!(field("[]"), "body");
        assert_eq!(field(r#"{"type":"upsert"}"#), "records");
        assert_eq!(field(r#"{"type":"upsert","records":[{},1]}"#), "records[1]");
        assert_eq!(field(r#"{"type":"delete","ids":["ok",""]}"#), "ids[1]");
        assert!(matches!(Change::parse(b"{"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn allow_lists_are_normalised_networks() {
        let c = check(&Fields {
            allowed_sources: Some(Some(vec!["203.0.113.9/24".into(), " 10.1.2.3".into()])),
            ..Fields::default()
        })
        .unwrap();
        assert_eq!(
            c.allowed,
            Some(Some(r#"["203.0.113.0/24","10.1.2.3/32"]"#.into()))
        );
        assert!(
            check(&Fields {
                allowed_sources: Some(Some(vec![])),
                ..Fields::default()
            })
            .is_err()
        );
        let Err(ApiError::Validation(p)) = check(&Fields {
            scheme: Some("svix".into()),
            allowed_sources: Some(Some(vec!["nowhere".into()])),
            ..Fields::default()
        }) else {
            panic!("accepted")
        };
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["scheme", "allowedSources[0]"]);
    }
}
