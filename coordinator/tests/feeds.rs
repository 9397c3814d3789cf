//! Advisory feeds polled live (`--feed`): conditional requests against a
//! real HTTP server in this test (counting requests, answering `304` to a
//! matching `If-None-Match`), broken feeds that leave the data in force,
//! the exact `ChangeSet` handed to `apply_vulndb`, directories and files
//! over `file://`, and restarts of real `strata coordinator` (NATS
//! key-value) and `strata serve` (embedded state, with an `s3://` feed on
//! moto) processes that start from the last good data and answer the first
//! poll with a `304`.
//!
//! Feed data is built here from real records of
//! `/work/shared/testdata/osv/PyPI/all.zip`.

// The process tests hold a std Mutex across awaits on purpose: it serializes
// whole tests (each on its own runtime), so no task waits on it from the same runtime.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_coordinator::feeds::{FeedState, Feeds, FeedsConfig, Poll, Round};
use strata_harness::ClusterSandbox;
use strata_harness::fixtures::{self, serial};
use strata_proto::v1::{self, admin_service_client::AdminServiceClient};
use strata_proto::{Ecosystem, Package};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const PYPI: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/osv/PyPI/all.zip"
);
const HOUR: Duration = Duration::from_secs(3600);
const LAST_MODIFIED: &str = "Wed, 01 Jan 2025 00:00:00 GMT";

// A (trac), B (cherrypy), C (django), D (trac): unlinked PyPI records.
const A: &str = "PYSEC-2005-1";
const B: &str = "PYSEC-2006-1";
const C: &str = "PYSEC-2007-1";
const D: &str = "PYSEC-2006-3";

// ---- feed data ----------------------------------------------------------------

/// The record `id` of the real PyPI export, as JSON.
fn record(id: &str) -> serde_json::Value {
    let file = std::fs::File::open(PYPI).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let mut entry = zip.by_name(&format!("{id}.json")).unwrap();
    let mut text = String::new();
    entry.read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn zip_of_records(records: &[serde_json::Value]) -> Vec<u8> {
    let entries: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| {
            (
                format!("{}.json", r["id"].as_str().unwrap()),
                serde_json::to_vec_pretty(r).unwrap(),
            )
        })
        .collect();
    zip_of(&entries)
}

/// A, B, C as published.
fn v1() -> Vec<serde_json::Value> {
    vec![record(A), record(B), record(C)]
}

/// A unchanged; B republished (new `modified`, fixed in 2.1.2 instead of
/// 2.1.1); C withdrawn; D added.
fn v2() -> Vec<serde_json::Value> {
    let mut b = record(B);
    b["modified"] = "2025-06-01T00:00:00Z".into();
    b["affected"][0]["ranges"][0]["events"][1]["fixed"] = "2.1.2".into();
    let mut c = record(C);
    c["withdrawn"] = "2025-06-01T00:00:00Z".into();
    vec![record(A), b, c, record(D)]
}

fn ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

// ---- a feed server --------------------------------------------------------------

/// What the feed server answers.
#[derive(Clone)]
enum Answer {
    /// `200` with the body, ETag and Last-Modified; `304` to a request whose
    /// `If-None-Match` is the ETag.
    Data { body: Vec<u8>, etag: String },
    /// This status with a small body.
    Status(u16),
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    status: u16,
    body_bytes: usize,
}

struct Shared {
    answer: Answer,
    seen: Vec<Seen>,
}

/// An HTTP/1.1 server on 127.0.0.1 serving `/feed/all.zip`, one request per
/// connection. Stopped on drop.
struct FeedServer {
    url: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FeedServer {
    async fn start(answer: Answer) -> FeedServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/feed/all.zip", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared {
            answer,
            seen: Vec::new(),
        }));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_one(stream, state.clone()));
            }
        });
        FeedServer { url, shared, task }
    }

    fn set(&self, answer: Answer) {
        self.shared.lock().unwrap().answer = answer;
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }
}

async fn serve_one(mut stream: tokio::net::TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let (if_none_match, if_modified_since) = (header("if-none-match"), header("if-modified-since"));
    let (status, extra, body) = {
        let mut shared = shared.lock().unwrap();
        let answer = match &shared.answer {
            Answer::Data { body, etag } if if_none_match.as_deref() == Some(etag.as_str()) => {
                (304, format!("ETag: {etag}\r\n"), Vec::new())
            }
            Answer::Data { body, etag } => (
                200,
                format!("ETag: {etag}\r\nLast-Modified: {LAST_MODIFIED}\r\n"),
                body.clone(),
            ),
            Answer::Status(code) => (*code, String::new(), b"broken".to_vec()),
        };
        shared.seen.push(Seen {
            if_none_match: if_none_match.clone(),
            if_modified_since: if_modified_since.clone(),
            status: answer.0,
            body_bytes: answer.2.len(),
        });
        answer
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

fn data(records: &[serde_json::Value], etag: &str) -> Answer {
    Answer::Data {
        body: zip_of_records(records),
        etag: format!("\"{etag}\""),
    }
}

// ---- in process ------------------------------------------------------------------

async fn sandbox() -> ClusterSandbox {
    ClusterSandbox::builder().workers(0).start().await.unwrap()
}

async fn open(sandbox: &ClusterSandbox, urls: &[&str]) -> Feeds {
    let config = FeedsConfig {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        interval: HOUR,
    };
    Feeds::open(
        &config,
        sandbox.buckets().images.clone(),
        sandbox.store().clone(),
        None,
    )
    .await
    .unwrap()
}

fn polls(round: &Round) -> Vec<Poll> {
    round.polled.iter().map(|(_, p)| p.clone()).collect()
}

fn failed(round: &Round) -> String {
    match polls(round).as_slice() {
        [Poll::Failed(err)] => err.clone(),
        other => panic!("expected one failed poll, got {other:?}"),
    }
}

/// The ids `package` is affected by under the data in force.
fn findings(sandbox: &ClusterSandbox, name: &str, version: &str) -> Vec<String> {
    let package = Package {
        ecosystem: Ecosystem::PyPI,
        name: name.into(),
        version: version.into(),
        source_name: None,
        source_version: None,
        arch: None,
        purl: format!("pkg:pypi/{name}@{version}"),
        path: "/app/requirements.txt".into(),
        layer: None,
        evidence: Default::default(),
    };
    let data = sandbox.coordinator().vulndb();
    data.matcher
        .match_packages(None, &[package])
        .into_iter()
        .map(|f| f.vulnerability_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_feed_costs_one_small_request_per_poll() {
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let sandbox = sandbox().await;
    let feeds = open(&sandbox, &[&server.url]).await;

    let first = feeds.poll_now(sandbox.coordinator()).await;
    assert_eq!(polls(&first), [Poll::Changed { records: 3 }]);
    let applied = first.applied.expect("v1 put in force");
    assert_eq!(applied.changes.added, ids(&[A, B, C]));
    assert_eq!(sandbox.coordinator().vulndb().status.version, applied.version);
    assert_eq!(sandbox.coordinator().vulndb().status.advisories, 3);

    for _ in 0..2 {
        let round = feeds.poll_now(sandbox.coordinator()).await;
        assert_eq!(polls(&round), [Poll::Unchanged]);
        assert!(round.applied.is_none() && round.error.is_none());
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((seen[0].status, seen[0].if_none_match.as_deref()), (200, None));
    for s in &seen[1..] {
        assert_eq!(s.if_none_match.as_deref(), Some("\"v1\""), "{s:?}");
        assert_eq!(s.if_modified_since.as_deref(), Some(LAST_MODIFIED), "{s:?}");
        assert_eq!((s.status, s.body_bytes), (304, 0), "{s:?}");
    }
    assert_eq!(sandbox.coordinator().vulndb().status.version, applied.version);
    let [state]: [FeedState; 1] = feeds.status().try_into().unwrap();
    assert_eq!(state.url, server.url);
    assert_eq!(
        (state.etag.as_str(), state.last_modified.as_str()),
        ("\"v1\"", LAST_MODIFIED)
    );
    assert_eq!((state.records, state.consecutive_failures), (3, 0));
    assert!(state.last_error.is_empty() && state.last_success_unix_ms > 0);
    assert_eq!(state.next_poll_unix_ms, state.last_attempt_unix_ms + 3_600_000);
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_feed_keeps_the_data_in_force_until_good_data_arrives() {
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let sandbox = sandbox().await;
    let feeds = open(&sandbox, &[&server.url]).await;
    let good = feeds
        .poll_now(sandbox.coordinator())
        .await
        .applied
        .unwrap()
        .version;
    assert_eq!(findings(&sandbox, "cherrypy", "2.1.0"), [B]);

    let truncated = zip_of_records(&v2());
    let mut bad_json = v2()
        .iter()
        .map(|r| {
            (
                format!("{}.json", r["id"].as_str().unwrap()),
                serde_json::to_vec(r).unwrap(),
            )
        })
        .collect::<Vec<_>>();
    bad_json.push((
        "PYSEC-9999-1.json".into(),
        b"{\"id\": \"PYSEC-9999-1\", ".to_vec(),
    ));
    let mut unparsable = v2();
    unparsable[1]["affected"] = "no longer a list".into();
    let broken = [
        (Answer::Status(500), "HTTP 500"),
        (
            Answer::Data {
                body: truncated[..truncated.len() / 2].to_vec(),
                etag: "\"v2-truncated\"".into(),
            },
            "bad zip",
        ),
        (
            Answer::Data {
                body: zip_of(&bad_json),
                etag: "\"v2-bad-json\"".into(),
            },
            "malformed JSON",
        ),
        (data(&unparsable, "v2-unparsable"), "malformed JSON"),
    ];
    for (n, (answer, expected)) in broken.into_iter().enumerate() {
        server.set(answer);
        let round = feeds.poll_now(sandbox.coordinator()).await;
        let err = failed(&round);
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(round.applied.is_none());
        // The data in force is the good one; queries answer from it.
        assert_eq!(sandbox.coordinator().vulndb().status.version, good);
        assert_eq!(findings(&sandbox, "cherrypy", "2.1.0"), [B]);
        assert_eq!(findings(&sandbox, "django", "1.0"), [C]);
        let [state]: [FeedState; 1] = feeds.status().try_into().unwrap();
        assert!(state.last_error.contains(expected), "{state:?}");
        assert_eq!(state.consecutive_failures as usize, n + 1);
        // Retried after 15 s, doubling; the last good validators are kept.
        let delay = state.next_poll_unix_ms - state.last_attempt_unix_ms;
        assert_eq!(delay, 15_000 << n, "{state:?}");
        assert_eq!((state.etag.as_str(), state.records), ("\"v1\"", 3));
    }

    server.set(data(&v2(), "v2"));
    let round = feeds.poll_now(sandbox.coordinator()).await;
    assert_eq!(polls(&round), [Poll::Changed { records: 3 }]);
    let applied = round.applied.unwrap();
    assert_eq!(sandbox.coordinator().vulndb().status.version, applied.version);
    assert_eq!(findings(&sandbox, "cherrypy", "2.1.1"), [B], "fixed in 2.1.2 now");
    assert!(findings(&sandbox, "django", "1.0").is_empty(), "C was withdrawn");
    let [state]: [FeedState; 1] = feeds.status().try_into().unwrap();
    assert!(state.last_error.is_empty(), "{state:?}");
    assert_eq!((state.consecutive_failures, state.etag.as_str()), (0, "\"v2\""));

    // Nothing listening: an error, not a crash, and the data stays.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/feed/all.zip", listener.local_addr().unwrap())
    };
    let unreachable = open(&sandbox, &[&dead]).await;
    let round = unreachable.poll_now(sandbox.coordinator()).await;
    assert!(!failed(&round).is_empty());
    assert_eq!(sandbox.coordinator().vulndb().status.version, applied.version);
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_then_v2_hands_apply_vulndb_exactly_the_changes() {
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let sandbox = sandbox().await;
    let feeds = open(&sandbox, &[&server.url]).await;
    feeds.poll_now(sandbox.coordinator()).await.applied.unwrap();

    server.set(data(&v2(), "v2"));
    let applied = feeds.poll_now(sandbox.coordinator()).await.applied.unwrap();
    let changes = &applied.changes;
    assert_eq!(changes.added, ids(&[D]));
    assert_eq!(changes.changed, ids(&[B]));
    assert_eq!(changes.removed, ids(&[C]));
    let touched: BTreeSet<(Ecosystem, String)> = ["cherrypy", "django", "trac"]
        .into_iter()
        .map(|n| (Ecosystem::PyPI, n.to_owned()))
        .collect();
    assert_eq!(changes.touched, touched);
    assert_eq!(applied.summary.vulndb_version, applied.version);
    assert_eq!(
        feeds.status()[0].records,
        3,
        "A, B and D: the withdrawn C is gone"
    );

    // Only `modified` moves: still a change, of B alone.
    let mut v3 = v2();
    v3[1]["modified"] = "2025-07-01T00:00:00Z".into();
    server.set(data(&v3, "v3"));
    let applied = feeds.poll_now(sandbox.coordinator()).await.applied.unwrap();
    assert_eq!(applied.changes.changed, ids(&[B]));
    assert!(applied.changes.added.is_empty() && applied.changes.removed.is_empty());
    assert_eq!(
        applied.changes.touched,
        BTreeSet::from([(Ecosystem::PyPI, "cherrypy".to_owned())])
    );
    sandbox.stop().await.unwrap();
}

/// A directory over `file://` and an `all.zip` over `file://`, combined: a
/// change of one reads that one again, and the other's records stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_directories_and_objects_are_feeds_and_are_combined() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records");
    std::fs::create_dir_all(records.join("PyPI")).unwrap();
    let write = |id: &str| {
        std::fs::write(
            records.join("PyPI").join(format!("{id}.json")),
            serde_json::to_vec(&record(id)).unwrap(),
        )
        .unwrap()
    };
    write(A);
    write(B);
    let zip = dir.path().join("all.zip");
    std::fs::write(&zip, zip_of_records(&[record(C)])).unwrap();
    let dir_url = format!("file://{}", records.display());
    let zip_url = format!("file://{}", zip.display());
    let sandbox = sandbox().await;
    let feeds = open(&sandbox, &[&dir_url, &zip_url]).await;

    let round = feeds.poll_now(sandbox.coordinator()).await;
    assert_eq!(
        polls(&round),
        [Poll::Changed { records: 2 }, Poll::Changed { records: 1 }]
    );
    assert_eq!(round.applied.unwrap().changes.added, ids(&[A, B, C]));
    let round = feeds.poll_now(sandbox.coordinator()).await;
    assert_eq!(polls(&round), [Poll::Unchanged, Poll::Unchanged]);
    assert!(round.applied.is_none());
    let states = feeds.status();
    assert!(states[0].etag.starts_with("dir-") && !states[0].last_modified.is_empty());
    assert!(!states[1].etag.is_empty(), "the object's e_tag: {:?}", states[1]);

    write(D);
    let round = feeds.poll_now(sandbox.coordinator()).await;
    assert_eq!(polls(&round), [Poll::Changed { records: 3 }, Poll::Unchanged]);
    let changes = round.applied.unwrap().changes;
    assert_eq!((changes.added, changes.removed), (ids(&[D]), ids(&[])));

    std::fs::remove_file(records.join("PyPI").join(format!("{A}.json"))).unwrap();
    let round = feeds.poll_now(sandbox.coordinator()).await;
    let changes = round.applied.unwrap().changes;
    assert_eq!((changes.added, changes.removed), (ids(&[]), ids(&[A])));
    assert_eq!(sandbox.coordinator().vulndb().status.advisories, 3, "B, D and C");
    sandbox.stop().await.unwrap();
}

/// The loop polls at once when started and stops with its shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_polls_at_start_and_stops_on_shutdown() {
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let sandbox = sandbox().await;
    let feeds = open(&sandbox, &[&server.url]).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(feeds.clone().run(sandbox.coordinator().clone(), async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.coordinator().vulndb().status.advisories != 3 {
        assert!(Instant::now() < deadline, "no first poll: {:?}", feeds.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop stops")
        .unwrap();
    assert_eq!(server.seen().len(), 1);
    sandbox.stop().await.unwrap();
}

// ---- processes -------------------------------------------------------------------

async fn admin_status(url: &str) -> v1::GetStatusResponse {
    let channel = fixtures::connect_retrying(url, Duration::from_secs(30), Duration::from_millis(100))
        .await
        .unwrap();
    AdminServiceClient::new(channel)
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits until every feed's last attempt is after `after` (ms) and succeeded.
async fn wait_polled(url: &str, after: i64, log: impl Fn() -> String) -> v1::GetStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = admin_status(url).await;
        if !status.feeds.is_empty()
            && status
                .feeds
                .iter()
                .all(|f| f.last_attempt_unix_ms > after && f.last_success_unix_ms >= f.last_attempt_unix_ms)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "feeds not polled: {:?}\n{}",
            status.feeds,
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn vulndb_version(status: &v1::GetStatusResponse) -> String {
    status.vulndb.as_ref().unwrap().version.clone()
}

fn db_version(path: &Path) -> String {
    strata_coordinator::vulndb::Db::open(path)
        .unwrap()
        .version()
        .to_owned()
}

/// `strata coordinator` on NATS key-value: killed between two polls and
/// started again, it serves the feeds' last data (not `--db`'s) before any
/// poll, and its first poll is a `304`. `strata status` prints the feeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_starts_from_the_last_good_data_and_feed_state() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = fixtures::build_db(STRATA, dir.path());
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let mut cluster = strata_harness::Cluster::builder(STRATA)
        .workers(0)
        .db(&db)
        .coordinator_args(["--feed", server.url.as_str(), "--feed-interval-secs", "3600"])
        .start()
        .unwrap();
    let url = cluster.grpc_url();
    let status = wait_polled(&url, 0, || cluster.coordinator_log()).await;
    let fed = vulndb_version(&status);
    assert_ne!(fed, db_version(&db), "the feed's data replaced --db's");
    assert_eq!(status.vulndb.as_ref().unwrap().records, 3);
    assert_eq!(
        (status.feeds[0].etag.as_str(), status.feeds[0].records),
        ("\"v1\"", 3)
    );

    let out = fixtures::strata_command(STRATA)
        .args(["status", "--server", &url, "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["feeds"][0]["url"], server.url.as_str());
    assert_eq!(json["vulndb"]["version"], fed.as_str());
    let out = fixtures::strata_command(STRATA)
        .args(["status", "--server", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&server.url) && text.contains(&fed), "{text}");

    let before = status.feeds[0].last_attempt_unix_ms;
    // Killed between two polls (the status shows a round once its state is written).
    cluster.restart_coordinator().unwrap();
    // Before or after its first poll (a 304 changes nothing), the data is the feed's.
    assert_eq!(vulndb_version(&admin_status(&url).await), fed);
    let status = wait_polled(&url, before, || cluster.coordinator_log()).await;
    assert_eq!(vulndb_version(&status), fed);
    assert_eq!(status.feeds[0].etag, "\"v1\"");
    let log = cluster.coordinator_log();
    assert_eq!(
        log.matches("starting from the feeds' last database").count(),
        1,
        "the second run, from the store: {log}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].if_none_match.as_deref(), Some("\"v1\""));
    assert_eq!(seen[1].status, 304);
}

/// A `strata serve` process on its data directory (embedded state, local
/// store) with an HTTP feed and an `s3://` feed (moto), combined; restarted,
/// it starts from their last data and neither feed is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_serve_starts_from_the_last_good_data_with_s3_and_http_feeds() {
    use object_store::ObjectStoreExt as _;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = fixtures::build_db(STRATA, dir.path());
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let s3 = strata_harness::S3Server::start().unwrap();
    s3.create_bucket("feeds").unwrap();
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.url())
        .with_allow_http(true)
        .with_bucket_name("feeds")
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    bucket
        .put(
            &object_store::path::Path::from("osv/all.zip"),
            zip_of_records(&[record(D)]).into(),
        )
        .await
        .unwrap();

    let log = dir.path().join("serve.log");
    let start = || {
        for _ in 0..3 {
            let started = fixtures::start_serve(Duration::from_secs(60), true, |grpc, metrics| {
                fixtures::strata_command(STRATA)
                    .args(["serve", "--data-dir"])
                    .arg(dir.path().join("data"))
                    .arg("--db")
                    .arg(&db)
                    .args(["--feed", &server.url, "--feed", "s3://feeds/osv/all.zip"])
                    .args(["--listen", &format!("127.0.0.1:{grpc}")])
                    .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
                    .env("AWS_ENDPOINT_URL", s3.url())
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_REGION", "us-east-1")
                    .env("STRATA_LOG", "info")
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .unwrap(),
                    )
                    .spawn()
                    .unwrap()
            });
            if let Ok(process) = started {
                return process;
            }
        }
        panic!(
            "strata serve did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let serve = start();
    let url = format!("http://127.0.0.1:{}", serve.grpc_port);
    let status = wait_polled(&url, 0, read_log).await;
    let fed = vulndb_version(&status);
    assert_ne!(fed, db_version(&db));
    assert_eq!(
        status.vulndb.as_ref().unwrap().records,
        4,
        "A, B, C over HTTP and D from S3"
    );
    let records: Vec<u64> = status.feeds.iter().map(|f| f.records).collect();
    assert_eq!(records, [3, 1]);
    let s3_etag = status.feeds[1].etag.clone();
    assert!(!s3_etag.is_empty(), "{:?}", status.feeds[1]);
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", serve.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("strata_feed_polls_total{feed=\"s3://feeds/osv/all.zip\",outcome=\"changed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_vulndb_updates_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    let before = status.feeds.iter().map(|f| f.last_attempt_unix_ms).max().unwrap();
    // Killed between two polls (the status shows a round once its state is written).
    drop(serve);

    let serve = start();
    let url = format!("http://127.0.0.1:{}", serve.grpc_port);
    let status = wait_polled(&url, before, read_log).await;
    assert_eq!(vulndb_version(&status), fed);
    assert_eq!(status.feeds[1].etag, s3_etag);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[1].status, seen[1].body_bytes), (304, 0));
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", serve.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for feed in [server.url.as_str(), "s3://feeds/osv/all.zip"] {
        let line = format!("strata_feed_polls_total{{feed=\"{feed}\",outcome=\"unchanged\"}} 1");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    // Nothing rebuilt or put in force: the data came from the store.
    assert!(!metrics.contains("strata_vulndb_updates_total"), "{metrics}");
    assert!(read_log().contains("starting from the feeds' last database"));
    drop(serve);
}

// ---- events across restarts ----------------------------------------------------

/// The events `strata fleet watch -f json` printed, as (kind, image,
/// vulnerability, package, reason), with their sequences.
type Printed = Arc<Mutex<Vec<(u64, (String, String, String, String, String))>>>;

/// `strata fleet watch -f json` against `url`, its lines collected.
fn watch(url: &str) -> (tokio::process::Child, Printed) {
    let mut child = tokio::process::Command::new(STRATA)
        .args(["fleet", "watch", "-f", "json", "--server", url])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let printed: Printed = Arc::default();
    let lines = printed.clone();
    let stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let e: serde_json::Value = serde_json::from_str(&line).unwrap();
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            let key = (
                s("kind"),
                s("image_reference"),
                s("vulnerability_id"),
                e["package"]["name"].as_str().unwrap_or_default().to_owned(),
                s("reason"),
            );
            lines.lock().unwrap().push((e["sequence"].as_u64().unwrap(), key));
        }
    });
    (child, printed)
}

/// Waits until `printed` holds `count` events (then a little longer, for
/// any extra one), or panics with the log.
async fn wait_printed(printed: &Printed, count: usize, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while printed.lock().unwrap().len() < count {
        if Instant::now() >= deadline {
            // (One lock at a time: a second in the same statement deadlocks.)
            let seen = printed.lock().unwrap().clone();
            panic!("{} of {count} events: {seen:?}\n{}", seen.len(), log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// `log` without its colour escapes (the log may be coloured).
fn plain(log: String) -> String {
    let mut parts = log.split('\u{1b}');
    let first = parts.next().unwrap_or_default().to_owned();
    first
        + &parts
            .map(|p| p.split_once('m').map_or(p, |(_, rest)| rest))
            .collect::<String>()
}

/// A cluster of one worker whose coordinator reads `feed`, once it has.
async fn cluster_with_feed(
    db: &Path,
    registry: &strata_harness::Registry,
    feed: &str,
) -> strata_harness::Cluster {
    let cluster = strata_harness::Cluster::builder(STRATA)
        .workers(1)
        .db(db)
        .insecure_registry(registry.host())
        .coordinator_args(["--feed", feed, "--feed-interval-secs", "3600"])
        .start()
        .unwrap();
    wait_polled(&cluster.grpc_url(), 0, || cluster.coordinator_log()).await;
    cluster
}

/// `strata fleet add` of `references`, which must succeed.
fn fleet_add(url: &str, references: &[&str]) {
    let out = fixtures::strata_command(STRATA)
        .args(["fleet", "add", "--insecure-registry", "--server", url])
        .args(references)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A python image with these (name, version) packages installed.
async fn python_image(registry: &strata_harness::Registry, name: &str, packages: &[(&str, &str)]) -> String {
    let mut layer = strata_harness::Layer::builder();
    for (package, version) in packages {
        layer = layer.file(
            &format!("usr/lib/python3/site-packages/{package}-{version}.dist-info/METADATA"),
            format!("Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n\n"),
        );
    }
    strata_harness::Image::builder()
        .layer(layer.build(strata_harness::Compression::Gzip).unwrap())
        .build()
        .unwrap()
        .push(registry, &format!("feeds/{name}"), "1")
        .await
        .unwrap();
    format!("{}/feeds/{name}:1", registry.host())
}

/// A coordinator killed between two feed versions, and again once a
/// version's first event is out (its histories perhaps not stored): a
/// consumer that resumes from its sequence (`strata fleet watch`, which
/// reconnects) gets every change exactly once, in sequence order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_gets_every_change_once_across_coordinator_restarts() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = fixtures::build_db(STRATA, dir.path());
    let registry = strata_harness::Registry::start().unwrap();
    // trac 0.10: D (fixed 0.11), not A (fixed 0.10). cherrypy 2.1.1: B only
    // once B's fix is 2.1.2 (v2). django 1.0.4: C until C is withdrawn.
    let both = python_image(
        &registry,
        "both",
        &[("trac", "0.10"), ("CherryPy", "2.1.1"), ("Django", "1.0.4")],
    )
    .await;
    let cherry = python_image(&registry, "cherry", &[("CherryPy", "2.1.1")]).await;
    let django = python_image(&registry, "django", &[("Django", "1.0.4")]).await;
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let mut cluster = cluster_with_feed(&db, &registry, &server.url).await;
    let url = cluster.grpc_url();
    fleet_add(&url, &[&both, &cherry, &django]);
    let (_watch, printed) = watch(&url);
    // Baselines: the images with a finding are told their severity.
    wait_printed(&printed, 2, || cluster.coordinator_log()).await;
    let severity = |image: &str| {
        (
            "image_severity".to_owned(),
            image.to_owned(),
            String::new(),
            String::new(),
            String::new(),
        )
    };
    let change = |kind: &str, image: &str, vuln: &str, package: &str, reason: &str| {
        (
            kind.to_owned(),
            image.to_owned(),
            vuln.to_owned(),
            package.to_owned(),
            reason.to_owned(),
        )
    };
    let mut expected = vec![severity(&both), severity(&django)];

    // Killed between v1 and v2; v2 is read at start.
    cluster.kill_coordinator();
    server.set(data(&v2(), "v2"));
    cluster.restart_coordinator().unwrap();
    expected.extend([
        change("finding_resolved", &both, C, "Django", "advisory_withdrawn"),
        change("finding_new", &both, B, "CherryPy", ""),
        change("finding_new", &both, D, "trac", ""),
        change("finding_new", &cherry, B, "CherryPy", ""),
        severity(&cherry),
        change("finding_resolved", &django, C, "Django", "advisory_withdrawn"),
    ]);
    wait_printed(&printed, expected.len(), || cluster.coordinator_log()).await;

    // What the coordinator has recorded now (its findings histories).
    let client = async_nats::connect(cluster.nats().url()).await.unwrap();
    let findings = async_nats::jetstream::new(client)
        .get_key_value("strata_findings")
        .await
        .unwrap();
    let mut recorded = Vec::new();
    let mut keys = findings.keys().await.unwrap();
    while let Some(key) = futures::StreamExt::next(&mut keys).await {
        let key = key.unwrap();
        let value = findings.get(&key).await.unwrap().unwrap();
        recorded.push((key, value));
    }
    assert_eq!(recorded.len(), 3);

    // v3 withdraws B and D, read at start.
    let mut v3 = v2();
    for r in &mut v3 {
        if r["id"] == B || r["id"] == D {
            r["withdrawn"] = "2025-07-01T00:00:00Z".into();
            r["modified"] = "2025-07-01T00:00:00Z".into();
        }
    }
    server.set(data(&v3, "v3"));
    cluster.restart_coordinator().unwrap();
    expected.extend([
        change("finding_resolved", &both, B, "CherryPy", "advisory_withdrawn"),
        change("finding_resolved", &both, D, "trac", "advisory_withdrawn"),
        change("finding_resolved", &cherry, B, "CherryPy", "advisory_withdrawn"),
    ]);
    wait_printed(&printed, expected.len(), || cluster.coordinator_log()).await;
    // As if killed after publishing v3's events but before recording them:
    // the histories as they were. Started again, it finds the same changes
    // and the log drops them (same event ids): nothing printed twice.
    cluster.kill_coordinator();
    for (key, value) in recorded {
        findings.put(&key, value).await.unwrap();
    }
    cluster.restart_coordinator().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !plain(cluster.coordinator_log()).contains("repeats=3") {
        assert!(
            Instant::now() < deadline,
            "the changes were not found again\n{}",
            cluster.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_printed(&printed, expected.len(), || cluster.coordinator_log()).await;

    let printed = printed.lock().unwrap().clone();
    let sequences: Vec<u64> = printed.iter().map(|(s, _)| *s).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    let mut got: Vec<_> = printed.into_iter().map(|(_, e)| e).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "every change once\n{}", cluster.coordinator_log());
}

/// A coordinator that finds another matcher revision stored (an upgrade
/// changed how packages match) re-matches the whole fleet once at start,
/// from the stored inventories, and stores its own revision; the same
/// findings come out, so a consumer sees nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_matcher_revision_rematches_the_fleet_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = fixtures::build_db(STRATA, dir.path());
    let registry = strata_harness::Registry::start().unwrap();
    let cherry = python_image(&registry, "cherry", &[("CherryPy", "2.1.1")]).await;
    let django = python_image(&registry, "django", &[("Django", "1.0.4")]).await;
    // Django 1.0.4 has C in v1: a finding, so a baseline event.
    let server = FeedServer::start(data(&v1(), "v1")).await;
    let mut cluster = cluster_with_feed(&db, &registry, &server.url).await;
    let url = cluster.grpc_url();
    fleet_add(&url, &[&cherry, &django]);
    let (_watch, printed) = watch(&url);
    wait_printed(&printed, 1, || cluster.coordinator_log()).await;
    let baseline = printed.lock().unwrap().clone();

    let client = async_nats::connect(cluster.nats().url()).await.unwrap();
    let images = async_nats::jetstream::new(client)
        .get_key_value("strata_images")
        .await
        .unwrap();
    let stored = images.get("matcher-revision").await.unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(&b"1"[..]),
        "a first start stores its revision"
    );

    // As if the fleet was matched by an older build.
    cluster.kill_coordinator();
    images.put("matcher-revision", "0".into()).await.unwrap();
    let blob_gets = || {
        std::fs::read_to_string(registry.access_log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
            .count()
    };
    let blobs_before = blob_gets();
    cluster.restart_coordinator().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !plain(cluster.coordinator_log()).contains("fleet re-matched for matcher revision 1") {
        assert!(
            Instant::now() < deadline,
            "no re-match\n{}",
            cluster.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = plain(cluster.coordinator_log());
    let line = log
        .lines()
        .find(|l| l.contains("fleet re-matched for matcher revision 1"))
        .unwrap();
    // Both images' packages matched again, with the same findings.
    assert!(
        line.contains("distinct=2 images_changed=0 new=0 resolved=0"),
        "{line}"
    );
    let stored = images.get("matcher-revision").await.unwrap();
    assert_eq!(stored.as_deref(), Some(&b"1"[..]));
    // From the stored inventories: nothing pulled.
    assert_eq!(blob_gets(), blobs_before);

    // Started again with its own revision stored: no re-match.
    cluster.restart_coordinator().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while plain(cluster.coordinator_log())
        .matches("fleet index loaded")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "not loaded\n{}",
            cluster.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = plain(cluster.coordinator_log());
    assert_eq!(log.matches("re-matching the whole fleet").count(), 1, "{log}");
    // The same findings: nothing new for the consumer.
    assert_eq!(*printed.lock().unwrap(), baseline);
}
