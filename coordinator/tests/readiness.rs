//! Readiness follows NATS: a `strata coordinator` process reports
//! `NOT_SERVING` on `grpc.health.v1` while its NATS server is gone and
//! `SERVING` again once it is back (what a Kubernetes gRPC readiness probe
//! asks), while the health service itself keeps answering.

use std::time::{Duration, Instant};

use strata_harness::Cluster;
use strata_harness::fixtures::{self, build_db};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
/// Bound on reaching the coordinator's gRPC port.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// The health names that follow NATS.
const NAMES: [&str; 4] = [
    "",
    "strata.v1.AdminService",
    "strata.v1.ScanService",
    "strata.v1.FleetService",
];

async fn status(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
        .into_inner()
        .status()
}

/// Waits up to `limit` until every name reports `want`; returns how long it took.
async fn wait_for(
    cluster: &Cluster,
    health: &mut HealthClient<Channel>,
    want: ServingStatus,
    limit: Duration,
) -> Duration {
    let asked = Instant::now();
    loop {
        let mut seen = Vec::new();
        for name in NAMES {
            seen.push((name, status(health, name).await));
        }
        if seen.iter().all(|(_, s)| *s == want) {
            return asked.elapsed();
        }
        assert!(
            asked.elapsed() < limit,
            "not {want:?} within {limit:?}: {seen:?}\n{}",
            cluster.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_nats_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let mut cluster = Cluster::builder(STRATA).workers(0).db(&db).start().unwrap();
    let mut health = HealthClient::new(fixtures::coordinator_channel(&cluster, CONNECT_LIMIT).await);
    wait_for(
        &cluster,
        &mut health,
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;

    cluster.nats_mut().stop();
    // Checked every second: the client sees the socket close at once.
    let took = wait_for(
        &cluster,
        &mut health,
        ServingStatus::NotServing,
        Duration::from_secs(10),
    )
    .await;
    eprintln!("NOT_SERVING {took:?} after NATS stopped");
    // `/readyz` on the metrics port says the same (set in the same step).
    assert_eq!(readyz(&cluster).await, 503);

    cluster.nats_mut().restart().unwrap();
    // async-nats reconnects with a backoff of a few seconds at most.
    let took = wait_for(
        &cluster,
        &mut health,
        ServingStatus::Serving,
        Duration::from_secs(30),
    )
    .await;
    eprintln!("SERVING {took:?} after NATS restarted");
    assert_eq!(readyz(&cluster).await, 200);
}

/// The status of `GET /readyz` on the coordinator's metrics port.
async fn readyz(cluster: &Cluster) -> u16 {
    let url = format!(
        "{}/readyz",
        cluster.coordinator_metrics_url().trim_end_matches("/metrics")
    );
    reqwest::get(&url).await.unwrap().status().as_u16()
}
