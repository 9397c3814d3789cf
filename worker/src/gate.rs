//! Per-registry politeness: at most N blob fetches in flight per registry
//! from one worker, and a pause for every slot when a registry answers
//! `429 Too Many Requests` (for its `Retry-After`, else a backoff).
//!
//! A fetch holds its [`GatePermit`] until the blob has been read to the end
//! (the permit travels inside the reader), so a slow stream counts as busy.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Registries this gate remembers at most; beyond it new registries share
/// one overflow entry (a job names its registry: outside input).
const MAX_REGISTRIES: usize = 10_000;

pub struct RegistryGate {
    per_registry: usize,
    registries: Mutex<HashMap<String, Arc<Entry>>>,
}

struct Entry {
    fetches: Arc<Semaphore>,
    /// No new fetch starts before this instant (set by a 429).
    not_before: Mutex<Option<Instant>>,
}

/// One fetch's right to talk to its registry.
pub struct GatePermit {
    _permit: OwnedSemaphorePermit,
}

impl RegistryGate {
    /// `per_registry`: concurrent fetches allowed per registry (at least 1).
    pub fn new(per_registry: usize) -> RegistryGate {
        RegistryGate {
            per_registry: per_registry.max(1),
            registries: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, registry: &str) -> Arc<Entry> {
        let mut map = self.registries.lock().unwrap_or_else(|p| p.into_inner());
        let key = if map.len() >= MAX_REGISTRIES && !map.contains_key(registry) {
            "\0overflow"
        } else {
            registry
        };
        map.entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    fetches: Arc::new(Semaphore::new(self.per_registry)),
                    not_before: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Waits until `registry` may be asked for another blob.
    pub async fn acquire(&self, registry: &str) -> GatePermit {
        let entry = self.entry(registry);
        loop {
            let until = *entry.not_before.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        let permit = match entry.fetches.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; if it were, fetch without a bound
            // rather than never.
            Err(_) => Arc::new(Semaphore::new(1))
                .acquire_owned()
                .await
                .expect("fresh semaphore"),
        };
        // A 429 may have arrived while we waited for the permit.
        let until = *entry.not_before.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = until
            && t > Instant::now()
        {
            tokio::time::sleep_until(t).await;
        }
        GatePermit { _permit: permit }
    }

    /// The registry said 429: no fetch from this worker starts for `pause`.
    pub fn throttle(&self, registry: &str, pause: Duration) {
        let entry = self.entry(registry);
        let mut until = entry.not_before.lock().unwrap_or_else(|p| p.into_inner());
        let t = Instant::now() + pause;
        if until.is_none_or(|u| u < t) {
            *until = Some(t);
        }
    }
}

/// A reader that holds a [`GatePermit`] until it is dropped.
pub struct PermitReader<R> {
    inner: R,
    _permit: GatePermit,
}

impl<R> PermitReader<R> {
    pub fn new(inner: R, permit: GatePermit) -> Self {
        PermitReader {
            inner,
            _permit: permit,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for PermitReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_n_fetches_per_registry_and_others_unaffected() {
        let gate = RegistryGate::new(2);
        let a1 = gate.acquire("a").await;
        let _a2 = gate.acquire("a").await;
        // A third fetch from registry a waits; registry b does not.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), gate.acquire("a"))
                .await
                .is_err()
        );
        let _b = tokio::time::timeout(Duration::from_millis(50), gate.acquire("b"))
            .await
            .unwrap();
        drop(a1);
        let _a3 = tokio::time::timeout(Duration::from_millis(50), gate.acquire("a"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_throttled_registry_pauses_new_fetches() {
        let gate = RegistryGate::new(4);
        gate.throttle("r", Duration::from_millis(150));
        let start = Instant::now();
        let _p = gate.acquire("r").await;
        assert!(start.elapsed() >= Duration::from_millis(140));
        let start = Instant::now();
        let _q = gate.acquire("other").await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
