//! The cluster on real parts: `strata coordinator` and `strata worker`
//! processes, a real nats-server (JetStream), a real docker-registry behind
//! a counting proxy, and the gRPC API as CI calls it.
//!
//! The tests in this file run one at a time (each starts a whole cluster;
//! the machine has two cores).

// Each test holds a std Mutex across awaits on purpose: it serializes whole
// tests (each on its own runtime), so no task can wait on it from the same runtime.
#![allow(clippy::await_holding_lock)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use strata_harness::fixtures::{
    self, DEBIAN_ZLIB_STATUS as STATUS, build_db, debian_layer, image_on, serial,
};
use strata_harness::image::{Compression, Image, Layer};
use strata_harness::{Cluster, Registry, RegistryProxy};
use strata_proto::v1::{
    self, get_report_request::Selector, scan_event::Event, scan_service_client::ScanServiceClient,
};
use tonic::transport::Channel;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
/// Bound on waiting for a scan (a whole cluster on a busy two-core machine).
const SCAN_LIMIT: Duration = Duration::from_secs(180);
/// Bound on reaching the coordinator's gRPC port (it may be restarting).
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// The three base layers every image of the fleet shares.
fn base_layers() -> Vec<Layer> {
    vec![
        debian_layer("12", STATUS),
        Layer::builder()
            .file("usr/share/doc/base2", "second base layer")
            .build(Compression::Gzip)
            .unwrap(),
        Layer::builder()
            .file("usr/share/doc/base3", "third base layer")
            .build(Compression::Zstd)
            .unwrap(),
    ]
}

/// An image on the shared base with `top` unique layers; image `i` adds a
/// package of its own so every report differs.
fn fleet_image(base: &[Layer], i: usize, top: usize) -> (Image, Vec<Layer>) {
    let mut builder = image_on(base);
    let mut tops = Vec::new();
    for t in 0..top {
        let status = format!(
            "{STATUS}Package: app{i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.{i}.{t}\n\n"
        );
        let layer = Layer::builder()
            .file("var/lib/dpkg/status", status)
            .file(&format!("srv/app{i}/layer{t}"), format!("image {i} layer {t}"))
            .build(Compression::Gzip)
            .unwrap();
        builder = builder.layer(layer.clone());
        tops.push(layer);
    }
    (builder.build().unwrap(), tops)
}

/// Bytes gzip cannot shrink (a sha256 chain), so streaming them takes time.
fn incompressible(len: usize) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(b"strata");
    while out.len() < len {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// Pushes `name:1`, one layer of `len` incompressible bytes (plus a dpkg
/// status) that takes seconds to stream through a rate-limited proxy.
async fn push_slow_image(registry: &Registry, name: &str, len: usize) -> Layer {
    let big = Layer::builder()
        .file("var/lib/dpkg/status", STATUS)
        .file("etc/os-release", fixtures::debian_os_release("12"))
        .file("srv/blob.bin", incompressible(len))
        .build(Compression::Gzip)
        .unwrap();
    Image::builder()
        .layer(big.clone())
        .build()
        .unwrap()
        .push(registry, name, "1")
        .await
        .unwrap();
    big
}

/// Waits until the proxy has seen a GET for `digest`.
async fn wait_fetch_started(proxy: &RegistryProxy, digest: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.blob_requests(digest) == 0 {
        assert!(Instant::now() < deadline, "the worker never fetched the layer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(cluster: &Cluster) -> ScanServiceClient<Channel> {
    ScanServiceClient::new(fixtures::coordinator_channel(cluster, CONNECT_LIMIT).await)
}

/// Submits without waiting; retries while the coordinator is away (restarts).
async fn submit(cluster: &Cluster, reference: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = client(cluster).await;
        let request = v1::SubmitImageRequest {
            reference: reference.to_owned(),
            insecure_registry: true,
            ..Default::default()
        };
        match c.submit_image(request).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                let first = stream.next().await.expect("a submitted event").expect("event");
                assert!(matches!(first.event, Some(Event::Submitted(_))), "{first:?}");
                return first.scan_id;
            }
            Err(status) if status.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(status) => panic!("submit {reference}: {status}\n{}", cluster.coordinator_log()),
        }
    }
}

/// Waits for the scan's `Done` event (re-watching across coordinator restarts).
async fn wait_done(cluster: &Cluster, scan_id: &str) -> v1::Done {
    fixtures::wait_done(cluster, scan_id, SCAN_LIMIT, CONNECT_LIMIT).await
}

async fn report(cluster: &Cluster, scan_id: &str) -> v1::Report {
    client(cluster)
        .await
        .get_report(v1::GetReportRequest {
            selector: Some(Selector::ScanId(scan_id.to_owned())),
        })
        .await
        .unwrap_or_else(|s| panic!("report {scan_id}: {s}"))
        .into_inner()
}

fn start_cluster(registry_host: &str, db: &Path, workers: usize, coordinator_args: &[&str]) -> Cluster {
    Cluster::builder(STRATA)
        .workers(workers)
        .db(db)
        .insecure_registry(registry_host)
        .coordinator_args(coordinator_args.iter().copied())
        .worker_args(["--concurrency", "2"])
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_images_sharing_base_layers_fetch_each_unique_layer_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(20))
        .start()
        .unwrap();
    let base = base_layers();
    let mut unique: Vec<String> = base.iter().map(|l| l.digest.clone()).collect();
    let mut refs = Vec::new();
    for i in 0..50 {
        let (image, tops) = fleet_image(&base, i, 1 + i % 2);
        image
            .push(&registry, "fleet/app", &format!("v{i}"))
            .await
            .unwrap();
        unique.extend(tops.iter().map(|l| l.digest.clone()));
        refs.push(format!("{}/fleet/app:v{i}", proxy.host()));
    }
    let cluster = start_cluster(&proxy.host(), &db, 3, &[]);

    // All at once, as 50 CI jobs would.
    let ids = futures::future::join_all(refs.iter().map(|r| submit(&cluster, r))).await;
    let dones = futures::future::join_all(ids.iter().map(|id| wait_done(&cluster, id))).await;
    for (i, done) in dones.iter().enumerate() {
        assert_eq!(
            done.status,
            v1::ScanStatus::Complete as i32,
            "image {i}: {done:?}"
        );
        assert_eq!(done.layers_failed, 0, "image {i}: {}", done.error);
        assert_eq!(done.layers_total as usize, 4 + i % 2);
    }
    for (i, id) in ids.iter().enumerate() {
        let r = report(&cluster, id).await;
        let names: Vec<&str> = r.packages.iter().map(|p| p.name.as_str()).collect();
        assert!(
            names.contains(&format!("app{i}").as_str()),
            "image {i}: {names:?}"
        );
        assert!(names.contains(&"zlib1g"), "image {i}: {names:?}");
        assert!(r.layer_errors.is_empty());
    }
    for digest in &unique {
        assert_eq!(
            proxy.blob_gets(digest),
            1,
            "layer {digest} was not fetched exactly once\n{}",
            cluster.coordinator_log()
        );
    }
    // A second submit of a scanned image is the same scan, and pulls nothing.
    let again = submit(&cluster, &refs[7]).await;
    assert_eq!(again, ids[7]);
    let metrics = cluster.metrics(&cluster.coordinator_metrics_url()).unwrap();
    assert!(metrics.contains("strata_layer_cache_hits_total"), "{metrics}");
    assert!(metrics.contains("strata_queue_lag"), "{metrics}");
    let worker_metrics = cluster.metrics(&cluster.worker_metrics_url(0)).unwrap();
    assert!(
        worker_metrics.contains("strata_jobs_done_total"),
        "{worker_metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_and_tampered_layers_fail_their_images_only() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let base = base_layers();
    let corrupt = Layer::garbage(
        Compression::Gzip,
        b"\x1f\x8b\x08\x00 this is not deflate".to_vec(),
    );
    let tampered = Layer::builder()
        .file("srv/tampered", "x".repeat(10_000))
        .build(Compression::Gzip)
        .unwrap()
        .with_mismatched_digest();
    image_on(&base)
        .layer(corrupt.clone())
        .build()
        .unwrap()
        .push(&registry, "t/corrupt", "1")
        .await
        .unwrap();
    image_on(&base)
        .layer(tampered.clone())
        .build()
        .unwrap()
        .push(&registry, "t/tampered", "1")
        .await
        .unwrap();
    let (good, _) = fleet_image(&base, 1, 1);
    good.push(&registry, "t/good", "1").await.unwrap();
    let cluster = start_cluster(&registry.host(), &db, 2, &["--max-deliver", "3"]);

    let corrupt_id = submit(&cluster, &format!("{}/t/corrupt:1", registry.host())).await;
    let tampered_id = submit(&cluster, &format!("{}/t/tampered:1", registry.host())).await;
    let good_id = submit(&cluster, &format!("{}/t/good:1", registry.host())).await;

    let good_done = wait_done(&cluster, &good_id).await;
    assert_eq!(good_done.layers_failed, 0, "{good_done:?}");
    assert!(report(&cluster, &good_id).await.layer_errors.is_empty());
    for (id, layer) in [(&corrupt_id, &corrupt), (&tampered_id, &tampered)] {
        let done = wait_done(&cluster, id).await;
        assert_eq!(done.layers_failed, 1, "{done:?}");
        assert!(
            done.error.contains(&layer.digest),
            "the error names the layer: {}",
            done.error
        );
        let r = report(&cluster, id).await;
        assert_eq!(r.layer_errors.len(), 1);
        assert_eq!(r.layer_errors[0].digest, layer.digest);
        // The base layers' packages are still reported.
        assert!(r.packages.iter().any(|p| p.name == "zlib1g"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_layer_has_its_job_redelivered() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    // A layer that takes a few seconds to stream.
    let big = push_slow_image(&registry, "slow/app", 400_000).await;
    let proxy = RegistryProxy::builder(&registry)
        .blob_rate(150_000)
        .start()
        .unwrap();
    let mut cluster = start_cluster(&proxy.host(), &db, 1, &["--ack-wait-secs", "3"]);
    let id = submit(&cluster, &format!("{}/slow/app:1", proxy.host())).await;

    wait_fetch_started(&proxy, &big.digest).await;
    // Mid-layer: the blob is still streaming (it takes seconds at this rate).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.blob_gets(&big.digest), 1);
    cluster.kill_worker(0);
    proxy.set_blob_rate(None);
    let second = cluster.start_worker().unwrap();

    let done = wait_done(&cluster, &id).await;
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
    assert_eq!(done.layers_failed, 0, "{}", done.error);
    assert!(
        proxy.blob_gets(&big.digest) >= 2,
        "the layer was fetched again after the kill"
    );
    let r = report(&cluster, &id).await;
    let zlib: Vec<_> = r.packages.iter().filter(|p| p.name == "zlib1g").collect();
    assert_eq!(zlib.len(), 1, "nothing duplicated: {:?}", r.packages);
    assert!(
        cluster.worker_log(second).contains("layer analysed"),
        "the second worker ran the job:\n{}",
        cluster.worker_log(second)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_coordinator_and_nats_restarted_mid_run_lose_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(300))
        .start()
        .unwrap();
    let base = base_layers();
    let mut refs = Vec::new();
    for i in 0..12 {
        let (image, _) = fleet_image(&base, i, 1);
        image
            .push(&registry, "restart/app", &format!("v{i}"))
            .await
            .unwrap();
        refs.push(format!("{}/restart/app:v{i}", proxy.host()));
    }
    let mut cluster = start_cluster(&proxy.host(), &db, 2, &[]);
    let mut ids = Vec::new();
    for r in &refs[..6] {
        ids.push(submit(&cluster, r).await);
    }
    // Mid-run: jobs queued and in flight. Proved, not assumed: a blob
    // fetch has started (workers hold jobs), and no scan has finished.
    let digests: Vec<String> = base.iter().map(|l| l.digest.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while digests.iter().all(|d| proxy.blob_requests(d) == 0) {
        assert!(Instant::now() < deadline, "no fetch started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut scans = client(&cluster).await;
    // A scan's report exists only once it is done.
    let mut running = 0;
    for id in &ids {
        let report = scans
            .get_report(v1::GetReportRequest {
                selector: Some(Selector::ScanId(id.clone())),
            })
            .await;
        if report.is_err() {
            running += 1;
        }
    }
    assert!(
        running > 0,
        "every scan finished before the kill: nothing was in flight"
    );
    cluster.kill_coordinator();
    cluster.restart_coordinator().unwrap();
    for r in &refs[6..] {
        ids.push(submit(&cluster, r).await);
    }
    cluster.nats_mut().restart().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let done = wait_done(&cluster, id).await;
        assert_eq!(
            done.status,
            v1::ScanStatus::Complete as i32,
            "image {i}: {done:?}"
        );
        assert_eq!(done.layers_failed, 0, "image {i}: {}", done.error);
        let r = report(&cluster, id).await;
        assert!(
            r.packages.iter().any(|p| p.name == format!("app{i}")),
            "image {i}"
        );
    }
}

/// Images of two unique layers each, pushed as `limit/app:v<i>`; returns
/// their references through `host` and every unique layer digest.
async fn small_fleet(registry: &Registry, host: &str, images: usize) -> (Vec<String>, Vec<String>) {
    let mut refs = Vec::new();
    let mut digests = Vec::new();
    for i in 0..images {
        let a = Layer::builder()
            .file("etc/os-release", fixtures::debian_os_release("12"))
            .file("var/lib/dpkg/status", STATUS)
            .file(&format!("srv/{i}/a"), format!("image {i} a"))
            .build(Compression::Gzip)
            .unwrap();
        let b = Layer::builder()
            .file(&format!("srv/{i}/b"), format!("image {i} b"))
            .build(Compression::Gzip)
            .unwrap();
        digests.extend([a.digest.clone(), b.digest.clone()]);
        Image::builder()
            .layer(a)
            .layer(b)
            .build()
            .unwrap()
            .push(registry, "limit/app", &format!("v{i}"))
            .await
            .unwrap();
        refs.push(format!("{host}/limit/app:v{i}"));
    }
    (refs, digests)
}

/// A registry answering 429 with Retry-After is waited out, by the
/// coordinator resolving and by the workers fetching; and the per-registry
/// limit holds however many job slots the workers have.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_429_is_waited_out_and_the_per_registry_limit_holds() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(150))
        .start()
        .unwrap();
    let (refs, digests) = small_fleet(&registry, &proxy.host(), 6).await;
    // No workers yet: every image is resolved (one at a time) before any layer is fetched.
    let mut cluster = Cluster::builder(STRATA)
        .workers(0)
        .db(&db)
        .insecure_registry(proxy.host())
        .worker_args(["--concurrency", "4", "--registry-concurrency", "1"])
        .start()
        .unwrap();

    // The coordinator's first config fetch is refused once: the submit still succeeds.
    proxy.set_throttle(1, Duration::from_secs(1));
    let mut ids = Vec::new();
    for r in &refs {
        ids.push(submit(&cluster, r).await);
    }
    assert_eq!(proxy.throttled(), 1, "the coordinator met the 429");

    // Then the workers meet three.
    proxy.set_throttle(3, Duration::from_secs(1));
    cluster.start_worker().unwrap();
    cluster.start_worker().unwrap();
    let dones = futures::future::join_all(ids.iter().map(|id| wait_done(&cluster, id))).await;
    for (i, done) in dones.iter().enumerate() {
        assert_eq!(
            done.status,
            v1::ScanStatus::Complete as i32,
            "image {i}: {done:?}"
        );
        assert_eq!(done.layers_failed, 0, "image {i}: {}", done.error);
    }
    assert_eq!(proxy.throttled(), 4);
    for d in &digests {
        assert_eq!(proxy.blob_gets(d), 1, "layer {d} fetched once after its 429s");
    }
    // Two workers × one fetch per registry, though each has four job slots.
    assert!(
        proxy.concurrent_blob_gets_max() <= 2,
        "at most 2 blob GETs at once, saw {}",
        proxy.concurrent_blob_gets_max()
    );
    let logs = format!("{}{}", cluster.worker_log(0), cluster.worker_log(1));
    assert!(logs.contains("registry rate limited"), "{logs}");
    let throttled: u64 = (0..2)
        .map(|w| {
            let m = cluster.metrics(&cluster.worker_metrics_url(w)).unwrap();
            m.lines()
                .filter(|l| l.starts_with("strata_registry_throttled"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(throttled, 3, "the workers counted their 429s");
}

/// SIGTERM: the worker stops taking jobs, hands back the one it holds (a
/// layer still streaming when the grace period ends) and exits cleanly;
/// another worker finishes the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_given_sigterm_hands_back_its_job_and_exits_cleanly() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let big = push_slow_image(&registry, "slow/term", 600_000).await;
    let proxy = RegistryProxy::builder(&registry)
        .blob_rate(100_000)
        .start()
        .unwrap();
    let mut cluster = Cluster::builder(STRATA)
        .workers(1)
        .db(&db)
        .insecure_registry(proxy.host())
        .worker_args(["--shutdown-grace-secs", "1"])
        .start()
        .unwrap();
    let id = submit(&cluster, &format!("{}/slow/term:1", proxy.host())).await;
    wait_fetch_started(&proxy, &big.digest).await;
    let asked = Instant::now();
    let status = cluster.terminate_worker(0).unwrap();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        cluster.worker_log(0)
    );
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "exited within the grace period and a little"
    );
    let log0 = cluster.worker_log(0);
    assert!(log0.contains("shutting down"), "{log0}");
    assert!(
        !log0.contains("layer analysed"),
        "the layer was mid-stream: {log0}"
    );

    proxy.set_blob_rate(None);
    let second = cluster.start_worker().unwrap();
    let done = wait_done(&cluster, &id).await;
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
    assert_eq!(done.layers_failed, 0, "{}", done.error);
    assert!(cluster.worker_log(second).contains("layer analysed"));
    let r = report(&cluster, &id).await;
    assert_eq!(r.packages.iter().filter(|p| p.name == "zlib1g").count(), 1);
}

/// The cluster on S3-compatible storage (moto): inventories, blobs of local
/// images and reports all go through `s3://`, and scans complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_runs_on_s3_compatible_storage() {
    use object_store::ObjectStore as _;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let s3 = strata_harness::s3::S3Server::start().unwrap();
    s3.create_bucket("strata").unwrap();
    let base = base_layers();
    let (image, _) = fleet_image(&base, 1, 1);
    image.push(&registry, "s3/app", "1").await.unwrap();
    // A local image: the coordinator copies its blobs into the store for the workers.
    let (local, _) = fleet_image(&base, 2, 1);
    let layout = dir.path().join("layout");
    local.write_oci_layout(&layout, "2").unwrap();

    let cluster = Cluster::builder(STRATA)
        .workers(2)
        .db(&db)
        .insecure_registry(registry.host())
        .coordinator_args(["--allow-local-images"])
        .store_url("s3://strata/cluster")
        .env("AWS_ENDPOINT_URL", s3.url())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .start()
        .unwrap();
    let remote = submit(&cluster, &format!("{}/s3/app:1", registry.host())).await;
    let local_id = submit(&cluster, &format!("oci-dir:{}:2", layout.display())).await;
    for id in [&remote, &local_id] {
        let done = wait_done(&cluster, id).await;
        assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
        assert_eq!(done.layers_failed, 0, "{}", done.error);
        let r = report(&cluster, id).await;
        assert!(r.packages.iter().any(|p| p.name == "zlib1g"), "{:?}", r.packages);
    }
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.url())
        .with_allow_http(true)
        .with_bucket_name("strata")
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let keys: Vec<String> = store
        .list(Some(&object_store::path::Path::from("cluster")))
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    for part in ["cluster/reports/", "cluster/blobs/", "cluster/inventories/"] {
        assert!(keys.iter().any(|k| k.starts_with(part)), "no {part}* in {keys:?}");
    }
}

/// W3C trace context crosses the processes: a submit carrying `traceparent`
/// (gRPC metadata) puts the same trace id on the layer jobs the coordinator
/// publishes and on the results the worker publishes back, so one trace
/// spans submit → dispatch → analysis → compose → match.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_context_travels_from_submit_through_jobs_and_results() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let (image, _) = fleet_image(&base_layers(), 3, 1);
    image.push(&registry, "trace/app", "1").await.unwrap();
    let cluster = start_cluster(&registry.host(), &db, 1, &[]);

    // Watch the subjects as a bystander (core NATS sees JetStream publishes).
    let nats = async_nats::connect(cluster.nats().url()).await.unwrap();
    let mut jobs = nats.subscribe("strata.jobs.>").await.unwrap();
    let mut results = nats.subscribe("strata.results").await.unwrap();
    nats.flush().await.unwrap();

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(v1::SubmitImageRequest {
        reference: format!("{}/trace/app:1", registry.host()),
        insecure_registry: true,
        wait: true,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let mut stream = client(&cluster)
        .await
        .submit_image(request)
        .await
        .unwrap()
        .into_inner();
    let mut done = None;
    while let Some(event) = tokio::time::timeout(SCAN_LIMIT, stream.next()).await.unwrap() {
        if let Some(Event::Done(d)) = event.unwrap().event {
            done = Some(d);
            break;
        }
    }
    let done = done.expect("a done event");
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");

    let trace_of = |m: &async_nats::Message| -> String {
        let tp = m
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        tp.split('-').nth(1).unwrap_or_default().to_owned()
    };
    // Every layer was new: one job and one result each, all in the submit's trace.
    for (what, sub) in [("job", &mut jobs), ("result", &mut results)] {
        for n in 0..done.layers_total {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap_or_else(|_| panic!("{what} {n} of {} not seen", done.layers_total))
                .unwrap();
            assert_eq!(trace_of(&m), TRACE, "{what} on {}", m.subject);
        }
    }
}

/// A layer whose every delivery fails (its registry always answers 429) is
/// marked failed after `--max-deliver` attempts with its last error; the
/// image that needs it reports that error, and an image elsewhere completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_failing_every_delivery_fails_its_image_only() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let (bad_image, bad_tops) = fleet_image(&base_layers()[..1], 11, 1);
    bad_image.push(&registry, "flaky/app", "1").await.unwrap();
    let (good_image, _) = fleet_image(&base_layers()[1..], 12, 1);
    good_image.push(&registry, "steady/app", "1").await.unwrap();
    let flaky = RegistryProxy::builder(&registry).start().unwrap();
    let mut cluster = Cluster::builder(STRATA)
        .workers(0)
        .db(&db)
        .insecure_registry(flaky.host())
        .insecure_registry(registry.host())
        .coordinator_args(["--max-deliver", "2", "--ack-wait-secs", "5"])
        .start()
        .unwrap();
    let bad = submit(&cluster, &format!("{}/flaky/app:1", flaky.host())).await;
    let good = submit(&cluster, &format!("{}/steady/app:1", registry.host())).await;
    // From now on the flaky registry refuses every blob.
    flaky.set_throttle(u64::MAX, Duration::from_secs(1));
    cluster.start_worker().unwrap();

    let done = wait_done(&cluster, &bad).await;
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
    assert_eq!(done.layers_failed, 2, "both of its layers: {done:?}");
    let r = report(&cluster, &bad).await;
    assert_eq!(r.layer_errors.len(), 2, "{:?}", r.layer_errors);
    assert!(
        r.layer_errors.iter().any(|e| e.digest == bad_tops[0].digest),
        "{:?}",
        r.layer_errors
    );
    for e in &r.layer_errors {
        assert!(
            e.error.contains("rate limited") || e.error.contains("429"),
            "{}",
            e.error
        );
    }
    let ok = wait_done(&cluster, &good).await;
    assert_eq!(ok.status, v1::ScanStatus::Complete as i32, "{ok:?}");
    assert_eq!(ok.layers_failed, 0, "{}", ok.error);
    // Two deliveries, each retrying its 429s a few times: bounded, not endless.
    assert!(flaky.throttled() >= 2, "{}", flaky.throttled());
}

/// With NATS gone, a drain can wait forever (reconnecting, flushing):
/// SIGTERM ends each role within its `--shutdown-timeout-secs`, with a
/// log line saying so and status 2 (issue 16: both were still running
/// 30 s after SIGTERM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nats_down_exits_within_the_shutdown_deadline() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let mut cluster = Cluster::builder(STRATA)
        .workers(1)
        .db(&db)
        .coordinator_args(["--shutdown-timeout-secs", "3"])
        .worker_args(["--shutdown-timeout-secs", "3", "--shutdown-grace-secs", "1"])
        .start()
        .unwrap();
    cluster.nats_mut().stop();
    // Both notice the server gone before the signal.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let asked = Instant::now();
    let coordinator = cluster.terminate_coordinator().unwrap();
    let coordinator_took = asked.elapsed();
    let asked = Instant::now();
    let worker = cluster.terminate_worker(0).unwrap();
    let worker_took = asked.elapsed();

    for (role, status, took, log) in [
        (
            "coordinator",
            coordinator,
            coordinator_took,
            cluster.coordinator_log(),
        ),
        ("worker", worker, worker_took, cluster.worker_log(0)),
    ] {
        assert!(took < Duration::from_secs(15), "{role} took {took:?}\n{log}");
        assert_eq!(status.code(), Some(2), "{role}: {status:?}\n{log}");
        assert!(
            log.contains("shutdown did not finish within the deadline"),
            "{role}\n{log}"
        );
    }
}
