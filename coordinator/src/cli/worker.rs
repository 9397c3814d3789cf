//! `strata worker`: takes layer jobs from NATS JetStream, analyses them,
//! stores inventories in object storage. Stateless: run as many as you like.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_worker::gate::RegistryGate;
use strata_worker::job::JobContext;
use strata_worker::queue::{Queue, nats::NatsQueue};
use strata_worker::run::{self, WorkerOptions};

use super::roles::{self, Shutdown};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL [default: nats://127.0.0.1:4222].
    #[arg(long, env = "STRATA_NATS", value_name = "URL")]
    pub nats: Option<String>,
    /// Object storage for inventories: file:///DIR or s3://BUCKET/PREFIX (the coordinator's).
    #[arg(long, env = "STRATA_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Prometheus /metrics and /healthz address [default: 127.0.0.1:9101].
    #[arg(long, env = "STRATA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// This worker's name in heartbeats and results [default: the host name and process id].
    #[arg(long, env = "STRATA_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Layers analysed at once [default: 4].
    #[arg(long, env = "STRATA_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Blob fetches in flight per registry [default: 4].
    #[arg(long, env = "STRATA_REGISTRY_CONCURRENCY")]
    pub registry_concurrency: Option<usize>,
    /// A registry (`host[:port]`) to speak plain HTTP to. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// The Docker config file with registry credentials.
    #[arg(long, env = "STRATA_DOCKER_CONFIG", value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Seconds a job in hand may still run after SIGTERM before it is handed back [default: 30].
    #[arg(long, env = "STRATA_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// OTLP/gRPC collector for traces and metrics (off when unset).
    #[arg(long, env = "STRATA_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// `strata worker`'s config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerFile {
    pub nats: String,
    pub store: Option<String>,
    pub metrics_listen: String,
    pub worker_id: Option<String>,
    pub concurrency: usize,
    pub registry_concurrency: usize,
    pub insecure_registries: Vec<String>,
    pub docker_config: Option<PathBuf>,
    pub shutdown_grace_secs: u64,
    pub otlp_endpoint: Option<String>,
}

impl Default for WorkerFile {
    fn default() -> Self {
        WorkerFile {
            nats: "nats://127.0.0.1:4222".to_owned(),
            store: None,
            metrics_listen: "127.0.0.1:9101".to_owned(),
            worker_id: None,
            concurrency: 4,
            registry_concurrency: strata_worker::job::DEFAULT_REGISTRY_CONCURRENCY,
            insecure_registries: Vec::new(),
            docker_config: None,
            shutdown_grace_secs: 30,
            otlp_endpoint: None,
        }
    }
}

impl WorkerArgs {
    fn resolve(self) -> anyhow::Result<WorkerFile> {
        let mut c: WorkerFile = roles::load_config(self.config.as_deref())?;
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { c.$field = v; } )* };
        }
        set!(
            nats,
            metrics_listen,
            concurrency,
            registry_concurrency,
            shutdown_grace_secs
        );
        if self.store.is_some() {
            c.store = self.store;
        }
        if self.worker_id.is_some() {
            c.worker_id = self.worker_id;
        }
        if self.docker_config.is_some() {
            c.docker_config = self.docker_config;
        }
        if self.otlp_endpoint.is_some() {
            c.otlp_endpoint = self.otlp_endpoint;
        }
        c.insecure_registries.extend(self.insecure_registries);
        anyhow::ensure!((1..=256).contains(&c.concurrency), "concurrency must be 1 to 256");
        anyhow::ensure!(
            (1..=256).contains(&c.registry_concurrency),
            "registry_concurrency must be 1 to 256"
        );
        Ok(c)
    }
}

pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

pub async fn run(args: WorkerArgs, global: &super::GlobalArgs) -> anyhow::Result<u8> {
    let c = args.resolve()?;
    let store_url = c
        .store
        .clone()
        .context("no object store: give --store file:///DIR or s3://BUCKET/PREFIX (the coordinator's)")?;
    let metrics_addr = roles::parse_addr("--metrics-listen", &c.metrics_listen)?;
    let _telemetry = roles::init_telemetry(global, "strata-worker", c.otlp_endpoint.as_deref())?;
    let metrics = roles::metrics("strata-worker", c.otlp_endpoint.as_deref())?;
    let store = roles::open_store(&store_url)?;
    let worker_id = c.worker_id.clone().unwrap_or_else(default_worker_id);

    let mut ctx = JobContext::new(worker_id.clone(), store);
    ctx.gate = Arc::new(RegistryGate::new(c.registry_concurrency));
    ctx.metrics = Some(metrics.clone());
    ctx.source.insecure_registries = c.insecure_registries.clone();
    ctx.source.docker_config = c.docker_config.clone();

    let shutdown = Shutdown::on_signal();
    let metrics_at = roles::spawn_metrics(metrics_addr, metrics, shutdown.clone()).await?;
    let client = roles::connect_nats(&c.nats, &format!("strata-worker {worker_id}")).await?;
    // The coordinator creates the streams; wait for them (or for a signal).
    let queue = loop {
        match NatsQueue::bind(client.clone()).await {
            Ok(q) => break Queue::Nats(Box::new(q)),
            Err(err) => {
                tracing::warn!(error = %err, "job streams not there yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.clone().wait() => return Ok(super::EXIT_OK),
                }
            }
        }
    };
    tracing::info!(worker = %worker_id, metrics = %metrics_at, concurrency = c.concurrency, "worker running");
    let options = WorkerOptions {
        concurrency: c.concurrency,
        shutdown_grace: Duration::from_secs(c.shutdown_grace_secs),
        ..WorkerOptions::default()
    };
    let counters = run::run(queue, ctx, options, shutdown.wait()).await;
    let _ = client.flush().await;
    tracing::info!(
        worker = %worker_id,
        done = counters.done.load(std::sync::atomic::Ordering::Relaxed),
        failed = counters.failed.load(std::sync::atomic::Ordering::Relaxed),
        "worker stopped"
    );
    Ok(super::EXIT_OK)
}
