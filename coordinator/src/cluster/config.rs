//! What a [`Coordinator`](super::Coordinator) is built from: how it runs
//! ([`CoordinatorConfig`]), the vulnerability data in force ([`VulnData`])
//! and its state buckets ([`Buckets`]).

use std::time::{Duration, Instant};

use strata_worker::source::SourceConfig;

use super::kv::{self, Kv, KvError};
use super::records::{FINDINGS_BUCKET, IMAGES_BUCKET, LAYERS_BUCKET, SCANS_BUCKET};
use crate::matching::Matcher;
use crate::vulndb::{Db, DbStatus};

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
    /// How long a report or layer inventory nothing references any more is
    /// kept before it is removed (`None`: never removed; `gc.rs`).
    pub gc_grace: Option<Duration>,
    /// How often the garbage collector runs (`None`: never).
    pub gc_interval: Option<Duration>,
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
            gc_grace: Some(Duration::from_secs(7 * 24 * 3600)),
            gc_interval: Some(Duration::from_secs(3600)),
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

/// The state buckets.
#[derive(Clone)]
pub struct Buckets {
    pub layers: Kv,
    pub scans: Kv,
    pub images: Kv,
    /// Each registered image's open findings (first seen) and recently
    /// resolved ones (when, why).
    pub findings: Kv,
}

impl Buckets {
    pub async fn nats(js: &async_nats::jetstream::Context, replicas: usize) -> Result<Buckets, KvError> {
        Ok(Buckets {
            layers: Kv::nats(js, LAYERS_BUCKET, replicas).await?,
            scans: Kv::nats(js, SCANS_BUCKET, replicas).await?,
            images: Kv::nats(js, IMAGES_BUCKET, replicas).await?,
            findings: Kv::nats(js, FINDINGS_BUCKET, replicas).await?,
        })
    }

    pub fn local(path: &std::path::Path) -> Result<Buckets, KvError> {
        let db = kv::open_local_db(path)?;
        Ok(Buckets {
            layers: Kv::Local(kv::LocalKv::new(db.clone(), LAYERS_BUCKET)),
            scans: Kv::Local(kv::LocalKv::new(db.clone(), SCANS_BUCKET)),
            images: Kv::Local(kv::LocalKv::new(db.clone(), IMAGES_BUCKET)),
            findings: Kv::Local(kv::LocalKv::new(db, FINDINGS_BUCKET)),
        })
    }
}
