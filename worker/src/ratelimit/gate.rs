//! The rate limit of one run's requests.
//!
//! A paginated source (http_json, firestore) makes many requests in one run, so the
//! limit is taken per request, not per run: every request of a connector passes
//! [`RequestGate::admit`] (in `connectors::http::send`). The engine reserves the first
//! token before the fetch, while the run can still be deferred cheaply, so a
//! single-request run takes exactly one token, as does a connector that makes no
//! request at all (synthetic). A request waits in place for its token up to a bounded
//! budget; past that the run ends `rate_limited` (not a failure) and comes back when the
//! provider allows.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use entity::{ConnectorKind, ErrorClass};

use super::Limiter;
use crate::connectors::FetchError;

/// Draws one provider's tokens for the requests of one run.
#[derive(Clone)]
pub struct RequestGate {
    limiter: Limiter,
    kind: ConnectorKind,
    provider: String,
    /// Longest one request waits in place for its token.
    budget: Duration,
    /// A token taken by [`RequestGate::reserve`] and not yet used by a request.
    reserved: Arc<AtomicBool>,
    /// Counts every wait and deferral (`rate_limit_waits_total`).
    waits: prometheus::IntCounter,
}

impl fmt::Debug for RequestGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestGate")
            .field("provider", &self.provider)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RequestGate {
    pub fn new(
        limiter: Limiter,
        kind: ConnectorKind,
        provider: String,
        budget: Duration,
        waits: prometheus::IntCounter,
    ) -> Self {
        Self {
            limiter,
            kind,
            provider,
            budget,
            reserved: Arc::new(AtomicBool::new(false)),
            waits,
        }
    }

    /// Takes the token of the run's first request now, waiting at most `budget`; the
    /// first [`RequestGate::admit`] then uses it.
    pub async fn reserve(&self, budget: Duration) -> Result<(), FetchError> {
        self.draw(budget).await?;
        self.reserved.store(true, Ordering::Release);
        Ok(())
    }

    /// Lets one request go: the reserved token, or a new one within the budget; an
    /// error of class `rate_limited` (with the wait as `retry_after`) past it.
    pub async fn admit(&self) -> Result<(), FetchError> {
        if self.reserved.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.draw(self.budget).await
    }

    async fn draw(&self, budget: Duration) -> Result<(), FetchError> {
        let mut waited = Duration::ZERO;
        loop {
            match self.limiter.try_acquire(self.kind, &self.provider).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) if waited + wait <= budget => {
                    self.waits.inc();
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                Ok(Some(wait)) => {
                    self.waits.inc();
                    return Err(FetchError {
                        class: ErrorClass::RateLimited,
                        message: format!(
                            "provider rate limit: next request allowed in {} ms",
                            wait.as_millis()
                        ),
                        retry_after: Some(wait),
                    });
                }
                // The limiter's store is unreachable: run rather than stall the fleet.
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable; running without it");
                    return Ok(());
                }
            }
        }
    }
}
