//! Coordinator overhead: what the coordinator costs per layer job when the
//! workers do no analysis.
//!
//! 1. Builds `--images` (default 1,000) images of `--layers-per-image`
//!    (default 5) unique tiny layers each (5,000 layer jobs) and pushes them
//!    to a real registry (Debian's `docker-registry`), `--concurrency`
//!    (default 32) at a time.
//! 2. A fake worker stands in for the analysis: for each job it writes a
//!    tiny valid `LayerInventory` to the object store at
//!    `inventory_key(asv, digest)`, publishes an `Analysed` `LayerResult`,
//!    and acks the job; up to 256 jobs at once. The same fake worker serves
//!    every phase below.
//! 3. Baselines measured in this run:
//!    - transport floor: on a fresh NATS server, the same jobs (same
//!      message ids and payloads) published through `NatsQueue` by
//!      `--concurrency` publishers (one image's layers in order each, as the
//!      coordinator's dispatch does), answered by the fake worker, and every
//!      result read and acked through the coordinator side of `NatsQueue`;
//!    - resolve alone: every reference resolved against the registry
//!      (manifest + config), `--concurrency` at a time.
//! 4. The coordinator, on a fresh NATS server (the harness's
//!    `ClusterSandbox` with no workers: the fake worker answers): every
//!    image submitted (`--concurrency` at a time: resolve → scan record in KV → layer
//!    records in KV → one JetStream job per layer), results applied (KV),
//!    scans finalized (inventories read back, composed, matched against an
//!    empty database, report stored). Time: first submit to the last scan's
//!    `completed_unix_ms`.
//!    Then the same with two coordinators side by side on that NATS (in
//!    this process, submits spread over them; `cluster::peers`).
//! 5. Prints jobs/s and images/s of each, the coordinator's time as a ratio
//!    of the floor, and an extrapolation to 10,000 images × 5 unique layers.
//!    Target: 10,000 images × 5 layers through the coordinator in < 10 min.
//!
//! Run: `cargo run --release -p strata-loadtest --bin coordinator_overhead`.

use clap::Parser as _;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use strata_coordinator::cluster::SubmitRequest;
use strata_harness::{ClusterSandbox, Compression, Image, Layer, NatsServer, Registry, SandboxQueue};
use strata_loadtest::fleetrun;
use strata_proto::text::now_unix_ms;
use strata_proto::v1::{self, blob_source::Location, layer_result::Outcome};
use strata_proto::{Digest, LayerInventory};
use strata_worker::job::inventory_key;
use strata_worker::queue::nats::NatsQueue;
use strata_worker::queue::{JobDelivery, Queue, QueueSettings};
use strata_worker::source::{ImageRef, Source, SourceConfig, SourcePool};
use tokio::sync::watch;

type BoxError = Box<dyn Error + Send + Sync>;

/// Pause between two looks at the scans still running.
const POLL: Duration = Duration::from_millis(100);
/// Bound on the coordinator and the fake worker stopping after a phase.
const STOP_LIMIT: Duration = Duration::from_secs(40);
/// Jobs the fake worker takes per fetch (and answers at once).
const FAKE_BATCH: usize = 256;

/// The coordinator's own cost per layer job, from submit to finalized
/// report, against the NATS transport floor of the same run.
#[derive(clap::Parser)]
struct Options {
    /// Images submitted.
    #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=20_000))]
    images: usize,
    /// Distinct layers per image.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=50))]
    layers_per_image: usize,
    /// Submits in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    concurrency: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long = "timeout-s", default_value_t = 600)]
    timeout_s: u64,
}

impl Options {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

fn repo(i: usize) -> String {
    format!("bench/img{i}")
}

fn build_images(o: &Options) -> Result<Vec<Image>, BoxError> {
    let mut images = Vec::with_capacity(o.images);
    for i in 0..o.images {
        let mut builder = Image::builder();
        for j in 0..o.layers_per_image {
            builder = builder.layer(
                Layer::builder()
                    .file(&format!("data/img{i}/layer{j}"), format!("image {i} layer {j}\n"))
                    .build(Compression::Gzip)?,
            );
        }
        images.push(builder.build()?);
    }
    Ok(images)
}

// ---- the fake worker --------------------------------------------------------

/// Answers one job as a worker that found nothing would: inventory stored,
/// result published, job acked (in that order, as `worker::run` does).
async fn answer(queue: &Queue, store: &dyn ObjectStore, delivery: JobDelivery) -> Result<(), BoxError> {
    let job = &delivery.job;
    let digest: Digest = job
        .digest
        .parse()
        .map_err(|e| format!("job digest {:?}: {e}", job.digest))?;
    let key = inventory_key(&job.analyzer_set_version, &digest);
    let inventory = LayerInventory {
        digest: Some(digest),
        analyzer_set_version: job.analyzer_set_version.clone(),
        ..Default::default()
    };
    store
        .put(&key, PutPayload::from(serde_json::to_vec(&inventory)?))
        .await?;
    let result = v1::LayerResult {
        digest: job.digest.clone(),
        analyzer_set_version: job.analyzer_set_version.clone(),
        worker_id: "fake-worker".into(),
        attempt: delivery.attempt,
        outcome: Some(Outcome::Analysed(v1::LayerAnalysed {
            inventory_key: key.to_string(),
            packages: 0,
            compressed_bytes: job.size,
            uncompressed_bytes: 0,
            duration_ms: 0,
        })),
    };
    queue.publish_result(&result, None).await?;
    delivery.ack().await?;
    Ok(())
}

/// Runs until `stop` or `deadline`; returns the jobs answered.
async fn fake_worker(
    queue: Queue,
    store: Arc<dyn ObjectStore>,
    stop: watch::Receiver<bool>,
    deadline: Instant,
) -> Result<u64, BoxError> {
    let mut answered = 0u64;
    while !*stop.borrow() && Instant::now() < deadline {
        let batch = queue.next_jobs(FAKE_BATCH, Duration::from_millis(250)).await?;
        let done =
            futures::future::join_all(batch.into_iter().map(|d| answer(&queue, store.as_ref(), d))).await;
        for r in done {
            r?;
            answered += 1;
        }
    }
    Ok(answered)
}

fn local_store() -> Result<(tempfile::TempDir, Arc<dyn ObjectStore>), BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path())?);
    Ok((dir, store))
}

async fn stop_all(
    stop_tx: &watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Result<u64, BoxError>>,
) -> u64 {
    let _ = stop_tx.send(true);
    match tokio::time::timeout(STOP_LIMIT, handle).await {
        Ok(Ok(Ok(n))) => n,
        Ok(Ok(Err(e))) => {
            eprintln!("warning: the fake worker failed: {e}");
            0
        }
        _ => {
            eprintln!("warning: the fake worker did not stop within {STOP_LIMIT:?}");
            0
        }
    }
}

// ---- phases -------------------------------------------------------------------

struct Phase {
    seconds: f64,
    jobs: u64,
    images: usize,
    cpu: Cpu,
}

/// CPU seconds spent during a phase by this process (the coordinator or
/// the floor's publishers, and the fake worker), nats-server and the registry.
#[derive(Clone, Copy, Default)]
struct Cpu {
    this_process: f64,
    nats: f64,
    registry: f64,
}

/// Reads the CPU counters of this process and the two servers.
struct CpuMeter {
    nats: Option<u32>,
    registry: Option<u32>,
    start: Cpu,
}

impl CpuMeter {
    fn now(nats: Option<u32>, registry: Option<u32>) -> Cpu {
        let of = |pid: Option<u32>| pid.map_or(0.0, fleetrun::cpu_seconds);
        Cpu {
            this_process: fleetrun::cpu_seconds(std::process::id()),
            nats: of(nats),
            registry: of(registry),
        }
    }

    fn start(nats: Option<u32>, registry: Option<u32>) -> CpuMeter {
        CpuMeter {
            nats,
            registry,
            start: CpuMeter::now(nats, registry),
        }
    }

    fn stop(&self) -> Cpu {
        let end = CpuMeter::now(self.nats, self.registry);
        Cpu {
            this_process: end.this_process - self.start.this_process,
            nats: end.nats - self.start.nats,
            registry: end.registry - self.start.registry,
        }
    }
}

/// Transport floor: the coordinator's job and result messages through
/// `NatsQueue`, no KV, no resolve, no finalize.
async fn transport_floor(images: &[Image], host: &str, o: &Options) -> Result<Phase, BoxError> {
    let nats = NatsServer::start()?;
    let meter = CpuMeter::start(nats.pid(), None);
    let (_dir, store) = local_store()?;
    let client = async_nats::connect(nats.url()).await?;
    let queue = Queue::Nats(Box::new(
        NatsQueue::create(client, &QueueSettings::default()).await?,
    ));
    let worker_queue = Queue::Nats(Box::new(
        NatsQueue::bind(async_nats::connect(nats.url()).await?).await?,
    ));
    let asv = strata_worker::analyzers::analyzer_set_version(&strata_worker::analyzers::all());
    let deadline = Instant::now() + o.timeout();
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(fake_worker(worker_queue, store, stop_rx, deadline));

    let total: u64 = images.iter().map(|i| i.layers.len() as u64).sum();
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let results = {
        let queue = queue.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            while acked.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                for delivery in queue.next_results(256, Duration::from_millis(500)).await? {
                    delivery.ack().await?;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, BoxError>(started.elapsed())
        })
    };
    futures::stream::iter(images.iter().enumerate())
        .map(|(i, image)| {
            let queue = &queue;
            let asv = &asv;
            async move {
                for layer in &image.layers {
                    let job = v1::LayerJob {
                        digest: layer.digest.clone(),
                        media_type: layer.media_type().to_owned(),
                        size: layer.size(),
                        source: Some(v1::BlobSource {
                            location: Some(Location::Registry(v1::RegistryBlob {
                                registry: host.to_owned(),
                                repository: repo(i),
                                insecure: true,
                            })),
                        }),
                        analyzer_set_version: asv.clone(),
                        priority: v1::Priority::Ci.into(),
                        queued_unix_ms: now_unix_ms(),
                    };
                    queue
                        .publish_job(&job, &format!("{}/{asv}", layer.digest), None)
                        .await?;
                }
                Ok::<_, BoxError>(())
            }
        })
        .buffer_unordered(o.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let elapsed = results.await??;
    let cpu = meter.stop();
    let answered = stop_all(&stop_tx, worker).await;
    let got = acked.load(Ordering::Relaxed);
    if got < total {
        return Err(format!(
            "transport floor: {got} of {total} results after {:?}",
            o.timeout()
        )
        .into());
    }
    if answered != total {
        eprintln!("warning: the fake worker answered {answered} jobs for {total} published");
    }
    Ok(Phase {
        seconds: elapsed.as_secs_f64().max(0.001),
        jobs: total,
        images: images.len(),
        cpu,
    })
}

/// Resolve alone: manifest and config of every image from the registry,
/// with registry clients shared through a `SourcePool` as the coordinator's.
async fn resolve_alone(images: &[Image], registry: &Registry, o: &Options) -> Result<Phase, BoxError> {
    let host = registry.host();
    let config = SourceConfig {
        insecure_registries: vec![host.clone()],
        ..Default::default()
    };
    let pool = SourcePool::new();
    let meter = CpuMeter::start(None, registry.pid());
    let started = Instant::now();
    let layers: Vec<usize> = futures::stream::iter(0..images.len())
        .map(|i| {
            let (config, pool, host) = (&config, &pool, &host);
            async move {
                let reference = ImageRef::parse(&format!("{host}/{}:v1", repo(i)))?;
                let source = pool
                    .open(reference, config)
                    .await?
                    .into_image()
                    .ok_or("not an image")?;
                let resolved = source.resolve(None).await?;
                Ok::<_, BoxError>(resolved.layers.len())
            }
        })
        .buffer_unordered(o.concurrency)
        .try_collect()
        .await?;
    Ok(Phase {
        seconds: started.elapsed().as_secs_f64().max(0.001),
        jobs: layers.iter().sum::<usize>() as u64,
        images: images.len(),
        cpu: meter.stop(),
    })
}

/// What opening one registry source costs with no request made (its HTTP
/// clients are built): the coordinator opens one per submit and a worker
/// one per job. Mean over up to 200, one at a time.
async fn source_open_cost(host: &str) -> Result<Duration, BoxError> {
    let config = SourceConfig {
        insecure_registries: vec![host.to_owned()],
        ..Default::default()
    };
    let n = 200u32;
    let started = Instant::now();
    for i in 0..n {
        let reference = ImageRef::parse(&format!("{host}/{}:v1", repo(i as usize)))?;
        std::hint::black_box(Source::open(reference, &config).await?);
    }
    Ok(started.elapsed() / n)
}

/// The coordinator with the fake worker.
async fn through_coordinator(
    images: &[Image],
    registry: &Registry,
    o: &Options,
    coordinators: usize,
) -> Result<(Phase, f64), BoxError> {
    let host = &registry.host();
    let sandbox = ClusterSandbox::builder()
        .queue(SandboxQueue::Nats)
        .coordinators(coordinators)
        // The registry policy lets plain HTTP reach only registries the
        // server lists (and a loopback one only when named).
        .insecure_registry(host.clone())
        .workers(0)
        .stop_limit(STOP_LIMIT)
        .start()
        .await?;
    let all = &sandbox.coordinators();
    // Let them see each other first, as a running cluster's would.
    if coordinators > 1 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while all
            .iter()
            .any(|c| c.peers().is_none_or(|p| p.members().len() < coordinators))
        {
            if Instant::now() > deadline {
                return Err("the coordinators did not see each other in 30 s".into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let deadline = Instant::now() + o.timeout();
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker_queue = sandbox.worker_queue().await?;
    let worker = tokio::spawn(fake_worker(
        worker_queue,
        sandbox.store().clone(),
        stop_rx,
        deadline,
    ));

    let meter = CpuMeter::start(sandbox.nats().and_then(NatsServer::pid), registry.pid());
    let result = async {
        let started_ms = now_unix_ms();
        let started = Instant::now();
        let mut pending: Vec<String> = futures::stream::iter(0..images.len())
            .map(|i| async move {
                // Spread over the coordinators, as a Service in front would.
                let (scan, _) = all[i % all.len()]
                    .submit(SubmitRequest {
                        reference: format!("{host}/{}:v1", repo(i)),
                        insecure_registry: true,
                        ..Default::default()
                    })
                    .await?;
                Ok::<_, BoxError>(scan.id)
            })
            .buffer_unordered(o.concurrency)
            .try_collect()
            .await?;
        let submitted = started.elapsed().as_secs_f64();
        let mut last_completed_ms = started_ms;
        // Scans finish roughly in submit order: look at the oldest first and
        // stop at the first still running, so polling adds little load.
        pending.reverse();
        let max_polls = o.timeout().as_millis() / POLL.as_millis() + 1;
        let mut polls = 0u128;
        while let Some(id) = pending.last() {
            if Instant::now() > deadline || polls > max_polls {
                return Err::<(Phase, f64), BoxError>(
                    format!("{} scans not complete after {:?}", pending.len(), o.timeout()).into(),
                );
            }
            match sandbox.scan_finished(id).await? {
                Some(scan) => {
                    last_completed_ms = last_completed_ms.max(scan.completed_unix_ms);
                    pending.pop();
                }
                None => {
                    polls += 1;
                    tokio::time::sleep(POLL).await;
                }
            }
        }
        let seconds = ((last_completed_ms - started_ms) as f64 / 1000.0).max(0.001);
        let misses: u64 = all.iter().map(|c| c.cache_stats().misses).sum();
        let jobs: u64 = images.iter().map(|i| i.layers.len() as u64).sum();
        if misses != jobs {
            return Err(format!("the coordinators queued {misses} jobs for {jobs} unique layers").into());
        }
        Ok((
            Phase {
                seconds,
                jobs,
                images: images.len(),
                cpu: meter.stop(),
            },
            submitted,
        ))
    }
    .await;
    let answered = stop_all(&stop_tx, worker).await;
    if let Err(e) = sandbox.stop().await {
        eprintln!("warning: {e}");
    }
    if let Ok((phase, _)) = &result
        && answered != phase.jobs
    {
        eprintln!(
            "warning: the fake worker answered {answered} jobs for {} queued",
            phase.jobs
        );
    }
    result
}

fn line(name: &str, p: &Phase) {
    println!(
        "{name:<34} {:>8.2} s  {:>9.0} jobs/s  {:>8.1} images/s",
        p.seconds,
        p.jobs as f64 / p.seconds,
        p.images as f64 / p.seconds
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = Options::parse();
    let t = Instant::now();
    let images = build_images(&o)?;
    let registry = Registry::start()?;
    let host = registry.host();
    futures::stream::iter(images.iter().enumerate())
        .map(|(i, image)| {
            let registry = &registry;
            async move { image.push(registry, &repo(i), "v1").await }
        })
        .buffer_unordered(o.concurrency.min(16))
        .try_collect::<Vec<_>>()
        .await?;
    let jobs = images.len() * o.layers_per_image;
    println!(
        "{} images x {} unique layers = {jobs} layer jobs; built and pushed in {:.1} s; {} submits/publishers at once",
        images.len(),
        o.layers_per_image,
        t.elapsed().as_secs_f64(),
        o.concurrency
    );

    let floor = transport_floor(&images, &host, &o).await?;
    let resolve = resolve_alone(&images, &registry, &o).await?;
    let (coord, submitted) = through_coordinator(&images, &registry, &o, 1).await?;
    let (two, _) = through_coordinator(&images, &registry, &o, 2).await?;
    let open = source_open_cost(&host).await?;

    println!();
    line("transport floor (NatsQueue only)", &floor);
    line("resolve alone (registry, shared clients)", &resolve);
    line("coordinator (submit → finalize)", &coord);
    line("two coordinators (same, spread)", &two);
    println!(
        "  of which every submit had returned after {submitted:.2} s ({:.1} submits/s)",
        coord.images as f64 / submitted.max(0.001)
    );
    println!(
        "  opening one registry source (HTTP clients built, no request): {:.2} ms",
        open.as_secs_f64() * 1000.0
    );
    println!();
    println!("CPU per image, ms        this process  nats-server  registry");
    for (name, p) in [
        ("transport floor", &floor),
        ("resolve alone", &resolve),
        ("coordinator", &coord),
        ("two coordinators", &two),
    ] {
        let per = |s: f64| s * 1000.0 / p.images as f64;
        println!(
            "{name:<24} {:>12.2} {:>12.2} {:>9.2}",
            per(p.cpu.this_process),
            per(p.cpu.nats),
            per(p.cpu.registry)
        );
    }
    // The coordinator's side of the cost: this process (coordinator and
    // fake worker) and NATS; the floor's: the same fake worker, the
    // publishers and NATS. The registry serves either way.
    let ours = |p: &Phase| p.cpu.this_process + p.cpu.nats;
    println!();
    let jobs_per_s = coord.jobs as f64 / coord.seconds;
    let images_per_s = coord.images as f64 / coord.seconds;
    println!(
        "coordinator time / transport floor: {:.1}x; / (floor + resolve): {:.1}x",
        coord.seconds / floor.seconds,
        coord.seconds / (floor.seconds + resolve.seconds)
    );
    println!(
        "two coordinators / one, throughput: {:.2}x (both in this process: the same cores; what a second one costs or gains in coordination, not in hardware)",
        coord.seconds / two.seconds
    );
    println!(
        "coordinator CPU (this process + NATS) / floor's: {:.1}x; registry CPU while the coordinator ran: {:.0}% of all measured",
        ours(&coord) / ours(&floor).max(0.001),
        100.0 * coord.cpu.registry / (ours(&coord) + coord.cpu.registry).max(0.001)
    );
    println!(
        "extrapolated, 10,000 images x 5 unique layers (50,000 jobs): {:.1} min at {jobs_per_s:.0} jobs/s; \
         {:.1} min at {images_per_s:.1} images/s ({} layers each); target < 10 min",
        50_000.0 / jobs_per_s / 60.0,
        10_000.0 / images_per_s / 60.0,
        o.layers_per_image
    );
    Ok(())
}
