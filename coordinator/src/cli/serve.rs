//! `strata serve`: the embedded default. The coordinator, N worker slots
//! and an in-process queue in one process; state (embedded `redb`) and
//! results (a local object store) under one directory; no broker. The same
//! code paths as the cluster except the transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use strata_coordinator::api::{self, AdminApi, Services};
use strata_coordinator::cluster::records::{ScanRecord, ScanStatus};
use strata_coordinator::cluster::{Buckets, Coordinator, CoordinatorConfig, SubmitRequest, VulnData};
use strata_coordinator::vulndb::Db;
use strata_worker::job::JobContext;
use strata_worker::queue::Queue;
use strata_worker::run::{self, WorkerOptions};

use super::roles::{self, DEFAULT_REFRESH_SECS, QueueConfig, SecurityArgs, SecurityConfig, Shutdown};

/// Bound on a watch file and the images in it.
const MAX_WATCH_BYTES: u64 = 4 << 20;
const MAX_WATCH_IMAGES: usize = 100_000;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where state and results live [default: ./strata-data].
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Layers analysed at once (in-process worker slots) [default: 4].
    #[arg(long, env = "STRATA_WORKERS")]
    pub workers: Option<usize>,
    /// gRPC address [default: 127.0.0.1:7700].
    #[arg(long, env = "STRATA_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Prometheus /metrics and /healthz address [default: 127.0.0.1:9100].
    #[arg(long, env = "STRATA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// The vulnerability database file.
    #[arg(long, env = "STRATA_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// A file of image references to watch, one per line (`#` comments).
    #[arg(long, env = "STRATA_WATCH", value_name = "FILE")]
    pub watch: Option<PathBuf>,
    /// Scan the watched images, print a fleet summary, and exit.
    #[arg(long)]
    pub exit_when_done: bool,
    /// With --exit-when-done: give up after this many seconds [default: 600].
    #[arg(long, value_name = "SECS")]
    pub timeout_secs: Option<u64>,
    /// A registry (`host[:port]`) to speak plain HTTP to. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Seconds between re-resolving registered images and re-listing watched
    /// repositories (moved tags are rescanned; 0: never) [default: 21600].
    #[arg(long, env = "STRATA_REFRESH_INTERVAL_SECS", value_name = "SECS")]
    pub refresh_interval_secs: Option<u64>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `strata serve`'s config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeFile {
    pub data_dir: PathBuf,
    pub workers: usize,
    pub listen: String,
    pub metrics_listen: String,
    pub db: Option<PathBuf>,
    pub watch: Option<PathBuf>,
    pub insecure_registries: Vec<String>,
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

impl ServeFile {
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

impl Default for ServeFile {
    fn default() -> Self {
        ServeFile {
            data_dir: PathBuf::from("strata-data"),
            workers: 4,
            listen: "127.0.0.1:7700".to_owned(),
            metrics_listen: "127.0.0.1:9100".to_owned(),
            db: None,
            watch: None,
            insecure_registries: Vec::new(),
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

pub async fn run(args: ServeArgs, global: &super::GlobalArgs) -> anyhow::Result<u8> {
    let mut c: ServeFile = roles::load_config(args.config.as_deref())?;
    if let Some(v) = args.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = args.workers {
        c.workers = v;
    }
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.metrics_listen {
        c.metrics_listen = v;
    }
    if args.db.is_some() {
        c.db = args.db;
    }
    if args.watch.is_some() {
        c.watch = args.watch;
    }
    c.insecure_registries.extend(args.insecure_registries);
    if let Some(v) = args.refresh_interval_secs {
        c.refresh_interval_secs = v;
    }
    let security = c.security(args.security);
    anyhow::ensure!((1..=256).contains(&c.workers), "workers must be 1 to 256");
    let listen = roles::parse_addr("--listen", &c.listen)?;
    let metrics_addr = roles::parse_addr("--metrics-listen", &c.metrics_listen)?;
    let settings = roles::queue_settings(&c.queue)?;
    let db_path =
        c.db.clone()
            .context("no vulnerability database: give --db FILE (build one with `strata db import`)")?;
    let watch = match &c.watch {
        Some(path) => read_watch_file(path)?,
        None => Vec::new(),
    };

    let _telemetry = roles::init_telemetry(global, "strata-serve", None)?;
    let metrics = roles::metrics("strata-serve", None)?;
    let security_config = security;
    let security = roles::load_security(&security_config, listen)?;
    std::fs::create_dir_all(&c.data_dir).with_context(|| format!("creating {}", c.data_dir.display()))?;
    let store_url = roles::dir_url(&c.data_dir.join("store"))?;
    let store = roles::open_store(&store_url)?;
    let buckets = Buckets::local(&c.data_dir.join("state.redb"))?;
    let db = Db::open(&db_path)
        .with_context(|| format!("opening the vulnerability database {}", db_path.display()))?;
    let vulndb = tokio::task::spawn_blocking(move || VulnData::new(&db))
        .await
        .context("building the vulnerability index")?;
    let queue = Queue::memory(settings);

    let mut config = CoordinatorConfig::new(store_url.clone());
    config.source.insecure_registries = c.insecure_registries.clone();
    config.local_images_over_api = security_config.allow_local_images;
    config.refresh_interval = roles::refresh_interval(c.refresh_interval_secs);
    let coordinator = Coordinator::new(
        config,
        queue.clone(),
        buckets,
        Arc::clone(&store),
        vulndb,
        metrics.clone(),
    );
    let mut ctx = JobContext::new("serve", store);
    ctx.metrics = Some(metrics.clone());
    ctx.source.insecure_registries = c.insecure_registries.clone();

    let shutdown = Shutdown::on_signal();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    // Stops on a signal, or when --exit-when-done has its summary.
    let stop = {
        let signal = shutdown.clone();
        let done = done_rx.clone();
        move || {
            let signal = signal.clone();
            let mut done = done.clone();
            async move {
                tokio::select! {
                    _ = signal.wait() => {}
                    _ = done.wait_for(|d| *d) => {}
                }
            }
        }
    };

    let metrics_at = roles::spawn_metrics(metrics_addr, metrics, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the gRPC address {listen}"))?;
    let server = tokio::spawn(api::serve_all(
        listener,
        Services::of(&coordinator, AdminApi::new(None)),
        security,
        stop(),
    ));
    let workers = tokio::spawn(run::run(
        queue,
        ctx,
        WorkerOptions {
            concurrency: c.workers,
            ..WorkerOptions::default()
        },
        stop(),
    ));
    let background = tokio::spawn({
        let coordinator = coordinator.clone();
        let stop = stop();
        async move { coordinator.run(stop).await }
    });
    tracing::info!(grpc = %listen, metrics = %metrics_at, data = %c.data_dir.display(), workers = c.workers, "strata serve running");

    let mut code = super::EXIT_OK;
    if !watch.is_empty() {
        let started = Instant::now();
        let mut ids = Vec::new();
        for reference in &watch {
            let request = SubmitRequest {
                reference: reference.clone(),
                background: true,
                register: true,
                insecure_registry: false,
                platform: String::new(),
            };
            match coordinator.submit(request).await {
                Ok((scan, _)) => ids.push(scan.id),
                Err(err) => {
                    eprintln!("strata: {reference}: {err}");
                    code = super::EXIT_ERROR;
                }
            }
        }
        if args.exit_when_done {
            let limit = Duration::from_secs(args.timeout_secs.unwrap_or(600));
            let scans = wait_all(&coordinator, &ids, limit).await?;
            print_summary(&scans, &coordinator, started.elapsed());
            if scans
                .iter()
                .any(|s| s.status != ScanStatus::Complete || s.error.is_some())
            {
                code = super::EXIT_ERROR;
            }
            let _ = done_tx.send(true);
        }
    } else if args.exit_when_done {
        let _ = done_tx.send(true);
    }
    let _ = background.await;
    let _ = workers.await;
    if let Ok(Err(err)) = server.await {
        return Err(err.into());
    }
    Ok(code)
}

fn read_watch_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let meta = std::fs::metadata(path).with_context(|| format!("watch file {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX_WATCH_BYTES,
        "watch file {}: over the {MAX_WATCH_BYTES}-byte limit",
        path.display()
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("watch file {}", path.display()))?;
    let refs: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(
        refs.len() <= MAX_WATCH_IMAGES,
        "watch file {}: {} images is over the limit of {MAX_WATCH_IMAGES}",
        path.display(),
        refs.len()
    );
    Ok(refs)
}

async fn wait_all(
    coordinator: &Coordinator,
    ids: &[String],
    limit: Duration,
) -> anyhow::Result<Vec<ScanRecord>> {
    let deadline = Instant::now() + limit;
    loop {
        let mut scans = Vec::new();
        for id in ids {
            if let Some(scan) = coordinator.scan(id).await? {
                scans.push(scan);
            }
        }
        if scans.iter().all(|s| s.status.is_terminal()) {
            return Ok(scans);
        }
        anyhow::ensure!(Instant::now() < deadline, "scans did not finish within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_summary(scans: &[ScanRecord], coordinator: &Coordinator, took: Duration) {
    println!(
        "{:<58} {:<9} {:>6} {:>8} {:>5} {:>5} {:>5} {:>5} {:>5}",
        "IMAGE", "STATUS", "LAYERS", "PACKAGES", "CRIT", "HIGH", "MED", "LOW", "UNK"
    );
    let mut unique = std::collections::HashSet::new();
    let mut layers = 0;
    for s in scans {
        layers += s.layers.len();
        unique.extend(s.layers.iter().map(|l| l.digest.clone()));
        let name = if s.reference.len() > 58 {
            &s.reference[s.reference.len() - 58..]
        } else {
            &s.reference
        };
        println!(
            "{:<58} {:<9} {:>6} {:>8} {:>5} {:>5} {:>5} {:>5} {:>5}",
            name,
            s.status.as_str(),
            s.layers.len(),
            s.packages,
            s.counts.critical,
            s.counts.high,
            s.counts.medium,
            s.counts.low,
            s.counts.unknown
        );
        if let Some(err) = &s.error {
            println!("  error: {err}");
        }
    }
    let stats = coordinator.cache_stats();
    println!(
        "{} images, {layers} layers, {} unique; {} layer analyses queued, {} cache hits; {:.1} s",
        scans.len(),
        unique.len(),
        stats.misses,
        stats.hits,
        took.as_secs_f64()
    );
}
