//! Filling the fleet index and keeping it current: the hooks the
//! coordinator calls where it writes an image record, a scan record or a
//! report; the lazy load (images and repositories once, then the scans and
//! reports the index lacks); and re-matching reports matched under older
//! vulnerability data (rayon, each distinct package once).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::StreamExt as _;
use object_store::{ObjectStoreExt as _, path::Path as StorePath};
use strata_proto::Report;

use super::index::{Matched, ScanEntry, Unshared};
use super::{CONCURRENCY, IMAGE_PREFIX, REPOSITORY_PREFIX, RepositoryRecord};
use crate::cluster::error::from_json;
use crate::cluster::records::{ImageRecord, ScanRecord, ScanStatus};
use crate::cluster::{Coordinator, CoordinatorError};

/// Key in the images bucket holding the matcher revision the fleet's
/// findings were last matched with.
const MATCHER_REVISION_KEY: &str = "matcher-revision";

/// Key in the images bucket a coordinator writes when asked to re-match
/// the whole fleet, so the others do too.
pub(in crate::cluster) const REMATCH_REQUEST_KEY: &str = "rematch-request";

/// Reports re-matched at a time at load.
const REMATCH_CHUNK: usize = 2_000;

impl Coordinator {
    /// An image record was written. A registered reference now naming a
    /// scan already matched (a new tag for a scanned digest, or a tag moved
    /// back) has its findings changes recorded.
    pub(in crate::cluster) fn fleet_image_noted(&self, record: &ImageRecord) {
        let matched = {
            let mut state = self.inner.fleet.write();
            state.put_image(record.clone());
            state
                .scans
                .get(&record.scan_id)
                .is_some_and(|s| s.report.is_some())
        };
        if record.registered && matched {
            self.fleet_reconcile_later(std::collections::BTreeSet::from([record.reference.clone()]));
        }
    }

    /// A scan record was written.
    pub(in crate::cluster) fn fleet_scan_changed(&self, scan: &ScanRecord) {
        let mut state = self.inner.fleet.write();
        if state.scans.contains_key(&scan.id) || state.by_scan.contains_key(&scan.id) {
            state.put_scan(scan);
        }
    }

    /// A report was stored (the scan record follows): the references whose
    /// latest scan it is have their findings changes recorded.
    pub(in crate::cluster) fn fleet_report_stored(&self, scan_id: &str, report: &Report) {
        let unshared = Unshared::of_report(report);
        let references = {
            let mut state = self.inner.fleet.write();
            state.put_report(scan_id, unshared);
            state.by_scan.get(scan_id).cloned().unwrap_or_default()
        };
        self.fleet_reconcile_later(references);
    }

    /// `strata fleet rematch`: this coordinator's index re-matched whole,
    /// then the others asked to do the same with theirs (the key
    /// `rematch-request` in `strata_images`, which they follow).
    pub async fn fleet_rematch_everywhere(&self) -> Result<super::RematchSummary, CoordinatorError> {
        let summary = self.rematch_all().await?;
        if let Some(peers) = self.peers() {
            let request =
                serde_json::json!({ "by": peers.id(), "at_unix_ms": strata_proto::text::now_unix_ms() });
            self.inner
                .buckets
                .images
                .put(
                    REMATCH_REQUEST_KEY,
                    serde_json::to_vec(&request).unwrap_or_default().into(),
                )
                .await?;
        }
        Ok(summary)
    }

    /// Another coordinator asked for a whole re-match (change stream).
    pub(in crate::cluster) fn fleet_rematch_requested(&self, value: &[u8]) {
        let by = serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v["by"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if self.peers().is_some_and(|p| p.id() == by) {
            return; // this coordinator's own request
        }
        let this = self.clone();
        tokio::spawn(async move {
            tracing::info!(by = %by, "re-matching the whole fleet, as another coordinator was asked to");
            if let Err(err) = this.rematch_all().await {
                tracing::warn!(error = %err, "re-matching the fleet failed; `strata fleet rematch` tries again");
            }
        });
    }

    /// Another coordinator completed a scan (the change stream): the
    /// coordinator holding the history lease reads its report now, so the
    /// findings changes of the images naming it are recorded; the others
    /// read it when a query needs it (the lazy load).
    pub(in crate::cluster) async fn fleet_follow_report(&self, scan_id: &str) {
        if !self.holds_lease(crate::cluster::peers::LEASE_HISTORY) {
            return;
        }
        let wanted = {
            let state = self.inner.fleet.read();
            state.by_scan.contains_key(scan_id) && state.scans.get(scan_id).is_none_or(|e| e.report.is_none())
        };
        if !wanted {
            return;
        }
        match self.report(scan_id).await {
            Ok(report) => self.fleet_report_stored(scan_id, &report),
            Err(err) => {
                tracing::debug!(scan = %scan_id, error = %err, "report of a scan finished elsewhere unreadable; the next query reads it")
            }
        }
    }

    /// A watched repository's record was written (change stream).
    pub(in crate::cluster) fn fleet_repository_noted(&self, record: RepositoryRecord) {
        self.inner
            .fleet
            .write()
            .repositories
            .insert(record.repository.clone(), record);
    }

    /// An image record was deleted (change stream): only its key is known.
    pub(in crate::cluster) fn fleet_image_key_deleted(&self, key: &str) {
        let mut state = self.inner.fleet.write();
        let reference = state
            .images
            .keys()
            .find(|r| crate::cluster::records::image_key(r) == key)
            .cloned();
        if let Some(reference) = reference {
            state.remove_image(&reference);
        }
    }

    /// A watched repository's record was deleted (change stream).
    pub(in crate::cluster) fn fleet_repository_key_deleted(&self, key: &str) {
        let mut state = self.inner.fleet.write();
        let repository = state
            .repositories
            .keys()
            .find(|r| super::repository_key(r) == key)
            .cloned();
        if let Some(repository) = repository {
            state.repositories.remove(&repository);
        }
    }

    /// Fills the index at start, so the first query is fast (errors are
    /// retried by the first query).
    pub(in crate::cluster) async fn fleet_warm_up(self) {
        let started = Instant::now();
        match self.fleet_ready().await {
            Ok(()) => tracing::info!(
                images = self.inner.fleet.read().images.len(),
                secs = started.elapsed().as_secs_f64(),
                "fleet index loaded"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "loading the fleet index failed; the first fleet query retries")
            }
        }
    }

    /// Re-matches the whole fleet when the matcher revision stored in the
    /// images bucket is not this build's (an upgrade changed how packages
    /// match), then stores this build's. Findings that appear or go become
    /// events like any other change. A first start stores the revision only.
    pub(in crate::cluster) async fn fleet_check_matcher(&self) -> Result<(), CoordinatorError> {
        let current = crate::matching::MATCHER_REVISION.to_string();
        // The index whole first: an index that failed to load would look
        // empty, and the new revision be stored with nothing re-matched.
        self.fleet_ready().await?;
        let stored = self.inner.buckets.images.get(MATCHER_REVISION_KEY).await?;
        let stored = stored.map(|e| String::from_utf8_lossy(&e.value).into_owned());
        // With other coordinators running, the stored revision may have been
        // written by one that re-matched its own index only (a rolling
        // upgrade): a coordinator joining others re-matches its own at start.
        let others = self.peers().is_some_and(|p| p.members().len() > 1);
        if stored.as_deref() == Some(current.as_str()) && !others {
            return Ok(());
        }
        let has_reports = self.inner.fleet.read().scans.values().any(|s| s.report.is_some());
        if has_reports {
            tracing::info!(
                stored = stored.as_deref().unwrap_or("none"),
                current = %current,
                "matcher revision changed: re-matching the whole fleet"
            );
            let summary = self.rematch_all().await?;
            tracing::info!(
                distinct = summary.distinct_packages,
                images_changed = summary.images,
                new = summary.findings_new,
                resolved = summary.findings_resolved,
                "fleet re-matched for matcher revision {current}"
            );
        }
        self.inner
            .buckets
            .images
            .put(MATCHER_REVISION_KEY, current.into_bytes().into())
            .await?;
        Ok(())
    }

    /// Makes the index whole and current: loads images and repositories once,
    /// the scans and reports it lacks, and re-matches reports matched under
    /// older vulnerability data.
    pub(super) async fn fleet_ready(&self) -> Result<(), CoordinatorError> {
        let _one = self.inner.fleet.loading.lock().await;
        let index = &self.inner.fleet;
        if !index.loaded.load(Ordering::Acquire) {
            let images = &self.inner.buckets.images;
            let keys = images.keys().await?;
            let mut loaded_images = Vec::new();
            let mut loaded_repos = Vec::new();
            let mut entries = futures::stream::iter(
                keys.into_iter()
                    .filter(|k| k.starts_with(IMAGE_PREFIX) || k.starts_with(REPOSITORY_PREFIX)),
            )
            .map(|k| async move { (images.get(&k).await, k) })
            .buffer_unordered(CONCURRENCY * 4);
            while let Some((entry, key)) = entries.next().await {
                let Some(entry) = entry? else { continue };
                if key.starts_with(IMAGE_PREFIX) {
                    match from_json::<ImageRecord>("image", &entry.value) {
                        Ok(r) => loaded_images.push(r),
                        Err(err) => {
                            tracing::warn!(key = %key, error = %err, "unreadable image record skipped")
                        }
                    }
                } else {
                    match from_json::<RepositoryRecord>("repository", &entry.value) {
                        Ok(r) => loaded_repos.push(r),
                        Err(err) => {
                            tracing::warn!(key = %key, error = %err, "unreadable repository record skipped")
                        }
                    }
                }
            }
            let mut state = index.write();
            for r in loaded_images {
                // A hook may have written a newer record meanwhile: keep it.
                if !state.images.contains_key(&r.reference) {
                    state.put_image(r);
                }
            }
            for r in loaded_repos {
                state.repositories.entry(r.repository.clone()).or_insert(r);
            }
            index.loaded.store(true, Ordering::Release);
        }
        self.fleet_load_scans().await?;
        self.fleet_rematch().await
    }

    /// Reads the scan records and reports the index lacks.
    async fn fleet_load_scans(&self) -> Result<(), CoordinatorError> {
        let missing = self.inner.fleet.read().missing_scans();
        if missing.is_empty() {
            return Ok(());
        }
        let mut loads = futures::stream::iter(missing)
            .map(|id| async move {
                let scan = self.scan(&id).await?;
                let report = match &scan {
                    Some(s) if s.status == ScanStatus::Complete => match &s.report_key {
                        Some(key) => Some(self.fleet_read_report(key).await?),
                        None => None,
                    },
                    _ => None,
                };
                Ok::<_, CoordinatorError>((id, scan, report))
            })
            .buffer_unordered(CONCURRENCY * 2);
        let mut first_error = None;
        while let Some(loaded) = loads.next().await {
            let (id, scan, report) = match loaded {
                Ok(l) => l,
                Err(err) => {
                    first_error.get_or_insert(err);
                    continue;
                }
            };
            let mut state = self.inner.fleet.write();
            if !state.by_scan.contains_key(&id) {
                continue; // no image points at it any more
            }
            let Some(scan) = scan else {
                // The image names a scan that is not stored: pending until a
                // submit writes it (the hook then fills it in).
                state.insert_scan(&id, ScanEntry::pending());
                continue;
            };
            if !state.scans.contains_key(&id) {
                state.put_scan(&scan);
            }
            match report {
                Some(Ok(report)) if state.scans.get(&id).is_some_and(|e| e.report.is_none()) => {
                    state.put_report(&id, Unshared::from_report(report));
                }
                Some(Err(err)) => {
                    tracing::warn!(scan = %id, error = %err, "stored report unreadable: left out of fleet queries");
                    if let Some(e) = state.scans.get_mut(&id) {
                        e.report_broken = true;
                    }
                }
                // Complete without a report key: nothing to read, do not retry.
                None if scan.status == ScanStatus::Complete => {
                    if let Some(e) = state.scans.get_mut(&id) {
                        e.report_broken = e.report.is_none();
                    }
                }
                Some(Ok(_)) | None => {}
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// A stored report: the outer error is the store being away (retried),
    /// the inner one a report that cannot be parsed (not retried).
    async fn fleet_read_report(
        &self,
        key: &str,
    ) -> Result<Result<Report, CoordinatorError>, CoordinatorError> {
        let bytes = self
            .inner
            .store
            .get(&StorePath::from(key))
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?
            .bytes()
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?;
        Ok(from_json::<Report>("report", &bytes))
    }

    /// Re-matches, from their packages, the reports matched under other
    /// vulnerability data than the data in force (each distinct package once).
    async fn fleet_rematch(&self) -> Result<(), CoordinatorError> {
        let vulndb = self.vulndb();
        let version = vulndb.matcher.vulndb_version().to_owned();
        let stale: Vec<(String, Arc<Matched>)> = self
            .inner
            .fleet
            .read()
            .scans
            .iter()
            .filter_map(|(id, e)| e.report.as_ref().map(|m| (id, m)))
            .filter(|(_, m)| m.vulndb_version != version)
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let count = stale.len();
        // In chunks, each put before the next is matched: the reports they
        // replace are freed as it goes, so a fleet's findings are not held
        // twice at once (at 10,000 images that was the coordinator's peak).
        let mut stale = stale.into_iter();
        loop {
            let chunk: Vec<_> = stale.by_ref().take(REMATCH_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let data = vulndb.clone();
            let (rematched, _) =
                tokio::task::spawn_blocking(move || super::rematch::rematch(&data, chunk, &|_| true))
                    .await
                    .map_err(|e| CoordinatorError::Internal(format!("re-matching task: {e}")))?;
            let mut state = self.inner.fleet.write();
            super::rematch::put_rematched(&mut state, rematched);
        }
        let mut state = self.inner.fleet.write();
        // The others found nothing new: current under the data in force.
        for entry in state.scans.values_mut() {
            if let Some(m) = entry.report.as_mut()
                && m.vulndb_version != version
            {
                Arc::make_mut(m).vulndb_version = version.clone();
            }
        }
        tracing::info!(
            scans = count,
            secs = started.elapsed().as_secs_f64(),
            "fleet re-matched against new vulnerability data"
        );
        Ok(())
    }
}
