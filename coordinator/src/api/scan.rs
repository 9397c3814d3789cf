//! `ScanService`: what CI pipelines call. Submit an image (optionally
//! waiting, with progress events), watch a scan, fetch its report.

use std::pin::Pin;

use futures::Stream;
use strata_proto::v1::{
    self, get_report_request::Selector, scan_event::Event, scan_service_server::ScanService,
};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::status_of;
use crate::cluster::{Coordinator, SubmitRequest};

/// State behind `ScanService`. Cheap to clone.
#[derive(Clone)]
pub struct ScanApi {
    coordinator: Coordinator,
}

impl ScanApi {
    pub fn new(coordinator: Coordinator) -> Self {
        ScanApi { coordinator }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::ScanEvent, Status>> + Send>>;

/// Events of `scan_id` from its start until `Done` (history first, then live).
/// `skip_submitted`: the caller already sent its own `Submitted` event.
async fn follow(
    coordinator: &Coordinator,
    scan_id: &str,
    skip_submitted: bool,
) -> Result<EventStream, Status> {
    let (history, mut live) = coordinator.watch(scan_id).await.map_err(status_of)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<v1::ScanEvent, Status>>(64);
    let coordinator = coordinator.clone();
    let scan_id = scan_id.to_owned();
    tokio::spawn(async move {
        let is_done = |e: &v1::ScanEvent| matches!(e.event, Some(Event::Done(_)));
        for event in history {
            if skip_submitted && matches!(event.event, Some(Event::Submitted(_))) {
                continue;
            }
            let done = is_done(&event);
            if tx.send(Ok(event)).await.is_err() || done {
                return;
            }
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    let done = is_done(&event);
                    if tx.send(Ok(event)).await.is_err() || done {
                        return;
                    }
                }
                // Too slow a reader: send what the record says now and go on.
                Err(RecvError::Lagged(_)) => match coordinator.scan(&scan_id).await {
                    Ok(Some(scan)) => {
                        for event in crate::cluster::events::replay(&scan) {
                            if matches!(
                                event.event,
                                Some(Event::Layer(_) | Event::Done(_) | Event::Matched(_))
                            ) {
                                let done = is_done(&event);
                                if tx.send(Ok(event)).await.is_err() || done {
                                    return;
                                }
                            }
                        }
                    }
                    _ => return,
                },
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[tonic::async_trait]
impl ScanService for ScanApi {
    type SubmitImageStream = EventStream;
    type WatchScanStream = EventStream;

    async fn submit_image(
        &self,
        request: Request<v1::SubmitImageRequest>,
    ) -> Result<Response<Self::SubmitImageStream>, Status> {
        let who = super::caller(&request);
        let req = request.into_inner();
        let background = v1::Priority::try_from(req.priority) == Ok(v1::Priority::Background);
        let (scan, existing) = self
            .coordinator
            .submit(SubmitRequest {
                reference: req.reference.clone(),
                platform: req.platform.clone(),
                background,
                insecure_registry: req.insecure_registry,
                register: false,
            })
            .await
            .map_err(status_of)?;
        tracing::info!(caller = %who, scan = %scan.id, reference = %scan.reference, existing, "image submitted");
        let submitted = v1::ScanEvent {
            scan_id: scan.id.clone(),
            at_unix_ms: crate::now_unix_ms(),
            event: Some(Event::Submitted(v1::Submitted {
                existing,
                status: scan.status.to_proto().into(),
            })),
        };
        if !req.wait {
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(submitted)]))));
        }
        let rest = follow(&self.coordinator, &scan.id, true).await?;
        use futures::StreamExt as _;
        Ok(Response::new(Box::pin(
            futures::stream::iter([Ok(submitted)]).chain(rest),
        )))
    }

    async fn watch_scan(
        &self,
        request: Request<v1::WatchScanRequest>,
    ) -> Result<Response<Self::WatchScanStream>, Status> {
        let id = request.into_inner().scan_id;
        if id.is_empty() || id.len() > 128 {
            return Err(Status::invalid_argument(
                "scan_id: give the id SubmitImage returned",
            ));
        }
        Ok(Response::new(follow(&self.coordinator, &id, false).await?))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::Report>, Status> {
        let id = match request.into_inner().selector {
            Some(Selector::ScanId(id)) if !id.is_empty() && id.len() <= 128 => id,
            Some(Selector::ImageDigest(d)) if !d.is_empty() && d.len() <= 256 => {
                let _: strata_proto::Digest = d.parse().map_err(|e: strata_proto::ParseError| {
                    Status::invalid_argument(format!("image_digest: {e}"))
                })?;
                self.coordinator
                    .scan_for_digest(&d)
                    .await
                    .map_err(status_of)?
                    .ok_or_else(|| Status::not_found(format!("no scan of image {d}")))?
                    .id
            }
            _ => return Err(Status::invalid_argument("give a scan_id or an image_digest")),
        };
        let report = self.coordinator.report(&id).await.map_err(status_of)?;
        Ok(Response::new(report.into()))
    }
}
