//! `ClusterSandbox`: two images sharing a base layer scanned through a real
//! registry by two in-process workers, on the memory queue and on a real
//! NATS server: the reports arrive, the shared layer is analysed once, and
//! `stop` leaves no task running. The gRPC API serves the coordinator's
//! reports. With no workers, the jobs wait in the queue for the caller.

use std::time::{Duration, Instant};

use strata_coordinator::cluster::SubmitRequest;
use strata_coordinator::cluster::records::ScanStatus;
use strata_harness::{ClusterSandbox, Compression, Image, Layer, Registry, SandboxQueue};
use strata_proto::v1::{self, get_report_request::Selector, scan_service_client::ScanServiceClient};
use strata_proto::{Ecosystem, Report};
use strata_worker::run::WorkerOptions;

const WAIT: Duration = Duration::from_secs(120);

fn base() -> Layer {
    Layer::builder()
        .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
        .file(
            "var/lib/dpkg/status",
            "Package: base\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n\n",
        )
        .build(Compression::Gzip)
        .unwrap()
}

fn image_on(base: &Layer, marker: &str) -> Image {
    Image::builder()
        .layer(base.clone())
        .layer(
            Layer::builder()
                .file("srv/marker", marker)
                .build(Compression::Zstd)
                .unwrap(),
        )
        .build()
        .unwrap()
}

async fn submit(sandbox: &ClusterSandbox, reference: &str) -> String {
    let (scan, existed) = sandbox
        .coordinator()
        .submit(SubmitRequest {
            reference: reference.to_owned(),
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .expect("submit");
    assert!(!existed, "{reference} was scanned before");
    scan.id
}

fn assert_base_found(report: &Report, image: &Image) {
    assert_eq!(
        report.image_digest.as_ref().map(ToString::to_string).as_deref(),
        Some(image.manifest_digest.as_str())
    );
    let found: Vec<_> = report
        .packages
        .iter()
        .map(|p| (p.ecosystem, p.name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(found, vec![(Ecosystem::Debian, "base", "1.0-1")]);
}

/// Waits (bounded) until the runtime has no task left but the test's own.
async fn assert_no_task_left() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.num_alive_tasks() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} tasks still running after stop",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes two images on one base, scans them one after the other, checks
/// reports and the layer cache, and stops the sandbox.
async fn two_images_share_their_base(queue: SandboxQueue) {
    let registry = Registry::start().expect("registry");
    let base = base();
    let a = image_on(&base, "a");
    let b = image_on(&base, "b");
    a.push(&registry, "app", "a").await.unwrap();
    b.push(&registry, "app", "b").await.unwrap();

    let sandbox = ClusterSandbox::builder()
        .workers(2)
        .worker_options(WorkerOptions {
            concurrency: 2,
            ..WorkerOptions::default()
        })
        .queue(queue)
        .insecure_registry(registry.host())
        .stop_limit(Duration::from_secs(30))
        .start()
        .await
        .expect("sandbox start");
    assert!(sandbox.store_url().starts_with("file://"));
    assert!(sandbox.dir().join("store").is_dir());

    let first = submit(&sandbox, &format!("{}/app:a", registry.host())).await;
    let scan = sandbox.wait_scan(&first, WAIT).await.expect("scan of a");
    assert_eq!(scan.status, ScanStatus::Complete);
    let finished = sandbox.scan_finished(&first).await.expect("a clean scan");
    assert_eq!(finished.map(|s| s.id), Some(first.clone()));
    let stats = sandbox.coordinator().cache_stats();
    assert_eq!((stats.hits, stats.misses), (0, 2), "a: both layers are new");
    let report = sandbox.coordinator().report(&first).await.expect("report of a");
    assert_base_found(&report, &a);

    let second = submit(&sandbox, &format!("{}/app:b", registry.host())).await;
    sandbox.wait_scan(&second, WAIT).await.expect("scan of b");
    let stats = sandbox.coordinator().cache_stats();
    assert_eq!((stats.hits, stats.misses), (1, 3), "b: the base is cached");
    assert_base_found(&sandbox.coordinator().report(&second).await.unwrap(), &b);
    // Every unique layer's inventory is in the store, once.
    let inventories = walk(&sandbox.dir().join("store").join("inventories"));
    assert_eq!(inventories, 3, "inventories stored");

    sandbox.stop().await.expect("every task stops");
    assert_no_task_left().await;
}

/// Files below `dir`, recursively.
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() { walk(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_queue_scans_with_two_workers() {
    two_images_share_their_base(SandboxQueue::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_queue_scans_with_two_workers() {
    two_images_share_their_base(SandboxQueue::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_serves_the_coordinators_reports() {
    let registry = Registry::start().expect("registry");
    let image = image_on(&base(), "grpc");
    image.push(&registry, "app", "1").await.unwrap();
    let sandbox = ClusterSandbox::builder()
        .insecure_registry(registry.host())
        .grpc(true)
        .start()
        .await
        .expect("sandbox start");
    assert!(sandbox.grpc_url().starts_with("http://127.0.0.1:"));
    let id = submit(&sandbox, &format!("{}/app:1", registry.host())).await;
    sandbox.wait_scan(&id, WAIT).await.expect("scan");

    let mut client = ScanServiceClient::connect(sandbox.grpc_url())
        .await
        .expect("grpc");
    let wire = client
        .get_report(v1::GetReportRequest {
            selector: Some(Selector::ScanId(id.clone())),
        })
        .await
        .expect("GetReport")
        .into_inner();
    let report = sandbox.coordinator().report(&id).await.unwrap();
    assert_eq!(wire, v1::Report::from(report));
    assert_eq!(wire.image_digest, image.manifest_digest);
    drop(client);
    sandbox.stop().await.expect("every task stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_workers_the_jobs_wait_for_the_caller() {
    let registry = Registry::start().expect("registry");
    let image = image_on(&base(), "solo");
    image.push(&registry, "solo", "1").await.unwrap();
    let nats = strata_harness::NatsServer::start().expect("nats");
    let sandbox = ClusterSandbox::builder()
        .workers(0)
        .queue(SandboxQueue::NatsAt(nats.url()))
        .insecure_registry(registry.host())
        .start()
        .await
        .expect("sandbox start");
    assert_eq!(sandbox.nats_url(), Some(nats.url().as_str()));
    assert!(sandbox.nats().is_none(), "a given server is not the sandbox's");

    let id = submit(&sandbox, &format!("{}/solo:1", registry.host())).await;
    let worker = sandbox.worker_queue().await.expect("worker queue");
    let mut digests = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while digests.len() < image.layers.len() && Instant::now() < deadline {
        for delivery in worker.next_jobs(8, Duration::from_millis(500)).await.unwrap() {
            digests.push(delivery.job.digest.clone());
        }
    }
    digests.sort();
    let mut want: Vec<_> = image.layers.iter().map(|l| l.digest.clone()).collect();
    want.sort();
    assert_eq!(digests, want, "one job per layer, for the caller");
    let scan = sandbox
        .coordinator()
        .scan(&id)
        .await
        .unwrap()
        .expect("scan record");
    assert_ne!(scan.status, ScanStatus::Complete, "no worker, no report");
    drop(worker);

    sandbox.stop().await.expect("every task stops");
    // The given server outlives the sandbox.
    async_nats::connect(nats.url()).await.expect("nats still up");
}
