//! Images in an OCI / Docker registry, over the Distribution API with
//! `oci-client`: anonymous, HTTP basic auth, or the bearer-token flow
//! (`oci-client` follows the `WWW-Authenticate` challenge to the token
//! service). Credentials come from the Docker config file on first use.
//!
//! Plain HTTP is used only for the registries in
//! [`SourceConfig::insecure_registries`].
//!
//! Manifests are fetched by hand with `reqwest` (using the credentials or
//! token `oci-client` settled on) because `oci-client` reads a manifest
//! response whole, without bound, before anyone can look at its size: here
//! at most [`manifest::MAX_MANIFEST_BYTES`] are read, and the digest is
//! checked against the reference's (when it names one) and the registry's
//! `Docker-Content-Digest`. Blobs are fetched by hand too, to honour `429`
//! with `Retry-After`; the layer reader checks their digest while
//! streaming, and we bound them to the descriptor's size.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use strata_proto::Digest;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;
use tokio_util::io::StreamReader;

use super::manifest::{self, Document};
use super::{
    BoundedReader, ImageConfig, ImageSource, LayerDesc, LayerReader, Platform, ResolvedImage, SourceConfig,
    SourceError, docker_config,
};

/// How long an `Authorization` value is reused before authenticating again.
/// Registry tokens live 60 s or more (Docker Hub: 300 s); a 401 drops it early.
const AUTH_REUSE: Duration = Duration::from_secs(45);

/// The last `Authorization` value settled on for one repository, and when.
type AuthSlot = Arc<Mutex<Option<(Option<String>, Instant)>>>;

pub struct RegistrySource {
    reference: Reference,
    client: Client,
    docker_config: Option<PathBuf>,
    /// Set on first use: read the Docker config, then authenticate.
    auth: OnceCell<RegistryAuth>,
    /// Manifests and blobs: read with a size bound (see the module header).
    http: reqwest::Client,
    /// `http` or `https` for this reference's registry.
    scheme: &'static str,
    /// Shared by every source of the same repository made by [`Self::with_reference`],
    /// so a worker authenticates once per repository, not once per blob.
    last_auth: AuthSlot,
}

impl RegistrySource {
    pub fn new(reference: Reference, config: &SourceConfig) -> Result<Self, SourceError> {
        let insecure = config
            .insecure_registries
            .iter()
            .any(|h| h == reference.registry() || h == reference.resolve_registry());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| SourceError::Registry {
                registry: reference.registry().to_owned(),
                message: format!("HTTP client: {}", error_chain(&e)),
            })?;
        let protocol = if config.insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            // oci-client compares against the resolved host (`index.docker.io`
            // for Docker Hub), so list both spellings of the hub.
            let mut hosts = config.insecure_registries.clone();
            if hosts.iter().any(|h| h == "docker.io") {
                hosts.push("index.docker.io".to_owned());
            }
            ClientProtocol::HttpsExcept(hosts)
        };
        let client = Client::new(ClientConfig {
            protocol,
            // We choose from indexes ourselves, to report what they offer.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        });
        Ok(RegistrySource {
            reference,
            client,
            docker_config: docker_config::config_path(config.docker_config.as_deref()),
            auth: OnceCell::new(),
            http,
            scheme: if insecure { "http" } else { "https" },
            last_auth: AuthSlot::default(),
        })
    }

    /// A source for another image of the same repository that shares this
    /// one's HTTP connections and authorization (clients are reference-counted).
    pub fn with_reference(&self, reference: Reference) -> RegistrySource {
        debug_assert_eq!(reference.registry(), self.reference.registry());
        let same_repository = reference.repository() == self.reference.repository();
        RegistrySource {
            reference,
            client: self.client.clone(),
            docker_config: self.docker_config.clone(),
            auth: self.auth.clone(),
            http: self.http.clone(),
            scheme: self.scheme,
            last_auth: if same_repository {
                self.last_auth.clone()
            } else {
                AuthSlot::default()
            },
        }
    }

    /// [`Self::authorize`], reusing the last answer for [`AUTH_REUSE`].
    async fn authorization(&self) -> Result<Option<String>, SourceError> {
        if let Some((value, at)) = self.last_auth.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && at.elapsed() < AUTH_REUSE
        {
            return Ok(value);
        }
        let value = self.authorize().await?;
        *self.last_auth.lock().unwrap_or_else(|p| p.into_inner()) = Some((value.clone(), Instant::now()));
        Ok(value)
    }

    /// Forgets the reused authorization (the registry answered 401).
    fn forget_authorization(&self) {
        *self.last_auth.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn name(&self) -> String {
        self.reference.to_string()
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

    /// Fetches and parses one manifest, reading at most
    /// [`manifest::MAX_MANIFEST_BYTES`]; checks its digest against the
    /// reference's and the registry's `Docker-Content-Digest`.
    async fn fetch_manifest(
        &self,
        reference: &Reference,
        authorization: Option<&str>,
    ) -> Result<(Document, Digest), SourceError> {
        let what = reference.to_string();
        let registry = reference.registry();
        let tag_or_digest = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{tag_or_digest}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository()
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, manifest::ACCEPTED_MANIFESTS.join(", "));
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let net = |e: reqwest::Error| SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: {}", one_line(&error_chain(&e))),
        };
        let mut response = request.send().await.map_err(net)?;
        let status = response.status();
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // An error's body is only read for its message: a smaller bound.
        let limit = if status.is_success() {
            manifest::MAX_MANIFEST_BYTES
        } else {
            MAX_ERROR_BODY
        };
        if status.is_success() && response.content_length().is_some_and(|n| n > limit) {
            return Err(too_big(&what));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(net)? {
            let room = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(body.len());
            if chunk.len() > room {
                if status.is_success() {
                    return Err(too_big(&what));
                }
                body.extend_from_slice(&chunk[..room]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &body, &what, registry));
        }
        let digest = match reference.digest() {
            Some(d) => {
                let expected: Digest = d
                    .parse()
                    .map_err(|e: strata_proto::ParseError| SourceError::format(&what, e.to_string()))?;
                let desc = LayerDesc {
                    digest: expected.clone(),
                    media_type: String::new(),
                    size: body.len() as u64,
                };
                manifest::verify_blob(&desc, &body, &what)?;
                expected
            }
            None => manifest::sha256_digest(&body),
        };
        if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:"))
            && reference.digest().is_none()
            && h != digest.as_str()
        {
            return Err(SourceError::format(
                &what,
                format!("registry says digest {h}, content is {digest}"),
            ));
        }
        Ok((manifest::parse_document(&body, &what)?, digest))
    }

    /// Streams one blob. Fetched by hand with `reqwest` (like manifests),
    /// not through `oci-client`, to see the response's headers: a `429`
    /// becomes [`SourceError::RateLimited`] with the registry's
    /// `Retry-After`, which workers honour. Redirects (to blob storage) are
    /// followed; `reqwest` drops the `Authorization` header when a redirect
    /// leaves the registry's host.
    async fn blob_reader(&self, blob: &LayerDesc) -> Result<BoundedReader<LayerStream>, SourceError> {
        let what = format!(
            "{}/{}: blob {}",
            self.reference.registry(),
            self.reference.repository(),
            blob.digest
        );
        let registry = self.reference.registry();
        let url = format!(
            "{}://{}/v2/{}/blobs/{}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository(),
            blob.digest
        );
        let net = |e: reqwest::Error| SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: {}", one_line(&error_chain(&e))),
        };
        // A reused token may have expired: on 401, authenticate afresh once.
        let mut response = None;
        for _ in 0..2 {
            let authorization = self.authorization().await?;
            let mut request = self.http.get(&url);
            if let Some(value) = &authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let r = request.send().await.map_err(net)?;
            if r.status() == reqwest::StatusCode::UNAUTHORIZED && response.is_none() {
                self.forget_authorization();
                response = Some(r);
                continue;
            }
            response = Some(r);
            break;
        }
        let Some(mut response) = response else {
            return Err(SourceError::Unauthorized(what));
        };
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
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
        if !status.is_success() {
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(net)? {
                let room = usize::try_from(MAX_ERROR_BODY)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() >= room {
                    break;
                }
            }
            return Err(status_error(status.as_u16(), &body, &what, registry));
        }
        if let Some(len) = response.content_length()
            && len != blob.size
        {
            return Err(SourceError::format(
                what,
                format!("registry sends {len} bytes, descriptor says {}", blob.size),
            ));
        }
        use futures::TryStreamExt as _;
        let stream: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> =
            Box::pin(DigestCheck {
                inner: response.bytes_stream().map_err(std::io::Error::other),
                hasher: Some(<sha2::Sha256 as sha2::Digest>::new()),
                expected: blob.digest.clone(),
            });
        Ok(BoundedReader::new(
            StreamReader::new(stream),
            blob.size,
            blob.digest.to_string(),
        ))
    }

    async fn resolve_inner(&self, wanted: Option<&Platform>) -> Result<ResolvedImage, SourceError> {
        let name = self.name();
        let authorization = self.authorization().await?;
        let authorization = authorization.as_deref();
        let (mut doc, mut digest) = self.fetch_manifest(&self.reference, authorization).await?;
        let mut index_digest = None;
        let mut chosen = None;
        for _ in 0..manifest::MAX_INDEX_DEPTH {
            let Document::Index { manifests } = &doc else {
                break;
            };
            let (entry, platform) = manifest::choose_entry(manifests, wanted)?;
            let entry = manifest::to_layer_desc(entry, &name)?;
            index_digest.get_or_insert(digest);
            chosen = platform;
            (doc, digest) = self
                .fetch_manifest(
                    &self.reference.clone_with_digest(entry.digest.to_string()),
                    authorization,
                )
                .await?;
        }
        let Document::Image { config, layers } = doc else {
            return Err(SourceError::format(name, "indexes nested too deep"));
        };
        let (config_desc, layers) = manifest::image_parts(&config, &layers, &name)?;
        let config = self.fetch_config(config_desc).await?;
        let platform = match chosen {
            Some(p) => Some(p),
            None => manifest::config_platform(&config, wanted)?,
        };
        Ok(ResolvedImage {
            reference: name,
            manifest_digest: digest,
            index_digest,
            platform,
            layers,
            config,
        })
    }

    async fn fetch_config(&self, desc: LayerDesc) -> Result<ImageConfig, SourceError> {
        let what = format!("{}: config {}", self.name(), desc.digest);
        let mut reader = self.blob_reader(&desc).await?;
        // The size is bounded by image_parts (MAX_CONFIG_BYTES).
        let mut raw = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        reader
            .read_to_end(&mut raw)
            .await
            .map_err(|e| SourceError::io(&what, e))?;
        manifest::verify_blob(&desc, &raw, &what)?;
        manifest::parse_config(desc, raw.into(), &what)
    }
}

type LayerStream =
    StreamReader<futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>, bytes::Bytes>;

impl ImageSource for RegistrySource {
    fn resolve<'a>(
        &'a self,
        platform: Option<&'a Platform>,
    ) -> BoxFuture<'a, Result<ResolvedImage, SourceError>> {
        Box::pin(async move {
            match self.resolve_inner(platform).await {
                // A reused token may have expired: authenticate afresh once.
                Err(SourceError::Unauthorized(_)) => {
                    self.forget_authorization();
                    self.resolve_inner(platform).await
                }
                other => other,
            }
        })
    }

    fn open_layer<'a>(&'a self, layer: &'a LayerDesc) -> BoxFuture<'a, Result<LayerReader, SourceError>> {
        Box::pin(async move {
            let reader = self.blob_reader(layer).await?;
            Ok(Box::new(reader) as LayerReader)
        })
    }
}

/// Maps an `oci-client` error to ours; `what` names the image or blob.
fn map_error(e: OciDistributionError, what: &str, registry: &str) -> SourceError {
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

/// Checks a blob's sha256 as it streams past: the end of a blob whose bytes
/// are not its digest is an error, whoever reads it (the layer reader checks
/// too; a config or a caller of `open_layer` may not).
struct DigestCheck<S> {
    inner: S,
    hasher: Option<sha2::Sha256>,
    expected: Digest,
}

impl<S> futures::Stream for DigestCheck<S>
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use sha2::Digest as _;
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => match self.hasher.take() {
                Some(h) => {
                    let got = hex::encode(h.finalize());
                    if self.expected.algorithm() == "sha256" && got != self.expected.hex() {
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("blob {}: content has digest sha256:{got}", self.expected),
                        ))))
                    } else {
                        Poll::Ready(None)
                    }
                }
                None => Poll::Ready(None),
            },
            other => other,
        }
    }
}

/// Longest `Retry-After` honoured: a registry asking for more is treated as if it asked for this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: &str) -> Option<Duration> {
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

/// Most bytes of an error response read (for its message).
const MAX_ERROR_BODY: u64 = 64 << 10;

fn too_big(what: &str) -> SourceError {
    SourceError::format(
        what,
        format!("manifest larger than {} bytes", manifest::MAX_MANIFEST_BYTES),
    )
}

/// Maps an HTTP error status and its body (an OCI error envelope, when the
/// registry follows the spec) to our error.
fn status_error(code: u16, body: &[u8], what: &str, registry: &str) -> SourceError {
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

/// The error with its sources (reqwest hides the useful part there).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

/// Collapses whitespace and bounds a server-provided message for a one-line error.
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > 300 {
        format!("{}…", joined.chars().take(300).collect::<String>())
    } else {
        joined
    }
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
