//! The in-process queue's semantics (the NATS transport is tested against a
//! real server in `tests/tests/queue_nats.rs`, in the harness crate).

use std::time::Duration;

use strata_proto::v1;

use super::*;

fn job(digest: &str, priority: v1::Priority) -> v1::LayerJob {
    v1::LayerJob {
        digest: digest.to_owned(),
        priority: priority.into(),
        ..Default::default()
    }
}

fn settings() -> QueueSettings {
    QueueSettings {
        max_deliver: 3,
        ..QueueSettings::default()
    }
}

const SHORT: Duration = Duration::from_millis(50);

#[tokio::test]
async fn duplicate_message_ids_queue_once_until_acked() {
    let q = Queue::memory(settings());
    assert!(
        q.publish_job(&job("a", v1::Priority::Ci), "a/1", None)
            .await
            .unwrap()
    );
    assert!(
        !q.publish_job(&job("a", v1::Priority::Ci), "a/1", None)
            .await
            .unwrap()
    );
    let got = q.next_jobs(10, SHORT).await.unwrap();
    assert_eq!(got.len(), 1);
    // Still held: a duplicate publish stays a duplicate.
    assert!(
        !q.publish_job(&job("a", v1::Priority::Ci), "a/1", None)
            .await
            .unwrap()
    );
    for d in got {
        d.ack().await.unwrap();
    }
    assert!(q.next_jobs(10, SHORT).await.unwrap().is_empty());
}

#[tokio::test]
async fn ci_jobs_come_before_background_jobs() {
    let q = Queue::memory(settings());
    q.publish_job(&job("bg1", v1::Priority::Background), "bg1", None)
        .await
        .unwrap();
    q.publish_job(&job("bg2", v1::Priority::Background), "bg2", None)
        .await
        .unwrap();
    q.publish_job(&job("ci1", v1::Priority::Ci), "ci1", Some("00-abc"))
        .await
        .unwrap();
    let got = q.next_jobs(1, SHORT).await.unwrap();
    assert_eq!(got[0].job.digest, "ci1");
    assert_eq!(got[0].traceparent.as_deref(), Some("00-abc"));
    let lag = q.lag().await.unwrap();
    assert_eq!(
        lag[0],
        Lag {
            priority: Priority::Ci,
            pending: 0,
            in_flight: 1
        }
    );
    assert_eq!(
        lag[1],
        Lag {
            priority: Priority::Background,
            pending: 2,
            in_flight: 0
        }
    );
    let rest = q.next_jobs(5, SHORT).await.unwrap();
    let digests: Vec<_> = rest.iter().map(|d| d.job.digest.as_str()).collect();
    assert_eq!(digests, ["bg1", "bg2"]);
}

#[tokio::test]
async fn a_dropped_or_naked_job_is_redelivered_then_dead_after_max_deliver() {
    let q = Queue::memory(settings());
    q.publish_job(&job("x", v1::Priority::Ci), "x", None)
        .await
        .unwrap();
    let first = q.next_jobs(1, SHORT).await.unwrap().pop().unwrap();
    assert_eq!(first.attempt, 1);
    drop(first); // the holder went away
    let second = q.next_jobs(1, SHORT).await.unwrap().pop().unwrap();
    assert_eq!(second.attempt, 2);
    second.nak(Duration::from_millis(20)).await.unwrap();
    assert!(
        q.next_jobs(1, Duration::ZERO).await.unwrap().is_empty(),
        "nak delay honoured"
    );
    let third = q
        .next_jobs(1, Duration::from_secs(2))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(third.attempt, 3);
    drop(third);
    assert!(q.next_jobs(1, SHORT).await.unwrap().is_empty());
    let dead = q.next_dead_jobs(SHORT).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].digest, "x");
    // Dead jobs free their id: the layer can be queued again.
    assert!(
        q.publish_job(&job("x", v1::Priority::Ci), "x", None)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_waiting_worker_wakes_when_a_job_arrives() {
    let q = Queue::memory(settings());
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.next_jobs(1, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    q.publish_job(&job("late", v1::Priority::Background), "late", None)
        .await
        .unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got[0].job.digest, "late");
}

#[tokio::test]
async fn max_ack_pending_and_max_jobs_bound_the_queue() {
    let q = Queue::memory(QueueSettings {
        max_ack_pending: 2,
        max_jobs: 3,
        ..settings()
    });
    for i in 0..3 {
        q.publish_job(&job(&i.to_string(), v1::Priority::Ci), &i.to_string(), None)
            .await
            .unwrap();
    }
    assert!(matches!(
        q.publish_job(&job("4", v1::Priority::Ci), "4", None).await,
        Err(QueueError::Full(_))
    ));
    let held = q.next_jobs(10, SHORT).await.unwrap();
    assert_eq!(held.len(), 2, "no more than max_ack_pending held at once");
    assert!(q.next_jobs(10, SHORT).await.unwrap().is_empty());
}

#[tokio::test]
async fn results_and_heartbeats_flow_to_the_coordinator() {
    let q = Queue::memory(settings());
    let mut beats = q.heartbeats().await.unwrap();
    let result = v1::LayerResult {
        digest: "d".into(),
        ..Default::default()
    };
    q.publish_result(&result, Some("tp")).await.unwrap();
    let got = q.next_results(10, SHORT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].result.digest, "d");
    assert_eq!(got[0].traceparent.as_deref(), Some("tp"));
    q.publish_heartbeat(&v1::WorkerHeartbeat {
        worker_id: "w1".into(),
        ..Default::default()
    })
    .await;
    use futures::StreamExt as _;
    let beat = tokio::time::timeout(Duration::from_secs(1), beats.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(beat.worker_id, "w1");
}
