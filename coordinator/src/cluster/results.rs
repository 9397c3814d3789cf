//! Layer results: the results loop marks layers analysed or failed (a
//! batch applied concurrently, each acked once stored) and wakes the scans
//! waiting on them; jobs that ran out of deliveries become failed results.

use std::time::Duration;

use futures::StreamExt as _;
use strata_proto::v1::{self, layer_result::Outcome};

use super::error::{from_json, to_json};
use super::kv::Cas;
use super::records::*;
use super::{CAS_ATTEMPTS, Coordinator, CoordinatorError};
use crate::util::lock;
use strata_proto::text::now_unix_ms;

/// Layer results applied, and scans refreshed, at once by the results loop.
const RESULT_CONCURRENCY: usize = 16;

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
                    // records are compare-and-set, scans locked one by one):
                    // apply a batch concurrently, so the coordinator keeps up
                    // as workers are added. Each is acked once applied.
                    let this = &self;
                    futures::stream::iter(batch)
                        .for_each_concurrent(RESULT_CONCURRENCY, |delivery| async move {
                            match this.apply_result(&delivery.result).await {
                                Ok(()) => {
                                    let _ = delivery.ack().await;
                                }
                                Err(err) => {
                                    tracing::warn!(layer = %delivery.result.digest, error = %err, "result not applied; it will be redelivered");
                                    let _ = delivery.nak(Duration::from_secs(1)).await;
                                }
                            }
                        })
                        .await;
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
        let key = layer_key(&result.analyzer_set_version, &result.digest);
        let layers = &self.inner.buckets.layers;
        for _ in 0..CAS_ATTEMPTS {
            let Some(entry) = layers.get(&key).await? else {
                // A result for a layer nobody queued (an old job): ignore.
                return Ok(());
            };
            let mut record: LayerRecord = from_json("layer", &entry.value)?;
            if record.state == LayerState::Analysed {
                break; // a redelivered job's second result: nothing new
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
                None => return Ok(()),
            }
            record.updated_unix_ms = now_unix_ms();
            match layers.update(&key, to_json(&record)?, entry.revision).await? {
                Cas::Written(_) => break,
                Cas::Conflict => continue,
            }
        }
        self.wake(&key).await;
        Ok(())
    }

    /// Refreshes every scan waiting on `key`.
    async fn wake(&self, key: &str) {
        let waiting: Vec<String> = lock(&self.inner.waiters)
            .remove(key)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        // A shared base layer wakes hundreds of scans: refresh them concurrently
        // (each scan's record is rewritten under its own lock).
        futures::stream::iter(waiting)
            .for_each_concurrent(RESULT_CONCURRENCY, |id| async move {
                if let Err(err) = self.refresh_scan(&id).await {
                    tracing::warn!(scan = %id, error = %err, "could not refresh scan");
                    // Keep waiting: the next result or a restart tries again.
                    lock(&self.inner.waiters)
                        .entry(key.to_owned())
                        .or_default()
                        .insert(id);
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
