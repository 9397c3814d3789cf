//! The `strata` client across coordinators that go away: the real binary
//! against a [`Cluster`] (nats-server, `strata coordinator` and `strata
//! worker` processes) and a real docker-registry.
//! - `submit --wait --server DEAD,LIVE` skips the dead address;
//! - `fleet watch` across a coordinator SIGKILLed and restarted on the same
//!   port prints every event once, without a gap;
//! - `submit --wait` across a coordinator SIGKILLed mid-scan and restarted
//!   resumes (one `resuming on` line on stderr), prints each progress line
//!   once and the same report as an undisturbed run, and exits 0.
//!
//! (Several coordinators at once come with active/active coordinators.)

// The std Mutex serializes whole tests (each on its own runtime), as in cluster.rs.
#![allow(clippy::await_holding_lock)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_coordinator::notify::EventLog;
use strata_harness::fixtures::{self, DEBIAN_ZLIB_STATUS as STATUS, build_db, debian_layer, serial};
use strata_harness::image::{Compression, Layer};
use strata_harness::{Cluster, Registry, RegistryProxy};
use strata_proto::v1;
use tokio::io::AsyncBufReadExt as _;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const LIMIT: Duration = Duration::from_secs(120);

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Pushes `name:1`: a Debian base and a layer of its own.
async fn push_image(registry: &Registry, name: &str) -> Vec<Layer> {
    let layers = vec![
        debian_layer("12", STATUS),
        Layer::builder()
            .file(&format!("srv/{name}/marker"), format!("image {name}"))
            .build(Compression::Gzip)
            .unwrap(),
    ];
    fixtures::image_on(&layers)
        .build()
        .unwrap()
        .push(registry, name, "1")
        .await
        .unwrap();
    layers
}

fn start_cluster(registry_host: &str, db: &std::path::Path) -> Cluster {
    Cluster::builder(STRATA)
        .workers(1)
        .db(db)
        .insecure_registry(registry_host)
        .start()
        .unwrap()
}

/// `strata submit --wait -f json --progress lines --insecure-registry`
/// with `server` (one or a list), as a child with piped output.
fn submit_command(image: &str, server: &str) -> tokio::process::Command {
    let mut command = fixtures::strata_command(STRATA);
    command
        .args(["submit", "--wait", "-f", "json", "--progress", "lines"])
        .args(["--insecure-registry", "--server", server, image])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    command
}

async fn run(mut command: tokio::process::Command, cluster: &Cluster) -> std::process::Output {
    let child = command.spawn().unwrap();
    match tokio::time::timeout(LIMIT, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!(
            "strata submit did not finish in {LIMIT:?}\n--- coordinator ---\n{}",
            cluster.coordinator_log()
        ),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_skips_a_dead_server_in_the_list() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    push_image(&registry, "failover/first").await;
    let cluster = start_cluster(&registry.host(), &db);
    let image = format!("{}/failover/first:1", registry.host());
    let servers = format!("http://127.0.0.1:{},{}", dead_port(), cluster.grpc_url());

    let out = run(submit_command(&image, &servers), &cluster).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{:?}\n{stderr}\n--- coordinator ---\n{}",
        out.status,
        cluster.coordinator_log()
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(
        report["packages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "zlib1g")),
        "{stdout}"
    );
    assert!(stderr.contains("done: complete"), "{stderr}");
    // Connecting moved on without a word: no connection was lost.
    assert!(!stderr.contains("resuming on"), "{stderr}");

    // The dead one alone: the single-server message, exit 2.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let out = run(submit_command(&image, &dead), &cluster).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("cannot reach the server at {dead}")),
        "{}",
        text(&out.stderr)
    );
}

fn event(i: u64) -> v1::FleetEvent {
    v1::FleetEvent {
        kind: v1::EventKind::FindingNew.into(),
        severity: v1::Severity::High.into(),
        image_reference: "ghcr.io/acme/api:1".into(),
        vulnerability_id: format!("CVE-2026-{i}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_watch_prints_each_event_once_across_a_coordinator_kill() {
    watch_across_a_kill(|cluster| cluster.grpc_url()).await;
}

/// Two addresses, the second dead: the watch goes round to it and back to
/// the restarted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_watch_with_a_dead_second_server_resumes_on_the_live_one() {
    let dead = dead_port();
    let stderr =
        watch_across_a_kill(|cluster| format!("{},http://127.0.0.1:{dead}", cluster.grpc_url())).await;
    assert!(stderr.contains("; resuming on "), "{stderr}");
}

/// `fleet watch -f json --server <servers>` across a SIGKILL and restart
/// of the one coordinator; returns the watch's stderr.
async fn watch_across_a_kill(servers: impl Fn(&Cluster) -> String) -> String {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let mut cluster = Cluster::builder(STRATA).workers(0).db(&db).start().unwrap();
    let client = async_nats::connect(cluster.nats().url()).await.unwrap();
    let log = EventLog::jetstream(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .unwrap();

    let mut watch = fixtures::strata_command(STRATA);
    watch
        .args(["fleet", "watch", "-f", "json", "--server", &servers(&cluster)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watch = tokio::process::Command::from(watch)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let printed = Arc::new(Mutex::new(Vec::<u64>::new()));
    tokio::spawn({
        let printed = printed.clone();
        async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let json: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                printed.lock().unwrap().push(json["sequence"].as_u64().unwrap());
            }
        }
    });
    let wait_printed = async |n: usize, cluster: &Cluster| {
        let deadline = Instant::now() + LIMIT;
        while printed.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "the watch printed {:?}, not {n} events\n--- coordinator ---\n{}",
                printed.lock().unwrap(),
                cluster.coordinator_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    log.publish(vec![event(1), event(2), event(3)]).await.unwrap();
    wait_printed(3, &cluster).await;

    // SIGKILL mid-watch (no goodbye on the stream), events while it is
    // down, then the same port again, then more events.
    cluster.kill_coordinator();
    log.publish(vec![event(4), event(5)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart_coordinator().unwrap();
    log.publish(vec![event(6), event(7)]).await.unwrap();
    wait_printed(7, &cluster).await;
    // Nothing more comes: no event printed twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(*printed.lock().unwrap(), [1, 2, 3, 4, 5, 6, 7]);

    let _ = watch.kill().await;
    let mut stderr = String::new();
    if let Some(mut pipe) = watch.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    drop(log);
    client.drain().await.unwrap();
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_resumes_across_a_coordinator_kill_mid_scan() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let layers = push_image(&registry, "failover/slow").await;
    // Each blob takes seconds: the scan is in flight when the coordinator dies.
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_secs(4))
        .start()
        .unwrap();
    let mut cluster = start_cluster(&proxy.host(), &db);
    let image = format!("{}/failover/slow:1", proxy.host());

    let child = submit_command(&image, &cluster.grpc_url()).spawn().unwrap();
    // A layer fetch has started: the scan was submitted and is in flight.
    let deadline = Instant::now() + LIMIT;
    while layers.iter().all(|l| proxy.blob_requests(&l.digest) == 0) {
        assert!(
            Instant::now() < deadline,
            "no layer fetch started\n--- coordinator ---\n{}",
            cluster.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill_coordinator();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart_coordinator().unwrap();

    let out = match tokio::time::timeout(LIMIT, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!(
            "strata submit did not finish in {LIMIT:?}\n--- coordinator ---\n{}",
            cluster.coordinator_log()
        ),
    };
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{:?}\n{stderr}\n--- coordinator ---\n{}",
        out.status,
        cluster.coordinator_log()
    );
    let url = cluster.grpc_url();
    assert_eq!(
        stderr
            .matches(&format!("strata: connection to {url} lost; resuming on {url}"))
            .count(),
        1,
        "{stderr}"
    );
    // No progress line twice (the replayed history is dropped), and the
    // scan's end is there.
    let progress: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("strata: ")).collect();
    let mut unique = progress.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), progress.len(), "{stderr}");
    assert_eq!(
        progress.iter().filter(|l| l.starts_with("done: ")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("done: complete"), "{stderr}");

    // The same report as a run without a break (the scan exists now).
    let again = run(submit_command(&image, &url), &cluster).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let undisturbed: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report, undisturbed);
    assert!(
        report["packages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "zlib1g")),
        "{stdout}"
    );
}
