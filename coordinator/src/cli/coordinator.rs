//! `strata coordinator`: the cluster's coordinator role. Jobs and results
//! over NATS JetStream, state in JetStream key-value buckets, inventories
//! and reports in object storage, the gRPC API for clients.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use strata_coordinator::api::{self, AdminApi, NatsHandle, Services};
use strata_coordinator::cluster::{Buckets, Coordinator, CoordinatorConfig, VulnData};
use strata_coordinator::vulndb::Db;
use strata_worker::queue::{Queue, nats::NatsQueue};

use super::roles::{self, DEFAULT_REFRESH_SECS, QueueConfig, SecurityArgs, SecurityConfig, Shutdown};

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL (JetStream enabled, 2.10 or newer) [default: nats://127.0.0.1:4222].
    #[arg(long, env = "STRATA_NATS", value_name = "URL")]
    pub nats: Option<String>,
    /// Object storage for inventories and reports: file:///DIR or s3://BUCKET/PREFIX.
    #[arg(long, env = "STRATA_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// gRPC address [default: 127.0.0.1:7700].
    #[arg(long, env = "STRATA_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Prometheus /metrics and /healthz address [default: 127.0.0.1:9100].
    #[arg(long, env = "STRATA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// The vulnerability database file (`strata db import` / `strata db update`).
    #[arg(long, env = "STRATA_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// A registry (`host[:port]`) to speak plain HTTP to. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Deliveries of one layer job before its layer is marked failed [default: 5].
    #[arg(long, env = "STRATA_MAX_DELIVER")]
    pub max_deliver: Option<u32>,
    /// Seconds a worker may hold a job without a progress ack [default: 60].
    #[arg(long, env = "STRATA_ACK_WAIT_SECS")]
    pub ack_wait_secs: Option<u64>,
    /// Jobs delivered and not yet acked across all workers [default: 1000].
    #[arg(long, env = "STRATA_MAX_ACK_PENDING")]
    pub max_ack_pending: Option<i64>,
    /// Replicas of streams and buckets (3 on a clustered NATS) [default: 1].
    #[arg(long, env = "STRATA_REPLICAS")]
    pub replicas: Option<usize>,
    /// OTLP/gRPC collector for traces and metrics (off when unset).
    #[arg(long, env = "STRATA_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Seconds between re-resolving registered images and re-listing watched
    /// repositories (moved tags are rescanned; 0: never) [default: 21600].
    #[arg(long, env = "STRATA_REFRESH_INTERVAL_SECS", value_name = "SECS")]
    pub refresh_interval_secs: Option<u64>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `strata coordinator`'s config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorFile {
    pub nats: String,
    pub store: Option<String>,
    pub listen: String,
    pub metrics_listen: String,
    pub db: Option<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub otlp_endpoint: Option<String>,
    pub refresh_interval_secs: u64,
    pub queue: QueueConfig,
    /// gRPC security: the same keys as the flags.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub allow_remote: bool,
    pub allow_local_images: bool,
}

impl CoordinatorFile {
    /// The security keys, with `args` (flags) over them.
    fn security(&self, args: SecurityArgs) -> SecurityConfig {
        let mut c = SecurityConfig {
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
            token_file: self.token_file.clone(),
            allow_remote: self.allow_remote,
            allow_local_images: self.allow_local_images,
        };
        c.overlay(args);
        c
    }
}

impl Default for CoordinatorFile {
    fn default() -> Self {
        CoordinatorFile {
            nats: "nats://127.0.0.1:4222".to_owned(),
            store: None,
            listen: "127.0.0.1:7700".to_owned(),
            metrics_listen: "127.0.0.1:9100".to_owned(),
            db: None,
            insecure_registries: Vec::new(),
            otlp_endpoint: None,
            refresh_interval_secs: DEFAULT_REFRESH_SECS,
            queue: QueueConfig::default(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            token_file: None,
            allow_remote: false,
            allow_local_images: false,
        }
    }
}

impl CoordinatorArgs {
    fn resolve(self) -> anyhow::Result<(CoordinatorFile, SecurityConfig)> {
        let mut c: CoordinatorFile = roles::load_config(self.config.as_deref())?;
        if let Some(v) = self.nats {
            c.nats = v;
        }
        if let Some(v) = self.store {
            c.store = Some(v);
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics_listen = v;
        }
        if let Some(v) = self.db {
            c.db = Some(v);
        }
        c.insecure_registries.extend(self.insecure_registries);
        if let Some(v) = self.otlp_endpoint {
            c.otlp_endpoint = Some(v);
        }
        if let Some(v) = self.refresh_interval_secs {
            c.refresh_interval_secs = v;
        }
        if let Some(v) = self.max_deliver {
            c.queue.max_deliver = v;
        }
        if let Some(v) = self.ack_wait_secs {
            c.queue.ack_wait_secs = v;
        }
        if let Some(v) = self.max_ack_pending {
            c.queue.max_ack_pending = v;
        }
        if let Some(v) = self.replicas {
            c.queue.replicas = v;
        }
        let security = c.security(self.security);
        Ok((c, security))
    }
}

pub async fn run(args: CoordinatorArgs, global: &super::GlobalArgs) -> anyhow::Result<u8> {
    let (c, security) = args.resolve()?;
    let store_url = c
        .store
        .clone()
        .context("no object store: give --store file:///DIR or s3://BUCKET/PREFIX")?;
    let listen = roles::parse_addr("--listen", &c.listen)?;
    let metrics_addr = roles::parse_addr("--metrics-listen", &c.metrics_listen)?;
    let settings = roles::queue_settings(&c.queue)?;
    let db_path =
        c.db.clone()
            .context("no vulnerability database: give --db FILE (build one with `strata db import`)")?;
    let _telemetry = roles::init_telemetry(global, "strata-coordinator", c.otlp_endpoint.as_deref())?;
    let metrics = roles::metrics("strata-coordinator", c.otlp_endpoint.as_deref())?;
    let security_config = security;
    let security = roles::load_security(&security_config, listen)?;

    let db = Db::open(&db_path)
        .with_context(|| format!("opening the vulnerability database {}", db_path.display()))?;
    let vulndb = tokio::task::spawn_blocking(move || VulnData::new(&db))
        .await
        .context("building the vulnerability index")?;
    let store = roles::open_store(&store_url)?;
    let client = roles::connect_nats(&c.nats, "strata-coordinator").await?;
    let queue = loop {
        match NatsQueue::create(client.clone(), &settings).await {
            Ok(q) => break Queue::Nats(Box::new(q)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot set up the job streams yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let buckets = loop {
        match Buckets::nats(&js, settings.replicas).await {
            Ok(b) => break b,
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the state buckets yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let mut config = CoordinatorConfig::new(store_url.clone());
    config.source.insecure_registries = c.insecure_registries.clone();
    config.local_images_over_api = security_config.allow_local_images;
    config.refresh_interval = roles::refresh_interval(c.refresh_interval_secs);
    let coordinator = Coordinator::new(
        config,
        queue,
        buckets,
        Arc::clone(&store),
        vulndb,
        metrics.clone(),
    );

    let shutdown = Shutdown::on_signal();
    let metrics_at = roles::spawn_metrics(metrics_addr, metrics, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the gRPC address {listen}"))?;
    let admin = AdminApi::new(Some(NatsHandle {
        client: client.clone(),
        url: roles::redact(&c.nats),
    }));
    let server = tokio::spawn(api::serve_all(
        listener,
        Services::of(&coordinator, admin),
        security,
        shutdown.clone().wait(),
    ));
    tracing::info!(grpc = %listen, metrics = %metrics_at, nats = %roles::redact(&c.nats), store = %store_url, "coordinator running");
    coordinator.run(shutdown.clone().wait()).await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err.into()),
        Err(err) => anyhow::bail!("gRPC server task: {err}"),
    }
    // Buffered publishes and acks reach the server before we exit.
    let _ = client.flush().await;
    tracing::info!("coordinator stopped");
    Ok(super::EXIT_OK)
}
