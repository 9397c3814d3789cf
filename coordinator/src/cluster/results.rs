//! Layer results: the results loop marks layers analysed or failed (a
//! batch applied concurrently, each acked once stored) and wakes the scans
//! waiting on them; jobs that ran out of deliveries become failed results.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use strata_proto::v1::{self, layer_result::Outcome};

use super::error::{from_json, to_json};
use super::finalize::{Known, LayerNow};
use super::kv::Cas;
use super::records::*;
use super::{CAS_ATTEMPTS, Coordinator, CoordinatorError};
use crate::util::lock;
use strata_proto::text::now_unix_ms;

/// Layer results stored at once by the results loop.
const RESULT_CONCURRENCY: usize = 16;
/// Scans refreshed at once after a batch of results: each refresh waits on
/// a few key-value round trips (and a finalize on the store), so many run
/// together; a shared base layer's result wakes hundreds.
const WAKE_CONCURRENCY: usize = 128;

impl Coordinator {
    pub(super) async fn results_loop(self, stop: tokio::sync::watch::Receiver<bool>) {
        let mut errors = 0u32;
        while !*stop.borrow() {
            match self
                .inner
                .queue
                .next_results(256, Duration::from_millis(500))
                .await
            {
                Ok(batch) => {
                    errors = 0;
                    // Results of different layers are independent (layer
                    // records are compare-and-set): store a batch's
                    // concurrently, so the coordinator keeps up as workers
                    // are added, each acked once its layer record is stored
                    // (the record is the truth: a scan not refreshed after a
                    // crash is dispatched again at start and reads it back).
                    // Then refresh each scan they woke once, with every layer
                    // of it the batch finished (an image's layers often
                    // finish together).
                    let this = &self;
                    let woken: Vec<Woken> = futures::stream::iter(batch)
                        .map(|delivery| async move {
                            match this.store_result(&delivery.result).await {
                                Ok(woken) => {
                                    let _ = delivery.ack().await;
                                    woken
                                }
                                Err(err) => {
                                    tracing::warn!(layer = %delivery.result.digest, error = %err, "result not applied; it will be redelivered");
                                    let _ = delivery.nak(Duration::from_secs(1)).await;
                                    None
                                }
                            }
                        })
                        .buffer_unordered(RESULT_CONCURRENCY)
                        .filter_map(|w| async move { w })
                        .collect()
                        .await;
                    self.wake(woken).await;
                }
                Err(err) => {
                    errors = errors.saturating_add(1);
                    tracing::warn!(error = %err, "cannot read results; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(errors.min(25)))).await;
                }
            }
        }
    }

    /// Stores a layer's outcome, then refreshes the scans waiting on it.
    pub async fn apply_result(&self, result: &v1::LayerResult) -> Result<(), CoordinatorError> {
        let stored = self.store_result(result).await?;
        self.wake(stored.into_iter().collect()).await;
        Ok(())
    }

    /// Stores a layer's outcome in its layer record. Returns what the
    /// waiting scans must learn: the layer's key, digest and state as
    /// stored (`None`: not known here, read it back); nothing for a result
    /// no layer record asked for.
    async fn store_result(&self, result: &v1::LayerResult) -> Result<Option<Woken>, CoordinatorError> {
        let key = layer_key(&result.analyzer_set_version, &result.digest);
        let layers = &self.inner.buckets.layers;
        let mut stored = None;
        for _ in 0..CAS_ATTEMPTS {
            let Some(entry) = layers.get(&key).await? else {
                // A result for a layer nobody queued (an old job): ignore.
                return Ok(None);
            };
            let mut record: LayerRecord = from_json("layer", &entry.value)?;
            if record.state == LayerState::Analysed {
                // A redelivered job's second result: nothing new.
                stored = Some(LayerNow::of(&record));
                break;
            }
            match &result.outcome {
                Some(Outcome::Analysed(a)) => {
                    record.state = LayerState::Analysed;
                    record.inventory_key = Some(a.inventory_key.clone());
                    record.packages = a.packages;
                    record.error = None;
                    record.permanent = false;
                }
                Some(Outcome::Failed(f)) => {
                    record.state = LayerState::Failed;
                    record.error = Some(f.error.clone());
                    record.permanent = f.permanent;
                }
                None => return Ok(None),
            }
            record.updated_unix_ms = now_unix_ms();
            match layers.update(&key, to_json(&record)?, entry.revision).await? {
                Cas::Written(_) => {
                    stored = Some(LayerNow::of(&record));
                    break;
                }
                Cas::Conflict => continue,
            }
        }
        Ok(Some(Woken {
            key,
            digest: result.digest.clone(),
            stored,
        }))
    }

    /// Refreshes every scan waiting on the layers `woken`, once each, told
    /// which of its layers changed and how (a scan woken by a layer whose
    /// state is not known here reads every layer back).
    pub(super) async fn wake(&self, woken: Vec<Woken>) {
        // Scan → its layers that changed (by digest); `None`: read all.
        let mut scans: HashMap<String, Option<HashMap<String, LayerNow>>> = HashMap::new();
        {
            let mut waiters = lock(&self.inner.waiters);
            for w in woken {
                // Another coordinator looks after the rest (it follows the
                // same layer changes); if it leaves, the scan is taken over whole.
                for id in waiters
                    .remove(&w.key)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| self.looks_after(id))
                {
                    let entry = scans.entry(id).or_insert_with(|| Some(HashMap::new()));
                    match (&w.stored, entry.as_mut()) {
                        (Some(now), Some(changed)) => {
                            changed.insert(w.digest.clone(), now.clone());
                        }
                        _ => *entry = None,
                    }
                }
            }
        }
        // A shared base layer wakes hundreds of scans: refresh them concurrently
        // (each scan's record is rewritten under its own lock).
        futures::stream::iter(scans)
            .for_each_concurrent(WAKE_CONCURRENCY, |(id, changed)| async move {
                let known = match &changed {
                    Some(changed) => Known::Changed(changed),
                    None => Known::Nothing,
                };
                if let Err(err) = self.refresh_scan(&id, known).await {
                    tracing::warn!(scan = %id, error = %err, "could not refresh scan; retrying in a few seconds");
                    // The retry loop refreshes it whole (every layer read
                    // back): these layers' results will not wake it again.
                    lock(&self.inner.retry).insert(id);
                }
            })
            .await;
    }

    pub(super) async fn dead_jobs_loop(self, stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.inner.queue.next_dead_jobs(Duration::from_millis(500)).await {
                Ok(jobs) => {
                    for job in jobs {
                        let max = self.inner.queue.max_deliver();
                        tracing::warn!(layer = %job.digest, deliveries = max, "layer job ran out of deliveries");
                        let result = v1::LayerResult {
                            digest: job.digest.clone(),
                            analyzer_set_version: job.analyzer_set_version.clone(),
                            worker_id: String::new(),
                            attempt: max,
                            outcome: Some(Outcome::Failed(v1::LayerFailed {
                                error: format!(
                                    "layer {}: delivered {max} times and never finished (workers crashed or timed out)",
                                    job.digest
                                ),
                                permanent: false,
                            })),
                        };
                        if let Err(err) = self.apply_result(&result).await {
                            tracing::warn!(error = %err, "could not mark a dead job's layer failed");
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "dead-job advisories unavailable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// A layer whose result was stored: the scans waiting on `key` are woken.
pub(super) struct Woken {
    pub(super) key: String,
    pub(super) digest: String,
    pub(super) stored: Option<LayerNow>,
}
