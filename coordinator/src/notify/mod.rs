//! Fleet events — a finding new or resolved, an image newly at a severity —
//! and where they go: an ordered, resumable log that `WatchEvents` clients
//! read from a sequence, and from which webhooks are delivered.
//!
//! # Contract
//! - [`EventLog::publish`] appends events in order and gives each the next
//!   sequence number; a reader that resumes after sequence `n` gets every
//!   event after it that the log still keeps, then the live ones.
//! - Publishing the same event twice (same [`event_id`]) keeps one: a
//!   coordinator that restarts and finds the same change again does not
//!   tell it twice.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use strata_proto::v1;
use tokio::sync::broadcast;

use crate::util::lock;

/// Events a memory log keeps (the oldest go first).
const MEMORY_KEEP: usize = 1_000_000;
/// Live events buffered per watcher before it lags (then it re-reads).
const LIVE_BUFFER: usize = 4096;

/// Why events could not be published or read.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("event log: {0}")]
    Log(String),
}

/// The identity of an event, the same whenever the same change is found
/// again: kind, image reference, vulnerability, package, and what the
/// change was found against (data version, image digest).
pub fn event_id(e: &v1::FleetEvent) -> String {
    let package = e
        .package
        .as_ref()
        .map(|p| format!("{}/{}/{}/{}", p.ecosystem, p.name, p.version, p.path))
        .unwrap_or_default();
    let raw = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}",
        e.kind,
        e.image_reference,
        e.image_digest,
        e.vulnerability_id,
        package,
        e.severity,
        e.reason,
        e.vulndb_version
    );
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(raw.as_bytes())[..16])
}

/// The event log. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: std::sync::Arc<Memory>,
}

struct Memory {
    state: Mutex<MemoryState>,
    live: broadcast::Sender<v1::FleetEvent>,
}

#[derive(Default)]
struct MemoryState {
    next: u64,
    events: VecDeque<v1::FleetEvent>,
    ids: HashSet<String>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::memory()
    }
}

impl EventLog {
    /// A log in this process's memory (tests, and until a durable one is set).
    pub fn memory() -> EventLog {
        EventLog {
            inner: std::sync::Arc::new(Memory {
                state: Mutex::new(MemoryState {
                    next: 1,
                    ..MemoryState::default()
                }),
                live: broadcast::channel(LIVE_BUFFER).0,
            }),
        }
    }

    /// Appends `events` in order; returns the ones kept (duplicates of
    /// events already published are dropped), with their sequences.
    pub async fn publish(&self, events: Vec<v1::FleetEvent>) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        let mut kept = Vec::with_capacity(events.len());
        {
            let mut s = lock(&self.inner.state);
            for mut e in events {
                let id = event_id(&e);
                if !s.ids.insert(id) {
                    continue;
                }
                e.sequence = s.next;
                s.next += 1;
                if e.at_unix_ms == 0 {
                    e.at_unix_ms = strata_proto::text::now_unix_ms();
                }
                s.events.push_back(e.clone());
                if s.events.len() > MEMORY_KEEP {
                    s.events.pop_front();
                }
                kept.push(e);
            }
        }
        for e in &kept {
            let _ = self.inner.live.send(e.clone());
        }
        Ok(kept)
    }

    /// Up to `max` events after sequence `after`, oldest first.
    pub async fn after(&self, after: u64, max: usize) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        let s = lock(&self.inner.state);
        Ok(s.events
            .iter()
            .filter(|e| e.sequence > after)
            .take(max)
            .cloned()
            .collect())
    }

    /// Events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<v1::FleetEvent> {
        self.inner.live.subscribe()
    }

    /// The newest event's sequence (0: none yet).
    pub async fn last_sequence(&self) -> Result<u64, NotifyError> {
        Ok(lock(&self.inner.state).next - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(vuln: &str) -> v1::FleetEvent {
        v1::FleetEvent {
            kind: v1::EventKind::FindingNew.into(),
            image_reference: "r/a:1".into(),
            vulnerability_id: vuln.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sequences_resume_and_duplicates_are_dropped() {
        let log = EventLog::memory();
        let mut live = log.subscribe();
        let kept = log
            .publish(vec![event("A"), event("B"), event("A")])
            .await
            .unwrap();
        assert_eq!(kept.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
        assert!(log.publish(vec![event("B")]).await.unwrap().is_empty());
        assert_eq!(log.after(1, 10).await.unwrap()[0].vulnerability_id, "B");
        assert_eq!(log.last_sequence().await.unwrap(), 2);
        assert_eq!(live.recv().await.unwrap().sequence, 1);
    }
}
