//! `dispatch`: a scan registered as a waiter on each of its layers, then
//! each layer looked up in the layer index: analysed → cached; queued →
//! wait; absent (or failed for a transient reason) → create the layer
//! record (compare-and-set: of 500 images asking at once, one wins) and
//! queue the job, whose message id is the dedup key.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::error::{from_json, to_json};
use super::finalize::{Known, LayerNow};
use super::kv::Cas;
use super::records::*;
use super::{CAS_ATTEMPTS, Coordinator, CoordinatorError};
use crate::util::lock;
use strata_proto::text::now_unix_ms;

impl Coordinator {
    /// Looks up each layer of a scan and queues what must be analysed.
    /// `republish`: queue again layers already queued (after a restart).
    /// Returns the scan as stored after.
    pub(super) async fn dispatch_scan(
        &self,
        scan: &ScanRecord,
        republish: bool,
    ) -> Result<Option<ScanRecord>, CoordinatorError> {
        let id = &scan.id;
        let mine = self.looks_after(id);
        lock(&self.inner.running).insert(id.clone(), mine);
        let mut known: HashMap<String, LayerNow> = HashMap::new();
        for layer in &scan.layers {
            if layer.state.is_terminal() || known.contains_key(&layer.digest) {
                continue;
            }
            let key = layer_key(&scan.analyzer_set, &layer.digest);
            // Wait first, look second: a result that lands in between still
            // finds this scan among the waiters.
            lock(&self.inner.waiters)
                .entry(key.clone())
                .or_default()
                .insert(id.to_owned());
            let now = self.ensure_layer(scan, layer, &key, republish).await?;
            known.insert(layer.digest.clone(), now);
        }
        self.refresh_scan(id, Known::All(&known)).await
    }

    /// Makes sure the layer is analysed or on its way; returns its state.
    async fn ensure_layer(
        &self,
        scan: &ScanRecord,
        layer: &ScanLayer,
        key: &str,
        republish: bool,
    ) -> Result<LayerNow, CoordinatorError> {
        let layers = &self.inner.buckets.layers;
        for _ in 0..CAS_ATTEMPTS {
            let existing = layers.get(key).await?;
            let (mut record, revision) = match existing {
                Some(e) => {
                    let record: LayerRecord = from_json("layer", &e.value)?;
                    match record.state {
                        LayerState::Analysed => {
                            self.cache_hit();
                            return Ok(LayerNow::of(&record));
                        }
                        LayerState::Failed if record.permanent => return Ok(LayerNow::of(&record)),
                        LayerState::Queued => {
                            // In flight for another image: not fetched again for this one.
                            self.cache_hit();
                            if republish {
                                self.publish(&record).await?;
                            }
                            return Ok(LayerNow::of(&record));
                        }
                        // Failed for a reason that may pass (a registry
                        // down, workers lost): try again for this scan.
                        LayerState::Failed => (record, Some(e.revision)),
                    }
                }
                None => {
                    let location = match &scan.location {
                        Some(l) => l.clone(),
                        None => BlobLocation::ObjectStore {
                            url: self.blob_url(&layer.digest),
                        },
                    };
                    let record = LayerRecord {
                        digest: layer.digest.clone(),
                        analyzer_set: scan.analyzer_set.clone(),
                        state: LayerState::Queued,
                        media_type: layer.media_type.clone(),
                        size: layer.size,
                        location,
                        priority: scan.priority.clone(),
                        generation: 0,
                        inventory_key: None,
                        packages: 0,
                        error: None,
                        permanent: false,
                        queued_unix_ms: now_unix_ms(),
                        updated_unix_ms: now_unix_ms(),
                    };
                    (record, None)
                }
            };
            if revision.is_some() {
                record.generation += 1;
                record.state = LayerState::Queued;
                record.error = None;
                record.queued_unix_ms = now_unix_ms();
                record.updated_unix_ms = now_unix_ms();
                record.priority = scan.priority.clone();
            }
            let json = to_json(&record)?;
            let cas = match revision {
                None => layers.create(key, json).await?,
                Some(rev) => layers.update(key, json, rev).await?,
            };
            if cas == Cas::Conflict {
                continue; // someone else queued it (or finished it): look again
            }
            self.cache_miss();
            self.publish(&record).await?;
            return Ok(LayerNow::of(&record));
        }
        Err(CoordinatorError::Internal(format!(
            "layer {key}: too much contention"
        )))
    }

    async fn publish(&self, record: &LayerRecord) -> Result<(), CoordinatorError> {
        let traceparent = strata_worker::telemetry::propagation::current_traceparent();
        let queued = self
            .inner
            .queue
            .publish_job(&record.job(), &record.msg_id(), traceparent.as_deref())
            .await?;
        if queued {
            self.inner.metrics.jobs_queued(&record.priority);
        }
        Ok(())
    }

    fn cache_hit(&self) {
        self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.layer_cache_hit();
    }

    fn cache_miss(&self) {
        self.inner.cache_misses.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.layer_cache_miss();
    }
}
