//! A scan brought up to date with the layer index (under its own lock) and,
//! once every layer is done, finalized: inventories read back, composed,
//! matched, the report stored and the record completed. A finalize that
//! fails (the store away) leaves the scan running for `retry_loop`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStoreExt as _, PutPayload};
use strata_proto::v1::{self, scan_event::Event};
use strata_proto::{LayerInventory, Report, SeverityCounts};

use super::error::{from_json, to_json};
use super::kv::Cas;
use super::records::*;
use super::{Coordinator, CoordinatorError, report_path};
use crate::compose;
use crate::util::lock;
use strata_proto::text::now_unix_ms;

impl Coordinator {
    fn scan_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.inner.scan_locks);
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Brings a scan's layer states up to date with the layer index, and
    /// finalizes it when every layer is done. `known`: layer states the
    /// caller already holds, so they are not read back (each read is a
    /// round trip to the key-value store, and a scan of L layers is
    /// refreshed L + 1 times). Returns the scan as stored after.
    pub(super) async fn refresh_scan(
        &self,
        id: &str,
        known: Known<'_>,
    ) -> Result<Option<ScanRecord>, CoordinatorError> {
        let mut known = known;
        for _ in 0..super::CAS_ATTEMPTS {
            match self.refresh_scan_once(id, known).await? {
                Refreshed::Stored(scan) => return Ok(scan.map(|s| *s)),
                // Another coordinator wrote the scan meanwhile (two of them
                // briefly looking after it): read it and every layer back.
                Refreshed::Conflict => known = Known::Nothing,
            }
        }
        Err(CoordinatorError::Internal(format!(
            "scan {id} changed concurrently"
        )))
    }

    async fn refresh_scan_once(&self, id: &str, known: Known<'_>) -> Result<Refreshed, CoordinatorError> {
        let guard = self.scan_lock(id);
        let _held = guard.lock().await;
        let Some((mut scan, revision)) = self.load_scan(id).await? else {
            return Ok(Refreshed::Stored(None));
        };
        if scan.status.is_terminal() {
            lock(&self.inner.running).remove(id);
            self.unwait_finished(&scan);
            return Ok(Refreshed::Stored(Some(Box::new(scan))));
        }
        let mut changed = false;
        let mut states: HashMap<String, (ScanLayerState, Option<String>, u32)> = HashMap::new();
        for (index, layer) in scan.layers.iter_mut().enumerate() {
            if layer.state.is_terminal() {
                continue;
            }
            let key = layer_key(&scan.analyzer_set, &layer.digest);
            let state = match states.get(&layer.digest) {
                Some(s) => s.clone(),
                None => {
                    let now = match known.get(&layer.digest) {
                        Some(now) => Some(now),
                        // Woken for another layer: this one has not changed
                        // (its own result wakes this scan again).
                        None if known.only_these() => continue,
                        None => match self.inner.buckets.layers.get(&key).await? {
                            None => None,
                            Some(e) => Some(LayerNow::of(&from_json::<LayerRecord>("layer", &e.value)?)),
                        },
                    };
                    let s = match now {
                        None => (ScanLayerState::Pending, None, 0),
                        Some(r) => match r.state {
                            LayerState::Queued => (ScanLayerState::Queued, None, 0),
                            LayerState::Analysed if layer.state == ScanLayerState::Pending => {
                                (ScanLayerState::Cached, None, r.packages)
                            }
                            LayerState::Analysed => (ScanLayerState::Analysed, None, r.packages),
                            LayerState::Failed => (ScanLayerState::Failed, r.error.clone(), 0),
                        },
                    };
                    states.insert(layer.digest.clone(), s.clone());
                    s
                }
            };
            if state.0 != layer.state {
                layer.state = state.0;
                layer.error = state.1.clone();
                layer.packages = state.2;
                changed = true;
                self.emit(
                    id,
                    Event::Layer(v1::LayerProgress {
                        digest: layer.digest.clone(),
                        index: index as u32,
                        state: layer.state.to_proto().into(),
                        error: layer.error.clone().unwrap_or_default(),
                        packages: layer.packages,
                    }),
                );
            }
        }
        let done = scan.layers.iter().all(|l| l.state.is_terminal());
        if !changed && !done {
            self.unwait_finished(&scan);
            return Ok(Refreshed::Stored(Some(Box::new(scan))));
        }
        scan.updated_unix_ms = now_unix_ms();
        if done {
            let permit = self.inner.finalizing.acquire().await;
            let finalized = self.finalize(&mut scan).await;
            drop(permit);
            if let Err(err) = finalized {
                // Reports are rebuilt from stored inventories: an error here
                // (the store away) leaves the scan running for a retry.
                tracing::warn!(scan = %id, error = %err, "finalizing failed; retrying in a few seconds");
                lock(&self.inner.retry).insert(id.to_owned());
                return Err(err);
            }
        }
        match self
            .inner
            .buckets
            .scans
            .update(id, to_json(&scan)?, revision)
            .await?
        {
            Cas::Written(_) => {
                // The index keeps what queries need: progress counts and
                // the status; a layer moving from pending to queued is not news.
                self.fleet_scan_changed(&scan);
                self.unwait_finished(&scan);
            }
            Cas::Conflict => return Ok(Refreshed::Conflict),
        }
        if done {
            lock(&self.inner.running).remove(id);
            self.inner.metrics.scans("running", -1);
            self.inner.metrics.scans(scan.status.as_str(), 1);
            let (cached, analysed, failed) = scan.layer_counts();
            self.emit(
                id,
                Event::Matched(v1::Matched {
                    packages: scan.packages,
                    findings: scan.findings,
                    vulndb_version: scan.vulndb_version.clone(),
                }),
            );
            self.emit(
                id,
                Event::Done(v1::Done {
                    status: scan.status.to_proto().into(),
                    error: scan.error.clone().unwrap_or_default(),
                    layers_total: scan.layers.len() as u32,
                    layers_cached: cached,
                    layers_analysed: analysed,
                    layers_failed: failed,
                    counts: Some(scan.counts.to_proto()),
                }),
            );
            tracing::info!(scan = %id, status = scan.status.as_str(), findings = scan.findings, "scan done");
        }
        Ok(Refreshed::Stored(Some(Box::new(scan))))
    }

    /// Composes and matches a scan whose layers are all done, and stores its report.
    async fn finalize(&self, scan: &mut ScanRecord) -> Result<(), CoordinatorError> {
        let started = Instant::now();
        let mut inventories = Vec::new();
        let mut layer_errors = Vec::new();
        for layer in &scan.layers {
            let digest: strata_proto::Digest = layer
                .digest
                .parse()
                .map_err(|e: strata_proto::ParseError| CoordinatorError::Internal(e.to_string()))?;
            if layer.state == ScanLayerState::Failed {
                layer_errors.push(strata_proto::LayerError {
                    digest,
                    error: layer.error.clone().unwrap_or_else(|| "failed".into()),
                });
                continue;
            }
            let inventory: LayerInventory =
                strata_worker::job::read_inventory(self.inner.store.as_ref(), &scan.analyzer_set, &digest)
                    .await
                    .map_err(CoordinatorError::Unavailable)?;
            inventories.push(inventory);
        }
        let vulndb = self.vulndb();
        let mut report = tokio::task::spawn_blocking({
            let vulndb = vulndb.clone();
            let metrics = self.inner.metrics.clone();
            move || {
                let composed = compose::compose(&inventories);
                let compose_secs = started.elapsed().as_secs_f64();
                metrics.compose_seconds(compose_secs);
                let matched = Instant::now();
                let findings = vulndb
                    .matcher
                    .match_packages(composed.os_release.as_ref(), &composed.packages);
                metrics.match_seconds(matched.elapsed().as_secs_f64());
                let mut counts = SeverityCounts::default();
                for f in &findings {
                    counts.add(f.severity);
                }
                Report {
                    scan_id: String::new(),
                    image_reference: String::new(),
                    image_digest: None,
                    platform: String::new(),
                    os_release: composed.os_release,
                    packages: composed.packages,
                    findings,
                    counts,
                    suppressed: 0,
                    vulndb_version: vulndb.matcher.vulndb_version().to_owned(),
                    created_unix_ms: now_unix_ms(),
                    layer_errors: Vec::new(),
                }
            }
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("matching task: {e}")))?;
        report.scan_id = scan.id.clone();
        report.image_reference = scan.reference.clone();
        report.image_digest = scan.image_digest.parse().ok();
        report.platform = scan.resolved_platform.clone();
        report.layer_errors = layer_errors;
        let key = report_path(&scan.id);
        let json = serde_json::to_vec(&report).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        self.inner
            .store
            .put(&key, PutPayload::from(json))
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("storing report {key}: {e}")))?;
        self.fleet_report_stored(&scan.id, &report);
        scan.status = ScanStatus::Complete;
        scan.error = if report.layer_errors.is_empty() {
            None
        } else {
            Some(
                report
                    .layer_errors
                    .iter()
                    .map(|e| e.error.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        scan.counts = Counts::from_domain(&report.counts);
        scan.packages = report.packages.len() as u32;
        scan.findings = report.findings.len() as u32;
        scan.vulndb_version = report.vulndb_version.clone();
        scan.report_key = Some(key.to_string());
        scan.completed_unix_ms = now_unix_ms();
        Ok(())
    }

    /// Refreshes again (whole), every few seconds, the scans whose refresh
    /// or finalizing failed.
    pub(super) async fn retry_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                _ = stop.changed() => return,
            }
            let ids: Vec<String> = lock(&self.inner.retry).drain().collect();
            for id in ids {
                if self.refresh_scan(&id, Known::Nothing).await.is_err() {
                    lock(&self.inner.retry).insert(id);
                }
            }
            let ids: Vec<String> = lock(&self.inner.redispatch).drain().collect();
            for id in ids {
                match self.load_scan(&id).await {
                    Ok(Some((scan, _))) if scan.status == ScanStatus::Running && self.looks_after(&id) => {
                        if self.dispatch_scan(&scan, true).await.is_err() {
                            lock(&self.inner.redispatch).insert(id);
                        }
                    }
                    // Finished, gone, or another coordinator's now.
                    Ok(_) => {}
                    Err(_) => {
                        lock(&self.inner.redispatch).insert(id);
                    }
                }
            }
        }
    }
}

/// A layer record's state, as far as a scan needs it.
#[derive(Debug, Clone)]
pub(super) struct LayerNow {
    pub state: LayerState,
    pub error: Option<String>,
    pub packages: u32,
}

impl LayerNow {
    pub fn of(record: &LayerRecord) -> LayerNow {
        LayerNow {
            state: record.state,
            error: record.error.clone(),
            packages: record.packages,
        }
    }
}

/// What one refresh attempt came to.
enum Refreshed {
    /// The scan as stored after (`None`: no such scan).
    Stored(Option<Box<ScanRecord>>),
    /// Someone else rewrote the record first.
    Conflict,
}

/// What the caller of `refresh_scan` knows of the scan's layers (their
/// records' states, by digest).
pub(super) enum Known<'a> {
    /// Nothing: every unfinished layer is read from the layer index.
    Nothing,
    /// Every layer's state, as `dispatch` just found or made it (a layer
    /// not named is read).
    All(&'a HashMap<String, LayerNow>),
    /// The layers whose results were just stored: only they changed.
    Changed(&'a HashMap<String, LayerNow>),
}

impl Known<'_> {
    fn get(&self, digest: &str) -> Option<LayerNow> {
        match self {
            Known::Nothing => None,
            Known::All(map) | Known::Changed(map) => map.get(digest).cloned(),
        }
    }

    /// True when layers not named are known unchanged.
    fn only_these(&self) -> bool {
        matches!(self, Known::Changed(..))
    }
}
