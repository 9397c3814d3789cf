//! `FleetService`: what security teams and dashboards call. Register images
//! and repositories for continuous scanning, list the fleet, and ask which
//! images a vulnerability (or a package) hits, and in which layer.
//!
//! The work is in [`crate::cluster::fleet`]; this file checks the shape of
//! requests and converts to and from the wire. `WatchEvents` follows the
//! coordinator's event log ([`crate::notify::follow`]): from the client's
//! sequence, then live, ending when the client goes or the log is closed
//! (the server shutting down).

use std::sync::Arc;

use strata_proto::v1::{self, fleet_service_server::FleetService, list_affected_request::Query};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::status_of;
use crate::cluster::Coordinator;
use crate::cluster::fleet::{AffectedQuery, ImageFilter, PackageQuery};
use crate::cluster::records::ScanStatus;
use crate::notify::EventFilter;

/// Bound on `WatchEvents` calls open at once (each holds a task, a
/// subscription and up to [`WATCH_BUFFER`] events plus one page of the log).
const MAX_WATCHERS: usize = 1024;
/// Events buffered per `WatchEvents` call ahead of its client.
const WATCH_BUFFER: usize = 64;
/// Bound on `kinds` in a `WatchEventsRequest` (there are three).
const MAX_KINDS: usize = 16;

/// State behind `FleetService`. Cheap to clone.
#[derive(Clone)]
pub struct FleetApi {
    coordinator: Coordinator,
    watchers: Arc<Semaphore>,
}

impl FleetApi {
    pub fn new(coordinator: Coordinator) -> Self {
        FleetApi {
            coordinator,
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
        }
    }
}

/// The filter a `WatchEventsRequest` asks for.
fn events_filter(req: &v1::WatchEventsRequest) -> Result<EventFilter, Status> {
    if req.kinds.len() > MAX_KINDS {
        return Err(Status::invalid_argument(format!("kinds: at most {MAX_KINDS}")));
    }
    let kinds = req
        .kinds
        .iter()
        .map(|k| {
            v1::EventKind::try_from(*k)
                .map_err(|_| Status::invalid_argument(format!("kinds: unknown value {k}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let globs: Vec<String> = if req.repository_glob.trim().is_empty() {
        Vec::new()
    } else {
        vec![req.repository_glob.clone()]
    };
    EventFilter::new(severity_filter(req.min_severity)?, kinds, &globs).map_err(Status::invalid_argument)
}

/// A `ScanStatus` filter from the wire (`UNSPECIFIED`: all).
fn status_filter(value: i32) -> Result<Option<ScanStatus>, Status> {
    match v1::ScanStatus::try_from(value) {
        Ok(v1::ScanStatus::Unspecified) => Ok(None),
        Ok(v1::ScanStatus::Pending) => Ok(Some(ScanStatus::Pending)),
        Ok(v1::ScanStatus::Running) => Ok(Some(ScanStatus::Running)),
        Ok(v1::ScanStatus::Complete) => Ok(Some(ScanStatus::Complete)),
        Ok(v1::ScanStatus::Failed) => Ok(Some(ScanStatus::Failed)),
        Err(_) => Err(Status::invalid_argument(format!("status: unknown value {value}"))),
    }
}

/// A `Severity` filter from the wire (`UNSPECIFIED`: none).
fn severity_filter(value: i32) -> Result<Option<strata_proto::Severity>, Status> {
    match v1::Severity::try_from(value) {
        Ok(v1::Severity::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s.into())),
        Err(_) => Err(Status::invalid_argument(format!(
            "min_severity: unknown value {value}"
        ))),
    }
}

#[tonic::async_trait]
impl FleetService for FleetApi {
    type WatchEventsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::FleetEvent, Status>> + Send + 'static>>;

    async fn watch_events(
        &self,
        request: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let who = super::caller(&request);
        let req = request.into_inner();
        let filter = events_filter(&req)?;
        let log = self.coordinator.event_log().clone();
        let last = log
            .last_sequence()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if req.after_sequence > last {
            return Err(Status::out_of_range(format!(
                "after_sequence {} is past the newest event ({last}): was the event log reset?",
                req.after_sequence
            )));
        }
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_WATCHERS} WatchEvents calls are open: try again later"
            ))
        })?;
        tracing::info!(caller = %who, after = req.after_sequence, "watching events");
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(err) = crate::notify::follow(&log, req.after_sequence, &filter, &tx, Ok).await {
                // The client resumes after the last sequence it got.
                let _ = tx.send(Err(Status::unavailable(err.to_string()))).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn rematch(
        &self,
        request: Request<v1::RematchRequest>,
    ) -> Result<Response<v1::RematchResponse>, Status> {
        let who = super::caller(&request);
        tracing::info!(caller = %who, "full fleet re-match requested");
        let s = self
            .coordinator
            .fleet_rematch_everywhere()
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::RematchResponse {
            images: s.images,
            findings_new: s.findings_new,
            findings_resolved: s.findings_resolved,
            vulndb_version: s.vulndb_version,
            distinct_packages: s.distinct_packages,
            duration_ms: s.published_in.as_millis() as u64,
        }))
    }

    async fn register_images(
        &self,
        request: Request<v1::RegisterImagesRequest>,
    ) -> Result<Response<v1::RegisterImagesResponse>, Status> {
        let who = super::caller(&request);
        let req = request.into_inner();
        let count = req.references.len();
        crate::cluster::fleet::check_reference_count(count).map_err(status_of)?;
        // Local paths are refused one by one (unless allowed); the rest register.
        let refused: Vec<Option<String>> = req
            .references
            .iter()
            .map(|r| {
                super::check_transport(&self.coordinator, r)
                    .err()
                    .map(|s| s.message().to_owned())
            })
            .collect();
        let allowed: Vec<String> = req
            .references
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| refused.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        let mut results = self
            .coordinator
            .fleet_register(allowed, &req.platform, req.insecure_registry)
            .await
            .map_err(status_of)?
            .into_iter();
        let mut images = Vec::with_capacity(count);
        for (reference, refused) in req.references.into_iter().zip(refused) {
            let image = match refused {
                Some(error) => v1::RegisteredImage {
                    reference,
                    scan_id: String::new(),
                    error,
                },
                None => match results.next() {
                    Some((reference, Ok(scan_id))) => v1::RegisteredImage {
                        reference,
                        scan_id,
                        error: String::new(),
                    },
                    Some((reference, Err(err))) => {
                        super::audit_refusal(&who, "RegisterImages", &reference, &err);
                        v1::RegisteredImage {
                            reference,
                            scan_id: String::new(),
                            error: err.to_string(),
                        }
                    }
                    None => return Err(Status::internal("registration results missing")),
                },
            };
            images.push(image);
        }
        let failed = images.iter().filter(|i| !i.error.is_empty()).count();
        tracing::info!(caller = %who, images = count, failed, "images registered");
        Ok(Response::new(v1::RegisterImagesResponse { images }))
    }

    async fn unregister_images(
        &self,
        request: Request<v1::UnregisterImagesRequest>,
    ) -> Result<Response<v1::UnregisterImagesResponse>, Status> {
        let who = super::caller(&request);
        let req = request.into_inner();
        let removed = self
            .coordinator
            .fleet_unregister(&req.references)
            .await
            .map_err(status_of)?;
        tracing::info!(caller = %who, removed, "images unregistered");
        Ok(Response::new(v1::UnregisterImagesResponse { removed }))
    }

    async fn register_repository(
        &self,
        request: Request<v1::RegisterRepositoryRequest>,
    ) -> Result<Response<v1::RegisterRepositoryResponse>, Status> {
        let who = super::caller(&request);
        let req = request.into_inner();
        let tags_registered = self
            .coordinator
            .fleet_register_repository(
                &req.repository,
                &req.tag_pattern,
                &req.platform,
                req.insecure_registry,
            )
            .await
            .map_err(|e| {
                super::audit_refusal(&who, "RegisterRepository", &req.repository, &e);
                status_of(e)
            })?;
        tracing::info!(caller = %who, repository = %req.repository, tags_registered, "repository registered");
        Ok(Response::new(v1::RegisterRepositoryResponse { tags_registered }))
    }

    async fn unregister_repository(
        &self,
        request: Request<v1::UnregisterRepositoryRequest>,
    ) -> Result<Response<v1::UnregisterRepositoryResponse>, Status> {
        let who = super::caller(&request);
        let req = request.into_inner();
        let removed = self
            .coordinator
            .fleet_unregister_repository(&req.repository)
            .await
            .map_err(status_of)?;
        tracing::info!(caller = %who, repository = %req.repository, removed, "repository unregistered");
        Ok(Response::new(v1::UnregisterRepositoryResponse { removed }))
    }

    async fn list_images(
        &self,
        request: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let req = request.into_inner();
        let filter = ImageFilter {
            repository: (!req.repository.trim().is_empty()).then_some(req.repository),
            status: status_filter(req.status)?,
            min_severity: severity_filter(req.min_severity)?,
        };
        let (images, next_page_token) = self
            .coordinator
            .fleet_images(&filter, req.page_size, &req.page_token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::ListImagesResponse {
            images,
            next_page_token,
        }))
    }

    async fn list_affected(
        &self,
        request: Request<v1::ListAffectedRequest>,
    ) -> Result<Response<v1::ListAffectedResponse>, Status> {
        let req = request.into_inner();
        let query = match req.query {
            Some(Query::VulnerabilityId(id)) => AffectedQuery::vulnerability(&id),
            Some(Query::Package(p)) => {
                PackageQuery::new(&p.ecosystem, &p.name, &p.version_range).map(AffectedQuery::Package)
            }
            None => return Err(Status::invalid_argument("give a vulnerability_id or a package")),
        }
        .map_err(status_of)?;
        let (images, next_page_token) = self
            .coordinator
            .fleet_affected(&query, req.page_size, &req.page_token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::ListAffectedResponse {
            images,
            next_page_token,
        }))
    }

    async fn summary(
        &self,
        request: Request<v1::SummaryRequest>,
    ) -> Result<Response<v1::SummaryResponse>, Status> {
        let req = request.into_inner();
        let summary = self
            .coordinator
            .fleet_summary(req.top_n)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::SummaryResponse {
            images_by_status: summary
                .images_by_status
                .into_iter()
                .map(|(status, images)| v1::StatusCount {
                    status: status.to_proto().into(),
                    images,
                })
                .collect(),
            findings: Some(summary.findings.into()),
            top: summary.top,
        }))
    }
}
