//! Registered images and watched repositories: register and unregister
//! (each reference submitted as a background scan), a repository's tags
//! listed from its registry (bounded, `429`s waited out), and the refresh
//! loop that re-lists watched repositories and re-resolves registered
//! images every `--refresh-interval-secs`.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use strata_worker::source::{ImageRef, SourceError, TagListError};

use super::{
    CONCURRENCY, MAX_QUERY_LEN, MAX_REFERENCES, MAX_TAG_PAGE_BYTES, MAX_TAG_PAGES, MAX_TAGS,
    RepositoryRecord, normalise_repository, repository_key,
};
use crate::cluster::error::to_json;
use crate::cluster::records::image_key;
use crate::cluster::{Coordinator, CoordinatorError, SubmitRequest, validate_reference};
use strata_proto::text::now_unix_ms;
use strata_worker::rate_limit::RateLimitWait;

impl Coordinator {
    /// Registers references for continuous scanning: each is validated and
    /// submitted as a background scan; one failing does not stop the others.
    /// Returns, per reference in order, its scan id or its error.
    pub async fn fleet_register(
        &self,
        references: Vec<String>,
        platform: &str,
        insecure_registry: bool,
    ) -> Result<Vec<(String, Result<String, CoordinatorError>)>, CoordinatorError> {
        check_reference_count(references.len())?;
        check_platform(platform)?;
        let results = futures::stream::iter(references)
            .map(|reference| async move {
                let result = async {
                    validate_reference(&reference)?;
                    let (scan, _) = self
                        .submit(SubmitRequest {
                            reference: reference.clone(),
                            platform: platform.to_owned(),
                            background: true,
                            insecure_registry,
                            register: true,
                        })
                        .await?;
                    Ok(scan.id)
                }
                .await;
                (reference, result)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        Ok(results)
    }

    /// Deletes image records (as given, and in their normalised spelling).
    /// Returns how many existed.
    pub async fn fleet_unregister(&self, references: &[String]) -> Result<u32, CoordinatorError> {
        check_reference_count(references.len())?;
        for r in references {
            validate_reference(r)?;
        }
        // Loaded first, so a load in flight cannot bring back what is deleted here.
        self.fleet_ready().await?;
        let mut removed = 0;
        for r in references {
            let mut spellings = vec![r.clone()];
            if let Ok(parsed) = ImageRef::parse(r) {
                let normal = parsed.to_string();
                if normal != *r {
                    spellings.push(normal);
                }
            }
            for reference in spellings {
                if self.fleet_delete_image(&reference).await? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn fleet_delete_image(&self, reference: &str) -> Result<bool, CoordinatorError> {
        let key = image_key(reference);
        let existed = self.inner.buckets.images.get(&key).await?.is_some();
        // Its open findings are resolved first: a failure here leaves the
        // image registered, so nothing is lost.
        self.fleet_history_unregistered(&[reference.to_owned()]).await?;
        if existed {
            self.inner.buckets.images.delete(&key).await?;
        }
        let in_memory = self.inner.fleet.write().remove_image(reference);
        Ok(existed || in_memory)
    }

    /// Watches a repository: lists its tags (bounded), keeps those matching
    /// `tag_pattern` (a glob; empty: all) and registers each. Returns how many registered.
    pub async fn fleet_register_repository(
        &self,
        repository: &str,
        tag_pattern: &str,
        platform: &str,
        insecure_registry: bool,
    ) -> Result<u32, CoordinatorError> {
        let repository = normalise_repository(repository)?;
        check_platform(platform)?;
        if tag_pattern.len() > MAX_QUERY_LEN {
            return Err(CoordinatorError::InvalidArgument(format!(
                "tag_pattern is longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let matcher = match tag_pattern.trim() {
            "" => None,
            p => Some(
                globset::Glob::new(p)
                    .map_err(|e| CoordinatorError::InvalidArgument(format!("tag_pattern {p:?}: {e}")))?
                    .compile_matcher(),
            ),
        };
        let tags = self.list_tags(&repository, insecure_registry).await?;
        let wanted: Vec<String> = tags
            .into_iter()
            .filter(|t| matcher.as_ref().is_none_or(|m| m.is_match(t)))
            .map(|t| format!("{repository}:{t}"))
            .collect();
        let record = RepositoryRecord {
            repository: repository.clone(),
            tag_pattern: tag_pattern.trim().to_owned(),
            platform: platform.to_owned(),
            insecure_registry,
            updated_unix_ms: now_unix_ms(),
        };
        self.inner
            .buckets
            .images
            .put(&repository_key(&repository), to_json(&record)?)
            .await?;
        self.inner
            .fleet
            .write()
            .repositories
            .insert(repository.clone(), record);
        let mut registered = 0;
        let mut first_error = None;
        for chunk in wanted.chunks(MAX_REFERENCES) {
            for (reference, result) in self
                .fleet_register(chunk.to_vec(), platform, insecure_registry)
                .await?
            {
                match result {
                    Ok(_) => registered += 1,
                    Err(err) => {
                        tracing::warn!(reference = %reference, error = %err, "tag of a watched repository not registered");
                        first_error.get_or_insert((reference, err));
                    }
                }
            }
        }
        if registered == 0
            && let Some((reference, err)) = first_error
        {
            return Err(CoordinatorError::Unavailable(format!(
                "{repository}: no tag could be registered; {reference}: {err}"
            )));
        }
        tracing::info!(repository = %repository, tags = registered, "repository registered");
        Ok(registered)
    }

    /// Keeps the watched fleet current, every `interval` (from
    /// [`CoordinatorConfig::refresh_interval`](crate::cluster::CoordinatorConfig::refresh_interval)):
    /// watched repositories are listed again (new tags registered) and every
    /// registered image is resolved again as a background scan. A tag that
    /// moved gets a new scan, in which only the new layers are analysed; an
    /// unchanged one costs a manifest request and returns its existing scan.
    pub(in crate::cluster) async fn refresh_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(interval) = self.inner.config.refresh_interval else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if !self.holds_lease(crate::cluster::peers::LEASE_REFRESH) {
                continue; // another coordinator refreshes the fleet
            }
            match self.fleet_refresh().await {
                Ok((repositories, images)) => {
                    tracing::info!(repositories, images, "watched fleet refreshed")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "refreshing the watched fleet failed; trying again next round")
                }
            }
        }
    }

    /// One refresh round (see [`Self::refresh_loop`]): returns the
    /// repositories listed and the registered images resolved again.
    pub async fn fleet_refresh(&self) -> Result<(usize, usize), CoordinatorError> {
        self.fleet_ready().await?;
        let repositories: Vec<RepositoryRecord> =
            self.inner.fleet.read().repositories.values().cloned().collect();
        for r in &repositories {
            if let Err(err) = self
                .fleet_register_repository(&r.repository, &r.tag_pattern, &r.platform, r.insecure_registry)
                .await
            {
                tracing::warn!(repository = %r.repository, error = %err, "listing a watched repository failed");
            }
        }
        // Registered images, grouped by the options they were registered with.
        let groups = {
            let state = self.inner.fleet.read();
            let mut groups: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
            for entry in state.images.values() {
                // Tags of watched repositories were just registered again above.
                if entry.record.registered && !state.repositories.contains_key(&entry.repository) {
                    groups
                        .entry((entry.record.platform.clone(), entry.record.insecure_registry))
                        .or_default()
                        .push(entry.record.reference.clone());
                }
            }
            groups
        };
        let mut images = 0;
        for ((platform, insecure), references) in groups {
            for chunk in references.chunks(MAX_REFERENCES) {
                for (reference, result) in self.fleet_register(chunk.to_vec(), &platform, insecure).await? {
                    images += 1;
                    if let Err(err) = result {
                        tracing::warn!(reference = %reference, error = %err, "rescanning a registered image failed");
                    }
                }
            }
        }
        Ok((repositories.len(), images))
    }

    /// Stops watching a repository: its record and every image of it are
    /// removed. Returns how many images were removed.
    pub async fn fleet_unregister_repository(&self, repository: &str) -> Result<u32, CoordinatorError> {
        let repository = normalise_repository(repository)?;
        self.fleet_ready().await?;
        self.inner
            .buckets
            .images
            .delete(&repository_key(&repository))
            .await?;
        let references: Vec<String> = {
            let mut state = self.inner.fleet.write();
            state.repositories.remove(&repository);
            state
                .images
                .values()
                .filter(|i| i.repository == repository)
                .map(|i| i.record.reference.clone())
                .collect()
        };
        let mut removed = 0;
        for r in references {
            if self.fleet_delete_image(&r).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The tags of a repository, from the registry's `/v2/<name>/tags/list`
    /// through the coordinator's source pool, so with the same
    /// authentication as image pulls (anonymous, basic credentials from the
    /// Docker config, or a bearer token from the registry's challenge);
    /// following `Link` pages on the same registry, bounded in tags, pages,
    /// bytes and time.
    pub(super) async fn list_tags(
        &self,
        repository: &str,
        insecure_registry: bool,
    ) -> Result<Vec<String>, CoordinatorError> {
        let ImageRef::Registry(r) = ImageRef::parse(repository)? else {
            return Err(CoordinatorError::InvalidArgument(format!(
                "{repository}: not a registry repository"
            )));
        };
        self.check_registry_policy(r.registry(), r.resolve_registry(), insecure_registry)?;
        let source = self.inner.sources.registry(r, &self.inner.config.source)?;
        let timeout = self.inner.config.resolve_timeout;
        // A 429 is waited out (from the first page again), within the timeout.
        let listing = async {
            let mut limited = RateLimitWait::new("a tag listing");
            loop {
                match source
                    .list_tags(MAX_TAGS, MAX_TAG_PAGES, MAX_TAG_PAGE_BYTES)
                    .await
                {
                    Err(TagListError::Source(SourceError::RateLimited {
                        registry,
                        retry_after,
                    })) => limited.wait(&registry, retry_after).await,
                    other => break other,
                }
            }
        };
        tokio::time::timeout(timeout, listing)
            .await
            .map_err(|_| {
                CoordinatorError::Unavailable(format!(
                    "{repository}: listing tags took longer than {timeout:?}"
                ))
            })?
            // Past MAX_TAGS: Full; everything else as any registry answer
            // maps (`From<SourceError>`: the one mapping).
            .map_err(|e| {
                if e.is_too_many_tags() {
                    return CoordinatorError::Full(format!(
                        "{e}: register a narrower set with RegisterImages"
                    ));
                }
                CoordinatorError::from(SourceError::from(e))
            })
    }
}

/// A bad platform is the whole request's error, not one per reference.
fn check_platform(platform: &str) -> Result<(), CoordinatorError> {
    let platform = platform.trim();
    if platform.is_empty() {
        return Ok(());
    }
    if platform.len() > MAX_QUERY_LEN {
        return Err(CoordinatorError::InvalidArgument(format!(
            "platform is longer than {MAX_QUERY_LEN} bytes"
        )));
    }
    strata_worker::source::Platform::parse(platform)
        .map(|_| ())
        .map_err(|e| CoordinatorError::InvalidArgument(format!("platform: {e}")))
}

pub(crate) fn check_reference_count(n: usize) -> Result<(), CoordinatorError> {
    if n == 0 {
        return Err(CoordinatorError::InvalidArgument(
            "references: give at least one".into(),
        ));
    }
    if n > MAX_REFERENCES {
        return Err(CoordinatorError::InvalidArgument(format!(
            "references: {n} given, at most {MAX_REFERENCES} per request"
        )));
    }
    Ok(())
}
