//! Manifests, fetched by hand with a size bound and digest checks; resolving
//! a reference through indexes to one image; the cheap `HEAD` of a tag; the
//! image config.

use oci_client::Reference;
use strata_proto::Digest;
use tokio::io::AsyncReadExt;

use super::errors::{failed, net_error, read_body, status_error, too_big};
use super::{LayerDesc, Platform, RegistrySource, ResolvedImage, SourceError};
use crate::source::ImageConfig;
use crate::source::manifest::{self, Document};

impl RegistrySource {
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
        let mut response = request.send().await.map_err(|e| net_error(registry, &what, &e))?;
        if !response.status().is_success() {
            return Err(failed(response, registry, &what).await);
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(&mut response, manifest::MAX_MANIFEST_BYTES, registry, &what)
            .await?
            .ok_or_else(|| too_big(&what))?;
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

    pub(super) async fn resolve_inner(
        &self,
        wanted: Option<&Platform>,
    ) -> Result<ResolvedImage, SourceError> {
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
        if !response.status().is_success() {
            // A HEAD answer has no body to read a message from.
            return Err(status_error(response.status().as_u16(), &[], &what, registry));
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
}
