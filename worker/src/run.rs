//! The worker loop: take layer jobs from the queue, run them, publish their
//! results, ack. The same loop runs in `strata worker` (over NATS) and
//! inside `strata serve` (over the in-process queue).
//!
//! # Contract
//! - `concurrency` slots each hold at most one job. A slot sends progress
//!   acks while its layer is read, so a long layer is not redelivered.
//! - Order per job: the inventory is stored (by `job::process`), then the
//!   result is published, then the job is acked. A crash anywhere in
//!   between redelivers the job; running it again is harmless.
//! - A failure marked permanent (bad gzip, digest mismatch, a cap) is
//!   published and acked at once: retrying cannot help. A transient one is
//!   naked with a backoff, and published as the layer's final failure on
//!   the last delivery (`max_deliver`).
//! - Shutdown: the slots stop taking jobs; a job in hand gets
//!   `shutdown_grace` to finish, then it is naked for another worker.
//! - Workers keep no state: everything is in the queue and the store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_proto::v1::{self, layer_result::Outcome};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::job::{self, JobContext};
use crate::queue::{JobDelivery, Queue};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs held at once.
    pub concurrency: usize,
    pub heartbeat_every: Duration,
    /// How often a held job is reported alive (well under the queue's `ack_wait`).
    pub progress_every: Duration,
    /// How long one poll of the queue waits for a job.
    pub poll_wait: Duration,
    /// After a shutdown signal, how long a job in hand may still run.
    pub shutdown_grace: Duration,
    /// First redelivery delay after a transient failure (doubled per attempt, at most a minute).
    pub retry_base: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 4,
            heartbeat_every: Duration::from_secs(5),
            progress_every: Duration::from_secs(10),
            poll_wait: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            retry_base: Duration::from_millis(500),
        }
    }
}

/// What a worker did, for heartbeats and for its caller when it stops.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub in_flight: AtomicU32,
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// Runs until `shutdown` completes, then drains as the contract says.
pub async fn run(
    queue: Queue,
    ctx: JobContext,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Arc<WorkerCounters> {
    let counters = Arc::new(WorkerCounters::default());
    // `stop`: take no new jobs. `abort`: give up the jobs in hand.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);

    let heartbeat = tokio::spawn(heartbeats(
        queue.clone(),
        ctx.worker_id.clone(),
        counters.clone(),
        options.heartbeat_every,
        stop_rx.clone(),
    ));
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..options.concurrency.max(1) {
        slots.spawn(run_slot(
            slot,
            queue.clone(),
            ctx.clone(),
            options.clone(),
            counters.clone(),
            stop_rx.clone(),
            abort_rx.clone(),
        ));
    }

    shutdown.await;
    tracing::info!(worker = %ctx.worker_id, in_flight = counters.in_flight.load(Ordering::Relaxed), "shutting down: taking no new jobs");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while slots.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(worker = %ctx.worker_id, "shutdown grace over: handing unfinished jobs back");
        let _ = abort_tx.send(true);
        while slots.join_next().await.is_some() {}
    }
    heartbeat.abort();
    counters
}

async fn heartbeats(
    queue: Queue,
    worker_id: String,
    counters: Arc<WorkerCounters>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let hostname = std::env::var("HOSTNAME").unwrap_or_default();
    loop {
        let beat = v1::WorkerHeartbeat {
            worker_id: worker_id.clone(),
            hostname: hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            jobs_in_flight: counters.in_flight.load(Ordering::Relaxed),
            jobs_done: counters.done.load(Ordering::Relaxed),
            jobs_failed: counters.failed.load(Ordering::Relaxed),
            at_unix_ms: strata_proto::text::now_unix_ms(),
        };
        queue.publish_heartbeat(&beat).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn run_slot(
    slot: usize,
    queue: Queue,
    ctx: JobContext,
    options: WorkerOptions,
    counters: Arc<WorkerCounters>,
    mut stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
) {
    let mut errors = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let batch = tokio::select! {
            _ = stop.changed() => return,
            batch = queue.next_jobs(1, options.poll_wait) => batch,
        };
        match batch {
            Ok(deliveries) => {
                errors = 0;
                for delivery in deliveries {
                    handle(&queue, &ctx, &options, &counters, delivery, abort.clone()).await;
                }
            }
            Err(err) => {
                // The broker is away (restarting, unreachable): the client
                // reconnects by itself; wait a little longer each time.
                errors = errors.saturating_add(1);
                let pause = Duration::from_millis(200 * u64::from(errors.min(25)));
                tracing::warn!(slot, error = %err, "cannot fetch jobs; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

async fn handle(
    queue: &Queue,
    ctx: &JobContext,
    options: &WorkerOptions,
    counters: &WorkerCounters,
    delivery: JobDelivery,
    mut abort: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("analyse_layer", layer = %delivery.job.digest, attempt = delivery.attempt, worker = %ctx.worker_id);
    crate::telemetry::propagation::set_parent_from_traceparent(&span, delivery.traceparent.as_deref());
    async {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &ctx.metrics {
            m.jobs_in_flight_add(1);
        }
        let started = Instant::now();
        let job = delivery.job.clone();
        let work = job::process(ctx, &job, delivery.attempt);
        tokio::pin!(work);
        // Well inside ack_wait, whatever the queue's is.
        let every = options
            .progress_every
            .min(queue.ack_wait() / 3)
            .max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await; // the first tick is immediate
        let result = loop {
            tokio::select! {
                result = &mut work => break Some(result),
                _ = ticker.tick() => {
                    if let Err(err) = delivery.progress().await {
                        tracing::debug!(error = %err, "progress ack not sent");
                    }
                }
                _ = abort.changed() => break None,
            }
        };
        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &ctx.metrics {
            m.jobs_in_flight_add(-1);
        }
        let Some(result) = result else {
            tracing::info!("handing the job back (shutdown)");
            let _ = delivery.nak(Duration::ZERO).await;
            return;
        };
        finish(queue, ctx, options, counters, delivery, result, started).await;
    }
    .instrument(span)
    .await
}

/// Publish, then ack (or nak a transient failure that has deliveries left).
async fn finish(
    queue: &Queue,
    ctx: &JobContext,
    options: &WorkerOptions,
    counters: &WorkerCounters,
    delivery: JobDelivery,
    result: v1::LayerResult,
    started: Instant,
) {
    let last_attempt = delivery.attempt >= queue.max_deliver();
    match &result.outcome {
        Some(Outcome::Analysed(a)) => {
            counters.done.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &ctx.metrics {
                m.jobs_done();
                m.bytes_fetched(a.compressed_bytes);
                m.analysis_seconds(started.elapsed().as_secs_f64());
            }
            tracing::info!(packages = a.packages, ms = a.duration_ms, "layer analysed");
        }
        Some(Outcome::Failed(f)) if f.permanent || last_attempt => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &ctx.metrics {
                m.jobs_failed(f.permanent);
            }
            tracing::warn!(error = %f.error, permanent = f.permanent, "layer failed");
        }
        Some(Outcome::Failed(f)) => {
            let delay = retry_delay(options.retry_base, delivery.attempt);
            tracing::info!(error = %f.error, retry_in_ms = delay.as_millis() as u64, "transient failure; the job will be retried");
            if let Err(err) = delivery.nak(delay).await {
                tracing::warn!(error = %err, "nak not sent; the job comes back after ack_wait");
            }
            return;
        }
        None => {}
    }
    let traceparent = crate::telemetry::propagation::current_traceparent().or(delivery.traceparent.clone());
    // The broker may be restarting: keep trying for a while. If it never
    // comes back the job is not acked and is redelivered: harmless.
    let mut pause = Duration::from_millis(100);
    for attempt in 0.. {
        match queue.publish_result(&result, traceparent.as_deref()).await {
            Ok(()) => break,
            Err(err) if attempt < 20 => {
                tracing::warn!(error = %err, "cannot publish the result; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                tracing::error!(error = %err, "giving up publishing the result; the job will be redelivered");
                return;
            }
        }
    }
    if let Err(err) = delivery.ack().await {
        // Redelivered later and run again: the result repeats, harmlessly.
        tracing::warn!(error = %err, "ack not confirmed");
    }
}

fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(7);
    (base * factor).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(retry_delay(base, 1), base);
        assert_eq!(retry_delay(base, 2), base * 2);
        assert_eq!(retry_delay(base, 3), base * 4);
        assert_eq!(retry_delay(base, 100), Duration::from_secs(60));
    }
}
