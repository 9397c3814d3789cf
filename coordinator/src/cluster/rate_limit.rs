//! [`RateLimitWait`]: a registry's `429` waited out. Self-contained (tokio
//! and tracing only), so it can move to the worker crate beside the fetch
//! gate.

use std::time::Duration;

/// Longest pause for one `429` (resolve, manifest HEAD, tag listing; the caller's timeout bounds the total).
const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(30);
/// The first pause for a `429` without `Retry-After` (doubled each time).
const FIRST_RATE_LIMIT_PAUSE: Duration = Duration::from_millis(500);

/// Waiting out a registry's `429`s: its `Retry-After` when it sends one,
/// else a pause doubled each time; each pause at most
/// [`MAX_RATE_LIMIT_PAUSE`]. The caller bounds the total with its timeout.
pub(crate) struct RateLimitWait {
    what: &'static str,
    backoff: Duration,
}

impl RateLimitWait {
    /// `what` names the request in the log line ("a resolve").
    pub(crate) fn new(what: &'static str) -> Self {
        RateLimitWait {
            what,
            backoff: FIRST_RATE_LIMIT_PAUSE,
        }
    }

    pub(crate) async fn wait(&mut self, registry: &str, retry_after: Option<Duration>) {
        let pause = retry_after.unwrap_or(self.backoff).min(MAX_RATE_LIMIT_PAUSE);
        tracing::info!(registry = %registry, pause_ms = pause.as_millis() as u64, "registry rate limited {}: waiting", self.what);
        tokio::time::sleep(pause).await;
        self.backoff = (self.backoff * 2).min(MAX_RATE_LIMIT_PAUSE);
    }
}
