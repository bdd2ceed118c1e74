//! Fault injection for the chaos battery (`chaos` in the tests crate), off unless set.
//!
//! `SYNCFLEET_CHAOS_FINISH_STALL_MS=<ms>` makes every finish transaction sleep after it
//! has taken its row locks, so the battery can freeze a worker (SIGSTOP) while it holds
//! them and check that nobody else's recovery waits for it. Never set it in production.

use std::sync::OnceLock;
use std::time::Duration;

fn finish_stall_ms() -> Option<Duration> {
    static STALL: OnceLock<Option<Duration>> = OnceLock::new();
    *STALL.get_or_init(|| {
        let stall = std::env::var("SYNCFLEET_CHAOS_FINISH_STALL_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        if let Some(d) = stall {
            tracing::warn!(
                stall_ms = d.as_millis() as u64,
                "fault injection on: every finish transaction stalls (SYNCFLEET_CHAOS_FINISH_STALL_MS); never in production"
            );
        }
        stall
    })
}

/// Sleeps inside a finish transaction when the battery asked for it.
pub async fn finish_stall() {
    if let Some(d) = finish_stall_ms() {
        tokio::time::sleep(d).await;
    }
}
