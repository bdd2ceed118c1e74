//! Notification endpoints and deliveries: the changes a person makes (docs/architecture.md
//! §4.16). Each is one transaction with its audit event; secrets are shown once.

use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait, Value};
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};
use syncfleet_worker::notifications::deliver::{self, seal_secret};
use syncfleet_worker::notifications::{EventType, events, sign};

use super::{Audit, audit};
use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem};
use crate::state::AppState;

/// The endpoint columns the views read.
pub const COLUMNS: &str = "id, workspace_id, url, description, event_types, enabled, format, \
    consecutive_failures, disabled_reason, previous_secret_until, version, created_at, updated_at";

/// A validated endpoint change; `None` = unchanged.
#[derive(Debug, Default, Clone)]
pub struct EndpointFields {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub format: Option<String>,
}

/// Checks every given field, collecting each problem: the URL also through the SSRF
/// guard (resolving its name), as at every send.
pub async fn validate(state: &AppState, f: &EndpointFields) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut push = |field: &str, message: String| {
        errors.push(FieldProblem {
            field: field.into(),
            message,
        })
    };
    if let Some(u) = &f.url {
        match url::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                if let Err(e) = state.config.net.check_url_resolving(&parsed).await {
                    push("url", e.to_string());
                }
            }
            Ok(parsed) => push("url", format!("`{}` is not http or https", parsed.scheme())),
            Err(e) => push("url", format!("not a URL: {e}")),
        }
        if u.len() > 2000 {
            push("url", "must be at most 2000 characters".into());
        }
    }
    if let Some(d) = &f.description
        && d.chars().count() > 500
    {
        push("description", "must be at most 500 characters".into());
    }
    if let Some(types) = &f.event_types {
        for t in types {
            if EventType::parse(t).is_none_or(|t| t == EventType::Test) {
                let known: Vec<&str> = EventType::ALL
                    .iter()
                    .filter(|t| **t != EventType::Test)
                    .map(|t| t.as_str())
                    .collect();
                push(
                    "eventTypes",
                    format!("unknown event type `{t}` (known: {})", known.join(", ")),
                );
            }
        }
        if types.len() > 32 {
            push("eventTypes", "at most 32 entries".into());
        }
    }
    if let Some(fmt) = &f.format
        && !matches!(fmt.as_str(), "standard" | "slack")
    {
        push("format", format!("`{fmt}` is not `standard` or `slack`"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Creates an endpoint in `workspace`; returns its row and its secret (shown once).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    workspace: Uuid,
    f: EndpointFields,
    secret: Option<String>,
) -> Result<(QueryResult, String), ApiError> {
    validate(state, &f).await?;
    let secret = match secret {
        Some(s) => {
            sign::check_secret(&s).map_err(|e| ApiError::field("secret", e.to_string()))?;
            s
        }
        None => sign::new_secret(),
    };
    let url = f
        .url
        .clone()
        .ok_or_else(|| ApiError::field("url", "is required"))?;
    let id = Uuid::now_v7();
    let txn = state.db.begin().await?;
    let now = Dialect::of(&txn).now();
    let types = json!(f.event_types.clone().unwrap_or_default()).to_string();
    q::exec(
        &txn,
        format!(
            "INSERT INTO notification_endpoints (id, workspace_id, url, description, event_types, enabled, format, \
             secret, consecutive_failures, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 1, {now}, {now})"
        ),
        [
            id.into(),
            workspace.into(),
            url.into(),
            f.description.clone().unwrap_or_default().into(),
            types.into(),
            f.enabled.unwrap_or(true).into(),
            f.format.clone().unwrap_or_else(|| "standard".into()).into(),
            seal_secret(state.config.secret_key.as_ref(), id, &secret).into(),
        ],
    )
    .await?;
    let row = read(&txn, caller, id).await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "notification_endpoint.create",
            integration: None,
            workspace_id: Some(workspace),
            reason: None,
            before: None,
            after: Some(
                json!({ "id": id, "url": f.url, "eventTypes": f.event_types, "format": f.format }),
            ),
        },
    )
    .await?;
    txn.commit().await?;
    Ok((row, secret))
}

/// The caller's endpoint `id` (another workspace's is "not found").
pub async fn read(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: Uuid,
) -> Result<QueryResult, ApiError> {
    let (scope, values) = scope(caller, vec![id.into()], 2);
    let rows = q::query(
        db,
        format!("SELECT {COLUMNS} FROM notification_endpoints WHERE id = $1{scope}"),
        values,
    )
    .await?;
    rows.into_iter()
        .next()
        .ok_or(ApiError::NotFound("notification endpoint"))
}

/// `" AND workspace_id = $n"` for a caller confined to a workspace.
pub fn scope(caller: &Caller, mut values: Vec<Value>, n: usize) -> (String, Vec<Value>) {
    match caller.workspace_id {
        Some(ws) => {
            values.push(ws.into());
            (format!(" AND workspace_id = ${n}"), values)
        }
        None => (String::new(), values),
    }
}

/// Applies `f` to endpoint `id`. Enabling it again clears its failure streak.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    f: EndpointFields,
) -> Result<QueryResult, ApiError> {
    validate(state, &f).await?;
    let txn = state.db.begin().await?;
    let before = read(&txn, caller, id).await?;
    let now = Dialect::of(&txn).now();
    q::exec(
        &txn,
        format!(
            "UPDATE notification_endpoints SET url = COALESCE($2, url), description = COALESCE($3, description), \
               event_types = COALESCE($4, event_types), format = COALESCE($5, format), enabled = COALESCE($6, enabled), \
               consecutive_failures = CASE WHEN $6 THEN 0 ELSE consecutive_failures END, \
               disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END, \
               version = version + 1, updated_at = {now} WHERE id = $1"
        ),
        [
            id.into(),
            f.url.clone().into(),
            f.description.clone().into(),
            f.event_types.as_ref().map(|t| json!(t).to_string()).into(),
            f.format.clone().into(),
            f.enabled.into(),
        ],
    )
    .await?;
    let after = read(&txn, caller, id).await?;
    let ws: Uuid = before.try_get("", "workspace_id")?;
    audit(
        &txn,
        caller,
        Audit {
            action: "notification_endpoint.update",
            integration: None,
            workspace_id: Some(ws),
            reason: None,
            before: Some(json!({ "id": id, "url": before.try_get::<String>("", "url")?, "enabled": before.try_get::<bool>("", "enabled")? })),
            after: Some(json!({ "id": id, "url": after.try_get::<String>("", "url")?, "enabled": after.try_get::<bool>("", "enabled")? })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

/// Deletes endpoint `id` with its deliveries.
pub async fn delete(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    let txn = state.db.begin().await?;
    let before = read(&txn, caller, id).await?;
    let ws: Uuid = before.try_get("", "workspace_id")?;
    // Children first: SQLite's foreign keys may be off.
    q::exec(
        &txn,
        "DELETE FROM live_deliveries WHERE endpoint_id = $1",
        [id.into()],
    )
    .await?;
    q::exec(
        &txn,
        "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM notification_deliveries WHERE endpoint_id = $1)",
        [id.into()],
    )
    .await?;
    q::exec(
        &txn,
        "DELETE FROM notification_deliveries WHERE endpoint_id = $1",
        [id.into()],
    )
    .await?;
    q::exec(
        &txn,
        "DELETE FROM notification_endpoints WHERE id = $1",
        [id.into()],
    )
    .await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "notification_endpoint.delete",
            integration: None,
            workspace_id: Some(ws),
            reason: None,
            before: Some(json!({ "id": id, "url": before.try_get::<String>("", "url")? })),
            after: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// A new secret for endpoint `id`; the old one keeps signing (beside it) for `grace_secs`.
pub async fn rotate(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    grace_secs: i64,
) -> Result<String, ApiError> {
    let txn = state.db.begin().await?;
    let before = read(&txn, caller, id).await?;
    let ws: Uuid = before.try_get("", "workspace_id")?;
    let secret = sign::new_secret();
    let d = Dialect::of(&txn);
    q::exec(
        &txn,
        format!(
            "UPDATE notification_endpoints SET previous_secret = CASE WHEN $3 > 0 THEN secret END, \
               previous_secret_until = CASE WHEN $3 > 0 THEN {until} END, secret = $2, \
               version = version + 1, updated_at = {now} WHERE id = $1",
            until = d.now_plus_ms("($3 * 1000)"),
            now = d.now(),
        ),
        [
            id.into(),
            seal_secret(state.config.secret_key.as_ref(), id, &secret).into(),
            grace_secs.into(),
        ],
    )
    .await?;
    audit(
        &txn,
        caller,
        Audit {
            action: "notification_endpoint.rotate_secret",
            integration: None,
            workspace_id: Some(ws),
            reason: None,
            before: None,
            after: Some(json!({ "id": id, "graceSeconds": grace_secs })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(secret)
}

/// Sends a `test` event to endpoint `id` (disabled or not: testing is how one finds out
/// it works again). Returns `(event, delivery)`.
pub async fn test(state: &AppState, caller: &Caller, id: Uuid) -> Result<(Uuid, Uuid), ApiError> {
    let txn = state.db.begin().await?;
    let ep = read(&txn, caller, id).await?;
    let ws: Uuid = ep.try_get("", "workspace_id")?;
    let event = events::write_workspace_event(
        &txn,
        ws,
        EventType::Test,
        json!({ "endpointId": id, "message": "A test notification from syncfleet", "actor": caller.actor() }),
    )
    .await?;
    let delivery = events::deliver_to(&txn, event, id, ws, EventType::Test).await?;
    txn.commit().await?;
    crate::notifications::push_now(state, &[delivery]).await;
    Ok((event, delivery))
}

/// Retries a finished delivery by hand: pending again, with a fresh retry window.
pub async fn retry(state: &AppState, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    let txn = state.db.begin().await?;
    let (scope, values) = scope(caller, vec![id.into()], 2);
    let rows = q::query(
        &txn,
        format!("SELECT endpoint_id, workspace_id, status FROM notification_deliveries WHERE id = $1{scope}"),
        values,
    )
    .await?;
    let row = rows.first().ok_or(ApiError::NotFound("delivery"))?;
    let endpoint: Uuid = row.try_get("", "endpoint_id")?;
    let ws: Uuid = row.try_get("", "workspace_id")?;
    if !deliver::retry_by_hand(&txn, id, endpoint).await? {
        return Err(ApiError::Conflict("the delivery is still pending".into()));
    }
    audit(
        &txn,
        caller,
        Audit {
            action: "notification_delivery.retry",
            integration: None,
            workspace_id: Some(ws),
            reason: None,
            before: None,
            after: Some(json!({ "deliveryId": id })),
        },
    )
    .await?;
    txn.commit().await?;
    crate::notifications::push_now(state, &[id]).await;
    Ok(())
}
