//! What the long-running roles (`coordinator`, `worker`, `serve`) share:
//! config files, the object store, NATS connections, telemetry, signals.
//!
//! Configuration: each role has one struct (`Default`, unknown keys
//! rejected), read from `--config FILE` (TOML) when given; every flag (and
//! its `STRATA_*` environment variable) overrides the file. Validated once,
//! at start: a bad value is an error before anything runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::ObjectStore;
use strata_coordinator::api::{Security, SecurityFiles};
use strata_worker::telemetry::{self, LogFormat, Metrics, TelemetryConfig, TelemetryGuard};

use super::GlobalArgs;

/// Bound on a config file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a role's TOML config file (unknown keys are an error), or its defaults.
pub fn load_config<T: serde::de::DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let meta = std::fs::metadata(path).with_context(|| format!("config {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX_CONFIG_BYTES,
        "config {}: {} bytes is over the {MAX_CONFIG_BYTES}-byte limit",
        path.display(),
        meta.len()
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

pub fn parse_addr(what: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value.parse().with_context(|| {
        format!("{what} {value:?}: expected HOST:PORT with an IP address, e.g. 127.0.0.1:7700")
    })
}

/// Logs (and traces by OTLP when an endpoint is set) for a role.
pub fn init_telemetry(
    global: &GlobalArgs,
    service: &str,
    otlp: Option<&str>,
) -> anyhow::Result<TelemetryGuard> {
    let config = TelemetryConfig {
        otlp_endpoint: otlp.map(str::to_owned),
        service_name: service.to_owned(),
        log_format: match global.log_format {
            super::LogFormat::Text => LogFormat::Text,
            super::LogFormat::Json => LogFormat::Json,
        },
        // Roles log their progress by default; `--log` narrows or widens it.
        log_filter: if global.log == "warn" {
            "info".to_owned()
        } else {
            global.log.clone()
        },
    };
    telemetry::init(&config).context("setting up telemetry")
}

pub fn metrics(service: &str, otlp: Option<&str>) -> anyhow::Result<Metrics> {
    Metrics::new(service, otlp).context("setting up metrics")
}

/// The object store a URL names, rooted at the URL's path: `file:///dir`
/// (created when missing) or `s3://bucket/prefix` (settings from `AWS_*`).
pub fn open_store(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let parsed = url::Url::parse(url).with_context(|| format!("store URL {url:?}"))?;
    if parsed.scheme() == "file" {
        let path = parsed
            .to_file_path()
            .map_err(|_| anyhow::anyhow!("store URL {url:?}: not a local path"))?;
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating the store directory {}", path.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&path)
            .with_context(|| format!("store {}", path.display()))?;
        return Ok(Arc::new(store));
    }
    let (store, prefix) =
        strata_worker::storage::open_url(url).map_err(|e| anyhow::anyhow!("store URL {e}"))?;
    Ok(Arc::new(object_store::prefix::PrefixStore::new(store, prefix)))
}

/// A file URL for a local directory (made absolute).
pub fn dir_url(dir: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    url::Url::from_directory_path(&abs)
        .map(|u| u.to_string().trim_end_matches('/').to_owned())
        .map_err(|_| anyhow::anyhow!("{}: not a usable directory path", abs.display()))
}

/// Connects to NATS, retrying until it answers (a server may be starting)
/// and reconnecting forever afterwards. The URL is logged without credentials.
pub async fn connect_nats(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let shown = redact(url);
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let shown = shown.clone();
            async move {
                tracing::info!(nats = %shown, event = %event, "nats connection");
            }
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {}", redact(url)))?;
    Ok(client)
}

/// `nats://user:pass@host` → `nats://host`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

/// A shutdown signal many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Fires on SIGTERM/Ctrl-C.
    pub fn on_signal() -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    pub async fn wait(mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Serves `/metrics` and `/healthz` on `addr` in the background.
pub async fn spawn_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    shutdown: Shutdown,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let local = listener.local_addr().context("metrics address")?;
    tokio::spawn(async move {
        if let Err(err) = telemetry::http::serve_metrics(listener, metrics, shutdown.wait()).await {
            tracing::error!(error = %err, "metrics server failed");
        }
    });
    Ok(local)
}

/// Registered images are resolved again every six hours by default.
pub const DEFAULT_REFRESH_SECS: u64 = 6 * 3600;

/// `--refresh-interval-secs`: 0 turns the refresh off.
pub fn refresh_interval(secs: u64) -> Option<std::time::Duration> {
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

/// How the gRPC server is secured, as flags (`coordinator` and `serve`).
#[derive(clap::Args, Debug, Default)]
pub struct SecurityArgs {
    /// PEM server certificate (chain): serve gRPC over TLS (with --tls-key).
    #[arg(long, env = "STRATA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mTLS); the
    /// certificate's name identifies the caller in audit logs.
    #[arg(long, env = "STRATA_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on every Strata call; the file
    /// has one `NAME TOKEN` per line (`#` comments), tokens of 16+ characters.
    #[arg(long, env = "STRATA_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow plain (non-TLS) gRPC on a non-loopback address.
    #[arg(long, env = "STRATA_ALLOW_REMOTE")]
    pub allow_remote: bool,
    /// Let API callers submit `oci-dir:` / `docker-archive:` paths, which
    /// this server then reads from its own filesystem (off: registry images only).
    #[arg(long, env = "STRATA_ALLOW_LOCAL_IMAGES")]
    pub allow_local_images: bool,
}

/// The same settings as config-file keys (top level, named like the flags).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub allow_remote: bool,
    pub allow_local_images: bool,
}

impl SecurityConfig {
    /// Flags override the file.
    pub fn overlay(&mut self, args: SecurityArgs) {
        if args.tls_cert.is_some() {
            self.tls_cert = args.tls_cert;
        }
        if args.tls_key.is_some() {
            self.tls_key = args.tls_key;
        }
        if args.client_ca.is_some() {
            self.client_ca = args.client_ca;
        }
        if args.token_file.is_some() {
            self.token_file = args.token_file;
        }
        self.allow_remote |= args.allow_remote;
        self.allow_local_images |= args.allow_local_images;
    }
}

/// Reads the TLS and token files and checks `listen` against them: plain
/// gRPC only on loopback unless `allow_remote`. Logs what is in force
/// (never a token).
pub fn load_security(c: &SecurityConfig, listen: SocketAddr) -> anyhow::Result<Security> {
    let security = Security::load(&SecurityFiles {
        tls_cert: c.tls_cert.clone(),
        tls_key: c.tls_key.clone(),
        client_ca: c.client_ca.clone(),
        token_file: c.token_file.clone(),
    })?;
    security.check_listen(listen, c.allow_remote)?;
    tracing::info!(
        tls = security.is_tls(),
        client_certificates = security.requires_client_certs(),
        tokens = security.token_count(),
        "grpc security"
    );
    if !security.is_tls() && !listen.ip().is_loopback() {
        tracing::warn!(grpc = %listen, "serving plain gRPC on a non-loopback address (--allow-remote)");
    }
    Ok(security)
}

/// Queue settings from a role's config.
pub fn queue_settings(q: &QueueConfig) -> anyhow::Result<strata_worker::queue::QueueSettings> {
    anyhow::ensure!(q.max_deliver >= 1, "max_deliver must be at least 1");
    anyhow::ensure!(q.ack_wait_secs >= 1, "ack_wait_secs must be at least 1");
    anyhow::ensure!(q.max_ack_pending >= 1, "max_ack_pending must be at least 1");
    anyhow::ensure!((1..=5).contains(&q.replicas), "replicas must be 1 to 5");
    Ok(strata_worker::queue::QueueSettings {
        ack_wait: Duration::from_secs(q.ack_wait_secs),
        max_deliver: q.max_deliver,
        max_ack_pending: q.max_ack_pending,
        max_jobs: q.max_jobs,
        replicas: q.replicas,
        duplicate_window: Duration::from_secs(q.duplicate_window_secs.max(1)),
    })
}

/// The job queue's settings, as a config file writes them (`[queue]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub ack_wait_secs: u64,
    pub max_deliver: u32,
    pub max_ack_pending: i64,
    pub max_jobs: i64,
    pub replicas: usize,
    pub duplicate_window_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = strata_worker::queue::QueueSettings::default();
        QueueConfig {
            ack_wait_secs: d.ack_wait.as_secs(),
            max_deliver: d.max_deliver,
            max_ack_pending: d.max_ack_pending,
            max_jobs: d.max_jobs,
            replicas: d.replicas,
            duplicate_window_secs: d.duplicate_window.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_shown() {
        assert_eq!(
            redact("nats://alice:s3cret@10.0.0.1:4222"),
            "nats://10.0.0.1:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn security_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "tls_cert = \"/etc/strata/cert.pem\"\ntoken_file = \"/etc/strata/tokens\"\nallow_remote = true\n",
        )
        .unwrap();
        let mut c = load_config::<SecurityConfig>(Some(&path)).unwrap();
        c.overlay(SecurityArgs {
            token_file: Some("/run/tokens".into()),
            ..SecurityArgs::default()
        });
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/etc/strata/cert.pem")));
        assert_eq!(c.token_file.as_deref(), Some(Path::new("/run/tokens")));
        assert!(c.allow_remote);
    }

    #[test]
    fn unknown_config_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "max_deliver = 3\nbogus = 1\n").unwrap();
        let err = load_config::<QueueConfig>(Some(&path)).unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
        std::fs::write(&path, "max_deliver = 3\n").unwrap();
        assert_eq!(load_config::<QueueConfig>(Some(&path)).unwrap().max_deliver, 3);
    }
}
