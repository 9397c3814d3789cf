//! Authorization for one repository: credentials from the Docker config
//! (read once), the `Authorization` value oci-client's challenge flow
//! settled on, reused for [`AUTH_REUSE`], and requests sent with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::RegistryOperation;
use oci_client::secrets::RegistryAuth;

use super::errors::{map_error, one_line, parse_retry_after};
use super::{RegistrySource, SourceError, docker_config};
use strata_proto::text::error_chain;

/// How long an `Authorization` value is reused before authenticating again.
/// Registry tokens live 60 s or more (Docker Hub: 300 s); a 401 drops it early.
const AUTH_REUSE: Duration = Duration::from_secs(45);

/// The last `Authorization` value settled on for one repository, and when.
pub(in crate::source) type AuthSlot = Arc<Mutex<Option<(Option<String>, Instant)>>>;

/// When a registry last needed no authorization at all (see `RegistrySource::open_since`).
pub(super) type OpenSlot = Arc<Mutex<Option<Instant>>>;

impl RegistrySource {
    /// [`Self::authorize`], reusing the last answer for [`AUTH_REUSE`].
    pub(super) async fn authorization(&self) -> Result<Option<String>, SourceError> {
        if let Some((value, at)) = self.last_auth.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && at.elapsed() < AUTH_REUSE
        {
            return Ok(value);
        }
        // An open registry (no credentials, no challenge) is open for every
        // repository: a fleet of many repositories asks once, not once each.
        if let Some(at) = *self.open_since.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < AUTH_REUSE
        {
            return Ok(None);
        }
        let value = self.authorize().await?;
        let now = Instant::now();
        *self.last_auth.lock().unwrap_or_else(|p| p.into_inner()) = Some((value.clone(), now));
        if value.is_none() {
            *self.open_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        }
        Ok(value)
    }

    /// Forgets the reused authorization (the registry answered 401).
    pub(super) fn forget_authorization(&self) {
        *self.last_auth.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.open_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Reads credentials from the Docker config, once.
    async fn credentials(&self) -> Result<&RegistryAuth, SourceError> {
        self.auth
            .get_or_try_init(|| async {
                Ok(match &self.docker_config {
                    Some(path) => match docker_config::lookup(path, self.reference.registry()).await? {
                        Some(c) => RegistryAuth::Basic(c.username, c.password),
                        None => RegistryAuth::Anonymous,
                    },
                    None => RegistryAuth::Anonymous,
                })
            })
            .await
    }

    /// Authenticates for pulling (oci-client follows a bearer challenge to
    /// the token service and keeps the token for blob pulls). Returns the
    /// `Authorization` header value for our own manifest requests. A refused
    /// token request is `Unauthorized` here; refused basic credentials show
    /// on the first request.
    async fn authorize(&self) -> Result<Option<String>, SourceError> {
        let creds = self.credentials().await?;
        let token = self
            .client
            .auth(&self.reference, creds, RegistryOperation::Pull)
            .await
            .map_err(|e| map_error(e, &self.name(), self.reference.registry()))?;
        Ok(match (token, creds) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Basic(user, password)) => {
                use base64::Engine as _;
                let raw = format!("{user}:{password}");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            (None, _) => None,
        })
    }

    /// Sends the request `build` makes with this repository's authorization.
    /// A reused token may have expired: on a 401 it is dropped and the
    /// request sent once more with a fresh one. A 429 becomes
    /// [`SourceError::RateLimited`] with the registry's `Retry-After`.
    pub(super) async fn send_authorized(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, SourceError> {
        let registry = self.reference.registry();
        let mut retried = false;
        let response = loop {
            let mut request = build();
            if let Some(value) = self.authorization().await? {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let r = request.send().await.map_err(|e| SourceError::Registry {
                registry: registry.to_owned(),
                message: format!("{what}: {}", one_line(&error_chain(&e))),
            })?;
            if r.status() == reqwest::StatusCode::UNAUTHORIZED && !retried {
                self.forget_authorization();
                retried = true;
                continue;
            }
            break r;
        };
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Err(SourceError::RateLimited {
                registry: registry.to_owned(),
                retry_after,
            });
        }
        Ok(response)
    }
}
