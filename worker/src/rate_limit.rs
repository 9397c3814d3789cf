//! [`RateLimitWait`]: how long to wait out a registry's `429`. One rule for
//! every request that meets one: the coordinator's resolves, manifest
//! `HEAD`s and tag listings (which sleep it), and the worker's blob fetches
//! (which pause their registry's [`crate::gate::RegistryGate`] for it).

use std::time::Duration;

/// Longest pause for one `429` (the caller's timeout or retry count bounds the total).
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(30);
/// The first pause for a `429` without `Retry-After` (doubled each time).
const FIRST_RATE_LIMIT_PAUSE: Duration = Duration::from_millis(500);

/// Waiting out a registry's `429`s: its `Retry-After` when it sends one,
/// else a pause doubled each time; each pause at most
/// [`MAX_RATE_LIMIT_PAUSE`]. The caller bounds the total.
#[derive(Debug)]
pub struct RateLimitWait {
    what: &'static str,
    backoff: Duration,
    times: u32,
}

impl RateLimitWait {
    /// `what` names the request in the log line ("a resolve").
    pub fn new(what: &'static str) -> Self {
        RateLimitWait {
            what,
            backoff: FIRST_RATE_LIMIT_PAUSE,
            times: 0,
        }
    }

    /// The pause for this `429` (logged), and the backoff doubled for the next.
    pub fn pause(&mut self, registry: &str, retry_after: Option<Duration>) -> Duration {
        let pause = retry_after.unwrap_or(self.backoff).min(MAX_RATE_LIMIT_PAUSE);
        tracing::info!(registry = %registry, pause_ms = pause.as_millis() as u64, "registry rate limited {}: waiting", self.what);
        self.backoff = (self.backoff * 2).min(MAX_RATE_LIMIT_PAUSE);
        self.times += 1;
        pause
    }

    /// Sleeps for [`Self::pause`].
    pub async fn wait(&mut self, registry: &str, retry_after: Option<Duration>) {
        let pause = self.pause(registry, retry_after);
        tokio::time::sleep(pause).await;
    }

    /// The `429`s met so far.
    pub fn times(&self) -> u32 {
        self.times
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long one `wait` takes on the paused clock.
    async fn timed(w: &mut RateLimitWait, retry_after: Option<Duration>) -> Duration {
        let started = tokio::time::Instant::now();
        w.wait("reg.test", retry_after).await;
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_cap() {
        let mut w = RateLimitWait::new("a test");
        let ms = Duration::from_millis;
        assert_eq!(timed(&mut w, None).await, ms(500));
        assert_eq!(timed(&mut w, None).await, ms(1000));
        assert_eq!(timed(&mut w, None).await, ms(2000));
        assert_eq!(timed(&mut w, None).await, ms(4000));
        for _ in 0..4 {
            timed(&mut w, None).await;
        }
        // 500 ms doubled eight times is 128 s: capped.
        assert_eq!(w.backoff, MAX_RATE_LIMIT_PAUSE);
        assert_eq!(timed(&mut w, None).await, MAX_RATE_LIMIT_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_but_is_capped_and_the_backoff_still_grows() {
        let mut w = RateLimitWait::new("a test");
        assert_eq!(w.times(), 0);
        let s = Duration::from_secs;
        assert_eq!(timed(&mut w, Some(s(3))).await, s(3));
        assert_eq!(timed(&mut w, Some(s(3600))).await, MAX_RATE_LIMIT_PAUSE);
        assert_eq!(timed(&mut w, Some(Duration::ZERO)).await, Duration::ZERO);
        // Three waits behind it: the next pause without Retry-After is 500 ms × 2³.
        assert_eq!(timed(&mut w, None).await, s(4));
        assert_eq!(w.times(), 4);
    }
}
