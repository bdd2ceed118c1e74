//! One delivery attempt: what it sends, how its answer is classified, and its fenced
//! finish (docs/architecture.md §4.16). The claim, lease, release and recovery are the
//! leased-work mechanism's ([`crate::work`]); this file holds only the delivery's rules.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait, Value};
use serde_json::Value as Json;
use uuid::Uuid;

use super::DELIVERIES;
use super::sign;
use crate::config::{NotifyConfig, ms};
use crate::db::{self, Dialect};
use crate::protocol::policy;
use crate::secrets::SecretBox;
use crate::work::{self, Fence, Guard};

/// Longest error text stored for an attempt.
const MAX_ERROR: usize = 500;
/// Longest wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Everything one attempt needs, read after its claim.
#[derive(Debug, Clone)]
pub struct Sending {
    pub event_id: Uuid,
    pub event_type: String,
    pub body: String,
    pub url: String,
    pub format: String,
    /// The current secret, then the previous one while its grace lasts.
    pub secrets: Vec<String>,
    pub endpoint_enabled: bool,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Delivered { status: u16 },
    /// 5xx, 408, 429, a timeout or a connection error: try again (after `after` if the
    /// receiver said when).
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    /// Any other answer, or nothing to send to: the delivery ends failed.
    Failed { status: Option<u16>, error: String },
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } => Some(*status),
            Self::Retry { status, .. } | Self::Failed { status, .. } => *status,
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Self::Delivered { .. } => None,
            Self::Retry { error, .. } | Self::Failed { error, .. } => Some(error),
        }
    }
}

/// Reads what delivery `id` sends; `None` = the delivery is gone.
pub async fn load(
    db: &impl ConnectionTrait,
    secrets: Option<&SecretBox>,
    id: Uuid,
) -> Result<Option<Sending>, DbErr> {
    let now = Dialect::of(db).now();
    let rows = db::query(
        db,
        format!(
            "SELECT d.attempts, e.id AS event_id, e.event_type, e.body, n.id AS endpoint_id, n.url, n.format, \
               n.enabled, n.secret, CASE WHEN n.previous_secret_until > {now} THEN n.previous_secret END AS previous \
             FROM notification_deliveries d JOIN events e ON e.id = d.event_id \
             JOIN notification_endpoints n ON n.id = d.endpoint_id WHERE d.id = $1"
        ),
        [id.into()],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let endpoint: Uuid = r.try_get("", "endpoint_id")?;
    let mut keys = Vec::with_capacity(2);
    for col in ["secret", "previous"] {
        if let Some(s) = r.try_get::<Option<String>>("", col)? {
            keys.push(open_secret(secrets, endpoint, &s)?);
        }
    }
    Ok(Some(Sending {
        event_id: r.try_get("", "event_id")?,
        event_type: r.try_get("", "event_type")?,
        body: r.try_get("", "body")?,
        url: r.try_get("", "url")?,
        format: r.try_get("", "format")?,
        secrets: keys,
        endpoint_enabled: r.try_get("", "enabled")?,
        attempts: r.try_get("", "attempts")?,
    }))
}

/// An endpoint secret as stored: sealed when the deployment has a secret key.
pub fn seal_secret(secrets: Option<&SecretBox>, endpoint: Uuid, secret: &str) -> String {
    match secrets {
        Some(b) => b
            .seal(endpoint, "secret", &Json::String(secret.to_owned()))
            .to_string(),
        None => secret.to_owned(),
    }
}

/// Re-seals every notification endpoint's secret (and the rotated-out one it still
/// signs with) from `old` to `new` (`rotate-key`), in the caller's transaction; returns
/// how many endpoints were rewritten. A secret stored unsealed (no key when it was set)
/// is sealed now.
pub async fn reseal(
    db: &impl ConnectionTrait,
    old: &SecretBox,
    new: &SecretBox,
) -> Result<u64, DbErr> {
    let rows = db::query(
        db,
        "SELECT id, secret, previous_secret FROM notification_endpoints",
        [],
    )
    .await?;
    for r in &rows {
        let id: Uuid = r.try_get("", "id")?;
        let secret = open_secret(Some(old), id, &r.try_get::<String>("", "secret")?)?;
        let previous = r
            .try_get::<Option<String>>("", "previous_secret")?
            .map(|p| open_secret(Some(old), id, &p))
            .transpose()?;
        db::exec(
            db,
            "UPDATE notification_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1",
            [
                id.into(),
                seal_secret(Some(new), id, &secret).into(),
                previous.map(|p| seal_secret(Some(new), id, &p)).into(),
            ],
        )
        .await?;
    }
    Ok(rows.len() as u64)
}

fn open_secret(secrets: Option<&SecretBox>, endpoint: Uuid, stored: &str) -> Result<String, DbErr> {
    if stored.starts_with(sign::PREFIX) {
        return Ok(stored.to_owned());
    }
    let value: Json = serde_json::from_str(stored)
        .map_err(|_| DbErr::Custom("an endpoint secret is neither whsec_ nor sealed".into()))?;
    let Some(b) = secrets else {
        return Err(DbErr::Custom(
            "an endpoint secret is sealed but SYNCFLEET_SECRET_KEY is not set".into(),
        ));
    };
    match b.open(endpoint, "secret", &value) {
        Ok(Json::String(s)) => Ok(s),
        Ok(_) => Err(DbErr::Custom(
            "an endpoint secret opened to a non-string".into(),
        )),
        Err(e) => Err(DbErr::Custom(format!("an endpoint secret: {e}"))),
    }
}

/// The body an endpoint of `format` receives for the event body `body`.
pub fn render(format: &str, body: &str) -> String {
    if format != "slack" {
        return body.to_owned();
    }
    let ev: Json = serde_json::from_str(body).unwrap_or(Json::Null);
    let d = &ev["data"];
    let name = d["integrationName"].as_str().unwrap_or("an integration");
    let what = match ev["type"].as_str().unwrap_or("") {
        "sync.failed" => format!(":x: A sync of *{name}* failed"),
        "integration.at_risk" => format!(
            ":warning: *{name}* is one failure away from being disabled ({}/{} failures)",
            d["retryCount"], d["maxRetries"]
        ),
        "integration.disabled" => format!(
            ":no_entry: *{name}* was disabled ({})",
            d["reason"].as_str().unwrap_or("repeated failures")
        ),
        "integration.stale" => format!(
            ":hourglass: *{name}* is stale: last synced {} s ago",
            d["stalenessSeconds"]
        ),
        "integration.recovered" => format!(":white_check_mark: *{name}* recovered"),
        "integration.paused" => format!(":double_vertical_bar: *{name}* was paused"),
        "integration.resumed" => format!(":arrow_forward: *{name}* was resumed"),
        "test" => ":wave: A test notification from syncfleet".to_owned(),
        other => format!("syncfleet event {other}"),
    };
    let mut text = what;
    if let Some(e) = d["error"].as_str() {
        text.push_str(&format!("\n> {e}"));
    }
    if let Some(u) = d["consoleUrl"].as_str() {
        text.push_str(&format!("\n<{u}|Open in the console>"));
    }
    serde_json::json!({ "text": text }).to_string()
}

/// Sends one attempt and classifies the answer. `now` is the attempt's Unix time (the
/// `webhook-timestamp`; the `webhook-id` is the event id, the same on every attempt).
pub async fn send(client: &reqwest::Client, s: &Sending, now: i64) -> (Answer, i64) {
    let body = render(&s.format, &s.body);
    let id = s.event_id.to_string();
    let keys: Vec<&str> = s.secrets.iter().map(String::as_str).collect();
    let signature = match sign::header(&keys, &id, now, body.as_bytes()) {
        Ok(h) => h,
        Err(e) => {
            let error = format!("cannot sign: {e}");
            return (
                Answer::Failed {
                    status: None,
                    error,
                },
                0,
            );
        }
    };
    let started = Instant::now();
    let sent = client
        .post(&s.url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("syncfleet/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            // Drain a little of the body so the connection can be reused, bounded.
            let text = tokio::time::timeout(Duration::from_secs(2), resp.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            classify(status, retry_after, &text)
        }
        Err(e) if e.is_timeout() => Answer::Retry {
            status: None,
            error: "timed out".into(),
            after: None,
        },
        Err(e) => {
            // The SSRF guard refuses inside the client (resolver, redirects): that is
            // final, like a 4xx, not a transient connection error.
            let text = error_chain(&e);
            if text.contains("SYNCFLEET_ALLOW_PRIVATE_NETWORKS") {
                Answer::Failed {
                    status: None,
                    error: cut(text),
                }
            } else {
                Answer::Retry {
                    status: None,
                    error: cut(text),
                    after: None,
                }
            }
        }
    };
    let latency = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    (answer, latency)
}

/// The delivery rules: 2xx delivered; 408, 429 and 5xx retried (429 and 503 after
/// their `Retry-After`); any other status ends the delivery failed.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Answer {
    let excerpt = || {
        let b = body.trim();
        if b.is_empty() {
            format!("HTTP {status}")
        } else {
            cut(format!("HTTP {status}: {b}"))
        }
    };
    match status {
        200..=299 => Answer::Delivered { status },
        408 | 429 | 500..=599 => Answer::Retry {
            status: Some(status),
            error: excerpt(),
            after: retry_after,
        },
        _ => Answer::Failed {
            status: Some(status),
            error: excerpt(),
        },
    }
}

/// `Retry-After` as seconds (an HTTP date is rare from webhook receivers and ignored).
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_ERROR {
        let mut at = MAX_ERROR;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
    s
}

/// What a finish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Delivered,
    /// Deferred for another attempt after this long.
    Retrying(Duration),
    Failed {
        /// The endpoint was disabled by this failure.
        endpoint_disabled: bool,
    },
    /// The fence moved on: this claim wrote nothing.
    Stale,
}

/// Writes an attempt's outcome under its fence, in one transaction with the endpoint's
/// row locked first (the lock order: subject, then live row). A retry that would start
/// past the retry window ends the delivery failed instead.
pub async fn finish<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    cfg: &NotifyConfig,
    f: Fence,
    answer: Answer,
    latency_ms: i64,
    guard: Guard,
) -> Result<Finished, DbErr> {
    let d = Dialect::of(db);
    let now = d.now();
    let txn = db.begin().await?;
    // 1. The endpoint (the subject) first.
    let lock = match (d, guard) {
        (Dialect::Sqlite, _) => "UPDATE notification_endpoints SET consecutive_failures = consecutive_failures \
             WHERE id = $1 RETURNING enabled, consecutive_failures"
            .to_owned(),
        (Dialect::Postgres, Guard::Owner) => "SELECT enabled, consecutive_failures FROM notification_endpoints WHERE id = $1 FOR UPDATE".into(),
        (Dialect::Postgres, Guard::LeaseExpired) => "SELECT enabled, consecutive_failures FROM notification_endpoints WHERE id = $1 FOR UPDATE SKIP LOCKED".into(),
    };
    let endpoint = db::query(&txn, lock, [f.subject.into()]).await?;
    let Some(ep) = endpoint.first() else {
        // The endpoint was deleted (its deliveries with it) or is held by another finish.
        txn.rollback().await?;
        return Ok(Finished::Stale);
    };
    let enabled: bool = ep.try_get("", "enabled")?;
    let failures: i32 = ep.try_get("", "consecutive_failures")?;
    let rows = db::query(
        &txn,
        format!(
            "SELECT attempts, {age} AS age_ms FROM notification_deliveries WHERE id = $1",
            age = d.ms_since("created_at")
        ),
        [f.id.into()],
    )
    .await?;
    let Some(dr) = rows.first() else {
        txn.rollback().await?;
        return Ok(Finished::Stale);
    };
    let attempts: i32 = dr.try_get::<i32>("", "attempts")? + 1;
    let age = Duration::from_millis(u64::try_from(dr.try_get::<i64>("", "age_ms")?).unwrap_or(0));

    // 2. What follows: a retry inside the window, or an end.
    let answer = match answer {
        Answer::Retry {
            status,
            error,
            after,
        } => {
            let wait = after.unwrap_or_else(|| policy::backoff(cfg.backoff, f.id, attempts));
            if age + wait > cfg.retry_window {
                Answer::Failed {
                    status,
                    error: cut(format!(
                        "{error} (retry window of {} s exhausted after {attempts} attempt(s))",
                        cfg.retry_window.as_secs()
                    )),
                }
            } else {
                Answer::Retry {
                    status,
                    error,
                    after: Some(wait),
                }
            }
        }
        other => other,
    };
    // 3. The fence check: a retry defers the live row, an end deletes it.
    let held = match &answer {
        Answer::Retry { after, .. } => {
            work::defer(&txn, &DELIVERIES, f, ms(after.unwrap_or_default())).await?
        }
        _ => !work::take(&txn, &DELIVERIES, &[f], guard).await?.is_empty(),
    };
    if !held {
        txn.rollback().await?;
        return Ok(Finished::Stale);
    }
    let (status, next, finished): (&str, Option<i64>, bool) = match &answer {
        Answer::Delivered { .. } => ("succeeded", None, true),
        Answer::Retry { after, .. } => ("pending", Some(ms(after.unwrap_or_default())), false),
        Answer::Failed { .. } => ("failed", None, true),
    };
    db::exec(
        &txn,
        format!(
            "UPDATE notification_deliveries SET status = $2, attempts = $3, last_status_code = $4, \
               last_latency_ms = $5, last_error = $6, \
               next_attempt_at = CASE WHEN $7 IS NULL THEN NULL ELSE {next} END, \
               finished_at = CASE WHEN $8 THEN {now} ELSE NULL END WHERE id = $1",
            next = d.now_plus_ms("$7"),
        ),
        [
            f.id.into(),
            status.into(),
            attempts.into(),
            answer.status().map(i32::from).into(),
            latency_ms.into(),
            answer.error().map(str::to_owned).into(),
            next.into(),
            finished.into(),
        ],
    )
    .await?;
    db::exec(
        &txn,
        format!(
            "INSERT INTO delivery_attempts (id, delivery_id, attempt, started_at, finished_at, status_code, latency_ms, error, outcome) \
             VALUES ($1, $2, $3, {started}, {now}, $4, $5, $6, $7)",
            started = d.now_plus_ms("(-1 * $5)"),
        ),
        [
            Uuid::now_v7().into(),
            f.id.into(),
            attempts.into(),
            answer.status().map(i32::from).into(),
            latency_ms.into(),
            answer.error().map(str::to_owned).into(),
            match &answer {
                Answer::Delivered { .. } => "delivered",
                Answer::Retry { .. } => "retry",
                Answer::Failed { .. } => "failed",
            }
            .into(),
        ],
    )
    .await?;
    // 4. The endpoint's failure streak: a delivered one ends it; a failed delivery (an
    //    end, not an attempt) adds to it, and enough of them disable the endpoint.
    let mut endpoint_disabled = false;
    match &answer {
        Answer::Delivered { .. } if failures > 0 => {
            db::exec(
                &txn,
                "UPDATE notification_endpoints SET consecutive_failures = 0 WHERE id = $1",
                [f.subject.into()],
            )
            .await?;
        }
        Answer::Failed { error, .. } if enabled => {
            let n = failures + 1;
            endpoint_disabled = n >= cfg.disable_after;
            let reason = format!("{n} consecutive failed deliveries; last: {error}");
            db::exec(
                &txn,
                format!(
                    "UPDATE notification_endpoints SET consecutive_failures = $2, \
                       enabled = CASE WHEN $3 THEN false ELSE enabled END, \
                       disabled_reason = CASE WHEN $3 THEN $4 ELSE disabled_reason END, \
                       updated_at = CASE WHEN $3 THEN {now} ELSE updated_at END WHERE id = $1"
                ),
                [
                    f.subject.into(),
                    n.into(),
                    endpoint_disabled.into(),
                    Value::from(reason.clone()),
                ],
            )
            .await?;
            if endpoint_disabled {
                let ws = db::query(
                    &txn,
                    "SELECT workspace_id, url FROM notification_endpoints WHERE id = $1",
                    [f.subject.into()],
                )
                .await?;
                let workspace: Option<Uuid> = ws
                    .first()
                    .map(|r| r.try_get("", "workspace_id"))
                    .transpose()?;
                crate::audit::record(
                    &txn,
                    crate::audit::Event {
                        integration_id: None,
                        workspace_id: workspace,
                        actor: "system".into(),
                        actor_name: None,
                        action: "notification_endpoint.disable".into(),
                        reason: Some(reason),
                        before: Some(
                            serde_json::json!({ "endpointId": f.subject, "enabled": true }),
                        ),
                        after: Some(
                            serde_json::json!({ "endpointId": f.subject, "enabled": false }),
                        ),
                    },
                )
                .await?;
            }
        }
        _ => {}
    }
    txn.commit().await?;
    Ok(match answer {
        Answer::Delivered { .. } => Finished::Delivered,
        Answer::Retry { after, .. } => Finished::Retrying(after.unwrap_or_default()),
        Answer::Failed { .. } => Finished::Failed { endpoint_disabled },
    })
}

/// The reaper's side: deliveries that lost their worker `max_claims` times running
/// alone end failed (quarantined), through the same fenced finish.
pub async fn quarantine<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    cfg: &NotifyConfig,
    max_claims: i32,
    limit: u64,
) -> Result<u64, DbErr> {
    let mut n = 0;
    for (f, claims) in work::poisoned(db, &DELIVERIES, max_claims, limit).await? {
        let answer = Answer::Failed {
            status: None,
            error: format!("delivery lost its worker {claims} time(s); quarantined"),
        };
        if finish(db, cfg, f, answer, 0, Guard::LeaseExpired).await? != Finished::Stale {
            n += 1;
        }
    }
    Ok(n)
}

/// Makes a finished delivery pending again (an operator's retry): a fresh retry window
/// from now and a live row due now. `false` when it is still pending.
pub async fn retry_by_hand(
    txn: &impl ConnectionTrait,
    id: Uuid,
    endpoint: Uuid,
) -> Result<bool, DbErr> {
    let d = Dialect::of(txn);
    let r = db::exec(
        txn,
        format!(
            "UPDATE notification_deliveries SET status = 'pending', created_at = {now}, finished_at = NULL, \
             next_attempt_at = NULL WHERE id = $1 AND status <> 'pending'",
            now = d.now()
        ),
        [id.into()],
    )
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    db::exec(
        txn,
        format!(
            "INSERT INTO live_deliveries (id, endpoint_id, status, due_at) VALUES ($1, $2, 'PENDING', {now})",
            now = d.now()
        ),
        [id.into(), endpoint.into()],
    )
    .await?;
    Ok(true)
}

/// The Unix time of a timestamp.
pub fn unix(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_rules_say() {
        assert_eq!(classify(200, None, ""), Answer::Delivered { status: 200 });
        assert_eq!(classify(204, None, ""), Answer::Delivered { status: 204 });
        for s in [408, 429, 500, 502, 503] {
            assert!(matches!(classify(s, None, ""), Answer::Retry { .. }), "{s}");
        }
        for s in [400, 401, 404, 410, 422, 301] {
            assert!(
                matches!(classify(s, None, ""), Answer::Failed { .. }),
                "{s}"
            );
        }
        let after = Some(Duration::from_secs(2));
        assert!(
            matches!(classify(429, after, ""), Answer::Retry { after: Some(a), .. } if a == Duration::from_secs(2))
        );
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn slack_gets_readable_text() {
        let body = serde_json::json!({
            "id": "e", "type": "integration.disabled", "timestamp": "t", "workspaceId": "w",
            "data": { "integrationName": "Sales", "reason": "max_retries", "error": "HTTP 500" }
        })
        .to_string();
        let out: Json = serde_json::from_str(&render("slack", &body)).unwrap_or_default();
        let text = out["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("*Sales* was disabled (max_retries)"),
            "{text}"
        );
        assert!(text.contains("HTTP 500"), "{text}");
        assert_eq!(render("standard", &body), body);
    }
}
