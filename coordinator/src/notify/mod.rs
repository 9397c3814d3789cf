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
//!   tell it twice. A publish that fails part-way may be retried whole: what
//!   was already appended is dropped as a duplicate.
//! - [`EventLog::subscribe`] is a hint, not the record: it may lag (the
//!   receiver then reads the log again, see [`follow`]) and may repeat or
//!   skip sequences across backends' reconnects; the log is the truth.
//!
//! # Layout
//! - this file: [`EventLog`], one API over three backends, [`event_id`],
//!   [`LogStats`].
//! - `memory.rs`: in this process only (tests; until a durable log is set).
//! - `jetstream.rs`: the cluster's: stream `STRATA_EVENTS`, sequence = the
//!   stream sequence, duplicates dropped by the server's `Nats-Msg-Id` window.
//! - `local.rs`: `strata serve`'s: tables in the embedded `redb` file.
//! - `filter.rs`: [`EventFilter`] (severity, kinds, repository glob) and the
//!   JSON form of an event ([`event_json`]) clients and webhooks see.
//! - `follow.rs`: [`follow`], a reader that catches up from the log, then
//!   tails the live feed, falling back to the log whenever it lags.
//! - `webhook.rs`: [`webhook`] deliveries: signed POSTs, retries, cursors.

mod filter;
mod follow;
mod jetstream;
mod local;
mod memory;
pub mod webhook;

pub use filter::{EventFilter, event_json, kind_name, parse_kind, reason_name, repository_of};
pub use follow::follow;
pub use jetstream::{EVENTS_STREAM, EVENTS_SUBJECTS};
pub use local::{LOCAL_EVENTS_TABLE, LOCAL_IDS_TABLE};
pub use webhook::DeliveryStats;

use std::sync::{Arc, OnceLock};

use strata_proto::v1;
use tokio::sync::{broadcast, watch};

use crate::metrics::CoordinatorMetrics;

/// Live events buffered per subscriber before it lags (then it re-reads
/// the log).
const LIVE_BUFFER: usize = 4096;

/// Why events could not be published or read.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("event log: {0}")]
    Log(String),
}

impl NotifyError {
    fn log(what: &str, e: impl std::fmt::Display) -> NotifyError {
        NotifyError::Log(format!("{what}: {e}"))
    }
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

/// What a log holds, for `GetStatus`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// The newest event's sequence (0: none yet).
    pub last_sequence: u64,
    /// Events kept (older ones age out).
    pub kept: u64,
}

/// The event log. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Shared>,
}

struct Shared {
    backend: Backend,
    live: broadcast::Sender<v1::FleetEvent>,
    /// Set by [`EventLog::close`]: readers following the log end.
    closed: watch::Sender<bool>,
    metrics: OnceLock<CoordinatorMetrics>,
    deliveries: DeliveryStats,
}

enum Backend {
    Memory(memory::MemoryLog),
    JetStream(Box<jetstream::JetStreamLog>),
    Local(local::LocalLog),
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::memory()
    }
}

impl EventLog {
    fn build(backend: Backend, live: broadcast::Sender<v1::FleetEvent>) -> EventLog {
        EventLog {
            inner: Arc::new(Shared {
                backend,
                live,
                closed: watch::channel(false).0,
                metrics: OnceLock::new(),
                deliveries: DeliveryStats::default(),
            }),
        }
    }

    /// A log in this process's memory (tests, and until a durable one is set).
    pub fn memory() -> EventLog {
        EventLog::build(
            Backend::Memory(memory::MemoryLog::default()),
            broadcast::channel(LIVE_BUFFER).0,
        )
    }

    /// The cluster's log: the JetStream stream `STRATA_EVENTS`, created (or
    /// updated) with `replicas` replicas. Live events are tailed from the
    /// stream, so events any process publishes reach this one's subscribers.
    pub async fn jetstream(
        js: &async_nats::jetstream::Context,
        replicas: usize,
    ) -> Result<EventLog, NotifyError> {
        let live = broadcast::channel(LIVE_BUFFER).0;
        let log = jetstream::JetStreamLog::open(js.clone(), replicas, live.clone()).await?;
        Ok(EventLog::build(Backend::JetStream(Box::new(log)), live))
    }

    /// `strata serve`'s log: tables of its embedded `redb` state file.
    pub fn local(db: Arc<redb::Database>) -> Result<EventLog, NotifyError> {
        let log = local::LocalLog::open(db)?;
        Ok(EventLog::build(
            Backend::Local(log),
            broadcast::channel(LIVE_BUFFER).0,
        ))
    }

    /// Counts published events on `metrics` (the coordinator sets its own;
    /// the first call wins).
    pub fn set_metrics(&self, metrics: CoordinatorMetrics) {
        let _ = self.inner.metrics.set(metrics);
    }

    pub(crate) fn metrics(&self) -> Option<&CoordinatorMetrics> {
        self.inner.metrics.get()
    }

    /// Webhook delivery figures (see [`webhook`]), for `GetStatus`.
    pub fn deliveries(&self) -> &DeliveryStats {
        &self.inner.deliveries
    }

    /// Appends `events` in order; returns the ones kept (duplicates of
    /// events already published are dropped), with their sequences.
    /// Events without a time get the current one.
    pub async fn publish(&self, mut events: Vec<v1::FleetEvent>) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        let now = strata_proto::text::now_unix_ms();
        for e in &mut events {
            e.sequence = 0;
            if e.at_unix_ms == 0 {
                e.at_unix_ms = now;
            }
        }
        let kept = match &self.inner.backend {
            Backend::Memory(m) => {
                let kept = m.publish(events);
                for e in &kept {
                    let _ = self.inner.live.send(e.clone());
                }
                kept
            }
            Backend::Local(l) => l.publish(events, &self.inner.live).await?,
            // Live events come back through the stream's tail.
            Backend::JetStream(j) => j.publish(events).await?,
        };
        if let Some(m) = self.metrics() {
            for e in &kept {
                m.event_published(kind_name(e.kind));
            }
        }
        Ok(kept)
    }

    /// Up to `max` events after sequence `after`, oldest first.
    pub async fn after(&self, after: u64, max: usize) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.after(after, max)),
            Backend::Local(l) => l.after(after, max).await,
            Backend::JetStream(j) => j.after(after, max).await,
        }
    }

    /// Events published from now on (a hint: see the module's contract).
    pub fn subscribe(&self) -> broadcast::Receiver<v1::FleetEvent> {
        self.inner.live.subscribe()
    }

    /// The newest event's sequence (0: none yet).
    pub async fn last_sequence(&self) -> Result<u64, NotifyError> {
        Ok(self.stats().await?.last_sequence)
    }

    /// The newest sequence and how many events are kept.
    pub async fn stats(&self) -> Result<LogStats, NotifyError> {
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.stats()),
            Backend::Local(l) => l.stats().await,
            Backend::JetStream(j) => j.stats().await,
        }
    }

    /// Ends every reader following this log ([`follow`]): the server is
    /// shutting down, and a `WatchEvents` stream would otherwise hold its
    /// graceful shutdown open forever. Publishing still works.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Completes once [`Self::close`] is called.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The wire form an event is stored in (its sequence left out: the log
/// gives it).
fn encode(e: &v1::FleetEvent) -> Vec<u8> {
    let mut e = e.clone();
    e.sequence = 0;
    prost::Message::encode_to_vec(&e)
}

fn decode(bytes: &[u8], sequence: u64) -> Result<v1::FleetEvent, NotifyError> {
    let mut e: v1::FleetEvent =
        prost::Message::decode(bytes).map_err(|e| NotifyError::log(&format!("event {sequence}"), e))?;
    e.sequence = sequence;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(vuln: &str) -> v1::FleetEvent {
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

    #[tokio::test]
    async fn the_local_log_survives_reopening_and_remembers_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let log = EventLog::local(crate::cluster::kv::open_local_db(&path).unwrap()).unwrap();
            let mut live = log.subscribe();
            let kept = log
                .publish(vec![event("A"), event("B"), event("A")])
                .await
                .unwrap();
            assert_eq!(kept.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(live.recv().await.unwrap().vulnerability_id, "A");
            assert_eq!(live.recv().await.unwrap().sequence, 2);
            assert_eq!(
                log.stats().await.unwrap(),
                LogStats {
                    last_sequence: 2,
                    kept: 2
                }
            );
        }
        let log = EventLog::local(crate::cluster::kv::open_local_db(&path).unwrap()).unwrap();
        // The same change found again after a restart is not told twice.
        let kept = log
            .publish(vec![event("B"), event("C"), event("A")])
            .await
            .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].sequence, kept[0].vulnerability_id.as_str()), (3, "C"));
        let all = log.after(0, 10).await.unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|e| (e.sequence, e.vulnerability_id.as_str()))
            .collect();
        assert_eq!(got, [(1, "A"), (2, "B"), (3, "C")]);
        assert!(all.iter().all(|e| e.at_unix_ms > 0));
        assert_eq!(log.after(1, 1).await.unwrap()[0].sequence, 2);
        assert!(log.after(3, 10).await.unwrap().is_empty());
        assert_eq!(log.last_sequence().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn close_is_seen_by_waiters() {
        let log = EventLog::memory();
        assert!(!log.is_closed());
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { log.closed().await }
        });
        log.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(log.is_closed());
    }
}
