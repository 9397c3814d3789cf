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
//! Tag lists ([`RegistrySource::list_tags`], for the coordinator's watched
//! repositories) are fetched by hand the same way: same authorization,
//! `Link` pages on the same registry only, bounded in pages, bytes per page
//! and tags. They live here, not in the coordinator, because they need this
//! source's authorization.
//!
//! # Layout
//! - this file: [`RegistrySource`] (clients, the reference, constructors)
//!   and its [`ImageSource`] implementation;
//! - `auth.rs`: credentials from the Docker config, the bearer/basic
//!   `Authorization` reused per repository, `send_authorized` (one retry on
//!   401, `429` → [`SourceError::RateLimited`]);
//! - `manifests.rs`: manifests by hand (bounded, digest-checked), resolve
//!   through indexes, `head_digest`, the image config;
//! - `blobs.rs`: blob streams bounded by the descriptor, digest checked;
//! - `tags.rs`: tag listing;
//! - `errors.rs`: registry answers (OCI error envelopes, statuses,
//!   `Retry-After`, bounded error bodies) → [`SourceError`].

mod auth;
mod blobs;
mod errors;
mod manifests;
mod tags;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::sync::OnceCell;

pub(in crate::source) use auth::AuthSlot;
use auth::OpenSlot;
pub use tags::TagListError;

use super::{
    ImageSource, LayerDesc, LayerReader, Platform, ResolvedImage, SourceConfig, SourceError, docker_config,
};
use strata_proto::text::error_chain;

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
    /// When the registry last let us in with no credentials and no token
    /// (`/v2/` answered 200): shared by every source of the registry, so
    /// an open registry is not asked again for each repository.
    open_since: OpenSlot,
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
            open_since: OpenSlot::default(),
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
            open_since: self.open_since.clone(),
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
            open_since: self.open_since.clone(),
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

    /// The reference, for messages.
    pub(super) fn name(&self) -> String {
        self.reference.to_string()
    }
}

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
