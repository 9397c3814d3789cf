//! The job transport between the coordinator and workers: layer jobs one
//! way, layer results (and heartbeats) the other.
//!
//! One closed enum, two transports (as mini-redis matches over its
//! commands): [`nats`] is NATS JetStream for the cluster, [`memory`] the
//! in-process queue `strata serve` runs. The coordinator and the worker loop
//! are the same code over either.
//!
//! # Contract
//! - Jobs carry a message id (`<digest>/<analyzer-set>` plus a generation
//!   when a layer is queued again after failing): publishing the same id
//!   twice queues it once.
//! - [`Queue::next_jobs`] serves CI jobs before background ones.
//! - A delivered job is held until it is acked, naked (redelivered after a
//!   delay) or the holder disappears (NATS: after `ack_wait`; in process:
//!   when the [`JobDelivery`] is dropped unacked). Holders of long jobs call
//!   [`JobDelivery::progress`] to keep them. A job delivered `max_deliver`
//!   times without an ack comes back from [`Queue::next_dead_jobs`] so the
//!   coordinator can mark the layer failed.
//! - Results are durable on NATS (a stream with a durable consumer): a
//!   coordinator that was down reads them when it comes back.
//! - W3C `traceparent` travels with every job and result.

pub mod memory;
pub mod nats;

use std::time::Duration;

use prost::Message as _;
use strata_proto::v1;

/// Stream and subject names on NATS, and the consumer names KEDA scales on.
pub mod names {
    pub const JOBS_STREAM: &str = "STRATA_JOBS";
    pub const JOBS_CI_SUBJECT: &str = "strata.jobs.ci";
    pub const JOBS_BACKGROUND_SUBJECT: &str = "strata.jobs.background";
    pub const CI_CONSUMER: &str = "strata-workers-ci";
    pub const BACKGROUND_CONSUMER: &str = "strata-workers-background";
    pub const RESULTS_STREAM: &str = "STRATA_RESULTS";
    pub const RESULTS_SUBJECT: &str = "strata.results";
    pub const RESULTS_CONSUMER: &str = "strata-coordinator";
    pub const HEARTBEAT_PREFIX: &str = "strata.heartbeat";
}

/// Which of the two job queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Ci,
    Background,
}

impl Priority {
    pub fn from_proto(p: i32) -> Priority {
        match v1::Priority::try_from(p) {
            Ok(v1::Priority::Background) => Priority::Background,
            _ => Priority::Ci,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Ci => "ci",
            Priority::Background => "background",
        }
    }
    pub fn to_proto(self) -> v1::Priority {
        match self {
            Priority::Ci => v1::Priority::Ci,
            Priority::Background => v1::Priority::Background,
        }
    }
}

/// How the job queue behaves. The coordinator creates the NATS streams and
/// consumers with these; workers read them from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// How long a delivered job may go without an ack or progress before it
    /// is delivered again (to another worker).
    pub ack_wait: Duration,
    /// Deliveries of one job before it is given up on.
    pub max_deliver: u32,
    /// Jobs delivered and not yet acked, across all workers: the back-pressure knob.
    pub max_ack_pending: i64,
    /// Jobs the stream holds at most; publishing more is refused (a full queue).
    pub max_jobs: i64,
    /// Stream replicas (1 for a single server; 3 for a clustered NATS).
    pub replicas: usize,
    /// The window in which a repeated message id is dropped.
    pub duplicate_window: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
            max_ack_pending: 1000,
            max_jobs: 1_000_000,
            replicas: 1,
            duplicate_window: Duration::from_secs(600),
        }
    }
}

/// Errors of the transport. `Full` is its own kind: the API maps it to
/// `RESOURCE_EXHAUSTED`.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job queue is full ({0})")]
    Full(String),
    #[error("nats: {what}: {reason}")]
    Nats { what: String, reason: String },
    #[error("bad {what} message: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("queue closed")]
    Closed,
}

impl QueueError {
    pub(crate) fn nats(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        QueueError::Nats {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// The transport. Cheap to clone.
#[derive(Clone)]
pub enum Queue {
    Nats(Box<nats::NatsQueue>),
    Memory(memory::MemoryQueue),
}

/// Queue depth of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub priority: Priority,
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acked.
    pub in_flight: u64,
}

impl Queue {
    /// An in-process queue with these settings.
    pub fn memory(settings: QueueSettings) -> Queue {
        Queue::Memory(memory::MemoryQueue::new(settings))
    }

    /// Deliveries of one job before it is given up on.
    pub fn max_deliver(&self) -> u32 {
        match self {
            Queue::Nats(q) => q.max_deliver(),
            Queue::Memory(q) => q.max_deliver(),
        }
    }

    /// How long a held job may go without progress before redelivery.
    pub fn ack_wait(&self) -> Duration {
        match self {
            Queue::Nats(q) => q.ack_wait(),
            Queue::Memory(q) => q.ack_wait(),
        }
    }

    /// Queue a job. Returns `false` when its message id was a duplicate
    /// (already queued): nothing new was queued.
    pub async fn publish_job(
        &self,
        job: &v1::LayerJob,
        msg_id: &str,
        traceparent: Option<&str>,
    ) -> Result<bool, QueueError> {
        let priority = Priority::from_proto(job.priority);
        match self {
            Queue::Nats(q) => q.publish_job(job, priority, msg_id, traceparent).await,
            Queue::Memory(q) => q.publish_job(job, priority, msg_id, traceparent),
        }
    }

    /// Up to `max` jobs, CI first, waiting at most about `wait` when none is
    /// ready. An empty list means none arrived in time.
    pub async fn next_jobs(&self, max: usize, wait: Duration) -> Result<Vec<JobDelivery>, QueueError> {
        match self {
            Queue::Nats(q) => q.next_jobs(max, wait).await,
            Queue::Memory(q) => q.next_jobs(max, wait).await,
        }
    }

    /// Publish a job's result (after its inventory is stored, before its ack).
    pub async fn publish_result(
        &self,
        result: &v1::LayerResult,
        traceparent: Option<&str>,
    ) -> Result<(), QueueError> {
        match self {
            Queue::Nats(q) => q.publish_result(result, traceparent).await,
            Queue::Memory(q) => q.publish_result(result, traceparent),
        }
    }

    /// Up to `max` results, waiting at most about `wait`.
    pub async fn next_results(&self, max: usize, wait: Duration) -> Result<Vec<ResultDelivery>, QueueError> {
        match self {
            Queue::Nats(q) => q.next_results(max, wait).await,
            Queue::Memory(q) => q.next_results(max, wait).await,
        }
    }

    /// Jobs that were delivered `max_deliver` times without an ack (their
    /// workers died each time), waiting at most about `wait`.
    pub async fn next_dead_jobs(&self, wait: Duration) -> Result<Vec<v1::LayerJob>, QueueError> {
        match self {
            Queue::Nats(q) => q.next_dead_jobs(wait).await,
            Queue::Memory(q) => Ok(q.next_dead_jobs(wait).await),
        }
    }

    /// Fire-and-forget: a lost heartbeat is replaced by the next.
    pub async fn publish_heartbeat(&self, heartbeat: &v1::WorkerHeartbeat) {
        match self {
            Queue::Nats(q) => q.publish_heartbeat(heartbeat).await,
            Queue::Memory(q) => q.publish_heartbeat(heartbeat),
        }
    }

    /// Heartbeats from every worker, as they arrive.
    pub async fn heartbeats(&self) -> Result<HeartbeatStream, QueueError> {
        match self {
            Queue::Nats(q) => q.heartbeats().await,
            Queue::Memory(q) => Ok(q.heartbeats()),
        }
    }

    /// Depth of each priority's queue.
    pub async fn lag(&self) -> Result<Vec<Lag>, QueueError> {
        match self {
            Queue::Nats(q) => q.lag().await,
            Queue::Memory(q) => Ok(q.lag()),
        }
    }
}

/// Heartbeats as they arrive; undecodable ones are skipped.
pub type HeartbeatStream = futures::stream::BoxStream<'static, v1::WorkerHeartbeat>;

/// One delivered job. Ack, nak or drop it.
pub struct JobDelivery {
    pub job: v1::LayerJob,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub traceparent: Option<String>,
    handle: JobHandle,
}

enum JobHandle {
    Nats(Box<async_nats::jetstream::Message>),
    Memory(Box<memory::Held>),
}

impl JobDelivery {
    /// Tell the queue the job is still being worked on (resets `ack_wait`).
    pub async fn progress(&self) -> Result<(), QueueError> {
        match &self.handle {
            JobHandle::Nats(m) => m
                .ack_with(async_nats::jetstream::AckKind::Progress)
                .await
                .map_err(|e| QueueError::nats("progress ack", e)),
            JobHandle::Memory(_) => Ok(()),
        }
    }

    /// Done: the queue forgets the job. Waits for the server to confirm.
    pub async fn ack(self) -> Result<(), QueueError> {
        match self.handle {
            JobHandle::Nats(m) => m.double_ack().await.map_err(|e| QueueError::nats("ack", e)),
            JobHandle::Memory(h) => {
                h.ack();
                Ok(())
            }
        }
    }

    /// Not done: deliver it again after `delay` (to any worker).
    pub async fn nak(self, delay: Duration) -> Result<(), QueueError> {
        match self.handle {
            JobHandle::Nats(m) => m
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| QueueError::nats("nak", e)),
            JobHandle::Memory(h) => {
                h.nak(delay);
                Ok(())
            }
        }
    }
}

/// One delivered result. Ack it once its effects are stored.
pub struct ResultDelivery {
    pub result: v1::LayerResult,
    pub traceparent: Option<String>,
    handle: ResultHandle,
}

enum ResultHandle {
    Nats(Box<async_nats::jetstream::Message>),
    Memory,
}

impl ResultDelivery {
    pub async fn ack(self) -> Result<(), QueueError> {
        match self.handle {
            ResultHandle::Nats(m) => m
                .double_ack()
                .await
                .map_err(|e| QueueError::nats("result ack", e)),
            ResultHandle::Memory => Ok(()),
        }
    }

    /// Leave it for a later attempt (the coordinator could not store its effect).
    pub async fn nak(self, delay: Duration) -> Result<(), QueueError> {
        match self.handle {
            ResultHandle::Nats(m) => m
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| QueueError::nats("result nak", e)),
            ResultHandle::Memory => Ok(()),
        }
    }
}

fn encode<M: prost::Message>(m: &M) -> bytes::Bytes {
    bytes::Bytes::from(m.encode_to_vec())
}

fn decode_job(bytes: &[u8]) -> Result<v1::LayerJob, QueueError> {
    v1::LayerJob::decode(bytes).map_err(|e| QueueError::Decode {
        what: "layer job",
        reason: e.to_string(),
    })
}

fn decode_result(bytes: &[u8]) -> Result<v1::LayerResult, QueueError> {
    v1::LayerResult::decode(bytes).map_err(|e| QueueError::Decode {
        what: "layer result",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
