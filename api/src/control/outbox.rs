//! A failed push retried by hand (docs/architecture.md §4.17): the failed outbox entry
//! becomes the record's push again, in one transaction with its audit event. An entry
//! the record has moved on from (a newer change, or a conflict that settled the record)
//! is closed instead: a retry never pushes a stale change over a newer one.

use sea_orm::TransactionTrait;
use serde_json::json;
use uuid::Uuid;

use syncfleet_worker::db::{self as q, Dialect};

use super::{Audit, audit, lock};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The audit action of a hand retry.
pub const RETRY: &str = "outbox.retry";

/// What a hand retry did to the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStatus {
    /// Pending again: the record's next push.
    Pending,
    /// Closed (`superseded`): the record has moved on, nothing stale is pushed.
    Superseded,
}

impl RetryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Superseded => "superseded",
        }
    }
}

/// A hand retry's outcome.
#[derive(Debug, Clone)]
pub struct Retried {
    pub integration_id: Uuid,
    pub external_id: String,
    pub status: RetryStatus,
}

/// Why a retried entry was closed instead of pushed again.
const MOVED_ON: &str = "closed by a hand retry: the record has moved on since this change failed \
     (a newer change, or a conflict settled it), so it was not pushed again";

/// Retries failed outbox entry `id` of an integration the caller sees (admin checked by
/// the caller). Lock order as every record writer: the integration, the record, then
/// the entry.
pub async fn retry(state: &AppState, caller: &Caller, id: Uuid) -> Result<Retried, ApiError> {
    let not_found = |e: ApiError| match e {
        ApiError::NotFound(_) => ApiError::NotFound("outbox entry"),
        other => other,
    };
    let rows = q::query(
        &state.db,
        "SELECT integration_id, external_id FROM outbox WHERE id = $1",
        [id.into()],
    )
    .await?;
    let r = rows.first().ok_or(ApiError::NotFound("outbox entry"))?;
    let integration: Uuid = r.try_get("", "integration_id")?;
    let external_id: String = r.try_get("", "external_id")?;
    let d = Dialect::of(&state.db);
    let now = d.now();
    let row_lock = match d {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let txn = state.db.begin().await?;
    // Another workspace's entry is not found, like its integration.
    let m = lock(&txn, caller, integration).await.map_err(not_found)?;
    let record = q::query(
        &txn,
        format!(
            "SELECT sync_state FROM records WHERE integration_id = $1 AND external_id = $2{row_lock}"
        ),
        [integration.into(), external_id.clone().into()],
    )
    .await?;
    let record_state: Option<String> = record
        .first()
        .map(|r| r.try_get("", "sync_state"))
        .transpose()?;
    let entry = q::query(
        &txn,
        format!(
            "SELECT status, attempts, last_status_code, last_error FROM outbox WHERE id = $1{row_lock}"
        ),
        [id.into()],
    )
    .await?;
    let e = entry.first().ok_or(ApiError::NotFound("outbox entry"))?;
    let status: String = e.try_get("", "status")?;
    if status != "failed" {
        return Err(ApiError::Conflict(format!(
            "only a failed push can be retried; this one is {status}"
        )));
    }
    let before = json!({
        "status": status,
        "attempts": e.try_get::<i32>("", "attempts")?,
        "lastStatusCode": e.try_get::<Option<i32>>("", "last_status_code")?,
        "lastError": e.try_get::<Option<String>>("", "last_error")?,
    });
    match record_state.as_deref() {
        Some("conflict") => {
            return Err(ApiError::Conflict(
                "the record is held by an open conflict: resolve the conflict, and its resolution pushes the record's newest change".into(),
            ));
        }
        Some("pushing") => {
            return Err(ApiError::Conflict(
                "a push of this record is in flight; retry when it has ended".into(),
            ));
        }
        _ => {}
    }
    let newest: Option<Uuid> = q::query(
        &txn,
        "SELECT id FROM outbox WHERE integration_id = $1 AND external_id = $2 \
         ORDER BY record_version DESC, created_at DESC, id DESC LIMIT 1",
        [integration.into(), external_id.clone().into()],
    )
    .await?
    .first()
    .map(|r| r.try_get("", "id"))
    .transpose()?;
    // Current: the record's newest change, and the record still waits for the cloud.
    let current =
        newest == Some(id) && matches!(record_state.as_deref(), Some("failed" | "pending"));
    let done = if current {
        // A fresh start: the backoff counts this entry's attempts from zero again.
        q::exec(
            &txn,
            "UPDATE outbox SET status = 'pending', attempts = 0, finished_at = NULL WHERE id = $1",
            [id.into()],
        )
        .await?;
        q::exec(
            &txn,
            "UPDATE records SET sync_state = 'pending' WHERE integration_id = $1 AND external_id = $2",
            [integration.into(), external_id.clone().into()],
        )
        .await?;
        syncfleet_worker::push::enqueue(&txn, integration, &external_id, id).await?;
        RetryStatus::Pending
    } else {
        q::exec(
            &txn,
            format!(
                "UPDATE outbox SET status = 'superseded', finished_at = {now}, last_error = $2 WHERE id = $1"
            ),
            [id.into(), MOVED_ON.into()],
        )
        .await?;
        RetryStatus::Superseded
    };
    audit(
        &txn,
        caller,
        Audit {
            action: RETRY,
            integration: Some(&m),
            workspace_id: None,
            reason: None,
            before: Some(before),
            after: Some(json!({
                "outboxId": id,
                "externalId": &external_id,
                "status": done.as_str(),
            })),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Retried {
        integration_id: integration,
        external_id,
        status: done,
    })
}
