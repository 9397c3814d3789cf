//! The coordinator: accepts scans, resolves images, dedups layers by
//! digest, queues one job per unique layer, turns layer results into
//! composed, matched reports, and keeps all of it in state that survives a
//! restart.
//!
//! # Layout
//! - this file: [`Coordinator`] (its shared state, `Inner`) and the small
//!   accessors; the pipeline is spread over one file per step below, each
//!   an `impl Coordinator` block.
//! - `config.rs`: [`CoordinatorConfig`], [`VulnData`] (the data in force
//!   and its matcher), [`Buckets`].
//! - `error.rs`: [`CoordinatorError`] (one gRPC code each, in `api`), its
//!   conversions, and the JSON encoding of stored records.
//! - `request.rs`: [`SubmitRequest`], [`validate_reference`], [`priority_of`].
//! - `submit.rs`: `submit`: resolve (bounded), the fast path for a digest
//!   already resolved (one shared manifest `HEAD`), the scan record, the
//!   reference → digest record.
//! - `blobs.rs`: layers of local images copied to the store for workers.
//! - `dispatch.rs`: waiters, the layer index lookup, create-if-absent, publish.
//! - `results.rs`: the results loop, dead jobs, waking waiting scans.
//! - `finalize.rs`: a scan refreshed from the layer index; compose, match,
//!   store the report; the retry loop for finalizes that failed.
//! - `report.rs`: reports read back (re-matched when the data changed),
//!   [`report_path`], the encoded-report cache behind `GetReport`.
//! - `scans.rs`: scan records read back; events emitted and watched.
//! - `run.rs`: `run`: recovery at start, then the loops (heartbeats and
//!   queue lag here).
//! - `coalesce.rs`: concurrent lookups of one key share one call.
//! - [`kv`]: the state buckets (JetStream key-value, or embedded `redb`).
//! - [`records`]: what is stored in them, and the keys.
//! - [`events`]: per-scan event logs behind `WatchScan`.
//! - [`fleet`]: the fleet index behind `FleetService`, its loading, watched
//!   repositories and queries; new vulnerability data re-matched where it
//!   touches (`rematch.rs`) and each registered image's findings history,
//!   whose changes are the fleet events (`history.rs`).
//! - [`gc`]: reports and layer inventories nothing references, removed
//!   after a grace period.
//!
//! # How a scan moves
//! 1. `submit` resolves the reference (bounded in time), derives the scan id
//!    from the image digest, platform and analyser set, and creates the scan
//!    record (an existing one is returned as is: submits are idempotent).
//! 2. `dispatch` registers the scan as a waiter on each of its layers, then
//!    looks each up in the layer index: analysed → cached; queued → wait;
//!    absent (or failed for a transient reason) → create the layer record
//!    (compare-and-set: of 500 images asking at once, one wins) and queue
//!    the job, whose message id is the dedup key.
//! 3. The results loop marks layers analysed or failed and refreshes the
//!    scans waiting on them; a scan whose layers are all done is finalized:
//!    inventories read back, composed, matched, the report stored.
//! 4. On start, every running scan is dispatched again (jobs re-published
//!    under the same message id) before results are read, so nothing
//!    submitted before a crash is lost.
//! 5. A registered image's findings are compared with its history when its
//!    report is stored, when its tag moves, when new vulnerability data is
//!    put in force (`apply_vulndb`: only touched packages re-matched), and
//!    when it is unregistered; each change is a fleet event.
//!
//! Several coordinators may run against one NATS, all active
//! (`peers.rs`): each takes submits and answers every call; the results
//! are shared through one durable consumer; each follows the buckets'
//! change streams (`changes.rs`), so waiters, scan events and the fleet
//! index are current wherever a change was made; each running scan is
//! refreshed and finalized by the one coordinator rendezvous hashing
//! picks among the live ones; the refresh loop, feed polling, garbage
//! collection and findings histories run under leases.

mod blobs;
mod changes;
mod coalesce;
mod config;
mod dispatch;
mod error;
pub mod events;
mod finalize;
pub mod fleet;
pub mod gc;
pub mod kv;
pub mod peers;
pub mod records;
mod report;
mod request;
mod results;
mod run;
mod scans;
mod submit;

pub use config::{Buckets, CoordinatorConfig, VulnData};
pub use error::CoordinatorError;
pub use report::report_path;
pub use request::{MAX_REFERENCE_LEN, SubmitRequest, priority_of, validate_reference};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStore;
use strata_proto::v1;
use strata_worker::queue::Queue;
use strata_worker::telemetry::Metrics;

use crate::metrics::CoordinatorMetrics;

use crate::util::{lock, read, write};
use events::EventLogs;

/// Attempts of one compare-and-set loop before giving up (contention is
/// between a few tasks of this process: a handful suffices).
const CAS_ATTEMPTS: usize = 16;

/// Figures `AdminService` reports.
#[derive(Debug, Clone, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// The coordinator. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    config: CoordinatorConfig,
    queue: Queue,
    buckets: Buckets,
    store: Arc<dyn ObjectStore>,
    vulndb: RwLock<Arc<VulnData>>,
    metrics: CoordinatorMetrics,
    /// Layer key → scans waiting on it.
    waiters: Mutex<HashMap<String, HashSet<String>>>,
    /// One lock per scan being changed, so its record is rewritten by one task at a time.
    scan_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    events: EventLogs,
    workers: Mutex<HashMap<String, (v1::WorkerHeartbeat, Instant)>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Scans whose refresh or finalizing failed (the store or NATS away):
    /// refreshed whole again by `retry_loop`.
    retry: Mutex<HashSet<String>>,
    finalizing: tokio::sync::Semaphore,
    /// The fleet view (`FleetService`), derived from the buckets: see [`fleet`].
    fleet: fleet::FleetIndex,
    /// Registry clients reused across submits (connections, authorization).
    sources: strata_worker::source::SourcePool,
    /// Manifest HEADs of concurrent submits of one reference, shared.
    heads: coalesce::Coalescer<String, submit::Head>,
    /// (digest a reference named: index or image manifest, platform key) →
    /// image manifest digest, as full resolves found it: lets `submit` of an
    /// already scanned tag cost one `HEAD`. An optimisation only (empty
    /// after a restart; cleared past `submit::MAX_KNOWN_DIGESTS`).
    known_digests: Mutex<HashMap<(String, String), String>>,
    /// Recent reports encoded, by scan id, with the vulnerability data
    /// version they were matched against (see [`Coordinator::report_encoded`]).
    encoded_reports: Mutex<HashMap<String, (String, Bytes)>>,
    /// Fleet events (findings new and resolved): see [`crate::notify`].
    fleet_events: crate::notify::EventLog,
    /// Registered images' findings over time (`fleet/history.rs`).
    histories: tokio::sync::Mutex<fleet::Histories>,
    /// References whose findings changes wait to be recorded, and whether
    /// a task is recording them (`fleet_reconcile_later` batches).
    reconcile_pending: std::sync::Mutex<(std::collections::BTreeSet<String>, bool)>,
    /// What is unreferenced, since when, and what was removed (`gc.rs`).
    gc_candidates: Mutex<gc::Candidates>,
    gc_stats: gc::GcStats,
    /// The other coordinators and the leases (`None`: alone, as `strata serve`).
    peers: Option<Arc<peers::Peers>>,
    /// Running scans known here (submitted here or seen in the change
    /// stream) → whether this coordinator looked after each as of the last
    /// change of coordinators.
    running: Mutex<HashMap<String, bool>>,
    /// Running scans whose dispatch at a restart or takeover failed: jobs
    /// published again by `retry_loop` (a refresh alone would not queue a
    /// layer the coordinator that died left unpublished).
    redispatch: Mutex<HashSet<String>>,
}

impl Coordinator {
    pub fn new(
        config: CoordinatorConfig,
        queue: Queue,
        buckets: Buckets,
        store: Arc<dyn ObjectStore>,
        vulndb: VulnData,
        metrics: Metrics,
    ) -> Coordinator {
        let finalize = config.finalize_concurrency.max(1);
        let metrics = CoordinatorMetrics::new(&metrics);
        let fleet_events = crate::notify::EventLog::memory();
        fleet_events.set_metrics(metrics.clone());
        Coordinator {
            inner: Arc::new(Inner {
                config,
                queue,
                buckets,
                store,
                vulndb: RwLock::new(Arc::new(vulndb)),
                metrics,
                waiters: Mutex::new(HashMap::new()),
                scan_locks: Mutex::new(HashMap::new()),
                events: EventLogs::default(),
                workers: Mutex::new(HashMap::new()),
                cache_hits: AtomicU64::new(0),
                cache_misses: AtomicU64::new(0),
                retry: Mutex::new(HashSet::new()),
                finalizing: tokio::sync::Semaphore::new(finalize),
                fleet: fleet::FleetIndex::default(),
                sources: strata_worker::source::SourcePool::new(),
                heads: coalesce::Coalescer::default(),
                known_digests: Mutex::new(HashMap::new()),
                encoded_reports: Mutex::new(HashMap::new()),
                fleet_events,
                histories: tokio::sync::Mutex::new(fleet::Histories::default()),
                reconcile_pending: std::sync::Mutex::default(),
                gc_candidates: Mutex::new(gc::Candidates::default()),
                gc_stats: gc::GcStats::default(),
                peers: None,
                running: Mutex::new(HashMap::new()),
                redispatch: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// This coordinator with `log` as its fleet event log (a durable one:
    /// JetStream in the cluster, the local store for `strata serve`).
    /// Call right after [`Self::new`], before the coordinator is cloned.
    pub fn with_event_log(mut self, log: crate::notify::EventLog) -> Coordinator {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                log.set_metrics(inner.metrics.clone());
                inner.fleet_events = log;
            }
            None => tracing::error!("with_event_log on a shared coordinator: the memory log stays"),
        }
        self
    }

    /// This coordinator as one of several (`peers.rs`). Call right after
    /// [`Self::new`], before the coordinator is cloned.
    pub fn with_peers(mut self, peers: Arc<peers::Peers>) -> Coordinator {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.peers = Some(peers),
            None => tracing::error!("with_peers on a shared coordinator: it runs alone"),
        }
        self
    }

    /// The other coordinators and the leases, when there may be others.
    pub fn peers(&self) -> Option<&Arc<peers::Peers>> {
        self.inner.peers.as_ref()
    }

    /// Whether this coordinator holds `lease` (alone: every lease).
    pub fn holds_lease(&self, lease: &str) -> bool {
        self.inner.peers.as_ref().is_none_or(|p| p.holds(lease))
    }

    /// Whether this coordinator refreshes and finalizes `scan_id`.
    pub(crate) fn looks_after(&self, scan_id: &str) -> bool {
        self.inner.peers.as_ref().is_none_or(|p| p.responsible(scan_id))
    }

    /// The fleet event log.
    pub fn event_log(&self) -> &crate::notify::EventLog {
        &self.inner.fleet_events
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.inner.metrics
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub fn vulndb(&self) -> Arc<VulnData> {
        read(&self.inner.vulndb).clone()
    }

    /// Replace the vulnerability data (reports are re-matched when read).
    /// [`Self::apply_vulndb`] also re-matches the fleet and tells what changed.
    pub fn set_vulndb(&self, data: VulnData) {
        drop(self.swap_vulndb(Arc::new(data)));
    }

    /// Puts `data` in force; returns the data it replaces.
    fn swap_vulndb(&self, data: Arc<VulnData>) -> Arc<VulnData> {
        std::mem::replace(&mut *write(&self.inner.vulndb), data)
    }

    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.inner.cache_hits.load(Ordering::Relaxed),
            misses: self.inner.cache_misses.load(Ordering::Relaxed),
        }
    }

    /// Workers heard from in the last `within`.
    pub fn workers(&self, within: Duration) -> Vec<(v1::WorkerHeartbeat, Duration)> {
        let workers = lock(&self.inner.workers);
        let mut out: Vec<_> = workers
            .values()
            .filter(|(_, seen)| seen.elapsed() <= within)
            .map(|(hb, seen)| (hb.clone(), seen.elapsed()))
            .collect();
        out.sort_by(|a, b| a.0.worker_id.cmp(&b.0.worker_id));
        out
    }

    pub async fn layer_count(&self) -> Result<u64, CoordinatorError> {
        Ok(self.inner.buckets.layers.keys().await?.len() as u64)
    }
}
