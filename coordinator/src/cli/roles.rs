//! What the long-running roles (`coordinator`, `worker`, `serve`) share:
//! the object store, NATS connections, telemetry, signals, gRPC security.
//!
//! Settings (flags and config files) are declared in [`super::settings`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::ObjectStore;
use strata_coordinator::api::{Security, SecurityFiles};
use strata_coordinator::cluster::VulnData;
use strata_coordinator::vulndb::Db;
use strata_worker::telemetry::{self, LogFormat, Metrics, TelemetryConfig, TelemetryGuard};

use super::settings::SecuritySettings;

use super::GlobalArgs;

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
    /// Fires on SIGTERM/Ctrl-C. From then on the process has `deadline` to
    /// finish: a drain waiting on an unreachable NATS would otherwise hang
    /// it for good. Past the deadline (on a thread of its own, so a stuck
    /// runtime cannot hold it) it logs so and exits with status 2; a second
    /// signal exits at once.
    pub fn on_signal(role: &'static str, deadline: Duration) -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
            let watchdog = std::thread::Builder::new()
                .name("shutdown-deadline".into())
                .spawn(move || {
                    std::thread::sleep(deadline);
                    tracing::error!(
                        role,
                        deadline_secs = deadline.as_secs(),
                        "shutdown did not finish within the deadline (NATS or the object store unreachable?): exiting with status 2"
                    );
                    std::process::exit(i32::from(super::EXIT_ERROR));
                });
            if let Err(err) = watchdog {
                tracing::warn!(error = %err, "no shutdown deadline: cannot start its thread");
            }
            shutdown_signal().await;
            tracing::error!(
                role,
                "second shutdown signal: exiting without finishing the drain"
            );
            std::process::exit(i32::from(super::EXIT_ERROR));
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

/// Serves `/metrics`, `/healthz` and `/readyz` (following `ready`, if
/// given) on `addr` in the background.
pub async fn spawn_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Option<telemetry::http::Ready>,
    shutdown: Shutdown,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| {
            format!(
                "binding the metrics address {addr} (--metrics-listen): another process on this host may hold it, \
                 such as a second process of the same role on its default port; give each its own, or port 0 for a free one \
                 (the address taken is logged at start)"
            )
        })?;
    let local = listener.local_addr().context("metrics address")?;
    // Logged here, before NATS answers: with port 0 this is how to find it.
    tracing::info!(metrics = %local, "metrics and health listening");
    tokio::spawn(async move {
        if let Err(err) = telemetry::http::serve_metrics(listener, metrics, ready, shutdown.wait()).await {
            tracing::error!(error = %err, "metrics server failed");
        }
    });
    Ok(local)
}

/// Opens the vulnerability database and builds its index (seconds for a
/// large database: off the async threads).
pub async fn load_vulndb(path: &Path) -> anyhow::Result<VulnData> {
    let db =
        Db::open(path).with_context(|| format!("opening the vulnerability database {}", path.display()))?;
    tokio::task::spawn_blocking(move || VulnData::new(&db))
        .await
        .context("building the vulnerability index")
}

/// Reads the TLS and token files and checks `listen` against them: plain
/// gRPC only on loopback unless `allow_remote`. Logs what is in force
/// (never a token).
pub fn load_security(c: &SecuritySettings, listen: SocketAddr) -> anyhow::Result<Security> {
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
}
