//! `AdminService`: the process's own state, for SREs and probes.

use std::time::Instant;

use strata_proto::v1::{self, admin_service_server::AdminService};
use tonic::{Request, Response, Status};

/// A NATS connection the process holds, reported by `GetStatus`.
#[derive(Clone, Debug)]
pub struct NatsHandle {
    pub client: async_nats::Client,
    /// The server URL without credentials (never log or report credentials).
    pub url: String,
}

/// State behind `AdminService`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminApi {
    started: Instant,
    nats: Option<NatsHandle>,
}

impl AdminApi {
    /// `nats` is `None` in single-process mode (in-process queue).
    pub fn new(nats: Option<NatsHandle>) -> Self {
        AdminApi {
            started: Instant::now(),
            nats,
        }
    }

    fn nats_status(&self) -> v1::NatsStatus {
        let Some(handle) = &self.nats else {
            return v1::NatsStatus {
                state: v1::NatsState::NotConfigured.into(),
                url: String::new(),
            };
        };
        let state = match handle.client.connection_state() {
            async_nats::connection::State::Connected => v1::NatsState::Connected,
            async_nats::connection::State::Disconnected => v1::NatsState::Disconnected,
            async_nats::connection::State::Pending => v1::NatsState::Connecting,
        };
        v1::NatsStatus {
            state: state.into(),
            url: handle.url.clone(),
        }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn get_status(
        &self,
        _request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        Ok(Response::new(v1::GetStatusResponse {
            version: crate::VERSION.to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            nats: Some(self.nats_status()),
            // Workers, queues, the vulnerability database and the layer cache
            // are reported once the cluster roles exist; until then the
            // lists are empty rather than invented.
            workers: Vec::new(),
            queues: Vec::new(),
            vulndb: None,
            layer_cache: None,
        }))
    }
}
