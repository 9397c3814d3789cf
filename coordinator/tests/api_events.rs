//! `FleetService.WatchEvents` over a real gRPC socket (an in-process
//! `ClusterSandbox`): a client resumes from its sequence after a disconnect
//! and gets exactly what it missed, then live events; filters; bad
//! requests; the stream ends when the log is closed (server shutdown); and
//! `GetStatus` reports the log.

use std::time::Duration;

use strata_harness::ClusterSandbox;
use strata_proto::v1::{
    self, admin_service_client::AdminServiceClient, fleet_service_client::FleetServiceClient,
};
use tonic::Streaming;
use tonic::transport::Channel;

fn event(i: u64, kind: v1::EventKind, severity: v1::Severity, reference: &str) -> v1::FleetEvent {
    v1::FleetEvent {
        kind: kind.into(),
        severity: severity.into(),
        image_reference: reference.into(),
        vulnerability_id: format!("CVE-{i}"),
        ..Default::default()
    }
}

async fn watch(
    client: &mut FleetServiceClient<Channel>,
    req: v1::WatchEventsRequest,
) -> Streaming<v1::FleetEvent> {
    client.watch_events(req).await.unwrap().into_inner()
}

async fn take(stream: &mut Streaming<v1::FleetEvent>, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream goes on");
        out.push(e.sequence);
    }
    out
}

/// Nothing more arrives for a while.
async fn quiet(stream: &mut Streaming<v1::FleetEvent>) {
    let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(next.is_err(), "unexpected: {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_resumes_filters_and_ends() {
    let sandbox = ClusterSandbox::builder()
        .workers(0)
        .grpc(true)
        .start()
        .await
        .unwrap();
    let log = sandbox.coordinator().event_log().clone();
    use v1::EventKind::{FindingNew, FindingResolved, ImageSeverity};
    use v1::Severity::{Critical, High, Low, Medium};
    let first = vec![
        event(1, FindingNew, High, "ghcr.io/acme/api:1"),
        event(2, FindingNew, Low, "ghcr.io/acme/api:1"),
        event(3, FindingResolved, Critical, "ghcr.io/other/db:2"),
        event(4, ImageSeverity, Critical, "ghcr.io/acme/team/web@sha256:ab"),
        event(5, FindingNew, Medium, "localhost:5000/acme/api:7"),
    ];
    assert_eq!(log.publish(first).await.unwrap().len(), 5);

    let channel = tonic::transport::Endpoint::from_shared(sandbox.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FleetServiceClient::new(channel.clone());

    // From the oldest kept; the client goes away after three.
    let mut stream = watch(&mut client, v1::WatchEventsRequest::default()).await;
    assert_eq!(take(&mut stream, 3).await, [1, 2, 3]);
    drop(stream);
    // Published while it is away.
    let missed = vec![
        event(6, FindingNew, High, "ghcr.io/acme/api:2"),
        event(7, FindingResolved, Low, "ghcr.io/acme/api:2"),
    ];
    assert_eq!(log.publish(missed).await.unwrap().len(), 2);
    // It resumes after the last one it got: exactly what it missed, then live.
    let mut stream = watch(
        &mut client,
        v1::WatchEventsRequest {
            after_sequence: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(take(&mut stream, 4).await, [4, 5, 6, 7]);
    quiet(&mut stream).await;
    log.publish(vec![event(8, FindingNew, Critical, "ghcr.io/acme/api:3")])
        .await
        .unwrap();
    assert_eq!(take(&mut stream, 1).await, [8]);
    // The same event found again is not told again.
    log.publish(vec![event(8, FindingNew, Critical, "ghcr.io/acme/api:3")])
        .await
        .unwrap();
    quiet(&mut stream).await;

    // Filters: severity, kinds, repository glob (`*` within a segment).
    for (req, want) in [
        (
            v1::WatchEventsRequest {
                min_severity: v1::Severity::High.into(),
                ..Default::default()
            },
            vec![1, 3, 4, 6, 8],
        ),
        (
            v1::WatchEventsRequest {
                kinds: vec![FindingResolved.into(), ImageSeverity.into()],
                ..Default::default()
            },
            vec![3, 4, 7],
        ),
        (
            v1::WatchEventsRequest {
                repository_glob: "ghcr.io/acme/*".into(),
                ..Default::default()
            },
            vec![1, 2, 6, 7, 8],
        ),
        (
            v1::WatchEventsRequest {
                repository_glob: "**/acme/**".into(),
                min_severity: v1::Severity::Critical.into(),
                after_sequence: 1,
                ..Default::default()
            },
            vec![4, 8],
        ),
    ] {
        let mut stream = watch(&mut client, req.clone()).await;
        assert_eq!(take(&mut stream, want.len()).await, want, "{req:?}");
        quiet(&mut stream).await;
    }

    // Requests that cannot be served.
    for (req, code) in [
        (
            v1::WatchEventsRequest {
                repository_glob: "ghcr.io/[".into(),
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
        (
            v1::WatchEventsRequest {
                kinds: vec![99],
                ..Default::default()
            },
            tonic::Code::InvalidArgument,
        ),
        (
            v1::WatchEventsRequest {
                after_sequence: 1000,
                ..Default::default()
            },
            tonic::Code::OutOfRange,
        ),
    ] {
        let status = client.watch_events(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }

    let status = AdminServiceClient::new(channel)
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let events = status.events.expect("events status");
    assert_eq!((events.last_sequence, events.events, events.webhooks), (8, 8, 0));

    // Server shutdown closes the log: open streams end, so the server's
    // graceful shutdown is not held open.
    let stopped = tokio::time::timeout(Duration::from_secs(20), sandbox.stop())
        .await
        .expect("the sandbox stops with a watch open");
    stopped.unwrap();
    assert!(log.is_closed());
    let end = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the stream ends");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}
