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
//!
//! Tag lists ([`RegistrySource::list_tags`], for watched repositories) are
//! fetched by hand the same way: same authorization, `Link` pages on the
//! same registry only, bounded in pages, bytes per page and tags.

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
pub(super) type AuthSlot = Arc<Mutex<Option<(Option<String>, Instant)>>>;

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

    /// Like [`Self::with_reference`], for any repository of the same
    /// registry, with the given repository's authorization slot (kept by
    /// [`super::SourcePool`]).
    pub(super) fn with_reference_and_auth(
        &self,
        reference: Reference,
        last_auth: AuthSlot,
    ) -> RegistrySource {
        debug_assert_eq!(reference.registry(), self.reference.registry());
        RegistrySource {
            reference,
            client: self.client.clone(),
            docker_config: self.docker_config.clone(),
            auth: self.auth.clone(),
            http: self.http.clone(),
            scheme: self.scheme,
            last_auth,
        }
    }

    /// The reference this source reads.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// This source's authorization slot (shared with its clones).
    pub(super) fn auth_slot(&self) -> AuthSlot {
        self.last_auth.clone()
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
    /// Sends the request `build` makes with this repository's authorization.
    /// A reused token may have expired: on a 401 it is dropped and the
    /// request sent once more with a fresh one. A 429 becomes
    /// [`SourceError::RateLimited`] with the registry's `Retry-After`.
    async fn send_authorized(
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
        let mut response = self.send_authorized(|| self.http.get(&url), &what).await?;
        let status = response.status();
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

    /// The digest of what this reference names now (an index or an image
    /// manifest), cheaply: for a reference naming a digest, that digest (no
    /// request); else a `HEAD` of the manifest by tag, read from the
    /// registry's `Docker-Content-Digest`. `Ok(None)` when the registry does
    /// not send a usable one (the caller resolves in full). `429` is
    /// [`SourceError::RateLimited`]; a `401` drops the reused authorization
    /// and is tried once more. Nothing is checked against content here: the
    /// answer is only good for finding what an earlier full resolve found.
    pub async fn head_digest(&self) -> Result<Option<Digest>, SourceError> {
        if let Some(d) = self.reference.digest() {
            return Ok(d.parse().ok());
        }
        let what = self.name();
        let registry = self.reference.registry();
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository(),
            self.reference.tag().unwrap_or("latest")
        );
        let response = self
            .send_authorized(
                || {
                    self.http
                        .head(&url)
                        .header(reqwest::header::ACCEPT, manifest::ACCEPTED_MANIFESTS.join(", "))
                },
                &what,
            )
            .await?;
        let status = response.status();
        if !status.is_success() {
            // A HEAD answer has no body to read a message from.
            return Err(status_error(status.as_u16(), &[], &what, registry));
        }
        Ok(response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|h| h.starts_with("sha256:"))
            .and_then(|h| h.parse::<Digest>().ok()))
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

    /// The tags of this reference's repository, from the registry's
    /// `/v2/<name>/tags/list`, with the same authentication as pulls
    /// (anonymous, basic from the Docker config, or a bearer token from the
    /// registry's challenge). Follows `Link: <…>; rel="next"` pages on the
    /// same registry only (same scheme, host and port), at most `max_pages`
    /// of them, each at most `max_page_bytes`; stops with
    /// [`TagListError::TooManyTags`] past `max_tags`. Sorted, without duplicates.
    pub async fn list_tags(
        &self,
        max_tags: usize,
        max_pages: usize,
        max_page_bytes: u64,
    ) -> Result<Vec<String>, TagListError> {
        let registry = self.reference.registry();
        let what = format!("{registry}/{}: tag list", self.reference.repository());
        let registry_error = |message: String| SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: {message}"),
        };
        let base = format!("{}://{}", self.scheme, self.reference.resolve_registry());
        let first = format!(
            "{base}/v2/{}/tags/list?n={TAG_PAGE_SIZE}",
            self.reference.repository()
        );
        let mut url = url::Url::parse(&first).map_err(|e| registry_error(format!("URL {first:?}: {e}")))?;
        let origin = url.origin();
        let mut tags = Vec::new();
        for _ in 0..max_pages {
            let (body, link) = self.tag_page(&url, max_page_bytes, &what).await?;
            let page: TagPage = serde_json::from_slice(&body)
                .map_err(|e| registry_error(format!("answer is not a tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            if tags.len() > max_tags {
                return Err(TagListError::TooManyTags {
                    repository: format!("{registry}/{}", self.reference.repository()),
                    limit: max_tags,
                });
            }
            let Some(next) = link.as_deref().and_then(next_link) else {
                tags.sort();
                tags.dedup();
                return Ok(tags);
            };
            url = match url.join(next) {
                Ok(u) if u.origin() == origin => u,
                _ => {
                    return Err(registry_error(format!(
                        "page link {:?} leaves the registry",
                        one_line(next)
                    ))
                    .into());
                }
            };
        }
        Err(registry_error(format!("more than {max_pages} pages")).into())
    }

    /// One page of a tag list: its body (at most `limit` bytes) and its
    /// `Link` header. On 401, authenticates afresh once.
    async fn tag_page(
        &self,
        url: &url::Url,
        limit: u64,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), SourceError> {
        let registry = self.reference.registry();
        let net = |e: reqwest::Error| SourceError::Registry {
            registry: registry.to_owned(),
            message: format!("{what}: {}", one_line(&error_chain(&e))),
        };
        let mut response = self
            .send_authorized(
                || {
                    self.http
                        .get(url.as_str())
                        .header(reqwest::header::ACCEPT, "application/json")
                },
                what,
            )
            .await?;
        let status = response.status();
        let link = response
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let limit = if status.is_success() {
            limit
        } else {
            MAX_ERROR_BODY
        };
        if status.is_success() && response.content_length().is_some_and(|n| n > limit) {
            return Err(SourceError::Registry {
                registry: registry.to_owned(),
                message: format!("{what}: page larger than {limit} bytes"),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(net)? {
            let room = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(body.len());
            if chunk.len() > room {
                if status.is_success() {
                    return Err(SourceError::Registry {
                        registry: registry.to_owned(),
                        message: format!("{what}: page larger than {limit} bytes"),
                    });
                }
                body.extend_from_slice(&chunk[..room]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // Whatever the envelope's codes, these statuses mean what they say.
            return Err(
                match (
                    status.as_u16(),
                    status_error(status.as_u16(), &body, what, registry),
                ) {
                    (404, e @ SourceError::NotFound(_)) | (401 | 403, e @ SourceError::Unauthorized(_)) => e,
                    (404, e) => SourceError::NotFound(strip_registry(e)),
                    (401 | 403, e) => SourceError::Unauthorized(strip_registry(e)),
                    (_, e) => e,
                },
            );
        }
        Ok((body, (!link.is_empty()).then_some(link)))
    }
}

/// Tags asked for per page of a tag list (registries may send fewer).
const TAG_PAGE_SIZE: usize = 1000;

/// Why [`RegistrySource::list_tags`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum TagListError {
    /// The repository has more tags than the caller accepts.
    #[error("{repository} has more than {limit} tags")]
    TooManyTags { repository: String, limit: usize },
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl TagListError {
    /// Whether the listing stopped at the caller's tag limit.
    pub fn is_too_many_tags(&self) -> bool {
        matches!(self, TagListError::TooManyTags { .. })
    }
}

impl From<TagListError> for SourceError {
    fn from(e: TagListError) -> SourceError {
        match e {
            TagListError::TooManyTags { repository, limit } => {
                SourceError::format(repository, format!("more than {limit} tags"))
            }
            TagListError::Source(e) => e,
        }
    }
}

/// One page of `/v2/<name>/tags/list`: `{"name": …, "tags": […] | null}`.
#[derive(serde::Deserialize)]
struct TagPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The target of the `rel="next"` link in a `Link` header, as written.
fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = after[..end].trim();
        let params = &after[end + 1..];
        let params_end = params.find('<').unwrap_or(params.len());
        let is_next = params[..params_end].split([';', ',']).any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(target);
        }
        rest = &params[params_end..];
    }
    None
}

/// The message of an error without its `registry …:` prefix.
fn strip_registry(e: SourceError) -> String {
    match e {
        SourceError::Registry { message, .. } => message,
        other => other.to_string(),
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

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(r#"<http://r/v2/a/tags/list?last=x>; rel=prev, <http://r/x?last=y>;rel="next""#),
            Some("http://r/x?last=y")
        );
        assert_eq!(next_link(r#"<u>; title="x"; rel="first next""#), Some("u"));
        assert_eq!(next_link(r#"<u>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link("<unterminated; rel=next"), None);
    }

    /// A registry on a local port that wants basic auth `alice:s3cret` for
    /// everything, and serves tag lists by repository (see `answer`).
    async fn tag_registry() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let host = format!("127.0.0.1:{port}");
        let base = format!("http://{host}");
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let base = base.clone();
                async move { answer(&base, &uri, &headers) }
            });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (host, server)
    }

    fn answer(
        base: &str,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
    ) -> axum::response::Response<axum::body::Body> {
        use axum::http::StatusCode;
        use base64::Engine as _;
        let reply = |status: StatusCode, headers: &[(&str, String)], body: String| {
            let mut r = axum::response::Response::builder().status(status);
            for (k, v) in headers {
                r = r.header(*k, v.as_str());
            }
            r.body(axum::body::Body::from(body))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return reply(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", r#"Basic realm="test""#.to_owned())],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_owned(),
            );
        }
        let path = uri.path();
        let query = uri.query().unwrap_or("");
        let tags = |t: &[&str]| serde_json::json!({"name": "x", "tags": t}).to_string();
        let next = |target: String| [("link", format!(r#"<{target}>; rel="next""#))];
        match path {
            "/v2/" => reply(StatusCode::OK, &[], "{}".to_owned()),
            "/v2/paged/app/tags/list" if !query.contains("last") => reply(
                StatusCode::OK,
                &next("/v2/paged/app/tags/list?n=2&last=b".to_owned()),
                tags(&["b", "a"]),
            ),
            "/v2/paged/app/tags/list" if query.contains("last=b") => reply(
                StatusCode::OK,
                &next(format!("{base}/v2/paged/app/tags/list?n=2&last=z")),
                r#"{"name":"paged/app","tags":null}"#.to_owned(),
            ),
            "/v2/paged/app/tags/list" => reply(StatusCode::OK, &[], tags(&["c", "a"])),
            "/v2/busy/app/tags/list" => reply(
                StatusCode::TOO_MANY_REQUESTS,
                &[("retry-after", "7".to_owned())],
                String::new(),
            ),
            "/v2/denied/app/tags/list" => reply(StatusCode::FORBIDDEN, &[], "no".to_owned()),
            "/v2/escape/app/tags/list" => reply(
                StatusCode::OK,
                &next("http://elsewhere.invalid/v2/escape/app/tags/list?last=a".to_owned()),
                tags(&["a"]),
            ),
            "/v2/loop/app/tags/list" => reply(
                StatusCode::OK,
                &next("/v2/loop/app/tags/list?last=a".to_owned()),
                tags(&[]),
            ),
            "/v2/heads/app/manifests/1"
                if headers
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains(manifest::OCI_INDEX)) =>
            {
                reply(
                    StatusCode::OK,
                    &[("docker-content-digest", format!("sha256:{}", "ab".repeat(32)))],
                    String::new(),
                )
            }
            "/v2/heads/app/manifests/bare" => reply(StatusCode::OK, &[], String::new()),
            "/v2/heads/app/manifests/odd" => reply(
                StatusCode::OK,
                &[("docker-content-digest", "md5:0123".to_owned())],
                String::new(),
            ),
            "/v2/busy/app/manifests/1" => reply(
                StatusCode::TOO_MANY_REQUESTS,
                &[("retry-after", "7".to_owned())],
                String::new(),
            ),
            "/v2/many/app/tags/list" => reply(StatusCode::OK, &[], tags(&["a", "b", "c", "d", "e"])),
            "/v2/big/app/tags/list" => reply(StatusCode::OK, &[], tags(&[&"x".repeat(4096)])),
            "/v2/garbage/app/tags/list" => reply(StatusCode::OK, &[], "<html>".to_owned()),
            _ => reply(
                StatusCode::NOT_FOUND,
                &[],
                r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#
                    .to_owned(),
            ),
        }
    }

    #[tokio::test]
    async fn head_digest_reads_the_registrys_digest() {
        let (host, server) = tag_registry().await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let docker_config = dir.path().join("config.json");
        let auth = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        };
        std::fs::write(
            &docker_config,
            serde_json::json!({"auths": {&host: {"auth": auth}}}).to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = SourceConfig {
            insecure_registries: vec![host.clone()],
            docker_config: Some(docker_config),
        };
        let source = |reference: &str| {
            let reference: Reference = format!("{host}/{reference}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            RegistrySource::new(reference, &config).unwrap_or_else(|e| panic!("{e}"))
        };
        let expected: Digest = format!("sha256:{}", "ab".repeat(32))
            .parse()
            .unwrap_or_else(|e| panic!("{e:?}"));

        let s = source("heads/app:1");
        assert_eq!(s.head_digest().await.ok().flatten(), Some(expected.clone()));
        // A reused authorization the registry no longer takes: dropped, tried again.
        *s.last_auth.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Some("Basic stale".to_owned()), Instant::now()));
        assert_eq!(s.head_digest().await.ok().flatten(), Some(expected.clone()));
        // No usable header: no answer (the caller resolves in full).
        assert_eq!(source("heads/app:bare").head_digest().await.ok(), Some(None));
        assert_eq!(source("heads/app:odd").head_digest().await.ok(), Some(None));
        let err = source("busy/app:1").head_digest().await.err();
        assert!(
            matches!(err, Some(SourceError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(7)),
            "{err:?}"
        );
        let err = source("missing/app:1").head_digest().await.err();
        assert!(matches!(err, Some(SourceError::NotFound(_))), "{err:?}");
        // A reference naming a digest needs no request.
        let pinned = format!("nowhere/app@sha256:{}", "cd".repeat(32));
        let d = source(&pinned).head_digest().await.ok().flatten();
        assert_eq!(
            d.map(|d| d.to_string()),
            Some(format!("sha256:{}", "cd".repeat(32)))
        );
        server.abort();
    }

    #[tokio::test]
    async fn list_tags_pages_with_basic_auth_from_the_docker_config() {
        let (host, server) = tag_registry().await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let good = dir.path().join("good.json");
        let auth = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        };
        std::fs::write(
            &good,
            serde_json::json!({"auths": {&host: {"auth": auth}}}).to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = |docker_config: PathBuf| SourceConfig {
            insecure_registries: vec![host.clone()],
            docker_config: Some(docker_config),
        };
        let source = |repo: &str, docker_config: PathBuf| {
            let reference: Reference = format!("{host}/{repo}").parse().unwrap_or_else(|e| panic!("{e}"));
            RegistrySource::new(reference, &config(docker_config)).unwrap_or_else(|e| panic!("{e}"))
        };
        let list = |repo: &str| {
            let s = source(repo, good.clone());
            async move { s.list_tags(4, 5, 1024).await }
        };

        assert_eq!(
            list("paged/app").await.unwrap_or_else(|e| panic!("{e}")),
            ["a", "b", "c"]
        );
        let err = list("busy/app").await.err();
        assert!(
            matches!(
                err,
                Some(TagListError::Source(SourceError::RateLimited { retry_after: Some(d), .. })) if d == Duration::from_secs(7)
            ),
            "{err:?}"
        );
        let err = list("missing/app").await.err();
        assert!(
            matches!(err, Some(TagListError::Source(SourceError::NotFound(_)))),
            "{err:?}"
        );
        let err = list("denied/app").await.err();
        assert!(
            matches!(err, Some(TagListError::Source(SourceError::Unauthorized(_)))),
            "{err:?}"
        );
        let err = list("escape/app").await.err();
        assert!(
            matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("leaves the registry")),
            "{err:?}"
        );
        let err = list("loop/app").await.err();
        assert!(
            matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("more than 5 pages")),
            "{err:?}"
        );
        let err = list("many/app").await.err();
        assert!(
            matches!(&err, Some(TagListError::TooManyTags { limit: 4, .. })),
            "{err:?}"
        );
        assert!(err.is_some_and(|e| e.is_too_many_tags()));
        let err = list("big/app").await.err();
        assert!(
            matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("larger than 1024 bytes")),
            "{err:?}"
        );
        let err = list("garbage/app").await.err();
        assert!(
            matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("not a tag list")),
            "{err:?}"
        );

        // Without credentials, or with wrong ones: refused.
        let none = source("paged/app", dir.path().join("absent.json"));
        let err = none.list_tags(3, 5, 1024).await.err();
        assert!(
            matches!(err, Some(TagListError::Source(SourceError::Unauthorized(_)))),
            "{err:?}"
        );
        let wrong = dir.path().join("wrong.json");
        std::fs::write(
            &wrong,
            serde_json::json!({"auths": {&host: {"username": "alice", "password": "nope"}}}).to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = source("paged/app", wrong).list_tags(3, 5, 1024).await.err();
        assert!(
            matches!(err, Some(TagListError::Source(SourceError::Unauthorized(_)))),
            "{err:?}"
        );
        server.abort();
    }
}
