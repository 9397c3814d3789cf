//! `strata worker`: takes layer jobs from NATS JetStream, analyses them,
//! stores inventories in object storage. Stateless: run as many as you like.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use strata_worker::gate::RegistryGate;
use strata_worker::job::JobContext;
use strata_worker::queue::{Queue, nats::NatsQueue};
use strata_worker::run::{self, WorkerOptions};
use strata_worker::telemetry::WorkerMetrics;

use super::roles::{self, Shutdown};
use super::settings::{self, ClusterSettings};

/// `strata worker`: its flags are its config file's keys (see [`settings`]).
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// A TOML file with any of the settings below; flags and `STRATA_*`
    /// variables override it.
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: WorkerSettings,
}

/// Every setting of `strata worker`, declared once.
#[derive(Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerSettings {
    #[command(flatten)]
    #[serde(flatten)]
    pub cluster: ClusterSettings,
    /// Prometheus /metrics and /healthz address.
    #[arg(
        long,
        env = "STRATA_METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_listen: String,
    /// This worker's name in heartbeats and results [default: the host name and process id].
    #[arg(long, env = "STRATA_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Layers analysed at once, 1 to 256.
    #[arg(long, env = "STRATA_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Blob fetches in flight per registry, 1 to 256.
    #[arg(long, env = "STRATA_REGISTRY_CONCURRENCY", default_value_t = strata_worker::job::DEFAULT_REGISTRY_CONCURRENCY)]
    pub registry_concurrency: usize,
    /// A registry (`host[:port]`) to speak plain HTTP to. Repeatable. A
    /// job may ask for plain HTTP only to these.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub registry_policy: settings::RegistryPolicySettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub limits: super::image::LimitArgs,
    /// The Docker config file with registry credentials.
    #[arg(long, env = "STRATA_DOCKER_CONFIG", value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Seconds a job in hand may still run after SIGTERM before it is handed back.
    #[arg(
        long,
        env = "STRATA_SHUTDOWN_GRACE_SECS",
        value_name = "SECS",
        default_value_t = 30
    )]
    pub shutdown_grace_secs: u64,
}

impl WorkerSettings {
    fn validate(self) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.cluster.shutdown.shutdown_timeout_secs > self.shutdown_grace_secs,
            "--shutdown-timeout-secs ({}) must be longer than --shutdown-grace-secs ({}): jobs in hand get the grace, then are handed back before the deadline",
            self.cluster.shutdown.shutdown_timeout_secs,
            self.shutdown_grace_secs
        );
        anyhow::ensure!(
            (1..=256).contains(&self.concurrency),
            "concurrency must be 1 to 256"
        );
        anyhow::ensure!(
            (1..=256).contains(&self.registry_concurrency),
            "registry_concurrency must be 1 to 256"
        );
        Ok(self)
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

pub async fn run(
    args: WorkerArgs,
    matches: &clap::ArgMatches,
    global: &super::GlobalArgs,
) -> anyhow::Result<u8> {
    let c = settings::resolve(args.settings, matches, args.config.as_deref())?.validate()?;
    let store_url = c.cluster.store_url()?.to_owned();
    let metrics_addr = settings::parse_addr("--metrics-listen", &c.metrics_listen)?;
    let _telemetry = roles::init_telemetry(global, "strata-worker", c.cluster.otlp_endpoint.as_deref())?;
    let metrics = roles::metrics("strata-worker", c.cluster.otlp_endpoint.as_deref())?;
    let store = roles::open_store(&store_url)?;
    let worker_id = c.worker_id.clone().unwrap_or_else(default_worker_id);

    let mut ctx = JobContext::new(worker_id.clone(), store);
    ctx.gate = Arc::new(RegistryGate::new(c.registry_concurrency));
    ctx.metrics = Some(WorkerMetrics::new(&metrics));
    ctx.source.insecure_registries = c.insecure_registries.clone();
    ctx.source.docker_config = c.docker_config.clone();
    ctx.source.policy = c.registry_policy.policy()?;
    ctx.limits = c.limits.limits()?;

    let shutdown = Shutdown::on_signal("worker", c.cluster.shutdown.timeout());
    let metrics_at = roles::spawn_metrics(metrics_addr, metrics, None, shutdown.clone()).await?;
    let client = roles::connect_nats(&c.cluster.nats, &format!("strata-worker {worker_id}")).await?;
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
