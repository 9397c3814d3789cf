//! What registries answer, as [`SourceError`]s: OCI error envelopes and
//! statuses, `Retry-After`, error bodies read within a bound, messages
//! kept to one line.

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use strata_proto::text::error_chain;

use super::SourceError;
use crate::source::manifest;

/// Maps an `oci-client` error to ours; `what` names the image or blob.
pub(super) fn map_error(e: OciDistributionError, what: &str, registry: &str) -> SourceError {
    use OciDistributionError as E;
    match e {
        E::AuthenticationFailure(reason) => {
            SourceError::Unauthorized(format!("{what}: token request refused: {}", one_line(&reason)))
        }
        E::UnauthorizedError { .. } => SourceError::Unauthorized(format!(
            "{what}: the registry refused the credentials (or needs some)"
        )),
        E::RegistryError { envelope, .. } => {
            let codes = &envelope.errors;
            let message: Vec<String> = codes
                .iter()
                .map(|c| {
                    if c.message.is_empty() {
                        format!("{:?}", c.code)
                    } else {
                        c.message.clone()
                    }
                })
                .collect();
            let message = one_line(&message.join("; "));
            let has = |f: fn(&OciErrorCode) -> bool| codes.iter().any(|c| f(&c.code));
            if has(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                SourceError::NotFound(format!("{what}: {message}"))
            } else if has(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                SourceError::Unauthorized(format!("{what}: {message}"))
            } else {
                SourceError::Registry {
                    registry: registry.to_owned(),
                    message: format!("{what}: {message}"),
                }
            }
        }
        E::ServerError { code: 404, .. } => SourceError::NotFound(format!("{what}: HTTP 404")),
        E::ServerError { code: 401 | 403, .. } => SourceError::Unauthorized(format!("{what}: HTTP 401/403")),
        E::ServerError { code, message, .. } => SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: HTTP {code}: {}", one_line(&message)),
        },
        E::IoError(source) => SourceError::io(what, source),
        E::DigestError(d) => SourceError::format(what, d.to_string()),
        E::ManifestParsingError(m) | E::VersionedParsingError(m) => SourceError::format(what, m),
        other => SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: {}", one_line(&error_chain(&other))),
        },
    }
}

/// Longest `Retry-After` honoured: a registry asking for more is treated as if it asked for this.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let when =
                time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
            let secs = (when - time::OffsetDateTime::now_utc()).whole_seconds().max(0);
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A network error on a request to `registry` about `what`.
/// A refusal of the registry policy (a redirect, an address) is that,
/// whichever request met it.
pub(super) fn net_error(registry: &str, what: &str, e: &reqwest::Error) -> SourceError {
    if let Some(refused) = crate::source::policy::find_policy_error(e) {
        return SourceError::Policy(refused.clone());
    }
    SourceError::Registry {
        registry: registry.to_owned(),
        message: format!("{what}: {}", one_line(&error_chain(e))),
    }
}

/// A response's body, at most `limit` bytes: `None` when it is longer (by
/// its `Content-Length`, or as it streams in).
pub(super) async fn read_body(
    response: &mut reqwest::Response,
    limit: u64,
    registry: &str,
    what: &str,
) -> Result<Option<Vec<u8>>, SourceError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Ok(None);
    }
    read_up_to(response, limit, false, registry, what).await
}

/// Why a request failed, from its status and the first [`MAX_ERROR_BODY`]
/// bytes of its body (the rest is not read).
pub(super) async fn failed(mut response: reqwest::Response, registry: &str, what: &str) -> SourceError {
    let status = response.status().as_u16();
    match read_up_to(&mut response, MAX_ERROR_BODY, true, registry, what).await {
        Ok(body) => status_error(status, &body.unwrap_or_default(), what, registry),
        Err(e) => e,
    }
}

/// Reads at most `limit` bytes. Past that: `None`, or with `truncate` the
/// first `limit` bytes (the rest is not read).
async fn read_up_to(
    response: &mut reqwest::Response,
    limit: u64,
    truncate: bool,
    registry: &str,
    what: &str,
) -> Result<Option<Vec<u8>>, SourceError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| net_error(registry, what, &e))?
    {
        let room = limit - body.len();
        if chunk.len() > room {
            if !truncate {
                return Ok(None);
            }
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Most bytes of an error response read (for its message).
pub(super) const MAX_ERROR_BODY: u64 = 64 << 10;

pub(super) fn too_big(what: &str) -> SourceError {
    SourceError::format(
        what,
        format!("manifest larger than {} bytes", manifest::MAX_MANIFEST_BYTES),
    )
}

/// Maps an HTTP error status and its body (an OCI error envelope, when the
/// registry follows the spec) to our error.
pub(super) fn status_error(code: u16, body: &[u8], what: &str, registry: &str) -> SourceError {
    match serde_json::from_slice::<oci_client::errors::OciEnvelope>(body) {
        Ok(envelope) if !envelope.errors.is_empty() => map_error(
            OciDistributionError::RegistryError {
                envelope,
                url: String::new(),
            },
            what,
            registry,
        ),
        _ => map_error(
            OciDistributionError::ServerError {
                code,
                url: String::new(),
                message: String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned(),
            },
            what,
            registry,
        ),
    }
}

/// A server-provided message on one line, bounded.
pub(super) fn one_line(s: &str) -> String {
    strata_proto::text::one_line(s, 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping() {
        let env = |code: &str| -> OciDistributionError {
            let envelope =
                serde_json::from_str(&format!(r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#))
                    .unwrap_or_else(|e| panic!("{e}"));
            OciDistributionError::RegistryError {
                envelope,
                url: "u".into(),
            }
        };
        assert!(matches!(
            map_error(env("MANIFEST_UNKNOWN"), "x", "r"),
            SourceError::NotFound(_)
        ));
        assert!(matches!(
            map_error(env("NAME_UNKNOWN"), "x", "r"),
            SourceError::NotFound(_)
        ));
        assert!(matches!(
            map_error(env("DENIED"), "x", "r"),
            SourceError::Unauthorized(_)
        ));
        assert!(matches!(
            map_error(env("TOOMANYREQUESTS"), "x", "r"),
            SourceError::Registry { .. }
        ));
        let e = OciDistributionError::UnauthorizedError { url: "u".into() };
        assert!(matches!(map_error(e, "x", "r"), SourceError::Unauthorized(_)));
        let e = OciDistributionError::ServerError {
            code: 500,
            url: "u".into(),
            message: "a\nb".into(),
        };
        assert_eq!(map_error(e, "x", "r").to_string(), "registry r: x: HTTP 500: a b");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn one_line_bounds() {
        assert_eq!(one_line(" a \n b "), "a b");
        assert!(one_line(&"x".repeat(1000)).chars().count() <= 301);
    }
}
