//! `ScanService` as CI calls it, on a real cluster: `strata coordinator`
//! and `strata worker` processes, a real nats-server, a real
//! docker-registry behind the harness's proxy. Concurrent identical
//! submits, the event stream of a running and of a finished scan,
//! deadlines, and malformed requests.
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
    self, LayerState, admin_service_client::AdminServiceClient, get_report_request::Selector,
    scan_event::Event, scan_service_client::ScanServiceClient,
};
use tonic::transport::Channel;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
/// Bound on one scan (a whole cluster on a busy two-core machine).
const SCAN_LIMIT: Duration = Duration::from_secs(120);

/// A three-layer Debian image; `tag` makes its top layer unique.
fn image(tag: &str) -> (Image, Vec<Layer>) {
    let layers = vec![
        debian_layer("12", STATUS),
        Layer::builder()
            .file("usr/share/doc/middle", "the middle layer")
            .build(Compression::Zstd)
            .unwrap(),
        Layer::builder()
            .file(
                "var/lib/dpkg/status",
                format!(
                    "{STATUS}Package: app\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-{tag}\n\n"
                ),
            )
            .file("srv/app/tag", tag.to_owned())
            .build(Compression::Gzip)
            .unwrap(),
    ];
    (image_on(&layers).build().unwrap(), layers)
}

fn start_cluster(registry_host: &str, db: &Path) -> Cluster {
    Cluster::builder(STRATA)
        .workers(1)
        .db(db)
        .insecure_registry(registry_host)
        .worker_args(["--concurrency", "2"])
        .start()
        .unwrap()
}

/// A channel of its own, retried briefly while the coordinator starts.
async fn channel(cluster: &Cluster) -> Channel {
    fixtures::coordinator_channel(cluster, Duration::from_secs(30)).await
}

fn submit_request(reference: &str, wait: bool) -> v1::SubmitImageRequest {
    v1::SubmitImageRequest {
        reference: reference.to_owned(),
        insecure_registry: true,
        wait,
        ..Default::default()
    }
}

/// Every event of `stream` until it ends (bounded by [`SCAN_LIMIT`]).
async fn collect(cluster: &Cluster, mut stream: tonic::Streaming<v1::ScanEvent>) -> Vec<v1::ScanEvent> {
    let limit = tokio::time::Instant::now() + SCAN_LIMIT;
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout_at(limit, stream.next()).await {
            Ok(Some(Ok(event))) => events.push(event),
            Ok(Some(Err(status))) => panic!("stream failed: {status}\n{events:?}"),
            Ok(None) => return events,
            Err(_) => panic!(
                "stream not done within {SCAN_LIMIT:?}: {events:?}\n{}",
                cluster.coordinator_log()
            ),
        }
    }
}

/// What an event says, without timestamps: for comparing sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Submitted,
    Resolved(usize),
    Layer(u32, LayerState),
    Matched(u32),
    Done(i32),
}

fn steps(events: &[v1::ScanEvent]) -> Vec<Step> {
    events
        .iter()
        .map(|e| match e.event.as_ref().expect("an event") {
            Event::Submitted(_) => Step::Submitted,
            Event::Resolved(r) => Step::Resolved(r.layer_digests.len()),
            Event::Layer(l) => Step::Layer(l.index, l.state()),
            Event::Matched(m) => Step::Matched(m.packages),
            Event::Done(d) => Step::Done(d.status),
        })
        .collect()
}

/// Checks one scan's event sequence (from `Resolved` on): every layer's
/// first event is QUEUED or CACHED and its last ANALYSED/CACHED/FAILED, each
/// index covered, then Matched, then Done with counts that add up.
fn check_sequence(events: &[v1::ScanEvent], layers: &[Layer]) {
    let kinds = steps(events);
    let start = kinds
        .iter()
        .position(|s| matches!(s, Step::Resolved(_)))
        .unwrap_or_else(|| panic!("no Resolved: {kinds:?}"));
    assert!(
        kinds[..start].iter().all(|s| *s == Step::Submitted),
        "only Submitted comes before Resolved: {kinds:?}"
    );
    let Some(Event::Resolved(resolved)) = &events[start].event else {
        unreachable!()
    };
    let digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(
        resolved.layer_digests, digests,
        "Resolved lists the layers, base first"
    );
    let n = layers.len();
    let matched = kinds
        .iter()
        .position(|s| matches!(s, Step::Matched(_)))
        .unwrap_or_else(|| panic!("no Matched: {kinds:?}"));
    assert_eq!(matched, kinds.len() - 2, "Matched, then Done, end it: {kinds:?}");
    assert!(matches!(kinds.last(), Some(Step::Done(_))), "{kinds:?}");
    let mut per_layer: Vec<Vec<LayerState>> = vec![Vec::new(); n];
    for e in &events[start + 1..matched] {
        let Some(Event::Layer(l)) = &e.event else {
            panic!("only layer events between Resolved and Matched: {kinds:?}");
        };
        let i = l.index as usize;
        assert!(i < n, "layer index {i} of {n}: {kinds:?}");
        assert_eq!(l.digest, digests[i], "layer {i}'s digest");
        per_layer[i].push(l.state());
    }
    let (mut analysed, mut cached, mut failed) = (0, 0, 0);
    for (i, states) in per_layer.iter().enumerate() {
        let first = *states
            .first()
            .unwrap_or_else(|| panic!("no events for layer {i}: {kinds:?}"));
        let last = *states.last().unwrap();
        assert!(
            matches!(first, LayerState::Queued | LayerState::Cached),
            "layer {i} starts with {first:?}: {kinds:?}"
        );
        match last {
            LayerState::Analysed => analysed += 1,
            LayerState::Cached => cached += 1,
            LayerState::Failed => failed += 1,
            other => panic!("layer {i} ends with {other:?}: {kinds:?}"),
        }
        if let Some(pos) = states
            .iter()
            .position(|s| matches!(s, LayerState::Analysed | LayerState::Failed))
        {
            assert!(
                pos > 0 || first == LayerState::Cached,
                "layer {i}: QUEUED/CACHED before ANALYSED/FAILED: {states:?}"
            );
        }
    }
    let Some(Event::Done(done)) = &events.last().unwrap().event else {
        unreachable!()
    };
    assert_eq!(done.layers_total as usize, n, "{done:?}");
    assert_eq!(
        (done.layers_analysed, done.layers_cached, done.layers_failed),
        (analysed, cached, failed),
        "{done:?} against {kinds:?}"
    );
}

async fn layer_cache(cluster: &Cluster) -> v1::LayerCacheInfo {
    AdminServiceClient::new(channel(cluster).await)
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .layer_cache
        .expect("the coordinator reports its layer cache")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_submits_of_one_image_are_one_scan() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(200))
        .start()
        .unwrap();
    let (img, layers) = image("twenty");
    img.push(&registry, "same/app", "1").await.unwrap();
    let reference = format!("{}/same/app:1", proxy.host());
    let cluster = start_cluster(&proxy.host(), &db);

    let clients =
        futures::future::join_all((0..20).map(|_| async { ScanServiceClient::new(channel(&cluster).await) }))
            .await;
    let streams = futures::future::join_all(clients.iter().cloned().map(|mut c| {
        let reference = reference.clone();
        let cluster = &cluster;
        async move {
            let stream = c
                .submit_image(submit_request(&reference, true))
                .await
                .unwrap_or_else(|s| panic!("submit: {s}\n{}", cluster.coordinator_log()))
                .into_inner();
            collect(cluster, stream).await
        }
    }))
    .await;

    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for (i, events) in streams.iter().enumerate() {
        ids.extend(events.iter().map(|e| e.scan_id.clone()));
        let Some(Event::Submitted(submitted)) = &events[0].event else {
            panic!("client {i}: the stream starts with Submitted: {events:?}");
        };
        if !submitted.existing {
            created += 1;
        }
        let Some(Event::Done(done)) = &events.last().unwrap().event else {
            panic!("client {i}: the stream ends in Done: {:?}", steps(events));
        };
        assert_eq!(
            done.status,
            v1::ScanStatus::Complete as i32,
            "client {i}: {done:?}"
        );
        assert_eq!(done.layers_failed, 0, "client {i}: {}", done.error);
        check_sequence(events, &layers);
    }
    assert_eq!(ids.len(), 1, "one scan id across all 20 clients: {ids:?}");
    assert_eq!(created, 1, "exactly one submit created the scan");
    let id = ids.into_iter().next().unwrap();

    let reports = futures::future::join_all(clients.iter().cloned().map(|mut c| {
        let id = id.clone();
        async move {
            c.get_report(v1::GetReportRequest {
                selector: Some(Selector::ScanId(id)),
            })
            .await
            .unwrap()
            .into_inner()
        }
    }))
    .await;
    assert!(
        reports[0].packages.iter().any(|p| p.name == "app"),
        "{:?}",
        reports[0]
    );
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r, &reports[0], "client {i} got another report");
    }

    // Each layer was queued once and fetched once.
    let cache = layer_cache(&cluster).await;
    assert_eq!(cache.misses, layers.len() as u64, "{cache:?}");
    assert_eq!(cache.layers, layers.len() as u64, "{cache:?}");
    for l in &layers {
        assert_eq!(proxy.blob_gets(&l.digest), 1, "layer {} fetched once", l.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_scan_follows_a_running_scan_and_replays_a_finished_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    // Every blob takes a while: the scan is still running when watched.
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(1500))
        .start()
        .unwrap();
    let (img, layers) = image("watched");
    img.push(&registry, "watch/app", "1").await.unwrap();
    let reference = format!("{}/watch/app:1", proxy.host());
    let cluster = start_cluster(&proxy.host(), &db);
    let mut client = ScanServiceClient::new(channel(&cluster).await);

    let mut submitted = client
        .submit_image(submit_request(&reference, false))
        .await
        .unwrap()
        .into_inner();
    let first = submitted.next().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Submitted(_))), "{first:?}");
    assert!(submitted.next().await.is_none(), "without wait, only Submitted");
    let id = first.scan_id;

    // A deadline shorter than the scan ends the watch with DEADLINE_EXCEEDED.
    let mut short = tonic::Request::new(v1::WatchScanRequest { scan_id: id.clone() });
    short.set_timeout(Duration::from_millis(500));
    let mut stream = client.watch_scan(short).await.unwrap().into_inner();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(event))) => {
                assert!(
                    !matches!(event.event, Some(Event::Done(_))),
                    "the scan finished within the deadline: make the layers slower"
                );
            }
            Ok(Some(Err(status))) => break status,
            Ok(None) => panic!("the stream ended without a status"),
            Err(_) => panic!("the deadline was not honoured"),
        }
    };
    assert_eq!(ended.code(), tonic::Code::DeadlineExceeded, "{ended:?}");

    let watched_at = strata_proto::text::now_unix_ms();
    let live = client
        .watch_scan(v1::WatchScanRequest { scan_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let live = collect(&cluster, live).await;
    check_sequence(&live, &layers);
    assert!(
        live.last().unwrap().at_unix_ms >= watched_at,
        "the scan was still running when watched"
    );
    assert!(live.iter().all(|e| e.scan_id == id));
    let Some(Event::Done(done)) = &live.last().unwrap().event else {
        unreachable!()
    };
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
    assert_eq!(done.layers_analysed as usize, layers.len(), "{done:?}");
    let report = client
        .get_report(v1::GetReportRequest {
            selector: Some(Selector::ScanId(id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Step::Matched(packages)) = steps(&live).iter().rev().nth(1).cloned() else {
        panic!("{:?}", steps(&live));
    };
    assert_eq!(packages as usize, report.packages.len());

    // Watched again after the end: the same sequence, replayed.
    let replay = client
        .watch_scan(v1::WatchScanRequest { scan_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let replay = collect(&cluster, replay).await;
    check_sequence(&replay, &layers);
    assert_eq!(steps(&replay), steps(&live));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_are_refused_and_the_server_goes_on() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    // A registry that accepts connections and never answers (listed, so
    // the policy lets callers name it over plain HTTP).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cluster = Cluster::builder(STRATA)
        .workers(1)
        .db(&db)
        .insecure_registry(registry.host())
        .insecure_registry(silent.local_addr().unwrap().to_string())
        .worker_args(["--concurrency", "2"])
        .start()
        .unwrap();
    let mut client = ScanServiceClient::new(channel(&cluster).await);

    let huge = "a".repeat(1 << 20);
    for (what, reference) in [
        ("empty", ""),
        ("with spaces", "registry.example/app name:1"),
        ("1 MiB", huge.as_str()),
        ("a newline", "app:1\nrm"),
    ] {
        let status = client
            .submit_image(submit_request(reference, true))
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} reference accepted"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().len() < 1024,
            "{what}: the reference is not echoed whole"
        );
    }
    let status = client
        .submit_image(v1::SubmitImageRequest {
            reference: format!("{}/app:1", registry.host()),
            platform: "not a platform".into(),
            ..Default::default()
        })
        .await
        .expect_err("a bad platform");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let unknown = "0".repeat(64);
    let status = client
        .get_report(v1::GetReportRequest {
            selector: Some(Selector::ScanId(unknown.clone())),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = client
        .watch_scan(v1::WatchScanRequest {
            scan_id: unknown.clone(),
        })
        .await
        .expect_err("an unknown scan");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = client
        .get_report(v1::GetReportRequest { selector: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = client
        .watch_scan(v1::WatchScanRequest {
            scan_id: String::new(),
        })
        .await
        .expect_err("an empty scan id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // The silent registry: the client's deadline ends the submit with
    // DEADLINE_EXCEEDED, long before the coordinator's own resolve timeout.
    let mut request = tonic::Request::new(submit_request(
        &format!("{}/silent/app:1", silent.local_addr().unwrap()),
        true,
    ));
    request.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let status = client.submit_image(request).await.expect_err("a silent registry");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Still answering, on the same channel and on a new one.
    let status = client
        .get_report(v1::GetReportRequest {
            selector: Some(Selector::ScanId(unknown)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let cache = layer_cache(&cluster).await;
    assert_eq!(cache.misses, 0, "nothing was queued: {cache:?}");
}
