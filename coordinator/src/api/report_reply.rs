//! `GetReport` answered with the report's protobuf bytes as stored in
//! memory, not a `Report` message rebuilt and encoded on every call.
//!
//! Why by hand: tonic's generated server wants an owned `v1::Report` per
//! call, so a cached report is copied (thousands of small strings) and
//! encoded again each time; with 100 concurrent CI jobs on two cores that
//! copy was what queued (loadtest `api_latency`). This service sits in
//! front of the generated `ScanServiceServer` under the same name: the
//! `GetReport` path is served here with a codec that writes the cached
//! bytes as they are; every other path goes to the generated server. The
//! wire format is unchanged (the bytes are `Report`'s protobuf encoding).

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes};
use strata_proto::v1::{self, scan_service_server::ScanServiceServer};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::ScanApi;

const GET_REPORT: &str = "/strata.v1.ScanService/GetReport";
/// The generated server's default bound on a request.
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// A message already in protobuf form.
#[derive(Clone, Debug)]
pub struct Encoded(pub Bytes);

/// Decodes `GetReportRequest` as prost does; encodes [`Encoded`] verbatim.
#[derive(Default)]
struct ReportCodec;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Encoded;
    type Error = Status;
    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item.0);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Codec for ReportCodec {
    type Encode = Encoded;
    type Decode = v1::GetReportRequest;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<v1::GetReportRequest>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<v1::Report, v1::GetReportRequest>::raw_decoder(BufferSettings::default())
    }
}

/// `ScanService` with `GetReport` answered from pre-encoded reports.
#[derive(Clone)]
pub struct ScanServiceFast {
    api: ScanApi,
    generated: ScanServiceServer<ScanApi>,
}

impl ScanServiceFast {
    pub fn new(api: ScanApi) -> Self {
        ScanServiceFast {
            generated: ScanServiceServer::new(api.clone()),
            api,
        }
    }
}

impl NamedService for ScanServiceFast {
    const NAME: &'static str = <ScanServiceServer<ScanApi> as NamedService>::NAME;
}

struct GetReportSvc(ScanApi);

impl tonic::server::UnaryService<v1::GetReportRequest> for GetReportSvc {
    type Response = Encoded;
    type Future = BoxFuture<Response<Encoded>, Status>;
    fn call(&mut self, request: Request<v1::GetReportRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let id = api.report_id(request.into_inner()).await?;
            let bytes = api
                .coordinator()
                .report_encoded(&id)
                .await
                .map_err(super::status_of)?;
            Ok(Response::new(Encoded(bytes)))
        })
    }
}

impl<B> Service<http::Request<B>> for ScanServiceFast
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != GET_REPORT {
            return self.generated.call(req);
        }
        let api = self.api.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ReportCodec)
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(grpc.unary(GetReportSvc(api), req).await)
        })
    }
}
