//! Every write the console makes, in one place: a thin adapter onto the control plane's
//! domain operations (`crate::control`, one transaction with the audit event each) and
//! the HTTP handlers' own validation (`routes::integrations`), so the console gets the
//! API's validation, messages, scoping, role checks and audit events, and has no
//! second implementation of any control action.

use std::time::Duration;

use entity::ConnectorKind;
use sea_orm::TransactionTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use syncfleet_worker::connectors::{self, ConnectorEnv, FetchContext};
use syncfleet_worker::db as q;
use syncfleet_worker::protocol::finish::bounded_wait;
use syncfleet_worker::ratelimit;

use super::Session;
use crate::control::{self, Audit, settings::NewSettings};
use crate::error::ApiError;
use crate::routes::integrations::{
    self as api, CreateIntegration, SyncSettings, UpdateIntegration, reason as checked_reason,
    trigger_result,
};
use crate::state::AppState;
use crate::views::{IntegrationView, TriggerResult};

/// `POST /api/integrations`.
pub async fn create(
    state: &AppState,
    s: &Session,
    body: CreateIntegration,
) -> Result<IntegrationView, ApiError> {
    s.caller.require_admin()?;
    let v = api::create_integration(state, &s.caller, body).await?;
    state.live.changed(v.id);
    Ok(v)
}

/// `PATCH /api/integrations/{id}`.
pub async fn update(
    state: &AppState,
    s: &Session,
    id: Uuid,
    body: UpdateIntegration,
) -> Result<IntegrationView, ApiError> {
    s.caller.require_admin()?;
    let v = api::update_integration(state, &s.caller, id, body).await?;
    state.live.changed(id);
    Ok(v)
}

/// `PATCH /api/integrations/{id}/sync-settings`.
pub async fn settings(
    state: &AppState,
    s: &Session,
    id: Uuid,
    body: SyncSettings,
) -> Result<IntegrationView, ApiError> {
    s.caller.require_admin()?;
    let v = api::change_sync_settings(state, &s.caller, id, body).await?;
    state.live.changed(id);
    Ok(v)
}

/// `POST /api/integrations/{id}/pause` and `…/resume` (resume also re-enables a
/// disabled integration).
async fn set_enabled(
    state: &AppState,
    s: &Session,
    id: Uuid,
    on: bool,
    reason: Option<String>,
) -> Result<IntegrationView, ApiError> {
    s.caller.require_admin()?;
    let why = checked_reason(reason)?;
    let action = if on {
        "integration.resume"
    } else {
        "integration.pause"
    };
    let m = control::settings::apply(state, &s.caller, id, NewSettings::enabled(on), action, why)
        .await?;
    state.live.changed(id);
    Ok(m.into())
}

pub async fn pause(
    state: &AppState,
    s: &Session,
    id: Uuid,
    reason: Option<String>,
) -> Result<IntegrationView, ApiError> {
    set_enabled(state, s, id, false, reason).await
}

pub async fn resume(
    state: &AppState,
    s: &Session,
    id: Uuid,
    reason: Option<String>,
) -> Result<IntegrationView, ApiError> {
    set_enabled(state, s, id, true, reason).await
}

/// `POST /api/integrations/{id}/sync` without `force`.
pub async fn sync_now(state: &AppState, s: &Session, id: Uuid) -> Result<TriggerResult, ApiError> {
    s.caller.require_admin()?;
    let t = control::runs::sync_now(state, &s.caller, id, false, None).await?;
    state.live.changed(id);
    trigger_result(state, t).await
}

/// `DELETE /api/integrations/{id}`.
pub async fn delete(state: &AppState, s: &Session, id: Uuid) -> Result<(), ApiError> {
    s.caller.require_admin()?;
    control::integration::delete(state, &s.caller, id, None).await
}

/// `POST /api/sync/retry/{logId}`.
pub async fn retry(state: &AppState, s: &Session, log_id: Uuid) -> Result<TriggerResult, ApiError> {
    s.caller.require_admin()?;
    let t = control::runs::retry(state, &s.caller, log_id, None).await?;
    let r = trigger_result(state, t).await?;
    state.live.changed(r.run.integration_id);
    Ok(r)
}

/// What a bulk action did.
#[derive(Debug, Default)]
pub struct Bulk {
    pub done: usize,
    pub failed: usize,
}

/// `POST /api/sync/retry/{logId}` for the latest failed run of every failing
/// integration of the caller's workspace (at most 500 per call).
pub async fn retry_all_failed(state: &AppState, s: &Session) -> Result<Bulk, ApiError> {
    s.caller.require_admin()?;
    let (scope, values) = scope(s);
    let rows = q::query(
        &state.db,
        format!(
            "SELECT (SELECT l.id FROM run_history l WHERE l.integration_id = i.id AND l.status = 'FAILED' \
               ORDER BY l.id DESC LIMIT 1) AS log_id \
             FROM integrations i WHERE i.health IN ('degraded', 'at_risk', 'disabled'){scope} \
             ORDER BY i.last_sync_at DESC LIMIT 500"
        ),
        values,
    )
    .await?;
    let mut out = Bulk::default();
    for r in rows {
        let Some(log_id) = r.try_get::<Option<Uuid>>("", "log_id")? else {
            continue;
        };
        match retry(state, s, log_id).await {
            Ok(_) => out.done += 1,
            Err(ApiError::Forbidden) => return Err(ApiError::Forbidden),
            Err(e) => {
                tracing::warn!(error = %e, run = %log_id, "console retry-all: one retry failed");
                out.failed += 1;
            }
        }
    }
    Ok(out)
}

/// The audit action that clears an integration from the Failures page until it
/// fails again.
pub const ACKNOWLEDGE: &str = "failure.acknowledge";

/// Clears (acknowledges) an integration's failure: an audit event by the caller; the
/// Failures page hides integrations acknowledged since their last run.
pub async fn acknowledge(
    state: &AppState,
    s: &Session,
    id: Uuid,
    reason: Option<String>,
) -> Result<(), ApiError> {
    s.caller.require_admin()?;
    let why = checked_reason(reason)?;
    // A control action like the others: one transaction with its audit event.
    let txn = state.db.begin().await?;
    let m = control::lock(&txn, &s.caller, id).await?;
    control::audit(
        &txn,
        &s.caller,
        Audit {
            action: ACKNOWLEDGE,
            integration: Some(&m),
            workspace_id: None,
            reason: why,
            before: None,
            after: Some(json!({ "health": m.health, "lastError": m.last_error })),
        },
    )
    .await?;
    txn.commit().await?;
    state.live.changed(id);
    Ok(())
}

/// The outcome of a test fetch.
pub enum Tested {
    Fetched {
        count: usize,
        sample: Vec<(String, Value)>,
    },
    Failed {
        class: String,
        message: String,
    },
    /// Not fetched: the provider's limits hold it back (busy, rate spent, or paused).
    Deferred {
        message: String,
    },
}

/// How long a test fetch may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for its provider's slot and first token before it gives up.
const TEST_LIMIT_WAIT: Duration = Duration::from_secs(5);

/// Test connection: validates the config exactly as a create would (the connector's
/// field errors, the SSRF guard), then fetches once and stores nothing. `existing`
/// is the integration being edited: its stored secrets stand in for masked ones.
pub async fn test_connection(
    state: &AppState,
    s: &Session,
    kind: ConnectorKind,
    config: Value,
    existing: Option<Uuid>,
) -> Result<Tested, ApiError> {
    s.caller.require_admin()?;
    let (id, config) = match existing {
        Some(id) => {
            let m = crate::routes::common::load(state, &s.caller, id).await?;
            (m.id, api::unmask(state, m.kind, m.id, config, &m.config))
        }
        None => (Uuid::nil(), config),
    };
    if let Err(errs) = connectors::validate(kind, &config) {
        return Err(ApiError::Validation(
            errs.into_iter()
                .map(|e| crate::error::FieldProblem {
                    field: e.field,
                    message: e.message,
                })
                .collect(),
        ));
    }
    // The SSRF check of a save; the connector's own resolver checks again at fetch.
    api::protect_config(state, kind, id, config.clone(), None).await?;
    let env = ConnectorEnv {
        net: state.config.net.clone(),
    };
    let connector = connectors::build(kind, &config, &env).map_err(|errs| {
        ApiError::Validation(
            errs.into_iter()
                .map(|e| crate::error::FieldProblem {
                    field: e.field,
                    message: e.message,
                })
                .collect(),
        )
    })?;
    // Under the provider's fleet-wide limits like any run: a test must not spend a quota
    // the fleet is pacing, nor add a fetch past a concurrency cap.
    let provider = ratelimit::provider_key(kind, &config, &connector.urls());
    let admitted = state
        .providers
        .admit(
            kind,
            &provider,
            state.config.protocol.lease,
            TEST_LIMIT_WAIT,
            state.metrics.rate_limit_waits.clone(),
        )
        .await;
    let admission = match admitted {
        Ok(a) => a,
        Err(d) => {
            return Ok(Tested::Deferred {
                message: d.message().to_owned(),
            });
        }
    };
    let ctx = FetchContext {
        integration_id: id,
        run_id: Uuid::now_v7(),
        attempt: 1,
        previous_runs: 0,
        watermark: None,
        gate: Some(admission.gate.clone()),
    };
    let fetched = tokio::time::timeout(TEST_TIMEOUT, connector.fetch(&ctx)).await;
    // A 429 pauses the provider for the whole fleet, as a run's would.
    if let Ok(Err(e)) = &fetched
        && e.class == entity::ErrorClass::RateLimited
        && let Err(err) = state
            .providers
            .pause(&provider, bounded_wait(e.retry_after))
            .await
    {
        tracing::warn!(error = %err, "could not pause the provider fleet-wide");
    }
    drop(admission);
    Ok(match fetched {
        Ok(Ok(fetched)) => Tested::Fetched {
            count: fetched.records.len(),
            sample: fetched
                .records
                .iter()
                .take(5)
                .map(|r| {
                    (
                        r.external_id.clone(),
                        r.data.to_value().unwrap_or(Value::Null),
                    )
                })
                .collect(),
        },
        Ok(Err(e)) => Tested::Failed {
            class: e.class.as_str().to_owned(),
            message: e.message,
        },
        Err(_) => Tested::Failed {
            class: "timeout".into(),
            message: format!("no answer within {} s", TEST_TIMEOUT.as_secs()),
        },
    })
}

/// `AND i.workspace_id = $1` for a workspace key (the API's scoping).
pub fn scope(s: &Session) -> (String, Vec<sea_orm::Value>) {
    match s.caller.workspace_id {
        Some(ws) => (" AND i.workspace_id = $1".into(), vec![ws.into()]),
        None => (String::new(), Vec::new()),
    }
}

/// `POST /api/notifications/endpoints`: the endpoint's row and its secret (shown once).
pub async fn endpoint_create(
    state: &AppState,
    s: &Session,
    workspace: Uuid,
    fields: control::notifications::EndpointFields,
) -> Result<(sea_orm::QueryResult, String), ApiError> {
    s.caller.require_admin()?;
    control::notifications::create(state, &s.caller, workspace, fields, None).await
}

/// `PATCH /api/notifications/endpoints/{id}`.
pub async fn endpoint_update(
    state: &AppState,
    s: &Session,
    id: Uuid,
    fields: control::notifications::EndpointFields,
) -> Result<sea_orm::QueryResult, ApiError> {
    s.caller.require_admin()?;
    control::notifications::update(state, &s.caller, id, fields).await
}

/// `POST /api/notifications/endpoints/{id}/rotate-secret`: the new secret.
pub async fn endpoint_rotate(
    state: &AppState,
    s: &Session,
    id: Uuid,
    grace_secs: i64,
) -> Result<String, ApiError> {
    s.caller.require_admin()?;
    control::notifications::rotate(state, &s.caller, id, grace_secs).await
}

/// `POST /api/notifications/endpoints/{id}/test`.
pub async fn endpoint_test(state: &AppState, s: &Session, id: Uuid) -> Result<(), ApiError> {
    s.caller.require_admin()?;
    control::notifications::test(state, &s.caller, id)
        .await
        .map(|_| ())
}

/// `DELETE /api/notifications/endpoints/{id}`.
pub async fn endpoint_delete(state: &AppState, s: &Session, id: Uuid) -> Result<(), ApiError> {
    s.caller.require_admin()?;
    control::notifications::delete(state, &s.caller, id).await
}

/// `POST /api/notifications/deliveries/{id}/retry`.
pub async fn delivery_retry(state: &AppState, s: &Session, id: Uuid) -> Result<(), ApiError> {
    s.caller.require_admin()?;
    control::notifications::retry(state, &s.caller, id).await
}

/// `POST /api/sync/outbox/{id}/retry`.
pub async fn outbox_retry(
    state: &AppState,
    s: &Session,
    id: Uuid,
) -> Result<control::outbox::Retried, ApiError> {
    s.caller.require_admin()?;
    let r = control::outbox::retry(state, &s.caller, id).await?;
    state.live.changed(r.integration_id);
    Ok(r)
}

/// `POST /api/sync/conflicts/{id}/resolve` (`integration` is the conflict's, for the
/// live feed).
pub async fn conflict_resolve(
    state: &AppState,
    s: &Session,
    id: Uuid,
    integration: Uuid,
    resolution: syncfleet_worker::conflicts::Resolution,
) -> Result<(), ApiError> {
    s.caller.require_admin()?;
    control::conflicts::resolve(state, &s.caller, id, resolution, None).await?;
    state.live.changed(integration);
    Ok(())
}
