//! Cluster scaling: fleet throughput against the number of workers, with
//! registry latency simulated.
//!
//! 1. Generates a fleet of `--images` (default 40) images, each one shared
//!    base layer (os-release, a dpkg status, some files) plus two unique
//!    small layers (a dpkg status with a few packages; some files), and
//!    pushes it to a real registry (Debian's `docker-registry`).
//! 2. For each worker count of `--workers` (default `1,2,4`): a fresh NATS
//!    server, a fresh counting proxy in front of the registry that waits
//!    `--delay-ms` (default 200) before each blob GET, a fresh object store;
//!    the coordinator and N workers in this process (the harness's
//!    `ClusterSandbox` on NATS: one `async_nats` connection and one
//!    `JobContext` each, `--slot-concurrency` (default 1)
//!    jobs held per worker, so a worker is latency-bound as a real one on a
//!    far registry is). Every image is submitted at once, through the proxy;
//!    the time is from the first submit to the last scan completed (its
//!    `completed_unix_ms`), bounded by `--timeout-s` (default 300).
//! 3. Checks every unique layer blob was fetched exactly once (dedup across
//!    images and workers), then prints seconds, layers/s, speedup against
//!    the 1-worker round of the same run, and efficiency = speedup / N.
//!    Target: efficiency ≥ 0.8 at 4 workers.
//!
//! Run: `cargo run --release -p strata-loadtest --bin cluster_scaling`.

use clap::Parser as _;
use std::collections::HashSet;
use std::error::Error;
use std::time::{Duration, Instant};

use strata_coordinator::cluster::SubmitRequest;
use strata_harness::{ClusterSandbox, Compression, Image, Layer, Registry, RegistryProxy, SandboxQueue};
use strata_proto::text::now_unix_ms;
use strata_worker::run::WorkerOptions;

type BoxError = Box<dyn Error + Send + Sync>;

/// Pause between two looks at the scans still running.
const POLL: Duration = Duration::from_millis(100);
/// Bound on the coordinator and workers stopping after a round.
const STOP_LIMIT: Duration = Duration::from_secs(40);

/// Cluster throughput as workers are added: the same fleet scanned with
/// each worker count, against the fetch-delay floor.
#[derive(clap::Parser)]
struct Options {
    /// Worker counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4], value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    workers: Vec<usize>,
    /// Images in the fleet.
    #[arg(long, default_value_t = 40, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    images: usize,
    /// Delay the registry proxy adds to every blob, in milliseconds.
    #[arg(long = "delay-ms", default_value_t = 200)]
    delay_ms: u64,
    /// Layers each worker slot analyses at once.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    slot_concurrency: usize,
    /// Give up on a round after this many seconds.
    #[arg(long = "timeout-s", default_value_t = 300)]
    timeout_s: u64,
}

impl Options {
    fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

fn dpkg_status(packages: &[(String, String)]) -> String {
    let mut s = String::new();
    for (name, version) in packages {
        s.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n\
             Version: {version}\nDescription: {name} for the scaling benchmark\n\n"
        ));
    }
    s
}

/// Bytes that do not compress to nothing, deterministic per seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn build_fleet(count: usize) -> Result<Vec<Image>, BoxError> {
    let base_packages: Vec<(String, String)> = ["base-files", "libc6", "zlib1g", "libssl3", "tzdata"]
        .iter()
        .map(|n| (n.to_string(), "1.2.3-1".to_string()))
        .collect();
    let base = Layer::builder()
        .file(
            "etc/os-release",
            "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        )
        .file("var/lib/dpkg/status", dpkg_status(&base_packages))
        .file("usr/lib/libbase.so", noise(1, 32 * 1024))
        .file("etc/hostname", "bench\n")
        .build(Compression::Gzip)?;
    let mut images = Vec::with_capacity(count);
    for i in 0..count {
        let mut packages = base_packages.clone();
        packages.push((format!("app{i}-lib"), format!("2.{i}.0-1")));
        packages.push((format!("app{i}-tools"), format!("2.{i}.1-1")));
        let packages_layer = Layer::builder()
            .file("var/lib/dpkg/status", dpkg_status(&packages))
            .file(&format!("usr/share/doc/app{i}/copyright"), format!("app {i}\n"))
            .build(Compression::Gzip)?;
        let files_layer = Layer::builder()
            .file(&format!("opt/app{i}/bin/app"), noise(1000 + i as u64, 16 * 1024))
            .file(&format!("opt/app{i}/etc/config.toml"), format!("id = {i}\n"))
            .build(Compression::Gzip)?;
        images.push(
            Image::builder()
                .layer(base.clone())
                .layer(packages_layer)
                .layer(files_layer)
                .build()?,
        );
    }
    Ok(images)
}

struct RoundResult {
    seconds: f64,
    /// From the first submit until every submit had returned (resolving
    /// 40 images: the coordinator's part, the same for every worker count).
    submit_seconds: f64,
    max_concurrent_gets: u64,
}

async fn round(
    registry: &Registry,
    images: &[Image],
    unique_layers: &HashSet<String>,
    workers: usize,
    o: &Options,
) -> Result<RoundResult, BoxError> {
    let proxy = RegistryProxy::builder(registry).blob_delay(o.delay()).start()?;
    let sandbox = ClusterSandbox::builder()
        .queue(SandboxQueue::Nats)
        .workers(workers)
        .worker_options(WorkerOptions {
            concurrency: o.slot_concurrency,
            shutdown_grace: Duration::from_secs(5),
            ..Default::default()
        })
        .insecure_registry(proxy.host())
        .stop_limit(STOP_LIMIT)
        .start()
        .await?;
    let coordinator = sandbox.coordinator();

    let result = async {
        let started_ms = now_unix_ms();
        let started = Instant::now();
        let submits = (0..images.len()).map(|i| {
            coordinator.submit(SubmitRequest {
                reference: format!("{}/fleet/app{i}:v1", proxy.host()),
                insecure_registry: true,
                ..Default::default()
            })
        });
        let submitted = futures::future::try_join_all(submits).await?;
        let submit_time = started.elapsed();
        let mut pending: Vec<String> = submitted.into_iter().map(|(scan, _)| scan.id).collect();
        let mut last_completed_ms = started_ms;
        let max_polls = o.timeout().as_millis() / POLL.as_millis() + 1;
        let mut polls = 0u128;
        while !pending.is_empty() {
            if started.elapsed() > o.timeout() || polls > max_polls {
                return Err::<RoundResult, BoxError>(
                    format!("{} scans not complete after {:?}", pending.len(), o.timeout()).into(),
                );
            }
            polls += 1;
            let mut still = Vec::with_capacity(pending.len());
            for id in pending {
                match sandbox.scan_finished(&id).await? {
                    Some(scan) => last_completed_ms = last_completed_ms.max(scan.completed_unix_ms),
                    None => still.push(id),
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
        let seconds = ((last_completed_ms - started_ms) as f64 / 1000.0).max(0.001);
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!(
                "  {workers} workers: submits returned after {:.2} s; last scan complete after {seconds:.2} s",
                submit_time.as_secs_f64()
            );
        }
        let mut wrong = Vec::new();
        for digest in unique_layers {
            let gets = proxy.blob_gets(digest);
            if gets != 1 {
                wrong.push(format!("{digest}: {gets} GETs"));
            }
        }
        if !wrong.is_empty() {
            return Err(format!(
                "{} of {} unique layers not fetched exactly once: {}",
                wrong.len(),
                unique_layers.len(),
                wrong.join(", ")
            )
            .into());
        }
        Ok(RoundResult {
            seconds,
            submit_seconds: submit_time.as_secs_f64(),
            max_concurrent_gets: proxy.concurrent_blob_gets_max(),
        })
    }
    .await;

    if let Err(e) = sandbox.stop().await {
        eprintln!("warning: {e}");
    }
    result
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = Options::parse();
    let t = Instant::now();
    let images = build_fleet(o.images)?;
    let registry = Registry::start()?;
    for (i, image) in images.iter().enumerate() {
        image.push(&registry, &format!("fleet/app{i}"), "v1").await?;
    }
    let unique_layers: HashSet<String> = images
        .iter()
        .flat_map(|img| img.layers.iter().map(|l| l.digest.clone()))
        .collect();
    let layers = unique_layers.len();
    println!(
        "fleet: {} images, {layers} unique layers (1 shared base + 2 each), built and pushed in {:.1} s",
        images.len(),
        t.elapsed().as_secs_f64()
    );
    println!(
        "blob delay {} ms, {} job slot(s) per worker; latency floor for W workers: {layers} x {} ms / (W x {})",
        o.delay().as_millis(),
        o.slot_concurrency,
        o.delay().as_millis(),
        o.slot_concurrency
    );

    let mut rows = Vec::new();
    for &n in &o.workers {
        let r = round(&registry, &images, &unique_layers, n, &o).await?;
        rows.push((n, r));
    }
    // Baseline: the 1-worker round of this run (else the smallest count, scaled).
    let (base_n, base) = rows
        .iter()
        .min_by_key(|(n, _)| *n)
        .map(|(n, r)| (*n, r.seconds))
        .ok_or("no rounds")?;
    let base_after = rows
        .iter()
        .min_by_key(|(n, _)| *n)
        .map(|(_, r)| r.seconds - r.submit_seconds)
        .ok_or("no rounds")?;
    println!();
    println!(
        "{:>7}  {:>8}  {:>9}  {:>8}  {:>10}  {:>12}  {:>13}  {:>10}  {:>17}",
        "workers",
        "seconds",
        "layers/s",
        "speedup",
        "efficiency",
        "floor (s)",
        "max blob GETs",
        "submits s",
        "eff. after submits"
    );
    for (n, r) in &rows {
        let speedup = base / r.seconds * base_n as f64;
        let floor = layers as f64 * o.delay().as_secs_f64() / (*n * o.slot_concurrency) as f64;
        // The same ratio over the time after the last submit returned: how
        // the workers' part scales, without the coordinator's resolving.
        let after = (r.seconds - r.submit_seconds).max(0.001);
        let after_efficiency = base_after / after * base_n as f64 / *n as f64;
        println!(
            "{:>7}  {:>8.2}  {:>9.1}  {:>7.2}x  {:>10.2}  {:>12.2}  {:>13}  {:>10.2}  {:>17.2}",
            n,
            r.seconds,
            layers as f64 / r.seconds,
            speedup,
            speedup / *n as f64,
            floor,
            r.max_concurrent_gets,
            r.submit_seconds,
            after_efficiency
        );
    }
    println!();
    println!(
        "speedup is against the {base_n}-worker round of this run; efficiency = speedup / workers (target ≥ 0.8 at 4); \
         every unique layer was fetched exactly once in every round; \
         max blob GETs: most at once at the proxy, the coordinator's config fetches during submit included; \
         submits s: until every submit had returned (resolving, the coordinator's part); \
         eff. after submits: efficiency over the time after that"
    );
    Ok(())
}
