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
#[derive(Clone)]
pub struct AdminApi {
    started: Instant,
    nats: Option<NatsHandle>,
    coordinator: Option<crate::cluster::Coordinator>,
    feeds: Option<crate::feeds::Feeds>,
}

impl AdminApi {
    /// `nats` is `None` in single-process mode (in-process queue).
    pub fn new(nats: Option<NatsHandle>) -> Self {
        AdminApi {
            started: Instant::now(),
            nats,
            coordinator: None,
            feeds: None,
        }
    }

    /// Report the advisory feeds the server polls (`--feed`).
    pub fn with_feeds(mut self, feeds: crate::feeds::Feeds) -> Self {
        self.feeds = Some(feeds);
        self
    }

    /// Report the coordinator's workers, queues, vulnerability data and layer cache too.
    pub fn with_coordinator(mut self, coordinator: crate::cluster::Coordinator) -> Self {
        self.coordinator = Some(coordinator);
        self
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
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        tracing::debug!(caller = %super::caller(&request), "status requested");
        let mut response = v1::GetStatusResponse {
            version: crate::VERSION.to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            nats: Some(self.nats_status()),
            // Without a coordinator (a bare admin server) these stay empty
            // rather than invented.
            workers: Vec::new(),
            queues: Vec::new(),
            vulndb: None,
            layer_cache: None,
            feeds: Vec::new(),
            events: None,
            gc: None,
            // Filled once coordinators hold leases (issue 17).
            coordinator_id: String::new(),
            coordinators: Vec::new(),
        };
        if let Some(feeds) = &self.feeds {
            response.feeds = feeds.status().into_iter().map(feed_status).collect();
        }
        if let Some(c) = &self.coordinator {
            let now = strata_proto::text::now_unix_ms();
            response.workers = c
                .workers(std::time::Duration::from_secs(60))
                .into_iter()
                .map(|(hb, age)| v1::WorkerInfo {
                    worker_id: hb.worker_id,
                    hostname: hb.hostname,
                    version: hb.version,
                    jobs_in_flight: hb.jobs_in_flight,
                    jobs_done: hb.jobs_done,
                    jobs_failed: hb.jobs_failed,
                    last_seen_unix_ms: now - i64::try_from(age.as_millis()).unwrap_or(0),
                })
                .collect();
            if let Ok(lags) = c.queue().lag().await {
                response.queues = lags
                    .into_iter()
                    .map(|l| v1::QueueLag {
                        priority: l.priority.to_proto().into(),
                        pending: l.pending,
                        in_flight: l.in_flight,
                    })
                    .collect();
            }
            let db = c.vulndb();
            response.vulndb = Some(v1::VulnDbInfo {
                version: db.status.version.clone(),
                built_unix_ms: db.status.built_unix_ms,
                records: db.status.advisories,
            });
            let log = c.event_log();
            let kept = log.stats().await.unwrap_or_default();
            let deliveries = log.deliveries().snapshot();
            response.events = Some(v1::EventsStatus {
                last_sequence: kept.last_sequence,
                events: kept.kept,
                webhooks: deliveries.webhooks,
                webhook_delivered: deliveries.delivered,
                webhook_retries: deliveries.retries,
                webhook_dead_letters: deliveries.dead_letters,
            });
            let stats = c.cache_stats();
            response.layer_cache = Some(v1::LayerCacheInfo {
                layers: c.layer_count().await.unwrap_or(0),
                hits: stats.hits,
                misses: stats.misses,
            });
            let gc = c.gc_stats();
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            response.gc = Some(v1::GcStatus {
                last_run_unix_ms: gc.last_run_unix_ms.load(relaxed),
                inventories_removed: gc.inventories_removed.load(relaxed),
                reports_removed: gc.reports_removed.load(relaxed),
                grace_seconds: c.config().gc_grace.map_or(0, |g| g.as_secs()),
            });
        }
        Ok(Response::new(response))
    }
}

fn feed_status(s: crate::feeds::FeedState) -> v1::FeedStatus {
    v1::FeedStatus {
        url: s.url,
        last_success_unix_ms: s.last_success_unix_ms,
        last_attempt_unix_ms: s.last_attempt_unix_ms,
        last_error: s.last_error,
        consecutive_failures: s.consecutive_failures,
        etag: s.etag,
        last_modified: s.last_modified,
        next_poll_unix_ms: s.next_poll_unix_ms,
        records: s.records,
    }
}
