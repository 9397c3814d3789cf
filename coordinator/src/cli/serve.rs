//! `strata serve`: the embedded default. The coordinator, N worker slots
//! and an in-process queue in one process; state and fleet events (embedded `redb`) and
//! results (a local object store) under one directory; no broker. The same
//! code paths as the cluster except the transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_proto::text::escape_controls;

use anyhow::Context;
use clap::Args;
use strata_coordinator::api::{self, AdminApi, Services};
use strata_coordinator::cluster::kv::{Kv, LocalKv};
use strata_coordinator::cluster::records::{ScanRecord, ScanStatus};
use strata_coordinator::cluster::{Buckets, Coordinator, SubmitRequest};
use strata_coordinator::feeds::Feeds;
use strata_coordinator::notify::EventLog;
use strata_coordinator::notify::webhook::{self, Webhook};
use strata_worker::job::JobContext;
use strata_worker::queue::Queue;
use strata_worker::run::{self, WorkerOptions};
use strata_worker::telemetry::WorkerMetrics;

use super::roles::{self, Shutdown};
use super::settings::{self, ServerSettings};

/// Bound on a watch file and the images in it.
const MAX_WATCH_BYTES: u64 = 4 << 20;
const MAX_WATCH_IMAGES: usize = 100_000;

/// `strata serve`: its flags are its config file's keys (see [`settings`]),
/// except the run-once options.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below; flags and `STRATA_*`
    /// variables override it ([queue] and [security] are tables;
    /// [[webhooks]] an array of tables, in the file only).
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Scan the watched images, print a fleet summary, and exit.
    #[arg(long)]
    pub exit_when_done: bool,
    /// With --exit-when-done: give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub settings: ServeSettings,
}

/// Every setting of `strata serve`, declared once.
#[derive(Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServeSettings {
    /// Where state and results live.
    #[arg(
        long,
        env = "STRATA_DATA_DIR",
        value_name = "DIR",
        default_value = "strata-data"
    )]
    pub data_dir: PathBuf,
    /// Layers analysed at once (in-process worker slots), 1 to 256.
    #[arg(long, env = "STRATA_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// A file of image references to watch, one per line (`#` comments).
    #[arg(long, env = "STRATA_WATCH", value_name = "FILE")]
    pub watch: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub limits: super::image::LimitArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub shutdown: settings::ShutdownSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerSettings,
}

pub async fn run(
    args: ServeArgs,
    matches: &clap::ArgMatches,
    global: &super::GlobalArgs,
) -> anyhow::Result<u8> {
    let c = settings::resolve(args.settings, matches, args.config.as_deref())?;
    anyhow::ensure!((1..=256).contains(&c.workers), "workers must be 1 to 256");
    let (listen, metrics_addr) = c.server.addresses()?;
    let queue_settings = c.server.queue.to_queue()?;
    let feeds_config = c.server.feeds_config()?;
    // Without feeds the data is --db's: required.
    let db_path = match &feeds_config {
        None => Some(c.server.db_path()?.to_owned()),
        Some(_) => c.server.db.clone(),
    };
    let watch = match &c.watch {
        Some(path) => read_watch_file(path)?,
        None => Vec::new(),
    };

    let _telemetry = roles::init_telemetry(global, "strata-serve", None)?;
    let metrics = roles::metrics("strata-serve", None)?;
    let security = roles::load_security(&c.server.security, listen)?;
    let webhooks = Webhook::load_all(&c.server.webhooks)?;
    std::fs::create_dir_all(&c.data_dir).with_context(|| format!("creating {}", c.data_dir.display()))?;
    let store_url = roles::dir_url(&c.data_dir.join("store"))?;
    let store = roles::open_store(&store_url)?;
    let buckets = Buckets::local(&c.data_dir.join("state.redb"))?;
    // With feeds, the data to start with is the feeds' last (in the data
    // directory's store), else --db.
    let (vulndb, feeds) = match (feeds_config, &db_path) {
        (None, Some(path)) => (roles::load_vulndb(path).await?, None),
        (Some(config), _) => {
            let feeds = Feeds::open(
                &config,
                buckets.images.clone(),
                Arc::clone(&store),
                db_path.as_deref(),
            )
            .await
            .context("opening the advisory feeds")?;
            (feeds.vuln_data().await?, Some(feeds))
        }
        (None, None) => anyhow::bail!("no vulnerability data"),
    };
    let queue = Queue::memory(queue_settings);

    // Events and webhook cursors in the same state file.
    let state = buckets
        .scans
        .local_db()
        .context("the state buckets are not in a local file")?
        .clone();
    let events = EventLog::local(state.clone())?;
    let cursors = Kv::Local(LocalKv::new(state, webhook::WEBHOOKS_BUCKET));
    let config = c.server.coordinator_config(&store_url)?;
    let config_source = config.source.clone();
    let coordinator = Coordinator::new(
        config,
        queue.clone(),
        buckets,
        Arc::clone(&store),
        vulndb,
        metrics.clone(),
    )
    .with_event_log(events);
    let mut ctx = JobContext::new("serve", store);
    ctx.metrics = Some(WorkerMetrics::new(&metrics));
    ctx.source = config_source;
    ctx.limits = c.limits.limits()?;

    let shutdown = Shutdown::on_signal("serve", c.shutdown.timeout());
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

    let metrics_at = roles::spawn_metrics(metrics_addr, metrics, None, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the gRPC address {listen}"))?;
    let mut admin = AdminApi::new(None);
    if let Some(feeds) = &feeds {
        admin = admin.with_feeds(feeds.clone());
    }
    let server = tokio::spawn(api::serve_all(
        listener,
        Services::of(&coordinator, admin),
        security,
        {
            // Open event watches end first, or the server's graceful
            // shutdown would wait on them forever.
            let stop = stop();
            let log = coordinator.event_log().clone();
            async move {
                stop.await;
                log.close();
            }
        },
    ));
    let deliveries = tokio::spawn(webhook::run(
        webhooks,
        coordinator.event_log().clone(),
        cursors,
        None,
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
    let polling = feeds.map(|feeds| tokio::spawn(feeds.run(coordinator.clone(), stop())));
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
                    eprintln!(
                        "strata: {}: {}",
                        escape_controls(reference),
                        escape_controls(&err.to_string())
                    );
                    code = super::EXIT_ERROR;
                }
            }
        }
        if args.exit_when_done {
            let limit = Duration::from_secs(args.timeout_secs);
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
    if let Some(polling) = polling {
        let _ = polling.await;
    }
    let _ = workers.await;
    let _ = deliveries.await;
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
            println!("  error: {}", escape_controls(err));
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
