//! `FleetService`: what security teams and dashboards call.

use strata_proto::v1::{self, fleet_service_server::FleetService};
use tonic::{Request, Response, Status};

use crate::cluster::Coordinator;

/// State behind `FleetService`. Cheap to clone.
#[derive(Clone)]
pub struct FleetApi {
    #[allow(dead_code)]
    coordinator: Coordinator,
}

impl FleetApi {
    pub fn new(coordinator: Coordinator) -> Self {
        FleetApi { coordinator }
    }
}

// Being written (issue 6): every call answers UNIMPLEMENTED until then.
#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn register_images(
        &self,
        _: Request<v1::RegisterImagesRequest>,
    ) -> Result<Response<v1::RegisterImagesResponse>, Status> {
        Err(Status::unimplemented("RegisterImages"))
    }
    async fn unregister_images(
        &self,
        _: Request<v1::UnregisterImagesRequest>,
    ) -> Result<Response<v1::UnregisterImagesResponse>, Status> {
        Err(Status::unimplemented("UnregisterImages"))
    }
    async fn register_repository(
        &self,
        _: Request<v1::RegisterRepositoryRequest>,
    ) -> Result<Response<v1::RegisterRepositoryResponse>, Status> {
        Err(Status::unimplemented("RegisterRepository"))
    }
    async fn unregister_repository(
        &self,
        _: Request<v1::UnregisterRepositoryRequest>,
    ) -> Result<Response<v1::UnregisterRepositoryResponse>, Status> {
        Err(Status::unimplemented("UnregisterRepository"))
    }
    async fn list_images(
        &self,
        _: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        Err(Status::unimplemented("ListImages"))
    }
    async fn list_affected(
        &self,
        _: Request<v1::ListAffectedRequest>,
    ) -> Result<Response<v1::ListAffectedResponse>, Status> {
        Err(Status::unimplemented("ListAffected"))
    }
    async fn summary(&self, _: Request<v1::SummaryRequest>) -> Result<Response<v1::SummaryResponse>, Status> {
        Err(Status::unimplemented("Summary"))
    }
}
