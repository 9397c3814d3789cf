//! The in-process queue `strata serve` runs: the same semantics as the NATS
//! transport (message-id dedup, CI before background, redelivery after a nak
//! or a dropped delivery, dead jobs after `max_deliver`), without a broker.
//!
//! What it does not have: durability (a restarted `strata serve` re-queues
//! its unfinished layers from its state store) and `ack_wait` (a job's
//! holder is a task in this process; when it goes away its delivery is
//! dropped, which redelivers the job at once).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use strata_proto::v1;
use tokio::sync::{Notify, broadcast};

use super::{
    HeartbeatStream, JobDelivery, JobHandle, Lag, Priority, QueueError, QueueSettings, ResultDelivery,
};

/// Results and dead jobs waiting to be read, at most. Beyond it the oldest
/// are not dropped: publishing waits (see `publish_result`); this only
/// bounds memory against a coordinator that stopped reading.
const MAX_PENDING_RESULTS: usize = 100_000;

#[derive(Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

struct Inner {
    settings: QueueSettings,
    state: Mutex<State>,
    jobs_ready: Notify,
    results: Mutex<VecDeque<(v1::LayerResult, Option<String>)>>,
    results_ready: Notify,
    dead: Mutex<VecDeque<v1::LayerJob>>,
    dead_ready: Notify,
    heartbeats: broadcast::Sender<v1::WorkerHeartbeat>,
}

#[derive(Default)]
struct State {
    ci: VecDeque<Item>,
    background: VecDeque<Item>,
    /// Message ids queued or held: a second publish of one is a duplicate.
    ids: HashSet<String>,
    held_ci: u64,
    held_background: u64,
}

struct Item {
    job: v1::LayerJob,
    priority: Priority,
    msg_id: String,
    /// Deliveries so far.
    deliveries: u32,
    traceparent: Option<String>,
}

/// A job handed to a worker task. Dropped without `ack`: delivered again.
pub(crate) struct Held {
    inner: Arc<Inner>,
    item: Option<Item>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind
    // (queues and counters), still consistent: carry on with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryQueue {
    pub fn new(settings: QueueSettings) -> MemoryQueue {
        let (heartbeats, _) = broadcast::channel(256);
        MemoryQueue {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(State::default()),
                jobs_ready: Notify::new(),
                results: Mutex::new(VecDeque::new()),
                results_ready: Notify::new(),
                dead: Mutex::new(VecDeque::new()),
                dead_ready: Notify::new(),
                heartbeats,
            }),
        }
    }

    pub fn max_deliver(&self) -> u32 {
        self.inner.settings.max_deliver
    }

    pub fn ack_wait(&self) -> Duration {
        self.inner.settings.ack_wait
    }

    pub fn publish_job(
        &self,
        job: &v1::LayerJob,
        priority: Priority,
        msg_id: &str,
        traceparent: Option<&str>,
    ) -> Result<bool, QueueError> {
        let mut state = lock(&self.inner.state);
        if state.ids.contains(msg_id) {
            return Ok(false);
        }
        let queued = (state.ci.len() + state.background.len()) as i64;
        if queued >= self.inner.settings.max_jobs {
            return Err(QueueError::Full(format!(
                "{queued} jobs queued, the limit is {}",
                self.inner.settings.max_jobs
            )));
        }
        state.ids.insert(msg_id.to_owned());
        let item = Item {
            job: job.clone(),
            priority,
            msg_id: msg_id.to_owned(),
            deliveries: 0,
            traceparent: traceparent.map(str::to_owned),
        };
        match priority {
            Priority::Ci => state.ci.push_back(item),
            Priority::Background => state.background.push_back(item),
        }
        drop(state);
        self.inner.jobs_ready.notify_waiters();
        Ok(true)
    }

    pub async fn next_jobs(&self, max: usize, wait: Duration) -> Result<Vec<JobDelivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.jobs_ready.notified();
            let taken = self.take_jobs(max.max(1));
            if !taken.is_empty() {
                return Ok(taken);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn take_jobs(&self, max: usize) -> Vec<JobDelivery> {
        let mut state = lock(&self.inner.state);
        let held = (state.held_ci + state.held_background) as i64;
        let room = usize::try_from(self.inner.settings.max_ack_pending - held).unwrap_or(0);
        let mut out = Vec::new();
        while out.len() < max.min(room) {
            let Some(mut item) = state.ci.pop_front().or_else(|| state.background.pop_front()) else {
                break;
            };
            item.deliveries += 1;
            match item.priority {
                Priority::Ci => state.held_ci += 1,
                Priority::Background => state.held_background += 1,
            }
            out.push(JobDelivery {
                job: item.job.clone(),
                attempt: item.deliveries,
                traceparent: item.traceparent.clone(),
                handle: JobHandle::Memory(Box::new(Held {
                    inner: self.inner.clone(),
                    item: Some(item),
                })),
            });
        }
        out
    }

    pub fn publish_result(
        &self,
        result: &v1::LayerResult,
        traceparent: Option<&str>,
    ) -> Result<(), QueueError> {
        let mut results = lock(&self.inner.results);
        if results.len() >= MAX_PENDING_RESULTS {
            return Err(QueueError::Full(format!(
                "{} results wait for the coordinator",
                results.len()
            )));
        }
        results.push_back((result.clone(), traceparent.map(str::to_owned)));
        drop(results);
        self.inner.results_ready.notify_waiters();
        Ok(())
    }

    pub async fn next_results(&self, max: usize, wait: Duration) -> Result<Vec<ResultDelivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.results_ready.notified();
            {
                let mut results = lock(&self.inner.results);
                let n = results.len().min(max.max(1));
                if n > 0 {
                    return Ok(results
                        .drain(..n)
                        .map(|(result, traceparent)| ResultDelivery {
                            result,
                            traceparent,
                            handle: super::ResultHandle::Memory,
                        })
                        .collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    pub async fn next_dead_jobs(&self, wait: Duration) -> Vec<v1::LayerJob> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.dead_ready.notified();
            {
                let mut dead = lock(&self.inner.dead);
                if !dead.is_empty() {
                    return dead.drain(..).collect();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    pub fn publish_heartbeat(&self, heartbeat: &v1::WorkerHeartbeat) {
        // No receiver is fine: nobody is listening yet.
        let _ = self.inner.heartbeats.send(heartbeat.clone());
    }

    pub fn heartbeats(&self) -> HeartbeatStream {
        let rx = self.inner.heartbeats.subscribe();
        tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|r| async move { r.ok() })
            .boxed()
    }

    pub fn lag(&self) -> Vec<Lag> {
        let state = lock(&self.inner.state);
        vec![
            Lag {
                priority: Priority::Ci,
                pending: state.ci.len() as u64,
                in_flight: state.held_ci,
            },
            Lag {
                priority: Priority::Background,
                pending: state.background.len() as u64,
                in_flight: state.held_background,
            },
        ]
    }
}

impl Inner {
    fn release(&self, item: &Item) {
        let mut state = lock(&self.state);
        match item.priority {
            Priority::Ci => state.held_ci = state.held_ci.saturating_sub(1),
            Priority::Background => state.held_background = state.held_background.saturating_sub(1),
        }
    }

    /// Back in the queue, or dead when it has had all its deliveries.
    fn requeue(&self, item: Item) {
        if item.deliveries >= self.settings.max_deliver {
            lock(&self.state).ids.remove(&item.msg_id);
            lock(&self.dead).push_back(item.job);
            self.dead_ready.notify_waiters();
            return;
        }
        let mut state = lock(&self.state);
        match item.priority {
            Priority::Ci => state.ci.push_back(item),
            Priority::Background => state.background.push_back(item),
        }
        drop(state);
        self.jobs_ready.notify_waiters();
    }
}

impl Held {
    pub(crate) fn ack(mut self) {
        if let Some(item) = self.item.take() {
            self.inner.release(&item);
            lock(&self.inner.state).ids.remove(&item.msg_id);
        }
    }

    pub(crate) fn nak(mut self, delay: Duration) {
        if let Some(item) = self.item.take() {
            self.inner.release(&item);
            let inner = self.inner.clone();
            if delay.is_zero() {
                inner.requeue(item);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    inner.requeue(item);
                });
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.inner.release(&item);
            self.inner.requeue(item);
        }
    }
}
