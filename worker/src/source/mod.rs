//! Image sources: an image reference in, a manifest's ordered layers and
//! layer byte streams out.
//!
//! # Layout
//! - [`reference`]: [`ImageRef::parse`] for `alpine:3.19`, `ghcr.io/o/r@sha256:…`,
//!   `oci-dir:PATH[:TAG]`, `docker-archive:PATH[:TAG]`, `dir:PATH`.
//! - [`platform`]: `os/arch[/variant]` and the choice of one manifest from an index.
//! - `manifest`: the OCI / Docker manifest JSON shapes, parsed with size bounds.
//! - `registry`: the Distribution API through `oci-client`, with credentials from
//!   the Docker config file (`docker_config`).
//! - `oci_layout`, `docker_archive`: local images, read in place.
//!
//! # Contract
//! [`Source::open`] checks that the image can be reached (for local sources:
//! that the path exists); [`ImageSource::resolve`] picks the manifest (one
//! platform out of an index) and lists its layers in order;
//! [`ImageSource::open_layer`] streams one layer's bytes **as stored** (still
//! compressed). The layer reader is bounded to the descriptor's size: a blob
//! longer or shorter than its descriptor is an I/O error. The caller verifies
//! the sha256 while streaming (registry blobs are also checked by `oci-client`).
//! Nothing here writes to disk.
//!
//! `dir:PATH` has no manifest and no layers: [`Source::open`] returns
//! [`Source::RootDir`] with the path, for the layer module to walk.

mod bounded;
pub(crate) mod docker_archive;
pub(crate) mod docker_config;
pub(crate) mod manifest;
mod oci_layout;
pub mod platform;
pub mod policy;
mod pool;
pub mod reference;
mod registry;

use std::path::PathBuf;

use futures::future::BoxFuture;
use strata_proto::Digest;
use tokio::io::AsyncRead;

pub use bounded::BoundedReader;
pub use manifest::{MAX_CONFIG_BYTES, MAX_INDEX_ENTRIES, MAX_LAYERS, MAX_MANIFEST_BYTES};
pub use platform::Platform;
pub use policy::{PolicyError, RegistryPolicy};
pub use pool::SourcePool;
pub use reference::ImageRef;
pub use registry::{RegistrySource, TagListError};

/// Everything that can go wrong reaching an image. The CLI maps every variant
/// to exit code 2 with the one-line `Display` message.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bad image reference {input:?}: {reason}")]
    BadReference { input: String, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("platform {wanted} not found in the image index; it offers: {}", offered_list(.offered))]
    PlatformNotFound { wanted: String, offered: Vec<String> },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// HTTP 429: the registry asks us to slow down (for `retry_after`, when it says).
    #[error("registry {registry}: rate limited (HTTP 429){}", .retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        registry: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {reason}")]
    Format { context: String, reason: String },
    /// The registry policy refused the reference, a redirect or an address.
    #[error("refused: {0}")]
    Policy(#[from] PolicyError),
}

fn offered_list(offered: &[String]) -> String {
    if offered.is_empty() {
        "no platforms".to_owned()
    } else {
        offered.join(", ")
    }
}

impl SourceError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SourceError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn format(context: impl Into<String>, reason: impl Into<String>) -> Self {
        SourceError::Format {
            context: context.into(),
            reason: reason.into(),
        }
    }
}

/// How to reach images. `Default` is: HTTPS everywhere, credentials from the
/// Docker config file found through `$DOCKER_CONFIG` or `~/.docker`, the
/// strict registry policy (see [`policy`]).
#[derive(Debug, Clone, Default)]
pub struct SourceConfig {
    /// Registries (`host[:port]`, as written in references) spoken to over
    /// plain HTTP. Every other registry is HTTPS only.
    pub insecure_registries: Vec<String>,
    /// The Docker config file to read credentials from. `None`: the
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Where a reference may make us connect.
    pub policy: RegistryPolicy,
}

/// A blob as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDesc {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// The image configuration blob, with the fields the scanner uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    pub desc: LayerDesc,
    /// The raw JSON (at most [`MAX_CONFIG_BYTES`]).
    pub raw: bytes::Bytes,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    /// `rootfs.diff_ids`: the sha256 of each layer uncompressed, in order.
    pub diff_ids: Vec<String>,
}

/// What [`ImageSource::resolve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference as given, normalised (`docker.io/library/alpine:latest`,
    /// `oci-dir:/path:tag`).
    pub reference: String,
    /// The digest of the chosen image manifest. For a docker-archive, which
    /// holds no manifest, the digest of the OCI manifest we synthesise from
    /// its config and layers.
    pub manifest_digest: Digest,
    /// The digest of the index the manifest was chosen from, if any.
    pub index_digest: Option<Digest>,
    /// The platform chosen from the index, else the one the config declares.
    pub platform: Option<Platform>,
    /// Layers, base first.
    pub layers: Vec<LayerDesc>,
    pub config: ImageConfig,
}

/// A layer's bytes as stored (compressed or not), bounded to the descriptor's size.
pub type LayerReader = Box<dyn AsyncRead + Send + Unpin>;

/// One opened image.
pub trait ImageSource: Send + Sync {
    /// Chooses the manifest and lists its layers. `platform`: `None` picks
    /// `linux/amd64` from an index and accepts any single-platform image;
    /// `Some(p)` must match (an index entry, or a single image's config when
    /// it declares its platform), else [`SourceError::PlatformNotFound`].
    fn resolve<'a>(
        &'a self,
        platform: Option<&'a Platform>,
    ) -> BoxFuture<'a, Result<ResolvedImage, SourceError>>;

    /// Streams one blob of this image (a layer, or the config). Errors:
    /// `NotFound` when the source does not hold it.
    fn open_layer<'a>(&'a self, layer: &'a LayerDesc) -> BoxFuture<'a, Result<LayerReader, SourceError>>;
}

/// An opened reference: an image with a manifest, or a plain root directory.
pub enum Source {
    Image(Box<dyn ImageSource>),
    /// `dir:PATH`: an unpacked root filesystem, walked by `layer::analyze_dir`.
    RootDir(PathBuf),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Image(_) => f.write_str("Source::Image(..)"),
            Source::RootDir(p) => f.debug_tuple("Source::RootDir").field(p).finish(),
        }
    }
}

impl Source {
    /// Opens `reference`. Local paths must exist (else `NotFound`); a registry
    /// is not contacted until `resolve`.
    pub async fn open(reference: ImageRef, config: &SourceConfig) -> Result<Source, SourceError> {
        match reference {
            ImageRef::Registry(r) => Ok(Source::Image(Box::new(registry::RegistrySource::new(r, config)?))),
            ImageRef::OciDir { path, tag } => Ok(Source::Image(Box::new(
                oci_layout::OciLayoutSource::open(path, tag).await?,
            ))),
            ImageRef::DockerArchive { path, tag } => Ok(Source::Image(Box::new(
                docker_archive::DockerArchiveSource::open(path, tag).await?,
            ))),
            ImageRef::Dir { path } => match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_dir() => Ok(Source::RootDir(path)),
                Ok(_) => Err(SourceError::NotFound(format!(
                    "dir:{}: not a directory",
                    path.display()
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::NotFound(format!(
                    "dir:{}: no such directory",
                    path.display()
                ))),
                Err(e) => Err(SourceError::io(format!("dir:{}", path.display()), e)),
            },
        }
    }

    /// The image source, or `None` for a root directory.
    pub fn into_image(self) -> Option<Box<dyn ImageSource>> {
        match self {
            Source::Image(s) => Some(s),
            Source::RootDir(_) => None,
        }
    }
}
