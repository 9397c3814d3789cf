//! `ScanService`: what CI pipelines call. Submit an image (optionally
//! waiting, with progress events), watch a scan, fetch its report.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use strata_proto::v1::{
    self, get_report_request::Selector, scan_event::Event, scan_service_server::ScanService,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

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
/// `deadline`: the client's (`grpc-timeout`); tonic bounds only the call up
/// to the response headers, so the stream ends itself with
/// `DEADLINE_EXCEEDED` when it passes. The task also ends when the client
/// goes away, even while the scan is quiet, and with `UNAVAILABLE` when the
/// server shuts down (the roles close the event log first).
async fn follow(
    coordinator: &Coordinator,
    scan_id: &str,
    skip_submitted: bool,
    deadline: Option<Instant>,
) -> Result<EventStream, Status> {
    let (history, live) = coordinator.watch(scan_id).await.map_err(status_of)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<v1::ScanEvent, Status>>(64);
    let coordinator = coordinator.clone();
    let scan_id = scan_id.to_owned();
    tokio::spawn(async move {
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let closing = coordinator.event_log().clone();
        tokio::select! {
            () = pump(&coordinator, &scan_id, skip_submitted, history, live, &tx) => {}
            () = tx.closed() => {}
            // The server is stopping: the stream ends now (or graceful
            // shutdown would wait for the scan), saying where to go on.
            () = closing.closed() => {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "this coordinator is shutting down; watch the scan again (on another coordinator, or this one once restarted)",
                    )))
                    .await;
            }
            () = expired => {
                let _ = tx
                    .send(Err(Status::deadline_exceeded(
                        "the deadline passed before the scan finished; WatchScan follows it further",
                    )))
                    .await;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Sends `history`, then what `live` brings, until `Done` or the receiver
/// is gone.
async fn pump(
    coordinator: &Coordinator,
    scan_id: &str,
    skip_submitted: bool,
    history: Vec<v1::ScanEvent>,
    mut live: tokio::sync::broadcast::Receiver<v1::ScanEvent>,
    tx: &tokio::sync::mpsc::Sender<Result<v1::ScanEvent, Status>>,
) {
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
            Err(RecvError::Lagged(_)) => match coordinator.scan(scan_id).await {
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
}

/// The deadline a client set with `grpc-timeout` (gRPC over HTTP/2:
/// at most 8 digits and a unit), if any, a little early (a twentieth, at
/// most 50 ms): clients such as tonic's time out locally at the deadline
/// itself with a bare CANCELLED, so answering just before tells them why.
fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    let early = (timeout / 20).min(Duration::from_millis(50));
    Instant::now().checked_add(timeout - early)
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
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let background = v1::Priority::try_from(req.priority) == Ok(v1::Priority::Background);
        super::check_transport(&self.coordinator, &req.reference)?;
        let submit = {
            let coordinator = self.coordinator.clone();
            let request = SubmitRequest {
                reference: req.reference.clone(),
                platform: req.platform.clone(),
                background,
                insecure_registry: req.insecure_registry,
                register: false,
            };
            let who = who.clone();
            // A task of its own: a client that goes away, or whose deadline
            // passes, mid-submit must not leave a scan created but never
            // dispatched (and the audit log still records it). The
            // coordinator's resolve timeout bounds it.
            // In the request's span, so the caller's trace reaches the jobs.
            tokio::spawn(
                async move {
                    let reference = request.reference.clone();
                    let (scan, existing) = coordinator
                        .submit(request)
                        .await
                        .inspect_err(|e| super::audit_refusal(&who, "SubmitImage", &reference, e))?;
                    tracing::info!(caller = %who, scan = %scan.id, reference = %scan.reference, existing, "image submitted");
                    Ok::<_, crate::cluster::CoordinatorError>((scan, existing))
                }
                .in_current_span(),
            )
        };
        // Resolving may wait on a slow registry: the client's deadline bounds
        // the wait (with its own code, where tonic's timeout says CANCELLED).
        let joined = match deadline {
            Some(at) => tokio::time::timeout_at(at, submit).await.map_err(|_| {
                Status::deadline_exceeded("the deadline passed before the image was resolved")
            })?,
            None => submit.await,
        };
        let (scan, existing) = joined
            .map_err(|e| Status::internal(format!("submit task: {e}")))?
            .map_err(status_of)?;
        let submitted = v1::ScanEvent {
            scan_id: scan.id.clone(),
            at_unix_ms: strata_proto::text::now_unix_ms(),
            event: Some(Event::Submitted(v1::Submitted {
                existing,
                status: scan.status.to_proto().into(),
            })),
        };
        if !req.wait {
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(submitted)]))));
        }
        let rest = follow(&self.coordinator, &scan.id, true, deadline).await?;
        use futures::StreamExt as _;
        Ok(Response::new(Box::pin(
            futures::stream::iter([Ok(submitted)]).chain(rest),
        )))
    }

    async fn watch_scan(
        &self,
        request: Request<v1::WatchScanRequest>,
    ) -> Result<Response<Self::WatchScanStream>, Status> {
        let deadline = deadline_of(&request);
        let id = request.into_inner().scan_id;
        if id.is_empty() || id.len() > 128 {
            return Err(Status::invalid_argument(
                "scan_id: give the id SubmitImage returned",
            ));
        }
        Ok(Response::new(
            follow(&self.coordinator, &id, false, deadline).await?,
        ))
    }

    async fn get_report(
        &self,
        request: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::Report>, Status> {
        let id = self.report_id(request.into_inner()).await?;
        // Served by `report_reply.rs` in front of this service; kept for the trait.
        let report = self.coordinator.report(&id).await.map_err(status_of)?;
        Ok(Response::new(report.into()))
    }
}

impl ScanApi {
    pub(super) fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The scan a `GetReportRequest` names.
    pub(super) async fn report_id(&self, request: v1::GetReportRequest) -> Result<String, Status> {
        let id = match request.selector {
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
        Ok(id)
    }
}
