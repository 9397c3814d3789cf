//! The harness's [`Cluster`] additions for several coordinators, on a real
//! `strata coordinator`: the indexed methods mean what the unindexed ones
//! do for coordinator 0, a coordinator spawned without waiting is then
//! waited for, and a [`TcpProxy`](strata_harness::TcpProxy) between it and
//! NATS, cut, makes NATS look gone to it (and restored, back).
//!
//! (Two coordinators at once need `--coordinator-id`, which lands with
//! active/active coordinators.)

#![allow(clippy::await_holding_lock)]

use std::time::{Duration, Instant};

use strata_harness::Cluster;
use strata_harness::fixtures::{self, build_db, serial};
use strata_proto::v1::{self, admin_service_client::AdminServiceClient};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const LIMIT: Duration = Duration::from_secs(30);

async fn nats_state(cluster: &Cluster) -> Option<v1::NatsState> {
    let channel = fixtures::connect_retrying(&cluster.grpc_url_of(0), LIMIT, Duration::from_millis(200))
        .await
        .ok()?;
    let status = AdminServiceClient::new(channel)
        .get_status(v1::GetStatusRequest {})
        .await
        .ok()?
        .into_inner();
    Some(status.nats?.state())
}

async fn wait_state(cluster: &Cluster, want: &[v1::NatsState]) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = nats_state(cluster).await;
        if got.is_some_and(|s| want.contains(&s)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "NATS state stayed {got:?}, wanted {want:?}\n--- coordinator ---\n{}",
            cluster.coordinator_log_of(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_coordinator_methods_and_a_cut_nats_proxy() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let mut cluster = Cluster::builder(STRATA)
        .workers(0)
        .db(&db)
        .coordinators(1)
        .start_coordinators_together(true)
        .coordinator_nats_via_proxy(0)
        .start()
        .unwrap();
    assert_eq!(cluster.coordinator_count(), 1);
    assert_eq!(cluster.grpc_url_of(0), cluster.grpc_url());
    assert_eq!(cluster.grpc_urls(), [cluster.grpc_url()]);
    assert_eq!(
        cluster.coordinator_metrics_url_of(0),
        cluster.coordinator_metrics_url()
    );
    assert!(cluster.coordinator_pid_of(0).is_some());
    assert_eq!(cluster.coordinator_pid_of(0), cluster.coordinator_pid());
    assert_eq!(cluster.coordinator_pid_of(1), None);
    // One coordinator: no --coordinator-id on its command line.
    assert!(!cluster.coordinator_log_of(0).contains("unexpected argument"));
    assert!(cluster.dir().join("logs/coordinator.log").is_file());

    let proxy = cluster.nats_proxy_of(0).expect("a proxy for coordinator 0");
    assert!(proxy.forwarded() >= 1, "the coordinator reached NATS through it");
    wait_state(&cluster, &[v1::NatsState::Connected]).await;
    proxy.cut();
    wait_state(
        &cluster,
        &[v1::NatsState::Disconnected, v1::NatsState::Connecting],
    )
    .await;
    // The workers' side (and the test's) still reaches NATS directly.
    async_nats::connect(cluster.nats().url()).await.unwrap();
    proxy.restore();
    wait_state(&cluster, &[v1::NatsState::Connected]).await;

    // Killed, spawned again without waiting, then waited for: same ports.
    let url = cluster.grpc_url_of(0);
    cluster.kill_coordinator_at(0);
    assert_eq!(cluster.coordinator_pid_of(0), None);
    cluster.start_coordinator_at(0).unwrap();
    assert!(cluster.start_coordinator_at(0).is_err(), "it runs already");
    cluster.wait_coordinator_ready_at(0).unwrap();
    assert!(cluster.coordinator_pid_of(0).is_some());
    assert_eq!(cluster.grpc_url_of(0), url);
    wait_state(&cluster, &[v1::NatsState::Connected]).await;
    assert_eq!(cluster.coordinator_log_of(0), cluster.coordinator_log());

    let exit = cluster.terminate_coordinator_at(0).unwrap();
    assert!(exit.success(), "{exit:?}\n{}", cluster.coordinator_log());
    cluster.restart_coordinator_at(0).unwrap();
    wait_state(&cluster, &[v1::NatsState::Connected]).await;
}
