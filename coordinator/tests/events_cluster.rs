//! Fleet events end to end on a real cluster (nats-server and a `strata
//! coordinator` process configured with two webhooks), events published
//! into its JetStream log from this process:
//! - `strata fleet watch -f json` prints each event once, across a
//!   coordinator shutdown (its open stream must not hold the shutdown) and
//!   restart, resuming after the last sequence it printed;
//! - a webhook that fails twice (500) then accepts gets each event once,
//!   signed (`X-Strata-Signature` verifies with the secret over
//!   `<timestamp>.<body>`, the timestamp current); after the restart it
//!   resumes from its stored cursor without duplicates;
//! - a webhook that always fails is given up on (dead letters), which
//!   `GetStatus` and `strata status` show, and is not retried after the
//!   restart.

// The std Mutex serializes whole tests (each on its own runtime), as in cluster.rs.
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit as _, Mac as _};
use strata_coordinator::notify::EventLog;
use strata_harness::Cluster;
use strata_harness::fixtures::{self, build_db, serial};
use strata_proto::v1::{self, admin_service_client::AdminServiceClient};
use tokio::io::AsyncBufReadExt as _;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const LIMIT: Duration = Duration::from_secs(60);
const SECRET: &str = "a-webhook-secret-of-some-length";

/// One request a receiver accepted.
#[derive(Debug, Clone)]
struct Hit {
    sequence: u64,
    timestamp: String,
    signature: String,
    body: bytes::Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    /// Requests answered 500 before any is accepted (`usize::MAX`: all).
    fail_first: usize,
    requests: Arc<AtomicUsize>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: bytes::Bytes) -> StatusCode {
    let n = r.requests.fetch_add(1, Ordering::SeqCst);
    if n < r.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    r.hits.lock().unwrap().push(Hit {
        sequence: json["sequence"].as_u64().unwrap_or(0),
        timestamp: header("x-strata-timestamp"),
        signature: header("x-strata-signature"),
        body,
    });
    StatusCode::NO_CONTENT
}

/// Serves `r` on 127.0.0.1; returns its URL.
async fn serve(r: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

fn event(i: u64, severity: v1::Severity) -> v1::FleetEvent {
    v1::FleetEvent {
        kind: v1::EventKind::FindingNew.into(),
        severity: severity.into(),
        image_reference: "ghcr.io/acme/api:1".into(),
        vulnerability_id: format!("CVE-2026-{i}"),
        ..Default::default()
    }
}

async fn wait_for<T>(what: &str, cluster: &Cluster, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}\n--- coordinator ---\n{}",
            cluster.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sequences(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.sequence).collect()
}

async fn events_status(cluster: &Cluster) -> Option<v1::EventsStatus> {
    let channel = fixtures::coordinator_channel(cluster, LIMIT).await;
    AdminServiceClient::new(channel)
        .get_status(v1::GetStatusRequest {})
        .await
        .ok()?
        .into_inner()
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_watchers_and_webhooks_across_a_restart() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let flaky = Receiver {
        fail_first: 2,
        ..Default::default()
    };
    let dead = Receiver {
        fail_first: usize::MAX,
        ..Default::default()
    };
    let flaky_url = serve(flaky.clone()).await;
    let dead_url = serve(dead.clone()).await;
    let key = fixtures::write_file(dir.path(), "webhook.key", &format!("{SECRET}\n"));
    let config = fixtures::write_file(
        dir.path(),
        "coordinator.toml",
        &format!(
            "[[webhooks]]\nurl = \"{flaky_url}\"\nsecret_file = \"{key}\"\n\n\
             [[webhooks]]\nurl = \"{dead_url}\"\nsecret_file = \"{key}\"\nmin_severity = \"high\"\nmax_attempts = 2\n"
        ),
    );
    let mut cluster = Cluster::builder(STRATA)
        .workers(0)
        .db(&db)
        .coordinator_args(["--config", config.as_str()])
        .start()
        .unwrap();
    // New webhooks start at the newest event: let both record where that is.
    wait_for("webhooks started", &cluster, async || {
        (cluster.coordinator_log().matches("webhook delivering").count() >= 2).then_some(())
    })
    .await;

    let client = async_nats::connect(cluster.nats().url()).await.unwrap();
    let log = EventLog::jetstream(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .unwrap();

    let mut watch = fixtures::strata_command(STRATA);
    watch
        .args(["fleet", "watch", "-f", "json", "--server", &cluster.grpc_url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut watch = tokio::process::Command::from(watch)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let printed = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    tokio::spawn({
        let printed = printed.clone();
        async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                printed.lock().unwrap().push(json);
            }
        }
    });
    let printed_sequences = || -> Vec<u64> {
        printed
            .lock()
            .unwrap()
            .iter()
            .map(|j| j["sequence"].as_u64().unwrap())
            .collect()
    };

    use v1::Severity::{Critical, High, Low, Medium};
    let kept = log
        .publish(vec![event(1, High), event(2, Low), event(3, Critical)])
        .await
        .unwrap();
    assert_eq!(kept.len(), 3);

    wait_for("the watch prints 3 events", &cluster, async || {
        (printed_sequences().len() >= 3).then_some(())
    })
    .await;
    {
        let printed = printed.lock().unwrap();
        assert_eq!(printed[0]["vulnerability_id"], "CVE-2026-1");
        assert_eq!(printed[0]["kind"], "finding_new");
        assert_eq!(printed[2]["severity"], "critical");
    }
    wait_for("the flaky webhook gets 3 events", &cluster, async || {
        (flaky.hits.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    // Two high-or-above events, each tried twice, then given up.
    let status = wait_for("two dead letters", &cluster, async || {
        events_status(&cluster)
            .await
            .filter(|e| e.webhook_dead_letters >= 2 && e.webhook_delivered >= 3)
    })
    .await;
    assert_eq!(status.webhooks, 2);
    assert_eq!((status.webhook_delivered, status.webhook_dead_letters), (3, 2));
    // The flaky one's first event was retried twice, each dead one once.
    assert_eq!(status.webhook_retries, 4);
    assert_eq!((status.last_sequence, status.events), (3, 3));
    assert_eq!(dead.requests.load(Ordering::SeqCst), 4);

    let out = fixtures::strata_command(STRATA)
        .args(["status", "--server", &cluster.grpc_url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("events    last sequence 3, 3 kept"), "{text}");
    assert!(
        text.contains("webhooks  2: 3 delivered, 4 retries, 2 dead letters"),
        "{text}"
    );

    // Shutdown with the watch's stream open, events while it is down, restart.
    let exit = cluster.terminate_coordinator().unwrap();
    assert!(exit.success(), "{exit:?}\n{}", cluster.coordinator_log());
    let kept = log
        .publish(vec![event(4, Low), event(5, Medium), event(3, Critical)])
        .await
        .unwrap();
    assert_eq!(kept.iter().map(|e| e.sequence).collect::<Vec<_>>(), [4, 5]);
    cluster.restart_coordinator().unwrap();
    log.publish(vec![event(6, Low)]).await.unwrap();

    wait_for("the watch resumes", &cluster, async || {
        (printed_sequences().len() >= 6).then_some(())
    })
    .await;
    wait_for("the flaky webhook resumes", &cluster, async || {
        (flaky.hits.lock().unwrap().len() >= 6).then_some(())
    })
    .await;
    // Nothing more comes: no event printed or delivered twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(printed_sequences(), [1, 2, 3, 4, 5, 6]);
    let hits = flaky.hits.lock().unwrap().clone();
    assert_eq!(sequences(&hits), [1, 2, 3, 4, 5, 6]);
    // The dead letters are not tried again (their cursor moved past them),
    // and the new events are below its severity.
    assert_eq!(dead.requests.load(Ordering::SeqCst), 4);

    // Each delivery is signed over "<timestamp>.<body>", the timestamp current.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for hit in &hits {
        let ts: u64 = hit.timestamp.parse().expect("a timestamp header");
        assert!(now.abs_diff(ts) < 300, "timestamp {ts} vs now {now}");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{}.", hit.timestamp).as_bytes());
        mac.update(&hit.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(hit.signature, expected, "sequence {}", hit.sequence);
    }
    // The body is the event as JSON, with its sequence and id.
    let body: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(body["vulnerability_id"], "CVE-2026-1");
    assert!(body["event_id"].as_str().is_some_and(|id| id.len() == 32));

    let _ = watch.kill().await;
    drop(log);
    client.drain().await.unwrap();
}

/// Two coordinators with the same webhook: the one holding the `webhooks`
/// lease delivers, so each event is POSTed once; when it is killed, the
/// other takes the lease and goes on from the shared cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_deliver_each_event_once_and_the_survivor_goes_on() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let receiver = Receiver::default();
    let url = serve(receiver.clone()).await;
    let key = fixtures::write_file(dir.path(), "webhook.key", &format!("{SECRET}\n"));
    let config = fixtures::write_file(
        dir.path(),
        "coordinator.toml",
        &format!("[[webhooks]]\nurl = \"{url}\"\nsecret_file = \"{key}\"\n"),
    );
    let mut cluster = Cluster::builder(STRATA)
        .coordinators(2)
        .workers(0)
        .db(&db)
        .coordinator_args(["--config", config.as_str(), "--lease-ttl-secs", "3"])
        .start()
        .unwrap();
    let delivering = |cluster: &Cluster| -> Vec<usize> {
        (0..2)
            .filter(|&i| cluster.coordinator_log_of(i).contains("webhook delivering"))
            .collect()
    };
    wait_for("one coordinator delivers", &cluster, async || {
        (!delivering(&cluster).is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let holder = match delivering(&cluster).as_slice() {
        [one] => *one,
        both => panic!("coordinators {both:?} both deliver"),
    };

    let client = async_nats::connect(cluster.nats().url()).await.unwrap();
    let log = EventLog::jetstream(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .unwrap();
    use v1::Severity::{High, Low};
    log.publish(vec![event(1, High), event(2, Low), event(3, High)])
        .await
        .unwrap();
    wait_for("3 events delivered", &cluster, async || {
        (receiver.hits.lock().unwrap().len() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sequences(&receiver.hits.lock().unwrap()), [1, 2, 3], "each once");

    cluster.kill_coordinator_at(holder);
    log.publish(vec![event(4, Low), event(5, High)]).await.unwrap();
    wait_for("the survivor delivers the rest", &cluster, async || {
        (receiver.hits.lock().unwrap().len() >= 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sequences(&receiver.hits.lock().unwrap()),
        [1, 2, 3, 4, 5],
        "nothing lost or repeated across the takeover\n{}",
        cluster.coordinator_log_of(1 - holder)
    );
}
