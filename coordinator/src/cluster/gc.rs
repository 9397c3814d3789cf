//! Garbage: reports of scans no image names any more (a tag moved on, an
//! image left the fleet) and layer inventories no kept scan uses, removed
//! once they have stayed unreferenced for a grace period.
//!
//! # Contract
//! - A scan is referenced while an image record names it or it is still
//!   running; a layer while a referenced scan lists it. Everything else is
//!   a candidate, remembered with the time it was first found so; it is
//!   removed only when still unreferenced `gc_grace` later (a restart
//!   starts the clock again: never earlier than the grace).
//! - A scan goes with its report and its digest index entry; a layer with
//!   its inventory, its record (so a later image with it queues it again)
//!   and a blob copied for a local image. Records go before objects: a
//!   submit that finds no record queues the layer anew.
//! - Counted in [`GcStats`], shown by `AdminService` and `strata status`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use object_store::ObjectStoreExt as _;
use object_store::path::Path as StorePath;

use super::error::from_json;
use super::records::{ImageRecord, LayerRecord, ScanRecord, ScanStatus, digest_index_key};
use super::report::report_path;
use super::{Coordinator, CoordinatorError};
use crate::util::lock;
use strata_proto::text::now_unix_ms;

/// What the collector did, since the coordinator started.
#[derive(Debug, Default)]
pub struct GcStats {
    pub last_run_unix_ms: AtomicI64,
    pub reports_removed: AtomicU64,
    pub inventories_removed: AtomicU64,
}

/// Candidates and when they were first found unreferenced.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    scans: HashMap<String, i64>,
    layers: HashMap<String, i64>,
}

/// What one collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcRun {
    pub reports: u64,
    pub inventories: u64,
}

impl Coordinator {
    /// Collects every `interval` until `stop`.
    pub(super) async fn gc_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let (Some(grace), Some(interval)) = (self.inner.config.gc_grace, self.inner.config.gc_interval)
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if !self.holds_lease(super::peers::LEASE_GC) {
                continue; // another coordinator collects
            }
            match self.gc_once(grace).await {
                Ok(run) if run != GcRun::default() => {
                    tracing::info!(
                        reports = run.reports,
                        inventories = run.inventories,
                        "garbage removed"
                    )
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "garbage collection failed; the next run retries"),
            }
        }
    }

    /// One collection: candidates found (and remembered) now, those found
    /// at least `grace` ago and still unreferenced removed.
    pub async fn gc_once(&self, grace: Duration) -> Result<GcRun, CoordinatorError> {
        let now = now_unix_ms();
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let buckets = &self.inner.buckets;
        // Scans the images name.
        let mut named: HashSet<String> = HashSet::new();
        for key in buckets.images.keys().await? {
            // Image records (`ref.*`; repositories are `repo.*`).
            if !key.starts_with("ref.") {
                continue;
            }
            if let Some(e) = buckets.images.get(&key).await? {
                named.insert(from_json::<ImageRecord>("image", &e.value)?.scan_id);
            }
        }
        // Every scan: kept ones give their layers; others are candidates.
        let mut kept_layers: HashSet<String> = HashSet::new();
        let mut unreferenced_scans: Vec<ScanRecord> = Vec::new();
        for key in buckets.scans.keys().await? {
            if !key.starts_with("s-") {
                continue;
            }
            let Some(e) = buckets.scans.get(&key).await? else {
                continue;
            };
            let scan: ScanRecord = from_json("scan", &e.value)?;
            if named.contains(&scan.id) || scan.status == ScanStatus::Running {
                kept_layers.extend(
                    scan.layers
                        .iter()
                        .map(|l| format!("{}|{}", scan.analyzer_set, l.digest)),
                );
            } else {
                unreferenced_scans.push(scan);
            }
        }
        let mut run = GcRun::default();
        let due = |seen: &mut HashMap<String, i64>, id: &str| -> bool {
            let first = *seen.entry(id.to_owned()).or_insert(now);
            now - first >= grace_ms
        };
        let mut remove_scans = Vec::new();
        let mut remove_layers = Vec::new();
        {
            let mut c = lock(&self.inner.gc_candidates);
            let unreferenced_ids: HashSet<&str> = unreferenced_scans.iter().map(|s| s.id.as_str()).collect();
            c.scans.retain(|id, _| unreferenced_ids.contains(id.as_str()));
            for scan in &unreferenced_scans {
                if due(&mut c.scans, &scan.id) {
                    remove_scans.push(scan.clone());
                }
            }
        }
        for scan in remove_scans {
            buckets.scans.delete(&scan.id).await?;
            let index = digest_index_key(&scan.image_digest);
            if let Some(e) = buckets.scans.get(&index).await?
                && e.value.as_ref() == scan.id.as_bytes()
            {
                buckets.scans.delete(&index).await?;
            }
            if let Some(key) = &scan.report_key {
                delete_object(self, &StorePath::from(key.as_str())).await?;
            } else {
                delete_object(self, &report_path(&scan.id)).await?;
            }
            lock(&self.inner.gc_candidates).scans.remove(&scan.id);
            run.reports += 1;
        }
        // Layers no kept scan lists.
        let mut unreferenced_layers: Vec<(String, LayerRecord)> = Vec::new();
        for key in buckets.layers.keys().await? {
            let Some(e) = buckets.layers.get(&key).await? else {
                continue;
            };
            let Ok(layer) = from_json::<LayerRecord>("layer", &e.value) else {
                continue;
            };
            if !kept_layers.contains(&format!("{}|{}", layer.analyzer_set, layer.digest)) {
                unreferenced_layers.push((key, layer));
            }
        }
        {
            let mut c = lock(&self.inner.gc_candidates);
            let keys: HashSet<&str> = unreferenced_layers.iter().map(|(k, _)| k.as_str()).collect();
            c.layers.retain(|k, _| keys.contains(k.as_str()));
            for (key, layer) in &unreferenced_layers {
                if due(&mut c.layers, key) {
                    remove_layers.push((key.clone(), layer.clone()));
                }
            }
        }
        for (key, layer) in remove_layers {
            buckets.layers.delete(&key).await?;
            if let Ok(digest) = layer.digest.parse::<strata_proto::Digest>() {
                delete_object(
                    self,
                    &strata_worker::job::inventory_key(&layer.analyzer_set, &digest),
                )
                .await?;
                delete_object(
                    self,
                    &StorePath::from(format!("blobs/{}/{}", digest.algorithm(), digest.hex())),
                )
                .await?;
            }
            lock(&self.inner.gc_candidates).layers.remove(&key);
            run.inventories += 1;
        }
        let stats = &self.inner.gc_stats;
        stats.last_run_unix_ms.store(now, Ordering::Relaxed);
        stats.reports_removed.fetch_add(run.reports, Ordering::Relaxed);
        stats
            .inventories_removed
            .fetch_add(run.inventories, Ordering::Relaxed);
        Ok(run)
    }

    /// What the collector removed since start, and when it last ran.
    pub fn gc_stats(&self) -> &GcStats {
        &self.inner.gc_stats
    }
}

/// Deletes an object; one already gone is not an error.
async fn delete_object(c: &Coordinator, path: &StorePath) -> Result<(), CoordinatorError> {
    match c.inner.store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(CoordinatorError::Unavailable(format!("removing {path}: {e}"))),
    }
}
