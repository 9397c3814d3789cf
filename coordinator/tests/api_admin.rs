//! The gRPC server over a real loopback socket: AdminService, health and
//! reflection. (The NATS-connected variant lives in the harness crate's
//! tests, which start a real nats-server.)

use std::time::Duration;

use strata_coordinator::api::{self, AdminApi};
use strata_proto::v1::{self, admin_service_client::AdminServiceClient};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn start() -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        api::serve(listener, AdminApi::new(None), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), tx, server)
}

async fn channel(url: String) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_status_round_trips_without_nats() {
    let (url, stop, server) = start().await;
    let mut client = AdminServiceClient::connect(url).await.unwrap();
    let status = client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, strata_coordinator::VERSION);
    assert!(status.uptime_seconds < 60);
    let nats = status.nats.unwrap();
    assert_eq!(nats.state(), v1::NatsState::NotConfigured);
    assert!(nats.url.is_empty());

    // Graceful shutdown ends the server task.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let (url, _stop, _server) = start().await;
    let mut health = HealthClient::new(channel(url).await);
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);
    let admin = health
        .check(HealthCheckRequest {
            service: "strata.v1.AdminService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(admin.status(), ServingStatus::Serving);
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Nope".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_strata_services() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let (url, _stop, _server) = start().await;
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["strata.v1.AdminService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}

/// Older clients (grpcurl before 1.9, Python's grpcio-reflection, Postman,
/// Evans) speak only `grpc.reflection.v1alpha`.
#[tokio::test]
async fn reflection_answers_v1alpha_clients_too() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let (url, _stop, _server) = start().await;
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "strata.v1.AdminService",
        "strata.v1.ScanService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}
