//! `AdminService` over a real socket, with the coordinator holding a real
//! NATS connection to a harness nats-server: the reported connection state
//! follows the server going away and coming back.

use std::time::{Duration, Instant};

use strata_coordinator::api::{self, AdminApi, NatsHandle};
use strata_harness::NatsServer;
use strata_proto::v1::{self, admin_service_client::AdminServiceClient};
use tokio::net::TcpListener;

async fn nats_state(client: &mut AdminServiceClient<tonic::transport::Channel>) -> v1::GetStatusResponse {
    client
        .get_status(v1::GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner()
}

/// Polls until the reported NATS state is one of `want` (bounded).
async fn wait_for_state(client: &mut AdminServiceClient<tonic::transport::Channel>, want: &[v1::NatsState]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = nats_state(client).await;
        let got = status.nats.unwrap_or_default().state();
        if want.contains(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "NATS state stayed {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_status_reports_version_uptime_and_nats_connection() {
    let mut nats = NatsServer::start().expect("start nats-server");
    let url = nats.url();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(&url)
        .await
        .expect("connect to nats");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin = AdminApi::new(Some(NatsHandle {
        client,
        url: url.clone(),
    }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, admin, async {
        let _ = stop_rx.await;
    }));

    let mut grpc = AdminServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("grpc connect");
    // `retry_on_initial_connect` returns before the first connection is up:
    // wait for it rather than racing it.
    wait_for_state(&mut grpc, &[v1::NatsState::Connected]).await;
    let status = nats_state(&mut grpc).await;
    assert_eq!(status.version, strata_coordinator::VERSION);
    assert!(status.uptime_seconds < 120, "uptime {}", status.uptime_seconds);
    let reported = status.nats.unwrap();
    assert_eq!(reported.state(), v1::NatsState::Connected);
    assert_eq!(reported.url, url);

    // The server goes away: the state says so; it comes back on the same
    // port and store: the client reconnects and the state says so.
    nats.stop();
    // While it retries, async-nats reports Disconnected or Pending (Connecting).
    wait_for_state(
        &mut grpc,
        &[v1::NatsState::Disconnected, v1::NatsState::Connecting],
    )
    .await;
    nats.restart().expect("restart nats-server");
    wait_for_state(&mut grpc, &[v1::NatsState::Connected]).await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
