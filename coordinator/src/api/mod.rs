//! The gRPC API: one tonic server carrying Strata's services plus standard
//! health checking (`grpc.health.v1`) and server reflection, so `grpcurl`
//! and Kubernetes probes work out of the box.
//!
//! [`serve`] takes its listener and shutdown signal as parameters (as
//! mini-redis does), so tests start it on `127.0.0.1:0`.

mod admin;
pub mod auth;
mod fleet;
mod scan;

pub use admin::{AdminApi, NatsHandle};
pub use auth::Security;
pub use fleet::FleetApi;
pub use scan::ScanApi;

use std::future::Future;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use strata_proto::v1::admin_service_server::AdminServiceServer;
use strata_proto::v1::fleet_service_server::FleetServiceServer;
use strata_proto::v1::scan_service_server::ScanServiceServer;
use tonic::Status;

use crate::cluster::CoordinatorError;

/// The one mapping from coordinator errors to gRPC status codes.
pub fn status_of(err: CoordinatorError) -> Status {
    match err {
        CoordinatorError::InvalidArgument(m) => Status::invalid_argument(m),
        CoordinatorError::NotFound(m) => Status::not_found(m),
        CoordinatorError::Unauthorized(m) => Status::permission_denied(m),
        CoordinatorError::Unavailable(m) => Status::unavailable(m),
        CoordinatorError::Full(m) => Status::resource_exhausted(m),
        CoordinatorError::Deadline(m) => Status::deadline_exceeded(m),
        CoordinatorError::Internal(m) => Status::internal(m),
    }
}

/// Who made a request, for audit logs (the peer address until tokens exist).
pub(crate) fn caller<T>(request: &tonic::Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Errors starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// What one gRPC server carries: the admin API always, the scan and fleet
/// APIs when a coordinator runs behind it.
pub struct Services {
    pub admin: AdminApi,
    pub scan: Option<ScanApi>,
    pub fleet: Option<FleetApi>,
}

impl Services {
    /// Every service, backed by `coordinator`.
    pub fn of(coordinator: &crate::cluster::Coordinator, admin: AdminApi) -> Services {
        Services {
            admin: admin.with_coordinator(coordinator.clone()),
            scan: Some(ScanApi::new(coordinator.clone())),
            fleet: Some(FleetApi::new(coordinator.clone())),
        }
    }
}

/// Serve the admin API alone on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    admin: AdminApi,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let services = Services {
        admin,
        scan: None,
        fleet: None,
    };
    serve_all(listener, services, Security::default(), shutdown).await
}

/// Serve `services` secured by `security` until `shutdown` completes.
pub async fn serve_all(
    listener: TcpListener,
    services: Services,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Services { admin, scan, fleet } = services;
    let _ = &security; // TLS and tokens: see auth.rs
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    if scan.is_some() {
        health_reporter.set_serving::<ScanServiceServer<ScanApi>>().await;
    }
    if fleet.is_some() {
        health_reporter.set_serving::<FleetServiceServer<FleetApi>>().await;
    }
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(AdminServiceServer::new(admin))
        .add_optional_service(scan.map(ScanServiceServer::new))
        .add_optional_service(fleet.map(FleetServiceServer::new))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
