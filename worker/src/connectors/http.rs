//! What every HTTP-based connector shares: sending through the SSRF-guarded client
//! under the provider's per-request rate limit, mapping transport failures and status codes to error classes, honouring the
//! provider's `Retry-After`, bounding the response size, and keeping secrets and query
//! strings out of messages.

use std::time::Duration;

use entity::ErrorClass;
use url::Url;

use super::{FetchError, FieldError};
use crate::ratelimit::RequestGate;

/// The largest `maxResponseBytes` any connector accepts (256 MiB).
pub const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// Sends a request once `gate` (the run's provider rate limit) lets it go, and returns
/// the body, at most `max_bytes` long.
///
/// What the source announces is never trusted with memory: a `Content-Length` above the
/// limit fails at once, and the body is read chunk by chunk into a buffer that grows
/// with the bytes actually received and never past `max_bytes` (an allocation that
/// fails ends the run instead of the process).
pub async fn send(
    gate: Option<&RequestGate>,
    req: reqwest::RequestBuilder,
    url: &Url,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    if let Some(gate) = gate {
        gate.admit().await?;
    }
    let mut resp = req.send().await.map_err(|e| transport_error(&e, url))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(status_error(status, resp.headers(), url));
    }
    let too_big = || {
        FetchError::new(
            ErrorClass::SourceData,
            format!(
                "response from {} exceeds the limit of {max_bytes} bytes",
                redact(url)
            ),
        )
    };
    if let Some(announced) = resp.content_length()
        && announced > max_bytes
    {
        return Err(FetchError::new(
            ErrorClass::SourceData,
            format!(
                "response from {} exceeds the limit of {max_bytes} bytes (it announces {announced})",
                redact(url)
            ),
        ));
    }
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(&e, url))? {
        let needed = body.len().saturating_add(chunk.len());
        if needed > limit {
            return Err(too_big());
        }
        if needed > body.capacity() {
            // Geometric growth (amortised copies; large blocks grow in place), capped at
            // the limit.
            let target = body.capacity().saturating_mul(2).max(needed).min(limit);
            body.try_reserve_exact(target - body.len()).map_err(|_| {
                FetchError::new(
                    ErrorClass::Internal,
                    format!("out of memory reading {needed} bytes from {}", redact(url)),
                )
            })?;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Checks an optional count or size option against its bounds.
pub fn check_range(
    field: &str,
    value: Option<u64>,
    range: std::ops::RangeInclusive<u64>,
    errors: &mut Vec<FieldError>,
) {
    if value.is_some_and(|v| !range.contains(&v)) {
        errors.push(FieldError::new(
            field,
            format!("must be from {} to {}", range.start(), range.end()),
        ));
    }
}

/// Checks `maxResponseBytes` (1 to [`MAX_RESPONSE_BYTES`]).
pub fn check_max_bytes(value: Option<u64>, errors: &mut Vec<FieldError>) {
    check_range(
        "config.maxResponseBytes",
        value,
        1..=MAX_RESPONSE_BYTES,
        errors,
    );
}

/// The URL without its query string (which may carry cursors or parameters a user
/// considers sensitive) for messages.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    u.to_string()
}

pub fn transport_error(e: &reqwest::Error, url: &Url) -> FetchError {
    if e.is_timeout() {
        return FetchError::new(ErrorClass::Timeout, format!("{} timed out", redact(url)));
    }
    // A refusal by the SSRF guard surfaces as a resolver / redirect error.
    let text = format!("{e:#}");
    let chain = std::iter::successors(std::error::Error::source(e), |s| s.source())
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    if chain.contains("is refused") || text.contains("is refused") {
        return FetchError::new(ErrorClass::Config, format!("{}: {chain}", redact(url)));
    }
    FetchError::new(
        ErrorClass::Transient,
        format!(
            "request to {} failed: {}",
            redact(url),
            if chain.is_empty() {
                e.to_string()
            } else {
                chain
            }
        ),
    )
}

/// The provider's requested wait: `Retry-After` (seconds or HTTP date) or
/// `X-RateLimit-Reset` (epoch seconds or a delta).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let now = chrono::Utc::now();
    if let Some(v) = headers.get("retry-after").and_then(|v| v.to_str().ok()) {
        if let Ok(secs) = v.trim().parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v.trim()) {
            return Some(
                (at.with_timezone(&chrono::Utc) - now)
                    .to_std()
                    .unwrap_or(Duration::ZERO),
            );
        }
    }
    let reset = headers
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())?
        .trim()
        .parse::<i64>()
        .ok()?;
    // Large values are epoch seconds, small ones a delta.
    if reset > 1_000_000_000 {
        Some(Duration::from_secs(
            u64::try_from(reset - now.timestamp()).unwrap_or(0),
        ))
    } else {
        Some(Duration::from_secs(u64::try_from(reset).unwrap_or(0)))
    }
}

pub fn status_error(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    url: &Url,
) -> FetchError {
    let at = redact(url);
    match status.as_u16() {
        401 | 403 => FetchError::new(
            ErrorClass::Auth,
            format!("{at} refused the credentials (HTTP {status})"),
        ),
        429 => FetchError {
            class: ErrorClass::RateLimited,
            message: format!("{at} is rate limiting (HTTP 429)"),
            retry_after: retry_after(headers),
        },
        408 | 504 => FetchError::new(
            ErrorClass::Timeout,
            format!("{at} timed out (HTTP {status})"),
        ),
        500..=599 => FetchError::new(
            ErrorClass::Transient,
            format!("{at} failed (HTTP {status})"),
        ),
        _ => FetchError::new(ErrorClass::Config, format!("{at} answered HTTP {status}")),
    }
}

/// `url` as an http(s) URL without credentials, or the field error saying why not.
/// `credentials` says where credentials go instead (a URL is neither sealed nor masked).
pub fn http_url(
    field: &str,
    raw: &str,
    credentials: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Url> {
    match Url::parse(raw) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            // Never quote the URL: the message would carry the password.
            errors.push(FieldError::new(
                field,
                format!("must not contain credentials (user:password@); {credentials}"),
            ));
            None
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        Ok(u) => {
            errors.push(FieldError::new(
                field,
                format!("scheme `{}` is not http or https", u.scheme()),
            ));
            None
        }
        Err(e) => {
            errors.push(FieldError::new(field, format!("not a URL ({e})")));
            None
        }
    }
}

pub fn check_timeout(timeout_ms: Option<u64>, errors: &mut Vec<FieldError>) {
    if timeout_ms.is_some_and(|t| !(100..=600_000).contains(&t)) {
        errors.push(FieldError::new(
            "config.timeoutMs",
            "must be from 100 to 600000",
        ));
    }
}
