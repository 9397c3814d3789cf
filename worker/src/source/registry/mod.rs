//! Images in an OCI / Docker registry, over the Distribution API:
//! anonymous, HTTP basic auth, or the bearer-token flow (the
//! `WWW-Authenticate` challenge followed to the token service).
//! Credentials come from the Docker config file on first use.
//!
//! Plain HTTP is used only for the registries in
//! [`SourceConfig::insecure_registries`], and every connection obeys the
//! registry policy ([`super::policy`]).
//!
//! Every request is made by hand with one `reqwest` client, not through
//! `oci-client` (kept for its reference type and error envelopes):
//! `oci-client` reads a manifest response whole, without bound, before
//! anyone can look at its size, and its token flow fetches whatever realm
//! a registry names with a client of its own that the registry policy
//! cannot reach, reading the answer without bound. Here
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
use oci_client::Reference;
use tokio::sync::OnceCell;

pub(in crate::source) use auth::AuthSlot;
use auth::OpenSlot;
pub use tags::TagListError;

use super::{
    ImageSource, LayerDesc, LayerReader, Platform, RegistryPolicy, ResolvedImage, SourceConfig, SourceError,
    docker_config,
};
use strata_proto::text::error_chain;

pub struct RegistrySource {
    reference: Reference,
    docker_config: Option<PathBuf>,
    /// Set on first use: the credentials the Docker config holds, if any.
    auth: OnceCell<Option<docker_config::Credentials>>,
    /// Every request: read with a size bound (see the module header), the
    /// registry policy applied to each address and redirect.
    http: reqwest::Client,
    /// Checks the token service a registry names (see `auth.rs`).
    policy: RegistryPolicy,
    /// The plain-HTTP registries, as the policy is given them.
    insecure_listed: std::sync::Arc<[String]>,
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
        config.policy.check_registry(
            reference.registry(),
            reference.resolve_registry(),
            &config.insecure_registries,
            false,
        )?;
        let insecure = config
            .insecure_registries
            .iter()
            .any(|h| h == reference.registry() || h == reference.resolve_registry());
        // Every request (manifests, blobs, tags, the token flow) goes
        // through this one client: the policy's resolver checks each
        // address connected to, its redirect policy each hop.
        let mut listed = config.insecure_registries.clone();
        if insecure && !listed.iter().any(|h| h == reference.resolve_registry()) {
            listed.push(reference.resolve_registry().to_owned());
        }
        let listed: std::sync::Arc<[String]> = listed.into();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .redirect(config.policy.redirect_policy(listed.clone()));
        if let Some(resolver) = config
            .policy
            .resolver(listed.clone(), reference.resolve_registry())
        {
            builder = builder.dns_resolver(resolver);
        }
        let http = builder.build().map_err(|e| SourceError::Registry {
            registry: reference.registry().to_owned(),
            message: format!("HTTP client: {}", error_chain(&e)),
        })?;
        Ok(RegistrySource {
            reference,
            docker_config: docker_config::config_path(config.docker_config.as_deref()),
            auth: OnceCell::new(),
            http,
            policy: config.policy.clone(),
            insecure_listed: listed,
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
            policy: self.policy.clone(),
            insecure_listed: self.insecure_listed.clone(),
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
            policy: self.policy.clone(),
            insecure_listed: self.insecure_listed.clone(),
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
