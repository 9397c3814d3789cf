//! The durable event logs against what they run on: the JetStream stream
//! `STRATA_EVENTS` on a real nats-server (publish, read after a sequence,
//! live tail, a coordinator "restart" — a new log on the same server —
//! resuming with nothing lost or told twice, a restart of the server
//! itself), and the local log across reopening its `redb` file.

use std::time::Duration;

use strata_coordinator::notify::{EVENTS_STREAM, EventLog, LogStats, event_id};
use strata_harness::NatsServer;
use strata_proto::v1;

fn event(vuln: &str, severity: v1::Severity) -> v1::FleetEvent {
    v1::FleetEvent {
        kind: v1::EventKind::FindingNew.into(),
        severity: severity.into(),
        image_reference: "ghcr.io/acme/api:1".into(),
        image_digest: "sha256:aa".into(),
        vulnerability_id: vuln.into(),
        package: Some(v1::Package {
            ecosystem: "Debian".into(),
            name: "openssl".into(),
            version: "3.0.1".into(),
            ..Default::default()
        }),
        vulndb_version: "db-1".into(),
        ..Default::default()
    }
}

async fn jetstream(url: &str) -> (async_nats::Client, EventLog) {
    let client = async_nats::connect(url).await.unwrap();
    let log = EventLog::jetstream(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .unwrap();
    (client, log)
}

fn ids(events: &[v1::FleetEvent]) -> Vec<(u64, &str)> {
    events
        .iter()
        .map(|e| (e.sequence, e.vulnerability_id.as_str()))
        .collect()
}

async fn next_live(live: &mut tokio::sync::broadcast::Receiver<v1::FleetEvent>) -> v1::FleetEvent {
    // Generous: after a broker restart the tail notices its consumer is
    // gone at its next pull, then sets it up again.
    tokio::time::timeout(Duration::from_secs(45), live.recv())
        .await
        .expect("a live event within 45 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_log_resumes_across_restarts_without_duplicates() {
    let mut nats = NatsServer::start().unwrap();
    let (client, log) = jetstream(&nats.url()).await;
    let mut live = log.subscribe();

    // Duplicates within one publish and across publishes are dropped.
    let kept = log
        .publish(vec![
            event("CVE-1", v1::Severity::High),
            event("CVE-2", v1::Severity::Low),
            event("CVE-1", v1::Severity::High),
        ])
        .await
        .unwrap();
    assert_eq!(ids(&kept), [(1, "CVE-1"), (2, "CVE-2")]);
    assert!(kept.iter().all(|e| e.at_unix_ms > 0));
    assert!(
        log.publish(vec![event("CVE-2", v1::Severity::Low)])
            .await
            .unwrap()
            .is_empty()
    );
    // The live tail sees them, in order, with their stream sequences.
    assert_eq!(next_live(&mut live).await.sequence, 1);
    assert_eq!(next_live(&mut live).await.vulnerability_id, "CVE-2");

    assert_eq!(
        ids(&log.after(0, 10).await.unwrap()),
        [(1, "CVE-1"), (2, "CVE-2")]
    );
    assert_eq!(ids(&log.after(1, 10).await.unwrap()), [(2, "CVE-2")]);
    assert_eq!(log.after(0, 1).await.unwrap().len(), 1);
    assert!(log.after(2, 10).await.unwrap().is_empty());
    assert_eq!(
        log.stats().await.unwrap(),
        LogStats {
            last_sequence: 2,
            kept: 2
        }
    );

    // The stream as documented: subjects by kind and severity, the limits,
    // and the duplicate window.
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.max_age, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(info.config.duplicate_window, Duration::from_secs(3600));
    assert!(info.config.max_bytes > 0);
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), "strata.events.finding_new.high");
    let second = stream.get_raw_message(2).await.unwrap();
    assert_eq!(second.subject.as_str(), "strata.events.finding_new.low");
    let msg_id = first.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned());
    assert_eq!(msg_id, Some(event_id(&kept[0])));

    // A coordinator "restart": a new log on a new connection finds the
    // sequence where it was, and the same changes found again are dropped.
    drop(live);
    drop(log);
    client.drain().await.unwrap();
    let (client, log) = jetstream(&nats.url()).await;
    assert_eq!(log.last_sequence().await.unwrap(), 2);
    let kept = log
        .publish(vec![
            event("CVE-1", v1::Severity::High),
            event("CVE-2", v1::Severity::Low),
            event("CVE-3", v1::Severity::Critical),
        ])
        .await
        .unwrap();
    assert_eq!(ids(&kept), [(3, "CVE-3")]);
    assert_eq!(
        ids(&log.after(0, 100).await.unwrap()),
        [(1, "CVE-1"), (2, "CVE-2"), (3, "CVE-3")]
    );

    // The broker restarts too (file storage): the log and its duplicate
    // window are still there, and the live tail comes back by itself.
    let mut live = log.subscribe();
    nats.restart().unwrap();
    let kept = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match log
                .publish(vec![
                    event("CVE-3", v1::Severity::Critical),
                    event("CVE-4", v1::Severity::Medium),
                ])
                .await
            {
                Ok(kept) => return kept,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("publishing after the broker restarted");
    assert_eq!(ids(&kept), [(4, "CVE-4")]);
    assert_eq!(next_live(&mut live).await.sequence, 4);
    assert_eq!(
        ids(&log.after(2, 100).await.unwrap()),
        [(3, "CVE-3"), (4, "CVE-4")]
    );
    drop(log);
    client.drain().await.unwrap();
}

#[tokio::test]
async fn local_log_resumes_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let open = || EventLog::local(strata_coordinator::cluster::kv::open_local_db(&path).unwrap()).unwrap();
    {
        let log = open();
        let kept = log
            .publish(vec![
                event("CVE-1", v1::Severity::High),
                event("CVE-2", v1::Severity::Low),
            ])
            .await
            .unwrap();
        assert_eq!(ids(&kept), [(1, "CVE-1"), (2, "CVE-2")]);
    }
    let log = open();
    assert_eq!(log.last_sequence().await.unwrap(), 2);
    let kept = log
        .publish(vec![
            event("CVE-2", v1::Severity::Low),
            event("CVE-3", v1::Severity::High),
        ])
        .await
        .unwrap();
    assert_eq!(ids(&kept), [(3, "CVE-3")]);
    assert_eq!(
        ids(&log.after(1, 10).await.unwrap()),
        [(2, "CVE-2"), (3, "CVE-3")]
    );
}
