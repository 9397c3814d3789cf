//! Webhook delivery as `strata serve` runs it: the local (`redb`) event log
//! and cursor table. A receiver that fails twice then accepts gets every
//! event once, in order; the delivering side stopped and started again on
//! the same file resumes after its cursor (nothing re-sent, nothing
//! skipped); a receiver that never accepts is given up on (dead letters)
//! within its tries, and a 4xx is not retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use strata_coordinator::cluster::kv::{Kv, LocalKv, open_local_db};
use strata_coordinator::notify::EventLog;
use strata_coordinator::notify::webhook::{self, RetryPolicy, WEBHOOKS_BUCKET, Webhook, WebhookConfig};
use strata_proto::v1;

#[derive(Clone)]
struct Receiver {
    /// Answers given in turn (the first at the end), then `then` for good.
    answers: Arc<Mutex<Vec<StatusCode>>>,
    then: StatusCode,
    requests: Arc<AtomicUsize>,
    sequences: Arc<Mutex<Vec<u64>>>,
}

impl Receiver {
    fn new(first: &[StatusCode], then: StatusCode) -> Receiver {
        Receiver {
            answers: Arc::new(Mutex::new(first.iter().rev().copied().collect())),
            then,
            requests: Arc::default(),
            sequences: Arc::default(),
        }
    }
}

async fn receive(State(r): State<Receiver>, body: bytes::Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let answer = r.answers.lock().unwrap().pop().unwrap_or(r.then);
    if answer.is_success() {
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        r.sequences
            .lock()
            .unwrap()
            .push(json["sequence"].as_u64().unwrap());
    }
    answer
}

async fn serve(r: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::post(receive))
        .with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

fn event(i: u64) -> v1::FleetEvent {
    v1::FleetEvent {
        kind: v1::EventKind::FindingNew.into(),
        severity: v1::Severity::High.into(),
        image_reference: "r/a:1".into(),
        vulnerability_id: format!("CVE-{i}"),
        ..Default::default()
    }
}

const FAST: RetryPolicy = RetryPolicy {
    first_pause: Duration::from_millis(50),
    max_pause: Duration::from_millis(200),
    max_attempts: 3,
    max_total: Duration::from_secs(10),
};

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_webhooks_retry_give_up_and_resume_from_their_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "0123456789abcdef0123").unwrap();
    let flaky = Receiver::new(
        &[StatusCode::INTERNAL_SERVER_ERROR, StatusCode::TOO_MANY_REQUESTS],
        StatusCode::NO_CONTENT,
    );
    let down = Receiver::new(&[], StatusCode::BAD_GATEWAY);
    let refusing = Receiver::new(&[], StatusCode::FORBIDDEN);
    let hooks = {
        let mut hooks = Vec::new();
        for r in [&flaky, &down, &refusing] {
            let config = WebhookConfig {
                url: serve(r.clone()).await,
                secret_file: key.clone(),
                ..Default::default()
            };
            hooks.push(Webhook::load(&config).unwrap().with_retry(FAST));
        }
        hooks
    };
    let path = dir.path().join("state.redb");

    // One run of the delivering side on the state file, until `stop`.
    let start = async |hooks: Vec<Webhook>| {
        // A read the last run started may still hold the file a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let db = loop {
            match open_local_db(&path) {
                Ok(db) => break db,
                Err(e) if Instant::now() > deadline => panic!("{e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let log = EventLog::local(db.clone()).unwrap();
        let cursors = Kv::Local(LocalKv::new(db, WEBHOOKS_BUCKET));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(webhook::run(hooks, log.clone(), cursors.clone(), None, async {
            let _ = stopped.await;
        }));
        (log, cursors, stop, task)
    };

    let (log, cursors, stop, task) = start(hooks.clone()).await;
    // A new webhook starts at the newest event: let each record where that is.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cursors.keys().await.unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "cursors not stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.publish((1..=3).map(event).collect()).await.unwrap();
    until("three delivered", || flaky.sequences.lock().unwrap().len() == 3).await;
    until("three dead letters on each failing hook", || {
        log.deliveries().snapshot().dead_letters == 6
    })
    .await;
    let d = log.deliveries().snapshot();
    assert_eq!((d.webhooks, d.delivered), (3, 3));
    // flaky: 2 retries; down: 2 retries for each of 3 events; refusing: none.
    assert_eq!(d.retries, 2 + 6);
    assert_eq!(down.requests.load(Ordering::SeqCst), 9);
    assert_eq!(refusing.requests.load(Ordering::SeqCst), 3);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    drop((log, cursors));

    // Events published while the delivering side is down, then it restarts.
    let (log, _, stop, task) = start(hooks).await;
    log.publish((4..=5).map(event).collect()).await.unwrap();
    until("five delivered", || flaky.sequences.lock().unwrap().len() >= 5).await;
    until("two more dead letters", || {
        log.deliveries().snapshot().dead_letters == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*flaky.sequences.lock().unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(down.requests.load(Ordering::SeqCst), 9 + 6);
    assert_eq!(refusing.requests.load(Ordering::SeqCst), 3 + 2);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
