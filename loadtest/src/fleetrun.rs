//! A fleet through the real cluster: a generated fleet ([`crate::fleetgen`])
//! served by the synthetic registry ([`crate::synthreg`]), a real
//! nats-server, `strata coordinator` and W `strata worker` processes (the
//! harness's [`Cluster`]), the fleet registered repository by repository
//! over gRPC, and figures on what it cost: first pass, fetches per unique
//! layer, CPU, memory, storage, a steady-state refresh with tags moved, and
//! a full re-match. Used by `bin/fleet.rs` (any N) and by a small-N test in
//! the coordinator's suite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::Serialize;
use strata_harness::Cluster;
use strata_proto::v1;
use strata_proto::v1::admin_service_client::AdminServiceClient;
use strata_proto::v1::fleet_service_client::FleetServiceClient;

use crate::fleetgen::{Fleet, FleetConfig, RealData, data};
use crate::synthreg::{RegistryOptions, SyntheticRegistry};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub fleet: FleetConfig,
    pub workers: usize,
    /// The `strata` binary the processes run.
    pub strata: PathBuf,
    /// `../shared/testdata`: package data and the PyPI advisories matched.
    pub testdata: PathBuf,
    pub registry: RegistryOptions,
    /// Share of tags moved for the refresh, in percent.
    pub move_percent: f64,
    /// Longest wait for a pass to finish.
    pub timeout: Duration,
    /// Repositories registered at once.
    pub register_concurrency: usize,
    /// Extra `strata worker` arguments.
    pub worker_args: Vec<String>,
    /// The cluster: started here, or one already running.
    pub target: Target,
}

/// Which cluster the fleet goes through.
#[derive(Debug, Clone, Default)]
pub enum Target {
    /// A nats-server, `strata coordinator` and `workers` `strata worker`
    /// processes started for the run (the harness's [`Cluster`]).
    #[default]
    Start,
    /// A cluster already running. Its coordinators and workers must reach
    /// the synthetic registry (`RegistryOptions::listen`) over plain HTTP
    /// (`--insecure-registry HOST` on each). CPU and memory of its
    /// processes are not measured.
    Existing {
        /// A coordinator's gRPC address (`http://host:port`).
        server: String,
        /// Its NATS, for the JetStream storage at the end.
        nats: Option<String>,
        /// A directory the cluster polls as a feed (`--feed file://DIR/`):
        /// the advisory update is written there. None: no advisory update.
        feed_dir: Option<PathBuf>,
    },
}

/// One moment of a pass.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub images_done: u64,
    pub layers_fetched: u64,
    /// Jobs queued, not yet delivered (both priorities).
    pub queue_pending: u64,
    /// Jobs delivered, not yet acked.
    pub queue_in_flight: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Refresh {
    pub tags_moved: usize,
    pub new_layers: usize,
    pub blob_fetches: u64,
    pub manifest_requests: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Rematch {
    pub seconds: f64,
    pub server_ms: u64,
    pub images_changed: u32,
    pub distinct_packages: u32,
}

/// An advisory update read from a feed: one new advisory on a package
/// every Python base has.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AdvisoryUpdate {
    /// From the record written to the feed directory to the new data in
    /// force (includes waiting for the next poll, every 2 s).
    pub written_to_in_force_s: f64,
    /// The coordinator's own figures (its log): from the update applied to
    /// the findings matched and in force, and to their events published.
    pub matched_s: f64,
    pub published_s: f64,
    pub images_changed: u64,
    pub findings_new: u64,
    /// Events appended to the stream meanwhile (this update's, and any
    /// other change's recorded in the same seconds).
    pub events: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RunResults {
    /// `started`, or the address of the existing cluster run against.
    pub cluster: String,
    pub images: usize,
    pub tags: usize,
    pub repositories: usize,
    pub bases: usize,
    pub workers: usize,
    pub unique_layers: usize,
    pub layer_references: usize,
    pub blob_fetches: u64,
    pub fetches_per_unique_layer: f64,
    pub bytes_fetched: u64,
    pub bytes_without_dedup: u64,
    pub generate_s: f64,
    pub register_s: f64,
    pub first_pass_s: f64,
    pub images_per_s: f64,
    pub layers_per_s: f64,
    pub worker_cpu_s: f64,
    pub coordinator_cpu_s: f64,
    pub cpu_s_per_layer: f64,
    pub coordinator_peak_rss_bytes: u64,
    pub worker_peak_rss_bytes: u64,
    pub nats_store_bytes: u64,
    pub object_store_bytes: u64,
    pub images_complete: u64,
    pub images_failed: u64,
    pub findings: u64,
    pub refresh: Refresh,
    pub rematch: Rematch,
    pub advisory_update: AdvisoryUpdate,
    pub samples: Vec<Sample>,
}

/// `/proc/<pid>/status` field in KiB, as bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// User + system CPU seconds of `pid` (clock ticks of 1/100 s, Linux's `USER_HZ`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Blob GETs of every layer, and how many layers were fetched at least once.
pub(crate) fn layer_fetches(registry: &SyntheticRegistry) -> (u64, usize) {
    let gets = registry.all_blob_gets();
    let layers = registry.layer_digests();
    let total = layers
        .iter()
        .map(|(d, _)| gets.get(d).copied().unwrap_or(0))
        .sum();
    let fetched = layers
        .iter()
        .filter(|(d, _)| gets.get(d).is_some_and(|g| *g > 0))
        .count();
    (total, fetched)
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) complete: u64,
    pub(crate) failed: u64,
    pub(crate) in_progress: u64,
    pub(crate) findings: u64,
}

pub(crate) struct Clients {
    pub(crate) fleet: FleetServiceClient<tonic::transport::Channel>,
    pub(crate) admin: AdminServiceClient<tonic::transport::Channel>,
}

impl Clients {
    /// Images complete, failed and still in progress, and findings, as the
    /// fleet summary counts them.
    pub(crate) async fn done(&mut self) -> Result<Counts, BoxError> {
        let s = self
            .fleet
            .summary(v1::SummaryRequest { top_n: 1 })
            .await?
            .into_inner();
        let count = |status: v1::ScanStatus| {
            s.images_by_status
                .iter()
                .filter(|c| c.status == status as i32)
                .map(|c| u64::from(c.images))
                .sum::<u64>()
        };
        let findings = s.findings.map_or(0, |c| {
            u64::from(c.critical)
                + u64::from(c.high)
                + u64::from(c.medium)
                + u64::from(c.low)
                + u64::from(c.unknown)
        });
        Ok(Counts {
            complete: count(v1::ScanStatus::Complete),
            failed: count(v1::ScanStatus::Failed),
            in_progress: count(v1::ScanStatus::Pending) + count(v1::ScanStatus::Running),
            findings,
        })
    }

    pub(crate) async fn status(&mut self) -> Result<v1::GetStatusResponse, BoxError> {
        Ok(self.admin.get_status(v1::GetStatusRequest {}).await?.into_inner())
    }

    pub(crate) async fn queue(&mut self) -> Result<(u64, u64), BoxError> {
        let s = self.admin.get_status(v1::GetStatusRequest {}).await?.into_inner();
        Ok((
            s.queues.iter().map(|q| q.pending).sum(),
            s.queues.iter().map(|q| q.in_flight).sum(),
        ))
    }
}

/// Registers every repository (`concurrency` at once) on a task of its
/// own; the task returns the tags registered.
pub(crate) fn register_all(
    fleet: &FleetServiceClient<tonic::transport::Channel>,
    host: &str,
    repositories: &[String],
    concurrency: usize,
) -> tokio::task::JoinHandle<Result<usize, String>> {
    let (fleet, host, repositories) = (fleet.clone(), host.to_owned(), repositories.to_vec());
    tokio::spawn(async move {
        let mut calls = futures::stream::iter(repositories)
            .map(|name| {
                let mut fleet = fleet.clone();
                let host = host.clone();
                async move {
                    let request = v1::RegisterRepositoryRequest {
                        repository: format!("{host}/{name}"),
                        insecure_registry: true,
                        ..Default::default()
                    };
                    fleet
                        .register_repository(request)
                        .await
                        .map(|r| r.into_inner().tags_registered as usize)
                        .map_err(|e| format!("registering {name}: {e}"))
                }
            })
            .buffer_unordered(concurrency.max(1));
        let mut tags = 0;
        while let Some(r) = calls.next().await {
            tags += r?;
        }
        Ok(tags)
    })
}

/// What a pass ended with.
struct Pass {
    tags: usize,
    register_s: f64,
    complete: u64,
    failed: u64,
    findings: u64,
}

/// Samples every second while `registering` runs and after, until every
/// image it registered is done and the queue is empty.
async fn wait_pass(
    clients: &mut Clients,
    registry: &SyntheticRegistry,
    mut registering: tokio::task::JoinHandle<Result<usize, String>>,
    timeout: Duration,
    samples: &mut Vec<Sample>,
    quiet: bool,
    before: Counts,
) -> Result<Pass, BoxError> {
    // Images the cluster had before this pass (an existing cluster, or the
    // refresh): complete and failed are counted from there.
    let before_known = before.complete + before.failed > 0;
    let started = Instant::now();
    let mut registered: Option<(usize, f64)> = None;
    loop {
        if registered.is_none() && registering.is_finished() {
            let tags = (&mut registering).await??;
            registered = Some((tags, started.elapsed().as_secs_f64()));
            if !quiet {
                eprintln!(
                    "  registered {tags} tags in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let now = clients.done().await?;
        let (complete, failed) = (
            now.complete.saturating_sub(before.complete),
            now.failed.saturating_sub(before.failed),
        );
        let (pending, in_flight) = clients.queue().await?;
        let sample = Sample {
            t_s: started.elapsed().as_secs_f64(),
            images_done: complete + failed,
            layers_fetched: layer_fetches(registry).1 as u64,
            queue_pending: pending,
            queue_in_flight: in_flight,
        };
        if !quiet {
            eprintln!(
                "  {:>7.1} s: {} images done, {} layers fetched, queue {pending} pending + {in_flight} in flight",
                sample.t_s, sample.images_done, sample.layers_fetched
            );
        }
        samples.push(sample);
        // Done: every tag registered (each submitted as it was), no image
        // still in progress, nothing queued. On a cluster that already held
        // some of these images, fewer than `tags` become complete here.
        if let Some((tags, register_s)) = registered
            && (complete + failed >= tags as u64 || before_known)
            && now.in_progress == 0
            && pending == 0
            && in_flight == 0
        {
            return Ok(Pass {
                tags,
                register_s,
                complete,
                failed,
                findings: now.findings,
            });
        }
        if started.elapsed() > timeout {
            registering.abort();
            return Err(format!("not done after {timeout:?}: {} images", complete + failed).into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The run (see the module header). `quiet`: no progress lines.
pub async fn run(o: &RunOptions, quiet: bool) -> Result<RunResults, BoxError> {
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let mut r = RunResults {
        workers: o.workers,
        ..Default::default()
    };
    let t = Instant::now();
    let data = Arc::new(RealData::load(&o.testdata)?);
    let fleet = Fleet::generate(o.fleet.clone(), data);
    r.images = fleet.images.len();
    r.repositories = fleet.repositories.len();
    r.bases = fleet.bases.len();
    r.tags = fleet.repositories.iter().map(|x| x.tags.len()).sum();
    let repositories: Vec<String> = fleet.repositories.iter().map(|x| x.name.clone()).collect();
    let registry = SyntheticRegistry::start(fleet, o.registry.clone())?;
    let (unique, references) = registry.fleet().layer_references();
    r.unique_layers = unique;
    r.layer_references = references;
    r.bytes_without_dedup = (0..r.images).map(|i| registry.image_size(i)).sum();
    r.generate_s = t.elapsed().as_secs_f64();
    say(format!(
        "fleet: {} images ({} tags) in {} repositories on {} bases; {} unique layers of {} listed; generated and digested in {:.1} s",
        r.images, r.tags, r.repositories, r.bases, r.unique_layers, r.layer_references, r.generate_s
    ));

    let dir = tempfile::tempdir()?;
    let (cluster, updates) = match &o.target {
        Target::Start => {
            let (cluster, updates) = start_cluster(o, &registry, dir.path(), &[])?;
            (Some(cluster), Some(updates))
        }
        Target::Existing { feed_dir, .. } => (None, feed_dir.clone()),
    };
    let server = match (&cluster, &o.target) {
        (Some(c), _) => c.grpc_url(),
        (None, Target::Existing { server, .. }) => server.clone(),
        (None, Target::Start) => unreachable!("a started cluster is Some"),
    };
    r.cluster = if cluster.is_some() {
        "started".into()
    } else {
        server.clone()
    };
    let channel = tonic::transport::Endpoint::from_shared(server.clone())?
        .connect()
        .await
        .map_err(|e| format!("connecting to the coordinator at {server}: {e}"))?;
    let mut clients = Clients {
        fleet: FleetServiceClient::new(channel.clone()),
        admin: AdminServiceClient::new(channel),
    };
    if cluster.is_none() {
        r.workers = clients.status().await?.workers.len();
        say(format!("existing cluster at {server}: {} workers", r.workers));
    }

    // First pass: registration submits scans as it goes.
    let before = clients.done().await?;
    let started = Instant::now();
    let registering = register_all(
        &clients.fleet,
        &registry.host(),
        &repositories,
        o.register_concurrency,
    );
    let mut samples = Vec::new();
    let pass = wait_pass(
        &mut clients,
        &registry,
        registering,
        o.timeout,
        &mut samples,
        quiet,
        before,
    )
    .await?;
    r.first_pass_s = started.elapsed().as_secs_f64();
    r.register_s = pass.register_s;
    r.images_complete = pass.complete;
    r.images_failed = pass.failed;
    r.findings = pass.findings;
    let tags = pass.tags;
    let (fetches, fetched) = layer_fetches(&registry);
    r.blob_fetches = fetches;
    r.fetches_per_unique_layer = fetches as f64 / r.unique_layers.max(1) as f64;
    r.bytes_fetched = registry.layer_bytes();
    r.images_per_s = r.images as f64 / r.first_pass_s;
    r.layers_per_s = fetched as f64 / r.first_pass_s;
    let pids: Vec<u32> = cluster.as_ref().map_or_else(Vec::new, |c| {
        (0..c.worker_count()).filter_map(|i| c.worker_pid(i)).collect()
    });
    r.worker_cpu_s = pids.iter().map(|&p| cpu_seconds(p)).sum();
    r.cpu_s_per_layer = r.worker_cpu_s / fetched.max(1) as f64;
    r.samples = samples;

    // Steady state: a share of the tags moved, the fleet re-resolved.
    let moves = ((r.tags as f64) * o.move_percent / 100.0).ceil() as usize;
    let layers_before = registry.layer_digests().len();
    let moved = registry.move_tags(moves, o.fleet.seed ^ 0x5eed);
    let (fetches_before, manifests_before) = (layer_fetches(&registry).0, registry.manifest_requests());
    let before = clients.done().await?;
    let t = Instant::now();
    let registering = register_all(
        &clients.fleet,
        &registry.host(),
        &repositories,
        o.register_concurrency,
    );
    let mut refresh_samples = Vec::new();
    let pass = wait_pass(
        &mut clients,
        &registry,
        registering,
        o.timeout,
        &mut refresh_samples,
        true,
        before,
    )
    .await?;
    if pass.tags != tags {
        return Err(format!("the refresh registered {} tags, the first pass {tags}", pass.tags).into());
    }
    r.refresh = Refresh {
        tags_moved: moved.len(),
        new_layers: registry.layer_digests().len() - layers_before,
        blob_fetches: layer_fetches(&registry).0 - fetches_before,
        manifest_requests: registry.manifest_requests() - manifests_before,
        seconds: t.elapsed().as_secs_f64(),
    };
    say(format!("refresh: {:?}", r.refresh));

    // A full re-match of the fleet.
    let t = Instant::now();
    let reply = clients
        .fleet
        .rematch(v1::RematchRequest::default())
        .await?
        .into_inner();
    r.rematch = Rematch {
        seconds: t.elapsed().as_secs_f64(),
        server_ms: reply.duration_ms,
        images_changed: reply.images,
        distinct_packages: reply.distinct_packages,
    };
    say(format!("re-match: {:?}", r.rematch));

    match &updates {
        Some(updates) => {
            r.advisory_update = advisory_update(&mut clients, cluster.as_ref(), updates).await?;
            say(format!("advisory update: {:?}", r.advisory_update));
        }
        None => say("advisory update: skipped (no --feed-dir for the existing cluster)".into()),
    }

    match &cluster {
        Some(cluster) => {
            r.coordinator_cpu_s = cluster.coordinator_pid().map_or(0.0, cpu_seconds);
            r.coordinator_peak_rss_bytes = cluster
                .coordinator_pid()
                .map_or(0, |p| proc_status_bytes(p, "VmHWM:"));
            r.worker_peak_rss_bytes = pids
                .iter()
                .map(|&p| proc_status_bytes(p, "VmHWM:"))
                .max()
                .unwrap_or(0);
            r.nats_store_bytes = dir_bytes(&cluster.nats().store_dir());
            r.object_store_bytes = cluster.store_dir().map_or(0, |d| dir_bytes(&d));
        }
        None => {
            if let Target::Existing { nats: Some(url), .. } = &o.target {
                r.nats_store_bytes = jetstream_storage(url).await?;
            }
        }
    }
    drop(cluster);
    Ok(r)
}

/// Starts nats-server, a coordinator polling two feeds (the PyPI export,
/// and a directory the advisory update is written to, returned) and the
/// workers, all allowed plain HTTP to the synthetic registry.
pub(crate) fn start_cluster(
    o: &RunOptions,
    registry: &SyntheticRegistry,
    dir: &Path,
    coordinator_args: &[String],
) -> Result<(Cluster, PathBuf), BoxError> {
    let pypi = o.testdata.join("osv/PyPI/all.zip");
    let db = strata_harness::fixtures::import_db(Command::new(&o.strata), dir, &[pypi.as_path()]);
    let updates = dir.join("updates");
    std::fs::create_dir_all(&updates)?;
    // A feed directory holds at least one record.
    std::fs::write(
        updates.join("STRATA-FLEET-0.json"),
        advisory("STRATA-FLEET-0", "strata-no-such-package").to_string(),
    )?;
    let feeds = [
        "--feed".to_owned(),
        format!("file://{}", pypi.display()),
        "--feed".to_owned(),
        format!("file://{}/", updates.display()),
        "--feed-interval-secs".to_owned(),
        "2".to_owned(),
    ];
    let cluster = Cluster::builder(&o.strata)
        .workers(o.workers)
        .db(&db)
        .insecure_registry(registry.host())
        .worker_args(o.worker_args.clone())
        .coordinator_args(feeds)
        .coordinator_args(coordinator_args)
        .start()?;
    Ok((cluster, updates))
}

/// Bytes JetStream stores for the account (streams and key-value buckets).
async fn jetstream_storage(url: &str) -> Result<u64, BoxError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connecting to NATS at {url}: {e}"))?;
    let account = async_nats::jetstream::new(client).query_account().await?;
    Ok(account.storage)
}

/// An advisory update through the feed directory `updates`: one advisory
/// on a package every Python base has. With a started cluster, the
/// coordinator's log gives its own figures (the log line putting data in
/// force after those already logged).
async fn advisory_update(
    clients: &mut Clients,
    cluster: Option<&Cluster>,
    updates: &Path,
) -> Result<AdvisoryUpdate, BoxError> {
    let in_force_lines = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("vulnerability data in force") && l.contains("match_secs"))
            .map(plain)
            .collect()
    };
    let logged_before = cluster.map_or(0, |c| in_force_lines(&c.coordinator_log()).len());
    let mut update = AdvisoryUpdate::default();
    // A distinct id per run: a feed directory of an existing cluster may
    // hold earlier runs' records.
    let id = format!("STRATA-FLEET-{}", strata_proto::text::now_unix_ms());
    let before = clients.status().await?;
    let t = Instant::now();
    std::fs::write(
        updates.join(format!("{id}.json")),
        advisory(&id, "setuptools").to_string(),
    )?;
    loop {
        let now = clients.status().await?;
        if now.vulndb.as_ref().map(|v| &v.version) != before.vulndb.as_ref().map(|v| &v.version) {
            update.written_to_in_force_s = t.elapsed().as_secs_f64();
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the advisory update written to {} was not put in force within 120 s (does the cluster poll it as a feed?)",
                updates.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(cluster) = cluster {
        let deadline = Instant::now() + Duration::from_secs(120);
        let line = loop {
            let lines = in_force_lines(&cluster.coordinator_log());
            if let Some(line) = lines
                .into_iter()
                .skip(logged_before)
                .find(|l| field(l, "added") == Some(1.0))
            {
                break line;
            }
            if Instant::now() > deadline {
                return Err("no log line for the advisory update".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        update.matched_s = field(&line, "match_secs").unwrap_or(0.0);
        update.published_s = field(&line, "published_secs").unwrap_or(0.0);
        update.images_changed = field(&line, "images").unwrap_or(0.0) as u64;
        update.findings_new = field(&line, "new").unwrap_or(0.0) as u64;
    }
    let events_before = before.events.map_or(0, |e| e.last_sequence);
    update.events = clients.status().await?.events.map_or(0, |e| e.last_sequence) - events_before;
    Ok(update)
}

/// An OSV record: every PyPI version of `package` affected, no fix.
fn advisory(id: &str, package: &str) -> serde_json::Value {
    serde_json::json!({
        "schema_version": "1.6.0",
        "id": id,
        "modified": "2026-01-01T00:00:00Z",
        "summary": "synthetic advisory for the fleet benchmark",
        "affected": [{
            "package": { "ecosystem": "PyPI", "name": package },
            "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }] }],
        }],
        "database_specific": { "severity": "HIGH" },
    })
}

/// A log line without its colour escapes (the log may be coloured).
fn plain(line: &str) -> String {
    let mut parts = line.split('\u{1b}');
    let first = parts.next().unwrap_or_default();
    std::iter::once(first)
        .chain(parts.map(|p| p.split_once('m').map_or(p, |(_, rest)| rest)))
        .collect()
}

/// The number after ` key=` in a (plain) log line.
fn field(plain: &str, key: &str) -> Option<f64> {
    let at = plain.find(&format!(" {key}="))?;
    plain[at + key.len() + 2..]
        .split(|c: char| c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// Default options for `images` images on `workers` workers.
/// The `strata` binary the benchmarks run: `given`, else the release build
/// in the target directory; an error saying how to build it when absent.
pub fn strata_binary(given: Option<PathBuf>) -> Result<PathBuf, BoxError> {
    let strata = given.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
        target.join("release/strata")
    });
    if !strata.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --release -p strata-coordinator) or pass --strata",
            strata.display()
        )
        .into());
    }
    Ok(strata)
}

pub fn options(images: usize, workers: usize, strata: PathBuf) -> RunOptions {
    RunOptions {
        fleet: FleetConfig {
            images,
            ..FleetConfig::default()
        },
        workers,
        strata,
        testdata: data::default_testdata(),
        registry: RegistryOptions::default(),
        move_percent: 1.0,
        timeout: Duration::from_secs(3600),
        register_concurrency: 16,
        worker_args: Vec::new(),
        target: Target::Start,
    }
}

/// The Markdown summary of `r`.
pub fn markdown(name: &str, r: &RunResults) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    // An existing cluster's processes are not ours to measure.
    let started = r.cluster == "started" || r.cluster.is_empty();
    let ours = |v: String| {
        if started {
            v
        } else {
            "not measured (existing cluster)".to_owned()
        }
    };
    let mut s = format!("# Fleet run `{name}`\n\n");
    if !started {
        s += &format!("Through the existing cluster at `{}`.\n\n", r.cluster);
    }
    s += &format!(
        "{} images ({} tags, {} repositories, {} bases) on {} workers; {} unique layers of {} listed.\n\n",
        r.images, r.tags, r.repositories, r.bases, r.workers, r.unique_layers, r.layer_references
    );
    s += "| figure | value |\n|---|---|\n";
    let rows = [
        (
            "first pass (registration to every image done)",
            format!("{:.1} s", r.first_pass_s),
        ),
        (
            "registration (every repository listed, every tag resolved and submitted)",
            format!("{:.1} s", r.register_s),
        ),
        (
            "images/s, layers/s",
            format!("{:.1}, {:.1}", r.images_per_s, r.layers_per_s),
        ),
        (
            "images complete, failed",
            format!("{}, {}", r.images_complete, r.images_failed),
        ),
        ("findings", r.findings.to_string()),
        (
            "**blob fetches / unique layers**",
            format!(
                "**{:.2}** ({} / {})",
                r.fetches_per_unique_layer, r.blob_fetches, r.unique_layers
            ),
        ),
        (
            "bytes fetched vs without dedup",
            format!(
                "{:.1} MiB vs {:.1} MiB ({:.1}×)",
                mib(r.bytes_fetched),
                mib(r.bytes_without_dedup),
                r.bytes_without_dedup as f64 / r.bytes_fetched.max(1) as f64
            ),
        ),
        (
            "worker CPU per layer",
            ours(format!(
                "{:.1} ms ({:.1} s in all)",
                r.cpu_s_per_layer * 1000.0,
                r.worker_cpu_s
            )),
        ),
        (
            "coordinator CPU (whole run)",
            ours(format!("{:.1} s", r.coordinator_cpu_s)),
        ),
        (
            "coordinator peak RSS",
            ours(format!("{:.0} MiB", mib(r.coordinator_peak_rss_bytes))),
        ),
        (
            "worker peak RSS (largest)",
            ours(format!("{:.0} MiB", mib(r.worker_peak_rss_bytes))),
        ),
        (
            "NATS store at the end",
            if started || r.nats_store_bytes > 0 {
                format!("{:.1} MiB", mib(r.nats_store_bytes))
            } else {
                "not measured (no --nats)".to_owned()
            },
        ),
        (
            "object store at the end",
            ours(format!("{:.1} MiB", mib(r.object_store_bytes))),
        ),
        (
            "refresh: tags moved, new layers, blob fetches",
            format!(
                "{}, {}, {}",
                r.refresh.tags_moved, r.refresh.new_layers, r.refresh.blob_fetches
            ),
        ),
        (
            "refresh: time, manifest requests",
            format!("{:.1} s, {}", r.refresh.seconds, r.refresh.manifest_requests),
        ),
        (
            "full re-match (server, images changed, distinct packages)",
            format!(
                "{} ms, {}, {}",
                r.rematch.server_ms, r.rematch.images_changed, r.rematch.distinct_packages
            ),
        ),
        (
            "advisory update via the feed: images changed, new findings",
            ours(format!(
                "{}, {}",
                r.advisory_update.images_changed, r.advisory_update.findings_new
            )),
        ),
        (
            "advisory update: matched and in force, events published (coordinator's log)",
            ours(format!(
                "{:.0} ms, {:.0} ms",
                r.advisory_update.matched_s * 1000.0,
                r.advisory_update.published_s * 1000.0
            )),
        ),
        (
            "advisory update: record written to the feed → data in force (polls every 2 s)",
            if r.advisory_update.written_to_in_force_s > 0.0 {
                format!(
                    "{:.2} s ({} events)",
                    r.advisory_update.written_to_in_force_s, r.advisory_update.events
                )
            } else {
                "not run (no feed directory)".to_owned()
            },
        ),
    ];
    for (k, v) in rows {
        s += &format!("| {k} | {v} |\n");
    }
    s
}
