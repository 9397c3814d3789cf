//! [`CoordinatorError`]: what can go wrong with a request, and the
//! conversions into it; the JSON encoding of stored records, whose failures
//! are internal errors.

use bytes::Bytes;
use strata_worker::queue::QueueError;
use strata_worker::source::SourceError;

use super::kv::KvError;

/// What can go wrong with a request. `api` maps each to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("resource exhausted: {0}")]
    Full(String),
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<KvError> for CoordinatorError {
    fn from(e: KvError) -> Self {
        CoordinatorError::Unavailable(e.to_string())
    }
}

impl From<QueueError> for CoordinatorError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full(m) => CoordinatorError::Full(m),
            other => CoordinatorError::Unavailable(other.to_string()),
        }
    }
}

impl From<SourceError> for CoordinatorError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::BadReference { .. } | SourceError::PlatformNotFound { .. } => {
                CoordinatorError::InvalidArgument(e.to_string())
            }
            SourceError::NotFound(_) => CoordinatorError::NotFound(e.to_string()),
            SourceError::Unauthorized(_) => CoordinatorError::Unauthorized(e.to_string()),
            SourceError::Format { .. } => CoordinatorError::InvalidArgument(e.to_string()),
            SourceError::Registry { .. } | SourceError::RateLimited { .. } | SourceError::Io { .. } => {
                CoordinatorError::Unavailable(e.to_string())
            }
        }
    }
}

/// A record as stored in a bucket.
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<Bytes, CoordinatorError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))
}

/// A stored record read back; `what` names it in the error.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, CoordinatorError> {
    serde_json::from_slice(b).map_err(|e| CoordinatorError::Internal(format!("{what}: {e}")))
}
