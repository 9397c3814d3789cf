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

/// The one mapping of a registry's (or an image's) failure to what the
/// caller is told, whichever request met it: submit, tag listing, refresh.
/// The image or answer being malformed (`Format`) is the named image's
/// fault, not the registry being away: `InvalidArgument`, not `Unavailable`.
impl From<SourceError> for CoordinatorError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::BadReference { .. } | SourceError::PlatformNotFound { .. } => {
                CoordinatorError::InvalidArgument(e.to_string())
            }
            SourceError::NotFound(_) => CoordinatorError::NotFound(e.to_string()),
            SourceError::Unauthorized(_) | SourceError::Policy(_) => {
                CoordinatorError::Unauthorized(e.to_string())
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_and_queue_errors_map_to_what_a_caller_can_act_on() {
        let bad = SourceError::BadReference {
            input: "x".into(),
            reason: "no".into(),
        };
        assert!(matches!(
            CoordinatorError::from(bad),
            CoordinatorError::InvalidArgument(_)
        ));
        let missing = SourceError::NotFound("reg.test/app:v1".into());
        assert!(
            matches!(CoordinatorError::from(missing), CoordinatorError::NotFound(m) if m.contains("reg.test/app:v1"))
        );
        let denied = SourceError::Unauthorized("reg.test".into());
        assert!(matches!(
            CoordinatorError::from(denied),
            CoordinatorError::Unauthorized(_)
        ));
        let limited = SourceError::RateLimited {
            registry: "reg.test".into(),
            retry_after: None,
        };
        assert!(matches!(
            CoordinatorError::from(limited),
            CoordinatorError::Unavailable(_)
        ));
        let full = QueueError::Full("ci".into());
        assert!(matches!(CoordinatorError::from(full), CoordinatorError::Full(m) if m == "ci"));
        assert!(matches!(
            CoordinatorError::from(QueueError::Closed),
            CoordinatorError::Unavailable(_)
        ));
    }

    #[test]
    fn unreadable_records_name_what_they_are() {
        let err = from_json::<u32>("scan", b"{").unwrap_err();
        assert!(
            matches!(&err, CoordinatorError::Internal(m) if m.starts_with("scan: ")),
            "{err}"
        );
        assert_eq!(
            from_json::<Vec<u8>>("scan", &to_json(&vec![1u8, 2]).unwrap()).unwrap(),
            [1, 2]
        );
    }
}
