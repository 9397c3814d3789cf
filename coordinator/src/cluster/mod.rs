//! The coordinator: accepts scans, resolves images, dedups layers by
//! digest, queues one job per unique layer, turns layer results into
//! composed, matched reports, and keeps all of it in state that survives a
//! restart.
//!
//! # Layout
//! - [`kv`]: the state buckets (JetStream key-value, or embedded `redb`).
//! - [`records`]: what is stored in them, and the keys.
//! - this file: [`Coordinator`]: submit → dispatch → results → finalize.
//! - [`events`]: per-scan event logs behind `WatchScan`.
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
//!
//! One coordinator is active per cluster: waiters live in its memory (two
//! coordinators would split the results between them).

mod coalesce;
pub mod events;
pub mod fleet;
pub mod kv;
pub mod records;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as StorePath};
use strata_proto::v1::{self, layer_result::Outcome, scan_event::Event};
use strata_proto::{LayerInventory, Report, SeverityCounts};
use strata_worker::queue::{Priority, Queue, QueueError};
use strata_worker::source::{ImageRef, ImageSource, LayerDesc, Platform, Source, SourceConfig, SourceError};
use strata_worker::telemetry::Metrics;
use tokio::io::AsyncReadExt as _;

use crate::compose;
use crate::matching::Matcher;
use crate::util::{lock, now_unix_ms, read, truncate_chars, write};
use crate::vulndb::{Db, DbStatus};
use events::EventLogs;
use kv::{Cas, Kv, KvError};
use records::*;

/// Longest pause for one `429` (resolve, manifest HEAD, tag listing; the caller's timeout bounds the total).
const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(30);
/// The first pause for a `429` without `Retry-After` (doubled each time).
const FIRST_RATE_LIMIT_PAUSE: Duration = Duration::from_millis(500);
/// Layer results applied, and scans refreshed, at once by the results loop.
const RESULT_CONCURRENCY: usize = 16;
/// Reports kept in memory for GetReport (a simple bound: the cache starts
/// afresh when full; a report is tens of KiB for a few hundred packages).
const REPORT_CACHE_ENTRIES: usize = 256;
/// Longest image reference accepted.
pub const MAX_REFERENCE_LEN: usize = 4096;
/// Entries of `Inner::known_digests` kept before it starts afresh.
const MAX_KNOWN_DIGESTS: usize = 100_000;
/// Attempts of one compare-and-set loop before giving up (contention is
/// between a few tasks of this process: a handful suffices).
const CAS_ATTEMPTS: usize = 16;

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The object store's URL as workers open it (`file:///…`, `s3://…`):
    /// blobs of local images are copied under it for workers to fetch.
    pub store_url: String,
    /// Registries and credentials for resolving images.
    pub source: SourceConfig,
    /// The analyser set workers run (the same binary's).
    pub analyzer_set: String,
    /// Bound on resolving one reference (manifest fetches).
    pub resolve_timeout: Duration,
    /// Scans finalized (composed and matched) at once.
    pub finalize_concurrency: usize,
    /// Whether API callers may name `oci-dir:` / `docker-archive:` paths,
    /// which the coordinator reads from its own filesystem. Off by default:
    /// a remote caller must not make the server read its files.
    pub local_images_over_api: bool,
    /// How often registered images and watched repositories are resolved
    /// again (`None`: never; they are scanned when registered).
    pub refresh_interval: Option<Duration>,
}

impl CoordinatorConfig {
    pub fn new(store_url: impl Into<String>) -> Self {
        CoordinatorConfig {
            store_url: store_url.into(),
            source: SourceConfig::default(),
            analyzer_set: strata_worker::analyzers::analyzer_set_version(&strata_worker::analyzers::all()),
            resolve_timeout: Duration::from_secs(60),
            finalize_concurrency: 4,
            local_images_over_api: false,
            refresh_interval: None,
        }
    }
}

/// The vulnerability data in force, and its matcher.
pub struct VulnData {
    pub matcher: Matcher,
    pub status: DbStatus,
    pub loaded: Instant,
}

impl VulnData {
    pub fn new(db: &Db) -> VulnData {
        VulnData {
            matcher: Matcher::new(db),
            status: db.status(),
            loaded: Instant::now(),
        }
    }
}

/// What can go wrong with a request. `api` maps each to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("resource exhausted: {0}")]
    Full(String),
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<KvError> for CoordinatorError {
    fn from(e: KvError) -> Self {
        CoordinatorError::Unavailable(e.to_string())
    }
}

impl From<QueueError> for CoordinatorError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full(m) => CoordinatorError::Full(m),
            other => CoordinatorError::Unavailable(other.to_string()),
        }
    }
}

impl From<SourceError> for CoordinatorError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::BadReference { .. } | SourceError::PlatformNotFound { .. } => {
                CoordinatorError::InvalidArgument(e.to_string())
            }
            SourceError::NotFound(_) => CoordinatorError::NotFound(e.to_string()),
            SourceError::Unauthorized(_) => CoordinatorError::Unauthorized(e.to_string()),
            SourceError::Format { .. } => CoordinatorError::InvalidArgument(e.to_string()),
            SourceError::Registry { .. } | SourceError::RateLimited { .. } | SourceError::Io { .. } => {
                CoordinatorError::Unavailable(e.to_string())
            }
        }
    }
}

/// A scan request.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    pub reference: String,
    pub platform: String,
    pub background: bool,
    pub insecure_registry: bool,
    /// Registered for continuous rescans (FleetService) rather than a one-off submit.
    pub register: bool,
}

/// The state buckets.
#[derive(Clone)]
pub struct Buckets {
    pub layers: Kv,
    pub scans: Kv,
    pub images: Kv,
}

impl Buckets {
    pub async fn nats(js: &async_nats::jetstream::Context, replicas: usize) -> Result<Buckets, KvError> {
        Ok(Buckets {
            layers: Kv::nats(js, LAYERS_BUCKET, replicas).await?,
            scans: Kv::nats(js, SCANS_BUCKET, replicas).await?,
            images: Kv::nats(js, IMAGES_BUCKET, replicas).await?,
        })
    }

    pub fn local(path: &std::path::Path) -> Result<Buckets, KvError> {
        let db = kv::open_local_db(path)?;
        Ok(Buckets {
            layers: Kv::Local(kv::LocalKv::new(db.clone(), LAYERS_BUCKET)),
            scans: Kv::Local(kv::LocalKv::new(db.clone(), SCANS_BUCKET)),
            images: Kv::Local(kv::LocalKv::new(db, IMAGES_BUCKET)),
        })
    }
}

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
    metrics: Metrics,
    /// Layer key → scans waiting on it.
    waiters: Mutex<HashMap<String, HashSet<String>>>,
    /// One lock per scan being changed, so its record is rewritten by one task at a time.
    scan_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    events: EventLogs,
    workers: Mutex<HashMap<String, (v1::WorkerHeartbeat, Instant)>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Scans whose finalizing failed (the store away): tried again by `retry_loop`.
    retry: Mutex<HashSet<String>>,
    finalizing: tokio::sync::Semaphore,
    /// The fleet view (`FleetService`), derived from the buckets: see [`fleet`].
    fleet: fleet::FleetIndex,
    /// Registry clients reused across submits (connections, authorization).
    sources: strata_worker::source::SourcePool,
    /// Manifest HEADs of concurrent submits of one reference, shared.
    heads: coalesce::Coalescer<String, Head>,
    /// (digest a reference named: index or image manifest, platform key) →
    /// image manifest digest, as full resolves found it: lets `submit` of an
    /// already scanned tag cost one `HEAD`. An optimisation only (empty
    /// after a restart; cleared past [`MAX_KNOWN_DIGESTS`]).
    known_digests: Mutex<HashMap<(String, String), String>>,
    /// Recent reports encoded, by scan id, with the vulnerability data
    /// version they were matched against (see [`Coordinator::report_encoded`]).
    encoded_reports: Mutex<HashMap<String, (String, Bytes)>>,
}

/// What a manifest HEAD said, shared between the submits that waited for it.
#[derive(Clone)]
enum Head {
    Digest(Option<strata_proto::Digest>),
    RateLimited {
        registry: String,
        retry_after: Option<Duration>,
    },
    Failed(String),
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Bytes, CoordinatorError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, CoordinatorError> {
    serde_json::from_slice(b).map_err(|e| CoordinatorError::Internal(format!("{what}: {e}")))
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
            }),
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub fn vulndb(&self) -> Arc<VulnData> {
        read(&self.inner.vulndb).clone()
    }

    /// Replace the vulnerability data (reports are re-matched when read).
    pub fn set_vulndb(&self, data: VulnData) {
        *write(&self.inner.vulndb) = Arc::new(data);
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

    /// Runs the background loops until `shutdown`: first every unfinished
    /// scan is dispatched again, then results, dead jobs, heartbeats and
    /// queue lag are followed.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        if let Err(err) = self.recover().await {
            tracing::error!(error = %err, "recovering unfinished scans failed; they resume when resubmitted");
        }
        tokio::spawn(self.clone().fleet_warm_up());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().results_loop(stop_rx.clone()));
        tasks.spawn(self.clone().dead_jobs_loop(stop_rx.clone()));
        tasks.spawn(self.clone().heartbeat_loop(stop_rx.clone()));
        tasks.spawn(self.clone().lag_loop(stop_rx.clone()));
        tasks.spawn(self.clone().retry_loop(stop_rx.clone()));
        tasks.spawn(self.clone().refresh_loop(stop_rx.clone()));
        shutdown.await;
        let _ = stop_tx.send(true);
        // Each loop finishes what it holds (a result batch is acked only
        // after its effects are stored), then returns.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }

    async fn recover(&self) -> Result<(), CoordinatorError> {
        let keys = self.inner.buckets.scans.keys().await?;
        let mut resumed = 0;
        for key in keys.iter().filter(|k| k.starts_with("s-")) {
            let Some((scan, _)) = self.load_scan(key).await? else {
                continue;
            };
            if scan.status == ScanStatus::Running {
                resumed += 1;
                if let Err(err) = self.dispatch(&scan.id, true).await {
                    tracing::warn!(scan = %scan.id, error = %err, "could not resume scan");
                }
            }
        }
        if resumed > 0 {
            tracing::info!(scans = resumed, "resumed unfinished scans");
        }
        Ok(())
    }

    // ---- submit ---------------------------------------------------------

    /// Accepts a scan: resolves the image and creates (or finds) its scan.
    /// Returns the scan and whether it already existed.
    pub async fn submit(&self, req: SubmitRequest) -> Result<(ScanRecord, bool), CoordinatorError> {
        let reference = validate_reference(&req.reference)?;
        let platform = if req.platform.trim().is_empty() {
            None
        } else {
            Some(
                Platform::parse(req.platform.trim())
                    .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?,
            )
        };
        let image_ref = ImageRef::parse(&reference)?;
        let mut source_config = self.inner.config.source.clone();
        let registry_host = registry_host(&image_ref);
        if req.insecure_registry
            && let Some(host) = &registry_host
        {
            source_config.insecure_registries.push(host.clone());
        }
        let platform_key = platform.as_ref().map(ToString::to_string).unwrap_or_default();
        // One bound for the fast path and the full resolve together.
        let deadline = tokio::time::Instant::now() + self.inner.config.resolve_timeout;
        if let ImageRef::Registry(r) = &image_ref
            && let Ok(source) = self.inner.sources.registry(r.clone(), &source_config)
            && let Ok(Some(found)) = tokio::time::timeout_at(
                deadline,
                self.submit_known(&req, &source, &r.to_string(), &platform_key),
            )
            .await
        {
            return Ok(found);
        }
        let resolve = async {
            let source = match self.inner.sources.open(image_ref.clone(), &source_config).await? {
                Source::RootDir(_) => {
                    return Err(CoordinatorError::InvalidArgument(
                        "dir: references are for `strata scan`; the coordinator scans images".into(),
                    ));
                }
                s => s
                    .into_image()
                    .ok_or_else(|| CoordinatorError::Internal("no image source".into()))?,
            };
            // A registry answering 429 is waited out, within the resolve
            // timeout around this block.
            let mut limited = RateLimitWait::new("a resolve");
            let resolved = loop {
                match source.resolve(platform.as_ref()).await {
                    Err(SourceError::RateLimited {
                        registry,
                        retry_after,
                    }) => limited.wait(&registry, retry_after).await,
                    other => break other?,
                }
            };
            Ok::<_, CoordinatorError>((source, resolved))
        };
        let (source, resolved) = tokio::time::timeout_at(deadline, resolve).await.map_err(|_| {
            CoordinatorError::Unavailable(format!(
                "{reference}: resolving took longer than {:?}",
                self.inner.config.resolve_timeout
            ))
        })??;
        let asv = self.inner.config.analyzer_set.clone();
        let image_digest = resolved.manifest_digest.to_string();
        if matches!(image_ref, ImageRef::Registry(_)) {
            // What the reference named (index or manifest) → the image chosen,
            // for the fast path of the next submit.
            let top = resolved
                .index_digest
                .as_ref()
                .unwrap_or(&resolved.manifest_digest);
            let mut known = lock(&self.inner.known_digests);
            if known.len() >= MAX_KNOWN_DIGESTS {
                known.clear();
            }
            known.insert((top.to_string(), platform_key.clone()), image_digest.clone());
        }
        let id = scan_id(&image_digest, &platform_key, &asv);

        if let Some((existing, _)) = self.load_scan(&id).await? {
            self.note_image(&req, &resolved.reference, &image_digest, &id)
                .await;
            return Ok((existing, true));
        }

        let location = match (&image_ref, &registry_host) {
            (ImageRef::Registry(r), Some(host)) => Some(BlobLocation::Registry {
                registry: host.clone(),
                repository: r.repository().to_owned(),
                insecure: source_config.insecure_registries.iter().any(|h| h == host),
            }),
            // Local images (OCI layouts, docker archives): workers elsewhere
            // cannot read them, so their blobs are copied to the store.
            _ => None,
        };
        let now = now_unix_ms();
        let record = ScanRecord {
            id: id.clone(),
            reference: resolved.reference.clone(),
            platform: platform_key,
            priority: if req.background { "background" } else { "ci" }.to_owned(),
            insecure_registry: req.insecure_registry,
            analyzer_set: asv.clone(),
            status: ScanStatus::Running,
            image_digest: image_digest.clone(),
            resolved_platform: resolved
                .platform
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            layers: resolved
                .layers
                .iter()
                .map(|l| ScanLayer {
                    digest: l.digest.to_string(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    state: ScanLayerState::Pending,
                    error: None,
                    packages: 0,
                })
                .collect(),
            location: location.clone(),
            error: None,
            created_unix_ms: now,
            updated_unix_ms: now,
            completed_unix_ms: 0,
            counts: Counts::default(),
            packages: 0,
            findings: 0,
            vulndb_version: String::new(),
            report_key: None,
        };
        if location.is_none() {
            self.copy_local_blobs(source.as_ref(), &resolved.layers).await?;
        }
        match self.inner.buckets.scans.create(&id, to_json(&record)?).await? {
            Cas::Written(_) => {}
            Cas::Conflict => {
                // Another submit of the same image won the race: return its scan.
                let (existing, _) = self
                    .load_scan(&id)
                    .await?
                    .ok_or_else(|| CoordinatorError::Internal(format!("scan {id} vanished")))?;
                // This reference (maybe another tag of the same digest) is recorded too.
                self.note_image(&req, &resolved.reference, &image_digest, &id)
                    .await;
                return Ok((existing, true));
            }
        }
        self.inner.metrics.scans("running", 1);
        self.note_image(&req, &resolved.reference, &image_digest, &id)
            .await;
        self.fleet_scan_changed(&record);
        let _ = self
            .inner
            .buckets
            .scans
            .put(&digest_index_key(&image_digest), Bytes::from(id.clone()))
            .await;
        self.emit(
            &id,
            Event::Submitted(v1::Submitted {
                existing: false,
                status: v1::ScanStatus::Running.into(),
            }),
        );
        self.emit(
            &id,
            Event::Resolved(v1::Resolved {
                image_digest: image_digest.clone(),
                platform: record.resolved_platform.clone(),
                layer_digests: record.layers.iter().map(|l| l.digest.clone()).collect(),
            }),
        );
        tracing::info!(scan = %id, image = %record.reference, digest = %image_digest, layers = record.layers.len(), "scan submitted");
        self.dispatch(&id, false).await?;
        let (scan, _) = self
            .load_scan(&id)
            .await?
            .ok_or_else(|| CoordinatorError::Internal(format!("scan {id} vanished")))?;
        Ok((scan, false))
    }

    /// The fast path of `submit` for a registry reference already scanned:
    /// one `HEAD` for the digest the reference names now, mapped through
    /// `known_digests` (what a full resolve of that digest chose) to the scan
    /// id, and the scan if it exists. `None` on any miss or error: the caller
    /// resolves in full. A `429` is waited out (the caller's deadline bounds it).
    async fn submit_known(
        &self,
        req: &SubmitRequest,
        source: &strata_worker::source::RegistrySource,
        reference: &str,
        platform_key: &str,
    ) -> Option<(ScanRecord, bool)> {
        let mut limited = RateLimitWait::new("a manifest HEAD");
        // Concurrent submits of one reference share a HEAD sent after they called.
        let key = format!("{}|{}", source.reference(), req.insecure_registry);
        let top = loop {
            let head = self
                .inner
                .heads
                .run(key.clone(), || async {
                    match source.head_digest().await {
                        Ok(d) => Head::Digest(d),
                        Err(SourceError::RateLimited {
                            registry,
                            retry_after,
                        }) => Head::RateLimited {
                            registry,
                            retry_after,
                        },
                        Err(err) => Head::Failed(err.to_string()),
                    }
                })
                .await;
            match head {
                Head::Digest(Some(d)) => break d,
                Head::Digest(None) => return None,
                Head::RateLimited {
                    registry,
                    retry_after,
                } => limited.wait(&registry, retry_after).await,
                Head::Failed(err) => {
                    tracing::debug!(image = %reference, error = %err, "manifest HEAD failed: resolving in full");
                    return None;
                }
            }
        };
        let image_digest = lock(&self.inner.known_digests)
            .get(&(top.to_string(), platform_key.to_owned()))
            .cloned()?;
        let id = scan_id(&image_digest, platform_key, &self.inner.config.analyzer_set);
        let (existing, _) = self.load_scan(&id).await.ok().flatten()?;
        self.note_image(req, reference, &image_digest, &id).await;
        Some((existing, true))
    }

    /// Records the reference → digest mapping (best effort: the scan itself
    /// is stored). Nothing is written when the record already says the same
    /// (a resubmit of a scanned image), so repeated submits cost one read.
    async fn note_image(&self, req: &SubmitRequest, reference: &str, digest: &str, scan_id: &str) {
        let key = image_key(reference);
        let existing = match self.inner.buckets.images.get(&key).await {
            Ok(Some(e)) => serde_json::from_slice::<ImageRecord>(&e.value).ok(),
            _ => None,
        };
        let registered = existing.as_ref().is_some_and(|r| r.registered);
        if let Some(old) = &existing
            && old.reference == reference
            && old.platform == req.platform
            && old.insecure_registry == req.insecure_registry
            && old.registered == (registered || req.register)
            && old.digest == digest
            && old.scan_id == scan_id
        {
            return;
        }
        let record = ImageRecord {
            reference: reference.to_owned(),
            platform: req.platform.clone(),
            insecure_registry: req.insecure_registry,
            registered: registered || req.register,
            digest: digest.to_owned(),
            scan_id: scan_id.to_owned(),
            updated_unix_ms: now_unix_ms(),
        };
        if let Ok(json) = to_json(&record) {
            match self.inner.buckets.images.put(&key, json).await {
                Ok(_) => self.fleet_image_noted(&record),
                Err(err) => tracing::warn!(error = %err, "could not record the image reference"),
            }
        }
    }

    /// Copies layer blobs of a local image to `blobs/<alg>/<hex>` in the
    /// store, unless already there or already analysed.
    async fn copy_local_blobs(
        &self,
        source: &dyn ImageSource,
        layers: &[LayerDesc],
    ) -> Result<(), CoordinatorError> {
        for layer in layers {
            let key = layer_key(&self.inner.config.analyzer_set, layer.digest.as_str());
            if let Some(e) = self.inner.buckets.layers.get(&key).await?
                && from_json::<LayerRecord>("layer", &e.value)?.state == LayerState::Analysed
            {
                continue;
            }
            let path = blob_path(&layer.digest);
            if self.inner.store.head(&path).await.is_ok() {
                continue;
            }
            let mut reader = source.open_layer(layer).await?;
            // Bounded by the descriptor's size (the reader enforces it).
            let mut buf = Vec::with_capacity(usize::try_from(layer.size.min(64 << 20)).unwrap_or(0));
            reader
                .read_to_end(&mut buf)
                .await
                .map_err(|e| CoordinatorError::InvalidArgument(format!("layer {}: {e}", layer.digest)))?;
            self.inner
                .store
                .put(&path, PutPayload::from(buf))
                .await
                .map_err(|e| CoordinatorError::Unavailable(format!("storing blob {}: {e}", layer.digest)))?;
        }
        Ok(())
    }

    fn blob_url(&self, digest: &str) -> String {
        let base = self.inner.config.store_url.trim_end_matches('/');
        format!("{base}/{}", blob_path_str(digest))
    }

    // ---- dispatch ---------------------------------------------------------

    /// Looks up each layer of a scan and queues what must be analysed.
    /// `republish`: queue again layers already queued (after a restart).
    async fn dispatch(&self, id: &str, republish: bool) -> Result<(), CoordinatorError> {
        let Some((scan, _)) = self.load_scan(id).await? else {
            return Err(CoordinatorError::NotFound(format!("scan {id}")));
        };
        let asv = scan.analyzer_set.clone();
        let mut seen = HashSet::new();
        for layer in &scan.layers {
            if layer.state.is_terminal() || !seen.insert(layer.digest.clone()) {
                continue;
            }
            let key = layer_key(&asv, &layer.digest);
            // Wait first, look second: a result that lands in between still
            // finds this scan among the waiters.
            lock(&self.inner.waiters)
                .entry(key.clone())
                .or_default()
                .insert(id.to_owned());
            self.ensure_layer(&scan, layer, &key, republish).await?;
        }
        self.refresh_scan(id).await
    }

    /// Makes sure the layer is analysed or on its way.
    async fn ensure_layer(
        &self,
        scan: &ScanRecord,
        layer: &ScanLayer,
        key: &str,
        republish: bool,
    ) -> Result<(), CoordinatorError> {
        let layers = &self.inner.buckets.layers;
        for _ in 0..CAS_ATTEMPTS {
            let existing = layers.get(key).await?;
            let (mut record, revision) = match existing {
                Some(e) => {
                    let record: LayerRecord = from_json("layer", &e.value)?;
                    match record.state {
                        LayerState::Analysed => {
                            self.cache_hit();
                            return Ok(());
                        }
                        LayerState::Failed if record.permanent => return Ok(()),
                        LayerState::Queued => {
                            // In flight for another image: not fetched again for this one.
                            self.cache_hit();
                            if republish {
                                self.publish(&record).await?;
                            }
                            return Ok(());
                        }
                        // Failed for a reason that may pass (a registry
                        // down, workers lost): try again for this scan.
                        LayerState::Failed => (record, Some(e.revision)),
                    }
                }
                None => {
                    let location = match &scan.location {
                        Some(l) => l.clone(),
                        None => BlobLocation::ObjectStore {
                            url: self.blob_url(&layer.digest),
                        },
                    };
                    let record = LayerRecord {
                        digest: layer.digest.clone(),
                        analyzer_set: scan.analyzer_set.clone(),
                        state: LayerState::Queued,
                        media_type: layer.media_type.clone(),
                        size: layer.size,
                        location,
                        priority: scan.priority.clone(),
                        generation: 0,
                        inventory_key: None,
                        packages: 0,
                        error: None,
                        permanent: false,
                        queued_unix_ms: now_unix_ms(),
                        updated_unix_ms: now_unix_ms(),
                    };
                    (record, None)
                }
            };
            if revision.is_some() {
                record.generation += 1;
                record.state = LayerState::Queued;
                record.error = None;
                record.queued_unix_ms = now_unix_ms();
                record.updated_unix_ms = now_unix_ms();
                record.priority = scan.priority.clone();
            }
            let json = to_json(&record)?;
            let cas = match revision {
                None => layers.create(key, json).await?,
                Some(rev) => layers.update(key, json, rev).await?,
            };
            if cas == Cas::Conflict {
                continue; // someone else queued it (or finished it): look again
            }
            self.cache_miss();
            self.publish(&record).await?;
            return Ok(());
        }
        Err(CoordinatorError::Internal(format!(
            "layer {key}: too much contention"
        )))
    }

    async fn publish(&self, record: &LayerRecord) -> Result<(), CoordinatorError> {
        let traceparent = strata_worker::telemetry::propagation::current_traceparent();
        let queued = self
            .inner
            .queue
            .publish_job(&record.job(), &record.msg_id(), traceparent.as_deref())
            .await?;
        if queued {
            self.inner.metrics.jobs_queued(&record.priority);
        }
        Ok(())
    }

    fn cache_hit(&self) {
        self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.layer_cache_hit();
    }

    fn cache_miss(&self) {
        self.inner.cache_misses.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.layer_cache_miss();
    }

    // ---- results ----------------------------------------------------------

    async fn results_loop(self, stop: tokio::sync::watch::Receiver<bool>) {
        let mut errors = 0u32;
        while !*stop.borrow() {
            match self
                .inner
                .queue
                .next_results(256, Duration::from_millis(500))
                .await
            {
                Ok(batch) => {
                    errors = 0;
                    // Results of different layers are independent (layer
                    // records are compare-and-set, scans locked one by one):
                    // apply a batch concurrently, so the coordinator keeps up
                    // as workers are added. Each is acked once applied.
                    let this = &self;
                    futures::stream::iter(batch)
                        .for_each_concurrent(RESULT_CONCURRENCY, |delivery| async move {
                            match this.apply_result(&delivery.result).await {
                                Ok(()) => {
                                    let _ = delivery.ack().await;
                                }
                                Err(err) => {
                                    tracing::warn!(layer = %delivery.result.digest, error = %err, "result not applied; it will be redelivered");
                                    let _ = delivery.nak(Duration::from_secs(1)).await;
                                }
                            }
                        })
                        .await;
                }
                Err(err) => {
                    errors = errors.saturating_add(1);
                    tracing::warn!(error = %err, "cannot read results; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(errors.min(25)))).await;
                }
            }
        }
    }

    /// Stores a layer's outcome, then refreshes the scans waiting on it.
    pub async fn apply_result(&self, result: &v1::LayerResult) -> Result<(), CoordinatorError> {
        let key = layer_key(&result.analyzer_set_version, &result.digest);
        let layers = &self.inner.buckets.layers;
        for _ in 0..CAS_ATTEMPTS {
            let Some(entry) = layers.get(&key).await? else {
                // A result for a layer nobody queued (an old job): ignore.
                return Ok(());
            };
            let mut record: LayerRecord = from_json("layer", &entry.value)?;
            if record.state == LayerState::Analysed {
                break; // a redelivered job's second result: nothing new
            }
            match &result.outcome {
                Some(Outcome::Analysed(a)) => {
                    record.state = LayerState::Analysed;
                    record.inventory_key = Some(a.inventory_key.clone());
                    record.packages = a.packages;
                    record.error = None;
                    record.permanent = false;
                }
                Some(Outcome::Failed(f)) => {
                    record.state = LayerState::Failed;
                    record.error = Some(f.error.clone());
                    record.permanent = f.permanent;
                }
                None => return Ok(()),
            }
            record.updated_unix_ms = now_unix_ms();
            match layers.update(&key, to_json(&record)?, entry.revision).await? {
                Cas::Written(_) => break,
                Cas::Conflict => continue,
            }
        }
        self.wake(&key).await;
        Ok(())
    }

    /// Refreshes every scan waiting on `key`.
    async fn wake(&self, key: &str) {
        let waiting: Vec<String> = lock(&self.inner.waiters)
            .remove(key)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        // A shared base layer wakes hundreds of scans: refresh them concurrently
        // (each scan's record is rewritten under its own lock).
        futures::stream::iter(waiting)
            .for_each_concurrent(RESULT_CONCURRENCY, |id| async move {
                if let Err(err) = self.refresh_scan(&id).await {
                    tracing::warn!(scan = %id, error = %err, "could not refresh scan");
                    // Keep waiting: the next result or a restart tries again.
                    lock(&self.inner.waiters)
                        .entry(key.to_owned())
                        .or_default()
                        .insert(id);
                }
            })
            .await;
    }

    async fn dead_jobs_loop(self, stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.inner.queue.next_dead_jobs(Duration::from_millis(500)).await {
                Ok(jobs) => {
                    for job in jobs {
                        let max = self.inner.queue.max_deliver();
                        tracing::warn!(layer = %job.digest, deliveries = max, "layer job ran out of deliveries");
                        let result = v1::LayerResult {
                            digest: job.digest.clone(),
                            analyzer_set_version: job.analyzer_set_version.clone(),
                            worker_id: String::new(),
                            attempt: max,
                            outcome: Some(Outcome::Failed(v1::LayerFailed {
                                error: format!(
                                    "layer {}: delivered {max} times and never finished (workers crashed or timed out)",
                                    job.digest
                                ),
                                permanent: false,
                            })),
                        };
                        if let Err(err) = self.apply_result(&result).await {
                            tracing::warn!(error = %err, "could not mark a dead job's layer failed");
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "dead-job advisories unavailable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn heartbeat_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut beats = match self.inner.queue.heartbeats().await {
                Ok(b) => b,
                Err(err) => {
                    tracing::debug!(error = %err, "heartbeats unavailable");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    beat = beats.next() => match beat {
                        Some(hb) => {
                            let mut workers = lock(&self.inner.workers);
                            // Bounded: forget workers not heard from in an hour.
                            workers.retain(|_, (_, seen)| seen.elapsed() < Duration::from_secs(3600));
                            if workers.len() < 100_000 {
                                workers.insert(hb.worker_id.clone(), (hb, Instant::now()));
                            }
                        }
                        None => break,
                    },
                    _ = stop.changed() => return,
                }
            }
        }
    }

    async fn retry_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                _ = stop.changed() => return,
            }
            let ids: Vec<String> = lock(&self.inner.retry).drain().collect();
            for id in ids {
                let _ = self.refresh_scan(&id).await;
            }
        }
    }

    async fn lag_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Ok(lags) = self.inner.queue.lag().await {
                for lag in lags {
                    self.inner
                        .metrics
                        .set_queue_lag(lag.priority.as_str(), lag.pending, lag.in_flight);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    // ---- scans ------------------------------------------------------------

    async fn load_scan(&self, id: &str) -> Result<Option<(ScanRecord, u64)>, CoordinatorError> {
        match self.inner.buckets.scans.get(id).await? {
            Some(e) => Ok(Some((from_json("scan", &e.value)?, e.revision))),
            None => Ok(None),
        }
    }

    /// The scan, if it exists.
    pub async fn scan(&self, id: &str) -> Result<Option<ScanRecord>, CoordinatorError> {
        Ok(self.load_scan(id).await?.map(|(s, _)| s))
    }

    /// The latest scan of an image digest.
    pub async fn scan_for_digest(&self, digest: &str) -> Result<Option<ScanRecord>, CoordinatorError> {
        match self.inner.buckets.scans.get(&digest_index_key(digest)).await? {
            Some(e) => self.scan(&String::from_utf8_lossy(&e.value)).await,
            None => Ok(None),
        }
    }

    /// Every stored scan (for fleet queries).
    pub async fn scans(&self) -> Result<Vec<ScanRecord>, CoordinatorError> {
        let mut out = Vec::new();
        for key in self.inner.buckets.scans.keys().await? {
            if key.starts_with("s-")
                && let Some((s, _)) = self.load_scan(&key).await?
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn scan_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.inner.scan_locks);
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Brings a scan's layer states up to date with the layer index, and
    /// finalizes it when every layer is done.
    async fn refresh_scan(&self, id: &str) -> Result<(), CoordinatorError> {
        let guard = self.scan_lock(id);
        let _held = guard.lock().await;
        let Some((mut scan, revision)) = self.load_scan(id).await? else {
            return Ok(());
        };
        if scan.status.is_terminal() {
            return Ok(());
        }
        let mut changed = false;
        let mut states: HashMap<String, (ScanLayerState, Option<String>, u32)> = HashMap::new();
        for (index, layer) in scan.layers.iter_mut().enumerate() {
            if layer.state.is_terminal() {
                continue;
            }
            let key = layer_key(&scan.analyzer_set, &layer.digest);
            let state = match states.get(&layer.digest) {
                Some(s) => s.clone(),
                None => {
                    let s = match self.inner.buckets.layers.get(&key).await? {
                        None => (ScanLayerState::Pending, None, 0),
                        Some(e) => {
                            let r: LayerRecord = from_json("layer", &e.value)?;
                            match r.state {
                                LayerState::Queued => (ScanLayerState::Queued, None, 0),
                                LayerState::Analysed if layer.state == ScanLayerState::Pending => {
                                    (ScanLayerState::Cached, None, r.packages)
                                }
                                LayerState::Analysed => (ScanLayerState::Analysed, None, r.packages),
                                LayerState::Failed => (ScanLayerState::Failed, r.error.clone(), 0),
                            }
                        }
                    };
                    states.insert(layer.digest.clone(), s.clone());
                    s
                }
            };
            if state.0 != layer.state {
                layer.state = state.0;
                layer.error = state.1.clone();
                layer.packages = state.2;
                changed = true;
                self.emit(
                    id,
                    Event::Layer(v1::LayerProgress {
                        digest: layer.digest.clone(),
                        index: index as u32,
                        state: layer.state.to_proto().into(),
                        error: layer.error.clone().unwrap_or_default(),
                        packages: layer.packages,
                    }),
                );
            }
        }
        let done = scan.layers.iter().all(|l| l.state.is_terminal());
        if !changed && !done {
            return Ok(());
        }
        scan.updated_unix_ms = now_unix_ms();
        if done {
            let permit = self.inner.finalizing.acquire().await;
            let finalized = self.finalize(&mut scan).await;
            drop(permit);
            if let Err(err) = finalized {
                // Reports are rebuilt from stored inventories: an error here
                // (the store away) leaves the scan running for a retry.
                tracing::warn!(scan = %id, error = %err, "finalizing failed; retrying in a few seconds");
                lock(&self.inner.retry).insert(id.to_owned());
                return Err(err);
            }
        }
        match self
            .inner
            .buckets
            .scans
            .update(id, to_json(&scan)?, revision)
            .await?
        {
            Cas::Written(_) => self.fleet_scan_changed(&scan),
            Cas::Conflict => {
                return Err(CoordinatorError::Internal(format!(
                    "scan {id} changed concurrently"
                )));
            }
        }
        if done {
            self.inner.metrics.scans("running", -1);
            self.inner.metrics.scans(scan.status.as_str(), 1);
            let (cached, analysed, failed) = scan.layer_counts();
            self.emit(
                id,
                Event::Matched(v1::Matched {
                    packages: scan.packages,
                    findings: scan.findings,
                    vulndb_version: scan.vulndb_version.clone(),
                }),
            );
            self.emit(
                id,
                Event::Done(v1::Done {
                    status: scan.status.to_proto().into(),
                    error: scan.error.clone().unwrap_or_default(),
                    layers_total: scan.layers.len() as u32,
                    layers_cached: cached,
                    layers_analysed: analysed,
                    layers_failed: failed,
                    counts: Some(scan.counts.to_proto()),
                }),
            );
            tracing::info!(scan = %id, status = scan.status.as_str(), findings = scan.findings, "scan done");
        }
        Ok(())
    }

    /// Composes and matches a scan whose layers are all done, and stores its report.
    async fn finalize(&self, scan: &mut ScanRecord) -> Result<(), CoordinatorError> {
        let started = Instant::now();
        let mut inventories = Vec::new();
        let mut layer_errors = Vec::new();
        for layer in &scan.layers {
            let digest: strata_proto::Digest = layer
                .digest
                .parse()
                .map_err(|e: strata_proto::ParseError| CoordinatorError::Internal(e.to_string()))?;
            if layer.state == ScanLayerState::Failed {
                layer_errors.push(strata_proto::LayerError {
                    digest,
                    error: layer.error.clone().unwrap_or_else(|| "failed".into()),
                });
                continue;
            }
            let inventory: LayerInventory =
                strata_worker::job::read_inventory(self.inner.store.as_ref(), &scan.analyzer_set, &digest)
                    .await
                    .map_err(CoordinatorError::Unavailable)?;
            inventories.push(inventory);
        }
        let vulndb = self.vulndb();
        let mut report = tokio::task::spawn_blocking({
            let vulndb = vulndb.clone();
            let metrics = self.inner.metrics.clone();
            move || {
                let composed = compose::compose(&inventories);
                let compose_secs = started.elapsed().as_secs_f64();
                metrics.compose_seconds(compose_secs);
                let matched = Instant::now();
                let findings = vulndb
                    .matcher
                    .match_packages(composed.os_release.as_ref(), &composed.packages);
                metrics.match_seconds(matched.elapsed().as_secs_f64());
                let mut counts = SeverityCounts::default();
                for f in &findings {
                    counts.add(f.severity);
                }
                Report {
                    scan_id: String::new(),
                    image_reference: String::new(),
                    image_digest: None,
                    platform: String::new(),
                    os_release: composed.os_release,
                    packages: composed.packages,
                    findings,
                    counts,
                    suppressed: 0,
                    vulndb_version: vulndb.matcher.vulndb_version().to_owned(),
                    created_unix_ms: now_unix_ms(),
                    layer_errors: Vec::new(),
                }
            }
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("matching task: {e}")))?;
        report.scan_id = scan.id.clone();
        report.image_reference = scan.reference.clone();
        report.image_digest = scan.image_digest.parse().ok();
        report.platform = scan.resolved_platform.clone();
        report.layer_errors = layer_errors;
        let key = report_path(&scan.id);
        let json = serde_json::to_vec(&report).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        self.inner
            .store
            .put(&key, PutPayload::from(json))
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("storing report {key}: {e}")))?;
        self.fleet_report_stored(&scan.id, &report);
        scan.status = ScanStatus::Complete;
        scan.error = if report.layer_errors.is_empty() {
            None
        } else {
            Some(
                report
                    .layer_errors
                    .iter()
                    .map(|e| e.error.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        scan.counts = Counts::from_domain(&report.counts);
        scan.packages = report.packages.len() as u32;
        scan.findings = report.findings.len() as u32;
        scan.vulndb_version = report.vulndb_version.clone();
        scan.report_key = Some(key.to_string());
        scan.completed_unix_ms = now_unix_ms();
        Ok(())
    }

    /// The scan's report against the vulnerability data in force now:
    /// re-matched from the stored packages when the data changed since.
    pub async fn report(&self, id: &str) -> Result<Report, CoordinatorError> {
        let scan = self
            .scan(id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("scan {id}")))?;
        let Some(key) = &scan.report_key else {
            return Err(CoordinatorError::NotFound(format!(
                "scan {id} has no report yet (it is {})",
                scan.status.as_str()
            )));
        };
        let bytes = self
            .inner
            .store
            .get(&StorePath::from(key.as_str()))
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?
            .bytes()
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?;
        let report: Report = from_json("report", &bytes)?;
        let vulndb = self.vulndb();
        if report.vulndb_version == vulndb.matcher.vulndb_version() {
            return Ok(report);
        }
        tokio::task::spawn_blocking(move || {
            let mut report = report;
            report.findings = vulndb
                .matcher
                .match_packages(report.os_release.as_ref(), &report.packages);
            let mut counts = SeverityCounts::default();
            for f in &report.findings {
                counts.add(f.severity);
            }
            report.counts = counts;
            report.vulndb_version = vulndb.matcher.vulndb_version().to_owned();
            report
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("matching task: {e}")))
    }

    /// [`Self::report`] as its protobuf bytes, served from memory while the
    /// vulnerability data is unchanged: a report is written once per scan,
    /// so the same scan id and data version always give the same bytes.
    /// Repeated GetReports (CI jobs polling, dashboards) then cost a
    /// reference-counted copy instead of a store read, a JSON parse, a
    /// conversion and an encoding (see `api/report_reply.rs`).
    pub async fn report_encoded(&self, id: &str) -> Result<Bytes, CoordinatorError> {
        let version = self.vulndb().matcher.vulndb_version().to_owned();
        if let Some((v, bytes)) = lock(&self.inner.encoded_reports).get(id)
            && *v == version
        {
            return Ok(bytes.clone());
        }
        let report: v1::Report = self.report(id).await?.into();
        let bytes = Bytes::from(prost::Message::encode_to_vec(&report));
        // Only reports matched against the data in force now are kept.
        if report.vulndb_version == version {
            let mut cache = lock(&self.inner.encoded_reports);
            if cache.len() >= REPORT_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(id.to_owned(), (version, bytes.clone()));
        }
        Ok(bytes)
    }

    // ---- events -------------------------------------------------------------

    fn emit(&self, id: &str, event: Event) {
        self.inner.events.emit(id, event);
    }

    /// Events of a scan so far, and a receiver for what follows. A scan whose
    /// log was not kept (a restart, or evicted) gets its events rebuilt from
    /// the record.
    pub async fn watch(
        &self,
        id: &str,
    ) -> Result<
        (
            Vec<v1::ScanEvent>,
            tokio::sync::broadcast::Receiver<v1::ScanEvent>,
        ),
        CoordinatorError,
    > {
        let scan = self
            .scan(id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("scan {id}")))?;
        Ok(self.inner.events.subscribe(id, || events::replay(&scan)))
    }
}

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

fn blob_path_str(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

fn blob_path(digest: &strata_proto::Digest) -> StorePath {
    StorePath::from(blob_path_str(digest.as_str()))
}

/// Where a scan's report is stored.
pub fn report_path(scan_id: &str) -> StorePath {
    StorePath::from(format!("reports/{scan_id}.json"))
}

/// The registry part of a registry reference (`host[:port]`), as workers will dial it.
fn registry_host(r: &ImageRef) -> Option<String> {
    match r {
        ImageRef::Registry(r) => Some(r.resolve_registry().to_owned()),
        _ => None,
    }
}

/// Checks a reference's shape before anything touches the network.
pub fn validate_reference(reference: &str) -> Result<String, CoordinatorError> {
    if reference.is_empty() {
        return Err(CoordinatorError::InvalidArgument("empty image reference".into()));
    }
    if reference.len() > MAX_REFERENCE_LEN {
        return Err(CoordinatorError::InvalidArgument(format!(
            "image reference of {} bytes is over the {MAX_REFERENCE_LEN}-byte limit",
            reference.len()
        )));
    }
    if let Some(c) = reference.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(CoordinatorError::InvalidArgument(format!(
            "image reference {:?} contains {c:?}",
            truncate_chars(reference, 200)
        )));
    }
    Ok(reference.to_owned())
}

/// Which queue a request goes to.
pub fn priority_of(background: bool) -> Priority {
    if background {
        Priority::Background
    } else {
        Priority::Ci
    }
}
