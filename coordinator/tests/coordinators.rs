//! Several coordinators on one NATS (issue 17): real `strata coordinator`
//! and `strata worker` processes, a real nats-server and docker-registry.
//! Any coordinator answers any call; a coordinator killed with `-9`, or
//! cut off from NATS, costs a delay, not a scan; singleton work moves with
//! its lease.
//!
//! The tests in this file run one at a time (each starts a whole cluster).

#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use strata_coordinator::cluster::events::EventKey;
use strata_harness::fixtures::{
    self, DEBIAN_ZLIB_STATUS as STATUS, build_db, debian_layer, image_on, serial,
};
use strata_harness::image::{Compression, Layer};
use strata_harness::{Cluster, Registry, RegistryProxy};
use strata_proto::v1::{
    self, admin_service_client::AdminServiceClient, scan_event::Event, scan_service_client::ScanServiceClient,
};
use tonic::transport::Channel;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const SCAN_LIMIT: Duration = Duration::from_secs(240);
/// The lease time the tests run with (the default is 10 s).
const TTL_SECS: u64 = 3;

fn base_layers() -> Vec<Layer> {
    vec![
        debian_layer("12", STATUS),
        Layer::builder()
            .file("usr/share/doc/base2", "second base layer")
            .build(Compression::Gzip)
            .unwrap(),
    ]
}

/// Image `i` on the shared base with one layer of its own (a package
/// named after it), tagged `v<i>` in `fleet/app`; returns its own layer.
async fn push_image(registry: &Registry, base: &[Layer], repo: &str, tag: &str, i: usize) -> Layer {
    let status = format!(
        "{STATUS}Package: app{i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.{i}\n\n"
    );
    let layer = Layer::builder()
        .file("var/lib/dpkg/status", status)
        .file(&format!("srv/app{i}"), format!("image {i}"))
        .build(Compression::Gzip)
        .unwrap();
    image_on(base)
        .layer(layer.clone())
        .build()
        .unwrap()
        .push(registry, repo, tag)
        .await
        .unwrap();
    layer
}

fn builder(
    registry_host: &str,
    db: &Path,
    coordinators: usize,
    workers: usize,
) -> strata_harness::cluster::ClusterBuilder {
    Cluster::builder(STRATA)
        .coordinators(coordinators)
        .workers(workers)
        .db(db)
        .insecure_registry(registry_host)
        .coordinator_args(["--lease-ttl-secs", &TTL_SECS.to_string()])
        .worker_args(["--concurrency", "2"])
}

async fn channel(url: &str) -> Channel {
    fixtures::connect_retrying(url, Duration::from_secs(30), Duration::from_millis(200))
        .await
        .unwrap_or_else(|e| panic!("cannot reach {url}: {e}"))
}

async fn status(url: &str) -> v1::GetStatusResponse {
    AdminServiceClient::new(channel(url).await)
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Lease → holder, as coordinator `url` reports them.
async fn holders(url: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in status(url).await.coordinators {
        for lease in c.leases {
            assert!(
                out.insert(lease.clone(), c.id.clone()).is_none(),
                "lease {lease} has two holders"
            );
        }
    }
    out
}

const ALL_LEASES: [&str; 5] = ["refresh", "feeds", "gc", "history", "webhooks"];

/// Submits (no wait) on `url`; returns the scan id.
async fn submit(url: &str, reference: &str) -> String {
    let mut c = ScanServiceClient::new(channel(url).await);
    let mut stream = c
        .submit_image(v1::SubmitImageRequest {
            reference: reference.to_owned(),
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("submit {reference} on {url}: {s}"))
        .into_inner();
    let first = stream.next().await.expect("an event").expect("event");
    first.scan_id
}

/// Follows a scan to `Done` as a resuming client does: watches on the
/// first address that answers, and when the stream breaks watches again
/// on the next, dropping events already seen (same kind, layer, state).
/// Returns `Done`, the events kept in order, and how many times it resumed.
async fn follow(urls: &[String], scan_id: &str) -> (v1::Done, Vec<v1::ScanEvent>, usize) {
    let deadline = Instant::now() + SCAN_LIMIT;
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    let mut resumed = 0;
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "scan {scan_id} not done in time");
        let url = &urls[attempt % urls.len()];
        let Ok(Ok(channel)) = tokio::time::timeout(
            Duration::from_secs(2),
            tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect(),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if attempt > 0 {
            resumed += 1;
        }
        let Ok(resp) = ScanServiceClient::new(channel)
            .watch_scan(v1::WatchScanRequest {
                scan_id: scan_id.to_owned(),
            })
            .await
        else {
            continue;
        };
        let mut stream = resp.into_inner();
        // A break, an error or 20 s of quiet: watch again on the next.
        while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            if seen.insert(EventKey::of(&event)) {
                kept.push(event.clone());
            }
            if let Some(Event::Done(done)) = event.event {
                return (done, kept, resumed);
            }
        }
    }
    unreachable!()
}

/// Every layer reached a final state, and the scan was matched and done:
/// nothing a resuming client needs was lost.
fn assert_whole(events: &[v1::ScanEvent], done: &v1::Done) {
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
    let finished: HashSet<u32> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::Layer(l)) if l.state != v1::LayerState::Queued as i32 => Some(l.index),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len() as u32, done.layers_total, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::Matched(_))))
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::Done(_))))
            .count(),
        1
    );
}

/// `strata submit --wait` as CI runs it, against several addresses.
fn submit_cli(servers: &str, reference: &str) -> Child {
    fixtures::strata_command(STRATA)
        .args([
            "submit",
            "--wait",
            "--insecure-registry",
            "--progress",
            "lines",
            "--format",
            "json",
            "--server",
            servers,
            reference,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_started_at_once_share_one_nats_cleanly() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let base = base_layers();
    for i in 0..4 {
        push_image(&registry, &base, "fleet/app", &format!("v{i}"), i).await;
    }
    let cluster = builder(&registry.host(), &db, 2, 1)
        .start_coordinators_together(true)
        .coordinator_args(["--refresh-interval-secs", "1"])
        .start()
        .unwrap();
    let urls = [cluster.grpc_url_of(0), cluster.grpc_url_of(1)];

    // Both see both, and every lease has exactly one holder.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = holders(&urls[0]).await;
        let b = holders(&urls[1]).await;
        let both =
            status(&urls[0]).await.coordinators.len() == 2 && status(&urls[1]).await.coordinators.len() == 2;
        // Started together, they may split the leases: each has one holder.
        if both && a.len() == ALL_LEASES.len() && a == b {
            break;
        }
        assert!(Instant::now() < deadline, "leases {a:?} / {b:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Streams, consumers and buckets were made once: neither coordinator
    // had to retry setting them up, nor logged an error.
    for i in 0..2 {
        let log = cluster.coordinator_log_of(i);
        for bad in ["yet; retrying", "ERROR", "changed concurrently"] {
            assert_eq!(count(&log, bad), 0, "coordinator {i} logged {bad:?}:\n{log}");
        }
    }

    // Any coordinator answers: submitted on one, followed and read on the other.
    let reference = format!("{}/fleet/app:v0", registry.host());
    let id = submit(&urls[1], &reference).await;
    let (done, events, _) = follow(&urls[..1], &id).await;
    assert_whole(&events, &done);
    let again = submit(&urls[0], &reference).await;
    assert_eq!(again, id, "the same scan, whichever coordinator is asked");
    for url in &urls {
        let report = ScanServiceClient::new(channel(url).await)
            .get_report(v1::GetReportRequest {
                selector: Some(v1::get_report_request::Selector::ScanId(id.clone())),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(report.packages.iter().any(|p| p.name == "app0"));
    }

    // Registered on one: the other's fleet index knows it (change stream).
    let mut fleet = v1::fleet_service_client::FleetServiceClient::new(channel(&urls[0]).await);
    fleet
        .register_images(v1::RegisterImagesRequest {
            references: (1..4)
                .map(|i| format!("{}/fleet/app:v{i}", registry.host()))
                .collect(),
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut other = v1::fleet_service_client::FleetServiceClient::new(channel(&urls[1]).await);
    let deadline = Instant::now() + SCAN_LIMIT;
    loop {
        let images = other
            .list_images(v1::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
        let scanned = images
            .iter()
            .filter(|i| i.status == v1::ScanStatus::Complete as i32)
            .count();
        // The three registered, and the one submitted above (a submitted
        // reference is in the fleet too).
        if images.len() == 4 && scanned == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{images:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The refresh loop runs on the lease holder only.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let holder = holders(&urls[0]).await["refresh"].clone();
    for i in 0..2 {
        let log = cluster.coordinator_log_of(i);
        let refreshed = count(&log, "watched fleet refreshed");
        if format!("coordinator-{i}") == holder {
            assert!(refreshed >= 2, "the holder refreshes:\n{log}");
        } else {
            assert_eq!(refreshed, 0, "only the holder refreshes:\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_busiest_coordinator_mid_run_loses_no_scan_and_no_event() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    // Slow blobs: the run lasts long enough for the kill to land mid-way.
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(800))
        .start()
        .unwrap();
    let base = base_layers();
    let mut unique: Vec<String> = base.iter().map(|l| l.digest.clone()).collect();
    for i in 0..50 {
        unique.push(
            push_image(&registry, &base, "fleet/app", &format!("v{i}"), i)
                .await
                .digest,
        );
    }
    let mut cluster = builder(&proxy.host(), &db, 2, 3).start().unwrap();
    let urls = [cluster.grpc_url_of(0), cluster.grpc_url_of(1)];
    let both = format!("{},{}", urls[0], urls[1]);
    let both_reversed = format!("{},{}", urls[1], urls[0]);
    // Wait until both know each other (the scans are split between them).
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&urls[0]).await.coordinators.len() < 2 || status(&urls[1]).await.coordinators.len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 50 CI clients, half started against each coordinator.
    let mut clients: Vec<(usize, Child)> = (0..50)
        .map(|i| {
            let servers = if i % 2 == 0 { &both } else { &both_reversed };
            (
                i,
                submit_cli(servers, &format!("{}/fleet/app:v{i}", proxy.host())),
            )
        })
        .collect();
    // And a watcher of our own on a few scans, to see events across the kill.
    let watched: Vec<String> = futures::future::join_all((0..6).map(|i| {
        let (url, reference) = (
            urls[1 - i % 2].clone(),
            format!("{}/fleet/app:v{i}", proxy.host()),
        );
        async move { submit(&url, &reference).await }
    }))
    .await;
    let watchers: Vec<_> = watched
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let order = if i % 2 == 0 {
                urls.to_vec()
            } else {
                vec![urls[1].clone(), urls[0].clone()]
            };
            let id = id.clone();
            tokio::spawn(async move { follow(&order, &id).await })
        })
        .collect();

    // Mid-run: some layers fetched, not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.blob_gets_total() < 30 {
        assert!(Instant::now() < deadline, "nothing fetched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The busiest: the one that has logged more submits (ties: the lease holder).
    let submits: Vec<usize> = (0..2)
        .map(|i| count(&cluster.coordinator_log_of(i), "image submitted"))
        .collect();
    let busiest = if submits[0] == submits[1] {
        let h = holders(&urls[0]).await;
        usize::from(h["refresh"] == "coordinator-1")
    } else {
        usize::from(submits[1] > submits[0])
    };
    let survivor = 1 - busiest;
    let waiting = clients
        .iter_mut()
        .map(|(_, c)| c.try_wait())
        .filter(|w| matches!(w, Ok(None)))
        .count();
    let fetched = proxy.blob_gets_total();
    let killed_at = Instant::now();
    cluster.kill_coordinator_at(busiest);
    eprintln!("killed coordinator {busiest} with {waiting} of 50 clients waiting, {fetched} blobs fetched");
    assert!(
        waiting >= 25,
        "the kill came mid-run: {waiting} clients still waiting"
    );

    // The survivor takes the leases within the lease time (and a round).
    let deadline = killed_at + Duration::from_secs(TTL_SECS * 3);
    loop {
        let h = holders(&urls[survivor]).await;
        if h.len() == ALL_LEASES.len() && h.values().all(|v| *v == format!("coordinator-{survivor}")) {
            break;
        }
        assert!(Instant::now() < deadline, "leases did not move: {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every client prints its report and exits 0.
    let mut resumed = 0;
    for (i, child) in clients.drain(..) {
        let out = wait_child(child, SCAN_LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "client {i} failed: {stderr}\n--- survivor ---\n{}",
            cluster.coordinator_log_of(survivor)
        );
        assert!(stdout.contains(&format!("\"app{i}\"")), "client {i}: {stdout}");
        // Progress lines are told once each, across the resume.
        let layer_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("layer ")).collect();
        let distinct: HashSet<&&str> = layer_lines.iter().collect();
        assert_eq!(
            layer_lines.len(),
            distinct.len(),
            "client {i} repeated a line:\n{stderr}"
        );
        resumed += usize::from(stderr.contains("resuming on"));
    }
    // Those whose server was killed went on with the other.
    assert!(resumed >= 10, "{resumed} clients resumed elsewhere");
    eprintln!("{resumed} of 50 clients resumed on the other coordinator");
    for w in watchers {
        let (done, events, _) = w.await.unwrap();
        assert_whole(&events, &done);
    }
    // No layer was fetched twice (no worker died: nothing was redelivered).
    for digest in &unique {
        assert_eq!(
            proxy.blob_gets(digest),
            1,
            "layer {digest} fetched more than once\n{}",
            cluster.coordinator_log_of(survivor)
        );
    }
    // The survivor took over the scans the killed one looked after.
    let log = cluster.coordinator_log_of(survivor);
    assert!(log.contains("taking over running scans"), "{log}");
    eprintln!(
        "leases moved, every client done {:.1}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
}

fn wait_child(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("client did not finish: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_cut_off_from_nats_gives_up_its_leases_and_the_other_takes_them() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let base = base_layers();
    push_image(&registry, &base, "fleet/app", "v0", 0).await;
    // Coordinator 0 reaches NATS through a proxy, and starts first: it takes the leases.
    let cluster = builder(&registry.host(), &db, 2, 1)
        .coordinator_nats_via_proxy(0)
        .start()
        .unwrap();
    let urls = [cluster.grpc_url_of(0), cluster.grpc_url_of(1)];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = holders(&urls[1]).await;
        if h.len() == ALL_LEASES.len() && status(&urls[1]).await.coordinators.len() == 2 {
            assert!(h.values().all(|v| v == "coordinator-0"), "{h:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let cut_at = Instant::now();
    cluster.nats_proxy_of(0).unwrap().cut();
    // The other takes every lease within the lease time (plus a renewal round).
    let deadline = cut_at + Duration::from_secs(TTL_SECS * 2 + 2);
    let took = loop {
        let h = holders(&urls[1]).await;
        if h.len() == ALL_LEASES.len() && h.values().all(|v| v == "coordinator-1") {
            break cut_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "leases did not move: {h:?}\n{}",
            cluster.coordinator_log_of(1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("leases moved {:.1}s after the cut", took.as_secs_f64());
    // The cut-off one says it gave them up.
    let deadline = Instant::now() + Duration::from_secs(TTL_SECS * 2);
    while !cluster.coordinator_log_of(0).contains("giving up my leases") {
        assert!(Instant::now() < deadline, "{}", cluster.coordinator_log_of(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Scans still run, through the one connected.
    let id = submit(&urls[1], &format!("{}/fleet/app:v0", registry.host())).await;
    let (done, events, _) = follow(&urls[1..], &id).await;
    assert_whole(&events, &done);

    // Back: it rejoins without taking any lease back.
    cluster.nats_proxy_of(0).unwrap().restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&urls[1]).await.coordinators.len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(TTL_SECS)).await;
    let h = holders(&urls[1]).await;
    assert!(h.values().all(|v| v == "coordinator-1"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_during_a_fleet_rescan_loses_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(700))
        .start()
        .unwrap();
    let base = base_layers();
    let images = 16;
    for i in 0..images {
        push_image(&registry, &base, "fleet/app", &format!("v{i}"), i).await;
    }
    let mut cluster = builder(&proxy.host(), &db, 2, 2)
        .coordinator_args(["--refresh-interval-secs", "2"])
        .start()
        .unwrap();
    let urls = [cluster.grpc_url_of(0), cluster.grpc_url_of(1)];
    let references: Vec<String> = (0..images)
        .map(|i| format!("{}/fleet/app:v{i}", proxy.host()))
        .collect();
    let mut fleet = v1::fleet_service_client::FleetServiceClient::new(channel(&urls[0]).await);
    fleet
        .register_images(v1::RegisterImagesRequest {
            references: references.clone(),
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_fleet_current(&urls[1], images, None).await;

    // Every tag moves to a new image (one new layer each): the refresh
    // loop rescans the fleet. Both coordinators restart, one after the other.
    let mut moved = Vec::new();
    for i in 0..images {
        moved.push(
            push_image(&registry, &base, "fleet/app", &format!("v{i}"), 100 + i)
                .await
                .digest,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while moved.iter().all(|d| proxy.blob_gets(d) == 0) {
        assert!(Instant::now() < deadline, "the rescan did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A CI client waiting across both restarts.
    let client = submit_cli(&format!("{},{}", urls[0], urls[1]), &references[3]);
    let before = moved.iter().filter(|d| proxy.blob_gets(d) > 0).count();
    eprintln!("restarting with {before} of {images} moved layers fetched");
    assert!(before < images, "the rescan was over before the restarts");
    for i in 0..2 {
        let code = cluster.terminate_coordinator_at(i).unwrap();
        assert!(code.success(), "coordinator {i} stops cleanly");
        cluster.restart_coordinator_at(i).unwrap();
    }
    let after = moved.iter().filter(|d| proxy.blob_gets(d) > 0).count();
    eprintln!("restarted both with {after} of {images} moved layers fetched");
    wait_fleet_current(&urls[0], images, Some(100)).await;
    wait_fleet_current(&urls[1], images, Some(100)).await;
    let out = wait_child(client, SCAN_LIMIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for digest in &moved {
        assert_eq!(
            proxy.blob_gets(digest),
            1,
            "layer {digest} fetched more than once"
        );
    }
}

/// Waits until coordinator `url` lists `n` images, each complete; with
/// `moved_from`, each naming package `app<moved_from + i>` (the moved tags).
async fn wait_fleet_current(url: &str, n: usize, moved_from: Option<usize>) {
    let mut fleet = v1::fleet_service_client::FleetServiceClient::new(channel(url).await);
    let deadline = Instant::now() + SCAN_LIMIT;
    loop {
        let images = match fleet.list_images(v1::ListImagesRequest::default()).await {
            Ok(r) => r.into_inner().images,
            Err(_) => Vec::new(),
        };
        let mut current = images
            .iter()
            .filter(|i| i.status == v1::ScanStatus::Complete as i32)
            .count()
            == n;
        if current && let Some(from) = moved_from {
            for i in 0..n {
                let found = fleet
                    .list_affected(v1::ListAffectedRequest {
                        query: Some(v1::list_affected_request::Query::Package(v1::PackageQuery {
                            name: format!("app{}", from + i),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .await
                    .map(|r| !r.into_inner().images.is_empty())
                    .unwrap_or(false);
                current &= found;
            }
        }
        if current {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fleet on {url} not current: {images:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_coordinator_polls_the_feeds_and_the_other_takes_in_what_it_stored() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    // A feed: a directory of OSV records (the test data), over file://.
    let feed = dir.path().join("feed");
    std::fs::create_dir(&feed).unwrap();
    for entry in std::fs::read_dir(fixtures::OSV_TESTDATA).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, feed.join(path.file_name().unwrap())).unwrap();
    }
    let registry = Registry::start().unwrap();
    let base = base_layers();
    push_image(&registry, &base, "fleet/app", "v0", 0).await;
    let feed_url = format!("file://{}", feed.display());
    let cluster = builder(&registry.host(), &db, 2, 1)
        .coordinator_args(["--feed", feed_url.as_str(), "--feed-interval-secs", "1"])
        .start()
        .unwrap();
    let urls = [cluster.grpc_url_of(0), cluster.grpc_url_of(1)];
    let reference = format!("{}/fleet/app:v0", registry.host());
    v1::fleet_service_client::FleetServiceClient::new(channel(&urls[0]).await)
        .register_images(v1::RegisterImagesRequest {
            references: vec![reference.clone()],
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_fleet_current(&urls[1], 1, None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        if let Some(h) = holders(&urls[0]).await.get("feeds") {
            break h.clone();
        }
        assert!(Instant::now() < deadline, "nobody holds the feeds lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let holder_i = usize::from(holder == "coordinator-1");

    // A new advisory for the image's own package appears in the feed.
    let advisory = serde_json::json!({
        "id": "STRATA-HA-1",
        "modified": "2026-12-07T00:00:00Z",
        "affected": [{
            "package": {"ecosystem": "Debian:12", "name": "app0"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}]
        }]
    });
    std::fs::write(
        feed.join("STRATA-HA-1.json"),
        serde_json::to_vec(&advisory).unwrap(),
    )
    .unwrap();
    // Both coordinators answer with it: the holder polled, the other loaded
    // what the holder stored and re-matched its own fleet index.
    let deadline = Instant::now() + Duration::from_secs(90);
    for url in &urls {
        let mut fleet = v1::fleet_service_client::FleetServiceClient::new(channel(url).await);
        loop {
            let affected = fleet
                .list_affected(v1::ListAffectedRequest {
                    query: Some(v1::list_affected_request::Query::VulnerabilityId(
                        "STRATA-HA-1".into(),
                    )),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().images)
                .unwrap_or_default();
            if affected.iter().any(|i| i.reference == reference) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url} never answered with the new advisory\n--- holder ---\n{}\n--- other ---\n{}",
                cluster.coordinator_log_of(holder_i),
                cluster.coordinator_log_of(1 - holder_i)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let follower_log = cluster.coordinator_log_of(1 - holder_i);
    assert!(
        follower_log.contains("polled by another coordinator"),
        "{follower_log}"
    );
    let holder_log = cluster.coordinator_log_of(holder_i);
    assert!(
        !holder_log.contains("polled by another coordinator"),
        "{holder_log}"
    );
    // The other reports the feed as the holder left it.
    let feeds = status(&urls[1 - holder_i]).await.feeds;
    assert_eq!(feeds.len(), 1, "{feeds:?}");
    assert!(feeds[0].last_success_unix_ms > 0, "{feeds:?}");
    assert!(feeds[0].records > 0, "{feeds:?}");
}
