//! Readiness that follows the coordinator's NATS connection.
//!
//! A coordinator without NATS answers nothing useful (no submit, no report,
//! no fleet state), so while its connection is not `Connected` the health
//! service reports `NOT_SERVING` for the server as a whole (`""`) and for
//! Strata's services, and `SERVING` again once it is: a Kubernetes gRPC
//! readiness probe then takes the pod out of its Service until NATS is
//! back, and clients with several `--server` addresses go to another
//! coordinator. From shutdown on (the drain) they stay `NOT_SERVING`.
//!
//! The same state is `/readyz` on the metrics port (the `ready` flag), for
//! probes that cannot speak TLS to the gRPC port.
//!
//! Liveness must not follow this: restarting a coordinator because NATS is
//! down only adds restarts to an outage. `strata serve` (no NATS) never
//! calls this and stays `SERVING`.

use std::future::Future;
use std::time::Duration;

use async_nats::connection::State;
use strata_proto::v1::admin_service_server::AdminServiceServer;
use strata_proto::v1::fleet_service_server::FleetServiceServer;
use strata_proto::v1::scan_service_server::ScanServiceServer;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::{AdminApi, FleetApi, ScanApi};

/// How often the connection state is looked at.
const PERIOD: Duration = Duration::from_secs(1);

/// The health names that follow NATS: the whole server and every Strata service.
const FOLLOWING: [&str; 4] = [
    "",
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
    <ScanServiceServer<ScanApi> as NamedService>::NAME,
    <FleetServiceServer<FleetApi> as NamedService>::NAME,
];

/// Spawns the task that sets `health` from `client`'s connection state
/// every second (at once, then on each change) until `shutdown` completes;
/// then it sets `NOT_SERVING` and ends.
pub fn follow_nats(
    health: HealthReporter,
    client: async_nats::Client,
    ready: strata_worker::telemetry::http::Ready,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticks.tick() => {}
            }
            let state = client.connection_state();
            let status = status_of(&state);
            if last == Some(status) {
                continue;
            }
            match status {
                ServingStatus::Serving if last.is_some() => {
                    tracing::info!("nats connected again: serving");
                }
                ServingStatus::Serving => {}
                _ => tracing::warn!(nats = ?state, "nats not connected: health NOT_SERVING until it is"),
            }
            set(&health, status).await;
            ready.store(
                status == ServingStatus::Serving,
                std::sync::atomic::Ordering::Relaxed,
            );
            last = Some(status);
        }
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        set(&health, ServingStatus::NotServing).await;
    })
}

fn status_of(state: &State) -> ServingStatus {
    match state {
        State::Connected => ServingStatus::Serving,
        State::Pending | State::Disconnected => ServingStatus::NotServing,
    }
}

async fn set(health: &HealthReporter, status: ServingStatus) {
    for name in FOLLOWING {
        health.set_service_status(name, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connected_client_serves() {
        assert_eq!(status_of(&State::Connected), ServingStatus::Serving);
        assert_eq!(status_of(&State::Pending), ServingStatus::NotServing);
        assert_eq!(status_of(&State::Disconnected), ServingStatus::NotServing);
    }
}
