//! The gRPC API: one tonic server carrying Strata's services plus standard
//! health checking (`grpc.health.v1`) and server reflection, so `grpcurl`
//! and Kubernetes probes work out of the box.
//!
//! [`serve`] takes its listener and shutdown signal as parameters (as
//! mini-redis does), so tests start it on `127.0.0.1:0`.

mod admin;

pub use admin::{AdminApi, NatsHandle};

use std::future::Future;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use strata_proto::v1::admin_service_server::AdminServiceServer;

/// Errors starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serve the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    admin: AdminApi,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(AdminServiceServer::new(admin))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
