//! The gRPC API: one tonic server carrying Strata's services plus standard
//! health checking (`grpc.health.v1`) and server reflection, so `grpcurl`
//! and Kubernetes probes work out of the box.
//!
//! [`serve`] takes its listener and shutdown signal as parameters (as
//! mini-redis does), so tests start it on `127.0.0.1:0`.

mod admin;
pub mod auth;
mod fleet;
pub mod readiness;
mod report_reply;
mod scan;

pub use admin::{AdminApi, NatsHandle};
pub use auth::{Security, SecurityError, SecurityFiles};
pub use fleet::FleetApi;
pub use scan::ScanApi;

use std::future::Future;
use tokio::net::TcpListener;

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

/// Who made a request, for audit logs: `NAME@peer` when a token or a client
/// certificate named the caller, else the peer address.
pub(crate) fn caller<T>(request: &tonic::Request<T>) -> String {
    let peer = request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    match request.extensions().get::<auth::CallerName>() {
        Some(name) => format!("{}@{peer}", name.0),
        None => peer,
    }
}

/// The audit line of a request the server refused to act on for who made
/// it (the registry policy, a credential the registry refused): the caller,
/// the call and the reference, escaped, with the rule in the error.
pub(crate) fn audit_refusal(who: &str, call: &str, reference: &str, err: &CoordinatorError) {
    if let CoordinatorError::Unauthorized(reason) = err {
        tracing::warn!(
            caller = %who,
            call,
            reference = %strata_proto::text::escape_controls(reference),
            reason = %strata_proto::text::escape_controls(reason),
            "request refused"
        );
    }
}

/// One span per call, child of the caller's W3C `traceparent` when it sends
/// one: a CI job's trace then spans submit → dispatch → analysis → match.
fn request_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", path = %request.uri().path());
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128);
    strata_worker::telemetry::propagation::set_parent_from_traceparent(&span, traceparent);
    span
}

/// Refuses references that make the server read its own filesystem
/// (`oci-dir:`, `docker-archive:`, `dir:`) unless it was started with
/// `--allow-local-images`.
pub(crate) fn check_transport(
    coordinator: &crate::cluster::Coordinator,
    reference: &str,
) -> Result<(), Status> {
    let local = ["oci-dir:", "docker-archive:", "dir:"]
        .iter()
        .find(|t| reference.trim_start().starts_with(*t));
    match local {
        Some(t) if !coordinator.config().local_images_over_api => Err(Status::permission_denied(format!(
            "{t} references name files on the server: it was not started with --allow-local-images \
             (push the image to a registry, or scan it locally with `strata scan`)"
        ))),
        _ => Ok(()),
    }
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

/// Accepted connections with `TCP_NODELAY`, as tonic's own `serve` sets
/// them. Without it, the last segment of a reply larger than one segment
/// (a report) waits behind Nagle for the client's delayed ACK: about 40 ms
/// added to every such call (loadtest `api_latency` measured it: p50 44 ms
/// with the process mostly idle).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serve `services` secured by `security` until `shutdown` completes.
pub async fn serve_all(
    listener: TcpListener,
    services: Services,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_all_with_health(listener, services, security, |_| {}, shutdown).await
}

/// As [`serve_all`], handing `health` the health reporter once every
/// service is marked `SERVING` (before serving): the coordinator role gives
/// it to [`readiness::follow_nats`].
pub async fn serve_all_with_health(
    listener: TcpListener,
    services: Services,
    security: Security,
    health: impl FnOnce(tonic_health::server::HealthReporter) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Services { admin, scan, fleet } = services;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<AdminApi>>()
        .await;
    // Reflection in both versions: `grpc.reflection.v1`, and `v1alpha` for
    // the clients that speak only it (grpcurl before 1.9, Python's
    // grpcio-reflection, Postman, Evans).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    if scan.is_some() {
        health_reporter.set_serving::<ScanServiceServer<ScanApi>>().await;
    }
    if fleet.is_some() {
        health_reporter
            .set_serving::<FleetServiceServer<FleetApi>>()
            .await;
    }
    health(health_reporter);
    let mut server = tonic::transport::Server::builder().trace_fn(request_span);
    if let Some(tls) = security.server_tls_config() {
        auth::install_crypto_provider();
        server = server.tls_config(tls)?;
    }
    // Tokens guard Strata's own services; health and reflection stay open
    // for probes and discovery.
    let auth = security.interceptor();
    server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AdminServiceServer::with_interceptor(admin, auth.clone()))
        .add_optional_service(scan.map(|s| {
            tonic::service::interceptor::InterceptedService::new(
                report_reply::ScanServiceFast::new(s),
                auth.clone(),
            )
        }))
        .add_optional_service(fleet.map(|f| FleetServiceServer::with_interceptor(f, auth.clone())))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use tokio::net::{TcpListener, TcpStream};

    /// The server's own sockets must not wait on Nagle: a reply written as
    /// headers, data and trailers would otherwise stall on the client's
    /// delayed ACK.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::incoming(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
