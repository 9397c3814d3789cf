//! Authorization for one repository: credentials from the Docker config
//! (read once), the `Authorization` value the challenge flow settled on,
//! reused for [`AUTH_REUSE`], and requests sent with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::errors::{net_error, one_line, parse_retry_after, read_body};
use super::{RegistrySource, SourceError, docker_config};

/// Bound on a token service's answer (Docker Hub's are ~2 KB; GCR's JWTs
/// under 4 KB) and on what `/v2/` says.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

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
    async fn credentials(&self) -> Result<Option<&docker_config::Credentials>, SourceError> {
        let found = self
            .auth
            .get_or_try_init(|| async {
                match &self.docker_config {
                    Some(path) => docker_config::lookup(path, self.reference.registry()).await,
                    None => Ok(None),
                }
            })
            .await?;
        Ok(found.as_ref())
    }

    /// Authenticates for pulling: asks `/v2/` what it wants and, for a
    /// bearer challenge, fetches a pull token from the token service it
    /// names (checked against the registry policy first; the answer read
    /// within [`MAX_TOKEN_BYTES`]). Returns the `Authorization` value for
    /// our requests: the token, the basic credentials, or none. A refused
    /// token request is `Unauthorized`; refused basic credentials show on
    /// the first request.
    async fn authorize(&self) -> Result<Option<String>, SourceError> {
        let registry = self.reference.registry();
        let what = format!("{}: authentication", self.name());
        let basic = self.credentials().await?.map(|c| {
            use base64::Engine as _;
            let raw = format!("{}:{}", c.username, c.password);
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
        });
        let url = format!("{}://{}/v2/", self.scheme, self.reference.resolve_registry());
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| net_error(registry, &what, &e))?;
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited(&response, registry));
        }
        // Drain what little `/v2/` says (bounded) so the connection is reused.
        let _ = read_body(&mut response, MAX_TOKEN_BYTES, registry, &what).await;
        let Some(challenge) = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_challenge)
        else {
            // Open, or basic authentication (sent with every request).
            return Ok(basic);
        };
        let mut realm = url::Url::parse(&challenge.realm).map_err(|e| SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: token service {:?}: {e}", challenge.realm),
        })?;
        self.policy.check_url(&realm, &self.insecure_listed)?;
        {
            let mut query = realm.query_pairs_mut();
            query.append_pair(
                "scope",
                &format!("repository:{}:pull", self.reference.repository()),
            );
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
        }
        let mut request = self.http.get(realm);
        if let Some(value) = &basic {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(|e| net_error(registry, &what, &e))?;
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited(&response, registry));
        }
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = read_body(&mut response, MAX_TOKEN_BYTES, registry, &what)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(SourceError::Unauthorized(format!(
                "{what}: token request refused: HTTP {status}: {}",
                one_line(&String::from_utf8_lossy(&body))
            )));
        }
        let body = read_body(&mut response, MAX_TOKEN_BYTES, registry, &what)
            .await?
            .ok_or_else(|| {
                SourceError::format(&what, format!("token answer over {MAX_TOKEN_BYTES} bytes"))
            })?;
        let token: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| SourceError::format(&what, format!("token answer: {e}")))?;
        match token.token.or(token.access_token).filter(|t| !t.is_empty()) {
            Some(t) => Ok(Some(format!("Bearer {t}"))),
            None => Err(SourceError::format(&what, "token answer holds no token")),
        }
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
            let r = request.send().await.map_err(|e| net_error(registry, what, &e))?;
            if r.status() == reqwest::StatusCode::UNAUTHORIZED && !retried {
                self.forget_authorization();
                retried = true;
                continue;
            }
            break r;
        };
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited(&response, registry));
        }
        Ok(response)
    }
}

/// A 429 with the registry's `Retry-After`.
fn rate_limited(response: &reqwest::Response, registry: &str) -> SourceError {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    SourceError::RateLimited {
        registry: registry.to_owned(),
        retry_after,
    }
}

/// A token service's answer (Docker's token spec: `token`, or OAuth2's
/// `access_token`).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

/// A `Bearer realm="…",service="…"` challenge (parsed by `http-auth`).
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
}

fn bearer_challenge(header: &str) -> Option<Challenge> {
    http_auth::ChallengeParser::new(header)
        .map_while(Result::ok)
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            Some(Challenge {
                realm: param("realm")?,
                service: param("service"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read_from_the_header() {
        let c = bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        // Basic first, then Bearer; escaped quotes.
        let c = bearer_challenge(r#"Basic realm="x", Bearer realm="https://t.example/a\"b""#).unwrap();
        assert_eq!(c.realm, r#"https://t.example/a"b"#);
        assert_eq!(bearer_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(bearer_challenge("Bearer service=\"x\""), None, "no realm");
        assert_eq!(bearer_challenge("\u{1b}[31m"), None);
    }
}
