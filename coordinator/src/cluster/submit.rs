//! `submit`: a reference resolved (bounded in time) into a scan record,
//! created once per image digest, platform and analyser set, then
//! dispatched. A registry reference already scanned takes the fast path:
//! one shared manifest `HEAD` mapped through `known_digests`.

use std::time::Duration;

use bytes::Bytes;
use strata_proto::v1::{self, scan_event::Event};
use strata_worker::source::{ImageRef, Platform, Source, SourceError};

use super::error::to_json;
use super::kv::Cas;
use super::records::*;
use super::{Coordinator, CoordinatorError, SubmitRequest, validate_reference};
use crate::util::lock;
use strata_proto::text::now_unix_ms;
use strata_worker::rate_limit::RateLimitWait;

/// Entries of `Inner::known_digests` kept before it starts afresh, at
/// least (more when the fleet has more images: see `submit`).
const MAX_KNOWN_DIGESTS: usize = 100_000;

/// What a manifest HEAD said, shared between the submits that waited for it.
#[derive(Clone)]
pub(super) enum Head {
    Digest(Option<strata_proto::Digest>),
    RateLimited {
        registry: String,
        retry_after: Option<Duration>,
    },
    Failed(String),
}

impl Coordinator {
    /// The registry policy's verdict on a registry a caller named (see
    /// `strata_worker::source::policy`): `Unauthorized` (`PERMISSION_DENIED`)
    /// naming the rule that refused it.
    pub(super) fn check_registry_policy(
        &self,
        registry: &str,
        resolved: &str,
        plain_http: bool,
    ) -> Result<(), CoordinatorError> {
        let source = &self.inner.config.source;
        source
            .policy
            .check_registry(registry, resolved, &source.insecure_registries, plain_http)
            .map_err(|e| SourceError::Policy(e).into())
    }

    /// Accepts a scan: resolves the image and creates (or finds) its scan.
    /// Returns the scan and whether it already existed.
    pub async fn submit(&self, req: SubmitRequest) -> Result<(ScanRecord, bool), CoordinatorError> {
        let reference = validate_reference(&req.reference)?;
        let platform = if req.platform.trim().is_empty() {
            None
        } else {
            Some(
                Platform::parse(req.platform.trim())
                    .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?,
            )
        };
        let image_ref = ImageRef::parse(&reference)?;
        let source_config = &self.inner.config.source;
        let registry_host = registry_host(&image_ref);
        // Before anything connects: the caller may name only registries the
        // policy allows, and ask for plain HTTP only to listed ones.
        if let ImageRef::Registry(r) = &image_ref {
            self.check_registry_policy(r.registry(), r.resolve_registry(), req.insecure_registry)?;
        }
        let platform_key = platform.as_ref().map(ToString::to_string).unwrap_or_default();
        // One bound for the fast path and the full resolve together.
        let deadline = tokio::time::Instant::now() + self.inner.config.resolve_timeout;
        // The fast path for digest references (no request) and tags seen
        // before: a new tag (most of a fleet's first pass) goes straight to
        // the full resolve, sparing the registry a HEAD whose digest could
        // not be known here.
        if let ImageRef::Registry(r) = &image_ref
            && (r.digest().is_some() || self.inner.fleet.knows(&r.to_string()) != Some(false))
            && let Ok(source) = self.inner.sources.registry(r.clone(), source_config)
            && let Ok(Some(found)) = tokio::time::timeout_at(
                deadline,
                self.submit_known(&req, &source, &r.to_string(), &platform_key),
            )
            .await
        {
            return Ok(found);
        }
        let resolve = async {
            let source = match self.inner.sources.open(image_ref.clone(), source_config).await? {
                Source::RootDir(_) => {
                    return Err(CoordinatorError::InvalidArgument(
                        "dir: references are for `strata scan`; the coordinator scans images".into(),
                    ));
                }
                s => s
                    .into_image()
                    .ok_or_else(|| CoordinatorError::Internal("no image source".into()))?,
            };
            // A registry answering 429 is waited out, within the resolve
            // timeout around this block.
            let mut limited = RateLimitWait::new("a resolve");
            let resolved = loop {
                match source.resolve(platform.as_ref()).await {
                    Err(SourceError::RateLimited {
                        registry,
                        retry_after,
                    }) => limited.wait(&registry, retry_after).await,
                    other => break other?,
                }
            };
            Ok::<_, CoordinatorError>((source, resolved))
        };
        let (source, resolved) = tokio::time::timeout_at(deadline, resolve).await.map_err(|_| {
            CoordinatorError::Unavailable(format!(
                "{reference}: resolving took longer than {:?}",
                self.inner.config.resolve_timeout
            ))
        })??;
        let asv = self.inner.config.analyzer_set.clone();
        let image_digest = resolved.manifest_digest.to_string();
        if matches!(image_ref, ImageRef::Registry(_)) {
            // What the reference named (index or manifest) → the image chosen,
            // for the fast path of the next submit.
            let top = resolved
                .index_digest
                .as_ref()
                .unwrap_or(&resolved.manifest_digest);
            // Room for every registered image twice over (a tag moved keeps
            // its old digest known for a while): a fixed cap below the fleet
            // cleared the map during every refresh of a 100,000-image fleet,
            // and each tag then took a full resolve (two manifest requests).
            let cap = MAX_KNOWN_DIGESTS.max(2 * self.inner.fleet.image_count());
            let mut known = lock(&self.inner.known_digests);
            if known.len() >= cap {
                known.clear();
            }
            known.insert((top.to_string(), platform_key.clone()), image_digest.clone());
        }
        let id = scan_id(&image_digest, &platform_key, &asv);

        let location = match (&image_ref, &registry_host) {
            (ImageRef::Registry(r), Some(host)) => Some(BlobLocation::Registry {
                registry: host.clone(),
                repository: r.repository().to_owned(),
                insecure: source_config.insecure_registries.iter().any(|h| h == host),
            }),
            // Local images (OCI layouts, docker archives): workers elsewhere
            // cannot read them, so their blobs are copied to the store.
            _ => None,
        };
        // A scan that exists is found by `create` below (a conflict); a
        // local image is looked up first, before its blobs are copied.
        if location.is_none()
            && let Some((existing, _)) = self.load_scan(&id).await?
        {
            self.note_image(&req, &resolved.reference, &image_digest, &id)
                .await;
            return Ok((existing, true));
        }
        let now = now_unix_ms();
        let record = ScanRecord {
            id: id.clone(),
            reference: resolved.reference.clone(),
            platform: platform_key,
            priority: if req.background { "background" } else { "ci" }.to_owned(),
            insecure_registry: req.insecure_registry,
            analyzer_set: asv.clone(),
            status: ScanStatus::Running,
            image_digest: image_digest.clone(),
            resolved_platform: resolved
                .platform
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            layers: resolved
                .layers
                .iter()
                .map(|l| ScanLayer {
                    digest: l.digest.to_string(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    state: ScanLayerState::Pending,
                    error: None,
                    packages: 0,
                })
                .collect(),
            location: location.clone(),
            error: None,
            created_unix_ms: now,
            updated_unix_ms: now,
            completed_unix_ms: 0,
            counts: Counts::default(),
            packages: 0,
            findings: 0,
            vulndb_version: String::new(),
            report_key: None,
        };
        if location.is_none() {
            self.copy_local_blobs(source.as_ref(), &resolved.layers).await?;
        }
        match self.inner.buckets.scans.create(&id, to_json(&record)?).await? {
            Cas::Written(_) => {}
            Cas::Conflict => {
                // Another submit of the same image won the race: return its scan.
                let (existing, _) = self
                    .load_scan(&id)
                    .await?
                    .ok_or_else(|| CoordinatorError::Internal(format!("scan {id} vanished")))?;
                // This reference (maybe another tag of the same digest) is recorded too.
                self.note_image(&req, &resolved.reference, &image_digest, &id)
                    .await;
                return Ok((existing, true));
            }
        }
        self.inner.metrics.scans("running", 1);
        self.note_image(&req, &resolved.reference, &image_digest, &id)
            .await;
        self.fleet_scan_changed(&record);
        let _ = self
            .inner
            .buckets
            .scans
            .put(&digest_index_key(&image_digest), Bytes::from(id.clone()))
            .await;
        self.emit(
            &id,
            Event::Submitted(v1::Submitted {
                existing: false,
                status: v1::ScanStatus::Running.into(),
            }),
        );
        self.emit(
            &id,
            Event::Resolved(v1::Resolved {
                image_digest: image_digest.clone(),
                platform: record.resolved_platform.clone(),
                layer_digests: record.layers.iter().map(|l| l.digest.clone()).collect(),
            }),
        );
        tracing::info!(scan = %id, image = %record.reference, digest = %image_digest, layers = record.layers.len(), "scan submitted");
        let scan = self
            .dispatch_scan(&record, false)
            .await?
            .ok_or_else(|| CoordinatorError::Internal(format!("scan {id} vanished")))?;
        Ok((scan, false))
    }

    /// The fast path of `submit` for a registry reference already scanned:
    /// one `HEAD` for the digest the reference names now, mapped through
    /// `known_digests` (what a full resolve of that digest chose) to the scan
    /// id, and the scan if it exists. `None` on any miss or error: the caller
    /// resolves in full. A `429` is waited out (the caller's deadline bounds it).
    async fn submit_known(
        &self,
        req: &SubmitRequest,
        source: &strata_worker::source::RegistrySource,
        reference: &str,
        platform_key: &str,
    ) -> Option<(ScanRecord, bool)> {
        let mut limited = RateLimitWait::new("a manifest HEAD");
        // Concurrent submits of one reference share a HEAD sent after they called.
        let key = format!("{}|{}", source.reference(), req.insecure_registry);
        let top = loop {
            let head = self
                .inner
                .heads
                .run(key.clone(), || async {
                    match source.head_digest().await {
                        Ok(d) => Head::Digest(d),
                        Err(SourceError::RateLimited {
                            registry,
                            retry_after,
                        }) => Head::RateLimited {
                            registry,
                            retry_after,
                        },
                        Err(err) => Head::Failed(err.to_string()),
                    }
                })
                .await;
            match head {
                Head::Digest(Some(d)) => break d,
                Head::Digest(None) => return None,
                Head::RateLimited {
                    registry,
                    retry_after,
                } => limited.wait(&registry, retry_after).await,
                Head::Failed(err) => {
                    tracing::debug!(image = %reference, error = %err, "manifest HEAD failed: resolving in full");
                    return None;
                }
            }
        };
        let image_digest = lock(&self.inner.known_digests)
            .get(&(top.to_string(), platform_key.to_owned()))
            .cloned()?;
        let id = scan_id(&image_digest, platform_key, &self.inner.config.analyzer_set);
        let (existing, _) = self.load_scan(&id).await.ok().flatten()?;
        self.note_image(req, reference, &image_digest, &id).await;
        Some((existing, true))
    }

    /// Records the reference → digest mapping (best effort: the scan itself
    /// is stored). Nothing is written when the record already says the same
    /// (a resubmit of a scanned image), so repeated submits cost one read.
    async fn note_image(&self, req: &SubmitRequest, reference: &str, digest: &str, scan_id: &str) {
        let key = image_key(reference);
        // The loaded fleet index holds every image record this coordinator
        // wrote or loaded: no read needed then.
        let existing = match self.inner.fleet.image_record(reference) {
            Some(record) => record,
            None => match self.inner.buckets.images.get(&key).await {
                Ok(Some(e)) => serde_json::from_slice::<ImageRecord>(&e.value).ok(),
                _ => None,
            },
        };
        let registered = existing.as_ref().is_some_and(|r| r.registered);
        if let Some(old) = &existing
            && old.reference == reference
            && old.platform == req.platform
            && old.insecure_registry == req.insecure_registry
            && old.registered == (registered || req.register)
            && old.digest == digest
            && old.scan_id == scan_id
        {
            return;
        }
        let record = ImageRecord {
            reference: reference.to_owned(),
            platform: req.platform.clone(),
            insecure_registry: req.insecure_registry,
            registered: registered || req.register,
            digest: digest.to_owned(),
            scan_id: scan_id.to_owned(),
            updated_unix_ms: now_unix_ms(),
        };
        if let Ok(json) = to_json(&record) {
            match self.inner.buckets.images.put(&key, json).await {
                Ok(_) => self.fleet_image_noted(&record),
                Err(err) => tracing::warn!(error = %err, "could not record the image reference"),
            }
        }
    }
}

/// The registry part of a registry reference (`host[:port]`), as workers will dial it.
fn registry_host(r: &ImageRef) -> Option<String> {
    match r {
        ImageRef::Registry(r) => Some(r.resolve_registry().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_dial_the_registry_a_reference_names() {
        let host = |r: &str| registry_host(&ImageRef::parse(r).unwrap());
        assert_eq!(
            host("127.0.0.1:5000/team/app:v1").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(host("ghcr.io/acme/api:v2").as_deref(), Some("ghcr.io"));
        // Docker Hub is dialled at its index host.
        assert_eq!(host("nginx").as_deref(), Some("index.docker.io"));
        // Local images have no registry: their blobs are copied to the store.
        assert_eq!(host("oci-dir:/tmp/layout").as_deref(), None);
    }
}
