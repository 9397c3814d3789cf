//! The job queue's NATS JetStream transport against a real nats-server
//! (the harness's, on a free loopback port): the same semantics the
//! in-process queue's unit tests check (`worker/src/queue/tests.rs`), where
//! the server is the one enforcing them.

use std::time::Duration;

use strata_harness::NatsServer;
use strata_proto::v1;
use strata_worker::queue::nats::NatsQueue;
use strata_worker::queue::{Lag, Priority, Queue, QueueSettings};

fn job(digest: &str, priority: v1::Priority) -> v1::LayerJob {
    v1::LayerJob {
        digest: digest.to_owned(),
        priority: priority.into(),
        ..Default::default()
    }
}

/// A coordinator's side (it creates the streams) and a worker's (it binds).
async fn queues(nats: &NatsServer, settings: QueueSettings) -> (Queue, Queue) {
    let coordinator = Queue::Nats(Box::new(
        NatsQueue::create(async_nats::connect(nats.url()).await.unwrap(), &settings)
            .await
            .unwrap(),
    ));
    let worker = Queue::Nats(Box::new(
        NatsQueue::bind(async_nats::connect(nats.url()).await.unwrap())
            .await
            .unwrap(),
    ));
    (coordinator, worker)
}

const WAIT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_jobs_come_before_background_jobs_under_load_and_lag_is_the_real_count() {
    let nats = NatsServer::start().unwrap();
    let (coordinator, worker) = queues(&nats, QueueSettings::default()).await;
    for i in 0..200 {
        let id = format!("bg{i}");
        coordinator
            .publish_job(&job(&id, v1::Priority::Background), &id, None)
            .await
            .unwrap();
    }
    for i in 0..20 {
        let id = format!("ci{i}");
        coordinator
            .publish_job(&job(&id, v1::Priority::Ci), &id, None)
            .await
            .unwrap();
    }
    let lag = coordinator.lag().await.unwrap();
    assert_eq!(
        lag,
        [
            Lag {
                priority: Priority::Ci,
                pending: 20,
                in_flight: 0
            },
            Lag {
                priority: Priority::Background,
                pending: 200,
                in_flight: 0
            },
        ]
    );
    // Every CI job is handed out before any background job.
    let mut order = Vec::new();
    let mut held = Vec::new();
    while order.len() < 30 {
        for d in worker.next_jobs(7, WAIT).await.unwrap() {
            order.push(d.job.digest.clone());
            held.push(d);
        }
    }
    assert!(order[..20].iter().all(|d| d.starts_with("ci")), "{order:?}");
    assert!(order[20..].iter().all(|d| d.starts_with("bg")), "{order:?}");
    let lag = coordinator.lag().await.unwrap();
    let bg_delivered = order.len() as u64 - 20;
    assert_eq!(
        lag[0],
        Lag {
            priority: Priority::Ci,
            pending: 0,
            in_flight: 20
        }
    );
    assert_eq!(
        lag[1],
        Lag {
            priority: Priority::Background,
            pending: 200 - bg_delivered,
            in_flight: bg_delivered
        }
    );
    for d in held {
        d.ack().await.unwrap();
    }
    let lag = coordinator.lag().await.unwrap();
    assert_eq!(lag[0].in_flight + lag[1].in_flight, 0, "{lag:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_job_id_within_the_window_is_dropped() {
    let nats = NatsServer::start().unwrap();
    let (coordinator, worker) = queues(&nats, QueueSettings::default()).await;
    assert!(
        coordinator
            .publish_job(&job("a", v1::Priority::Ci), "a/1", None)
            .await
            .unwrap()
    );
    assert!(
        !coordinator
            .publish_job(&job("a", v1::Priority::Ci), "a/1", None)
            .await
            .unwrap()
    );
    let got = worker.next_jobs(10, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    for d in got {
        d.ack().await.unwrap();
    }
    // Acked, still inside the window: still a duplicate.
    assert!(
        !coordinator
            .publish_job(&job("a", v1::Priority::Ci), "a/1", None)
            .await
            .unwrap()
    );
    assert!(worker.next_jobs(10, WAIT).await.unwrap().is_empty());
}

/// Found 2026-12-07: a fetch asking for more than the consumer may hand
/// out (`max_ack_pending`) stayed open on the server until `ack_wait`
/// passed and came back full of redeliveries of jobs still held (60
/// deliveries of 20 jobs in 660 s); the no-wait fetch now has an expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ack_pending_holds_across_fetches() {
    let nats = NatsServer::start().unwrap();
    let settings = QueueSettings {
        max_ack_pending: 5,
        ..QueueSettings::default()
    };
    let (coordinator, worker) = queues(&nats, settings).await;
    for i in 0..20 {
        let id = format!("j{i}");
        coordinator
            .publish_job(&job(&id, v1::Priority::Ci), &id, None)
            .await
            .unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.extend(worker.next_jobs(20, WAIT).await.unwrap());
    }
    assert_eq!(held.len(), 5, "no more than max_ack_pending unacked at once");
    held.pop().unwrap().ack().await.unwrap();
    let more = worker.next_jobs(20, WAIT).await.unwrap();
    assert_eq!(more.len(), 1, "one acked, one more delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_deliveries_is_reported_dead_exactly_once() {
    let nats = NatsServer::start().unwrap();
    let settings = QueueSettings {
        max_deliver: 2,
        ack_wait: Duration::from_secs(1),
        ..QueueSettings::default()
    };
    let (coordinator, worker) = queues(&nats, settings).await;
    coordinator
        .publish_job(&job("x", v1::Priority::Ci), "x", None)
        .await
        .unwrap();
    for attempt in 1..=2 {
        let d = worker
            .next_jobs(1, Duration::from_secs(5))
            .await
            .unwrap()
            .pop()
            .unwrap_or_else(|| panic!("delivery {attempt} missing"));
        assert_eq!(d.attempt, attempt);
        d.nak(Duration::ZERO).await.unwrap();
    }
    assert!(
        worker
            .next_jobs(1, Duration::from_secs(2))
            .await
            .unwrap()
            .is_empty()
    );
    let mut dead = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        dead.extend(coordinator.next_dead_jobs(WAIT).await.unwrap());
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].digest, "x");
}

/// A results consumer an older build created (60 s `ack_wait`) takes the
/// new one when the queue is opened: a coordinator killed holding results
/// costs the others `RESULTS_ACK_WAIT`, not a minute.
#[tokio::test]
async fn an_older_results_consumer_takes_the_current_ack_wait() {
    use async_nats::jetstream::{consumer, stream};
    use strata_worker::queue::names::{RESULTS_CONSUMER, RESULTS_STREAM, RESULTS_SUBJECT};
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let old = js
        .create_stream(stream::Config {
            name: RESULTS_STREAM.to_owned(),
            subjects: vec![RESULTS_SUBJECT.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    old.create_consumer(consumer::pull::Config {
        durable_name: Some(RESULTS_CONSUMER.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 10_000,
        ..Default::default()
    })
    .await
    .unwrap();
    NatsQueue::create(client.clone(), &QueueSettings::default())
        .await
        .unwrap();
    let stream = js.get_stream(RESULTS_STREAM).await.unwrap();
    let info = stream.consumer_info(RESULTS_CONSUMER).await.unwrap();
    assert_eq!(info.config.ack_wait, strata_worker::queue::nats::RESULTS_ACK_WAIT);
}
