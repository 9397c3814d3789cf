//! One layer job, as a worker runs it: fetch the blob the job names, analyse
//! it, store the layer inventory at its content address, and return the
//! result event to publish. The NATS loop around it (ack, progress, redelivery)
//! is the cluster's (issue 5); this is the part that does the work.
//!
//! # Contract
//! - The inventory is written before the result says "analysed", at
//!   `inventories/<analyzer-set-version>/<algorithm>/<hex>`, as JSON. The
//!   same layer always gives the same bytes, so writing it twice is harmless.
//! - Never panics and never returns an error: a failure is a
//!   `LayerResult` with `failed`, marked permanent when retrying cannot help
//!   (digest mismatch, corrupt data, a cap exceeded) and transient otherwise
//!   (the registry or the store unreachable).

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as StorePath};
use strata_proto::v1::{self, blob_source::Location};
use strata_proto::{Digest, LayerInventory};
use tokio_util::io::StreamReader;

use crate::analyzers::{self, Analyzer};
use crate::gate::{PermitReader, RegistryGate};
use crate::rate_limit::RateLimitWait;
use crate::source::SourceError;
use crate::telemetry::WorkerMetrics;

/// Blob fetches in flight per registry from one worker, unless configured.
pub const DEFAULT_REGISTRY_CONCURRENCY: usize = 4;
/// Times a fetch answered `429` is retried within one delivery before the
/// job is handed back to the queue.
const RATE_LIMIT_RETRIES: u32 = 3;
use crate::layer::{self, LayerError, Limits};
use crate::source::{
    BoundedReader, ImageRef, ImageSource as _, LayerDesc, LayerReader, SourceConfig, SourcePool,
};

/// What a worker holds to run jobs. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    pub worker_id: String,
    pub analyzers: Arc<Vec<Box<dyn Analyzer>>>,
    pub limits: Limits,
    /// Where inventories go (a local directory or S3-compatible storage).
    pub store: Arc<dyn ObjectStore>,
    /// Docker config, plain-HTTP registries and the registry policy; a
    /// job's `insecure` flag is honoured only for a registry listed here.
    pub source: SourceConfig,
    /// Per-registry fetch limits and 429 pauses, shared by the worker's slots.
    pub gate: Arc<RegistryGate>,
    /// Registry clients and authorization, reused across jobs.
    pub sources: Arc<SourcePool>,
    /// Where fetch and throttle figures go (`None`: nowhere).
    pub metrics: Option<WorkerMetrics>,
}

impl JobContext {
    pub fn new(worker_id: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        JobContext {
            worker_id: worker_id.into(),
            analyzers: Arc::new(analyzers::all()),
            limits: Limits::default(),
            store,
            source: SourceConfig::default(),
            sources: Arc::new(SourcePool::new()),
            gate: Arc::new(RegistryGate::new(DEFAULT_REGISTRY_CONCURRENCY)),
            metrics: None,
        }
    }

    /// The version jobs must carry to be analysed by this worker.
    pub fn analyzer_set_version(&self) -> String {
        analyzers::analyzer_set_version(&self.analyzers)
    }
}

/// The object-store key of a layer's inventory.
pub fn inventory_key(analyzer_set_version: &str, digest: &Digest) -> StorePath {
    StorePath::from(format!(
        "inventories/{analyzer_set_version}/{}/{}",
        digest.algorithm(),
        digest.hex()
    ))
}

/// Read a stored inventory back (the coordinator does this to compose).
pub async fn read_inventory(
    store: &dyn ObjectStore,
    analyzer_set_version: &str,
    digest: &Digest,
) -> Result<LayerInventory, String> {
    let key = inventory_key(analyzer_set_version, digest);
    let bytes = store
        .get(&key)
        .await
        .map_err(|e| format!("{key}: {e}"))?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{key}: {e}"))
}

/// Run one job. `attempt` is the delivery count, reported back.
pub async fn process(ctx: &JobContext, job: &v1::LayerJob, attempt: u32) -> v1::LayerResult {
    let started = Instant::now();
    let outcome = match run(ctx, job).await {
        Ok((key, inventory, compressed)) => v1::layer_result::Outcome::Analysed(v1::LayerAnalysed {
            inventory_key: key.to_string(),
            packages: u32::try_from(inventory.packages.len()).unwrap_or(u32::MAX),
            compressed_bytes: compressed,
            uncompressed_bytes: 0,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
        Err(failure) => v1::layer_result::Outcome::Failed(failure),
    };
    v1::LayerResult {
        digest: job.digest.clone(),
        analyzer_set_version: job.analyzer_set_version.clone(),
        worker_id: ctx.worker_id.clone(),
        attempt,
        outcome: Some(outcome),
    }
}

fn permanent(error: impl ToString) -> v1::LayerFailed {
    v1::LayerFailed {
        error: error.to_string(),
        permanent: true,
    }
}

fn transient(error: impl ToString) -> v1::LayerFailed {
    v1::LayerFailed {
        error: error.to_string(),
        permanent: false,
    }
}

async fn run(
    ctx: &JobContext,
    job: &v1::LayerJob,
) -> Result<(StorePath, LayerInventory, u64), v1::LayerFailed> {
    let digest: Digest = job.digest.parse().map_err(permanent)?;
    let want = ctx.analyzer_set_version();
    if job.analyzer_set_version != want {
        // Another worker generation's job: let one that matches take it.
        return Err(transient(format!(
            "job is for analyser set {:?}, this worker runs {want:?}",
            job.analyzer_set_version
        )));
    }
    let desc = LayerDesc {
        digest: digest.clone(),
        media_type: job.media_type.clone(),
        size: job.size,
    };
    // Read again (rarely) when a wanted hard link's target went past: see
    // `layer::analyze_layer_reopening`.
    let desc = &desc;
    let analysis = layer::analyze_layer_reopening(
        move || open_blob(ctx, job, desc),
        &digest,
        &job.media_type,
        ctx.analyzers.clone(),
        ctx.limits,
    )
    .await?
    .map_err(|err| match &err {
        // Bytes that are not the blob (a digest mismatch found by the
        // registry stream's check) will not change on a retry.
        LayerError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => permanent(err),
        LayerError::Io { .. } => transient(err),
        _ => permanent(err),
    })?;
    let key = inventory_key(&want, &digest);
    let json = serde_json::to_vec(&analysis.inventory).map_err(permanent)?;
    ctx.store
        .put(&key, PutPayload::from(json))
        .await
        .map_err(|e| transient(format!("storing {key}: {e}")))?;
    Ok((key, analysis.inventory, job.size))
}

/// A registry source's failure: a refusal of the registry policy is
/// permanent (another delivery would be refused too), the rest transient.
fn source_failed(err: SourceError) -> v1::LayerFailed {
    match err {
        SourceError::Policy(_) => permanent(err),
        other => transient(other),
    }
}

async fn open_blob(
    ctx: &JobContext,
    job: &v1::LayerJob,
    desc: &LayerDesc,
) -> Result<LayerReader, v1::LayerFailed> {
    let location = job
        .source
        .as_ref()
        .and_then(|s| s.location.as_ref())
        .ok_or_else(|| permanent("job names no blob source"))?;
    match location {
        Location::Registry(r) => {
            let reference = format!("{}/{}@{}", r.registry, r.repository, desc.digest);
            let ImageRef::Registry(image) = ImageRef::parse(&reference).map_err(permanent)? else {
                return Err(permanent(format!("{reference}: not a registry reference")));
            };
            // The coordinator checked the reference against its policy; this
            // worker checks it against its own (plain HTTP only to a registry
            // its own `insecure_registries` lists), and its client checks
            // every address and redirect.
            ctx.source
                .policy
                .check_registry(
                    image.registry(),
                    image.resolve_registry(),
                    &ctx.source.insecure_registries,
                    r.insecure,
                )
                .map_err(permanent)?;
            let source = ctx.sources.registry(image, &ctx.source).map_err(source_failed)?;
            // Each 429 pauses every fetch from this registry (the gate), not only this one.
            let mut limited = RateLimitWait::new("a blob fetch");
            loop {
                let permit = ctx.gate.acquire(&r.registry).await;
                match source.open_layer(desc).await {
                    Ok(reader) => return Ok(Box::new(PermitReader::new(reader, permit))),
                    Err(SourceError::RateLimited {
                        registry,
                        retry_after,
                    }) if limited.times() < RATE_LIMIT_RETRIES => {
                        drop(permit);
                        if let Some(m) = &ctx.metrics {
                            m.registry_throttled(&registry);
                        }
                        ctx.gate
                            .throttle(&registry, limited.pause(&registry, retry_after));
                    }
                    Err(err) => return Err(source_failed(err)),
                }
            }
        }
        Location::ObjectStore(o) => {
            let (store, path) = crate::storage::open_url(&o.url).map_err(permanent)?;
            let stream = store
                .get(&path)
                .await
                .map_err(|e| transient(format!("{}: {e}", o.url)))?
                .into_stream();
            let reader = StreamReader::new(stream.map_err(std::io::Error::other));
            Ok(Box::new(BoundedReader::new(reader, desc.size, o.url.clone())))
        }
    }
}
