//! The cluster transport: NATS JetStream.
//!
//! - `STRATA_JOBS`: a work-queue stream (file storage), subjects
//!   `strata.jobs.ci` and `strata.jobs.background`, one durable pull
//!   consumer per subject shared by every worker (explicit ack, `ack_wait`,
//!   `max_deliver`, `max_ack_pending`). Its `duplicate_window` drops a job
//!   whose message id was already published.
//! - `STRATA_RESULTS`: a work-queue stream of layer results with one durable
//!   consumer for the coordinator, so results survive a coordinator restart.
//! - Heartbeats on core subjects `strata.heartbeat.<worker>`.
//! - Jobs that ran out of deliveries are announced by the server's
//!   `MAX_DELIVERIES` advisory; the coordinator reads the job back by its
//!   stream sequence and removes it.
//!
//! The coordinator creates (or updates) the streams and consumers
//! ([`NatsQueue::create`]); workers bind to them ([`NatsQueue::bind`]), so
//! the coordinator's settings are the ones in force.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, Context,
    consumer::{AckPolicy, PullConsumer, pull},
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use futures::StreamExt;
use strata_proto::v1;
use tokio::sync::Mutex;

use super::names::*;
use super::{
    HeartbeatStream, JobDelivery, JobHandle, Lag, Priority, QueueError, QueueSettings, ResultDelivery,
    ResultHandle, decode_job, decode_result, encode,
};

const TRACEPARENT: &str = "traceparent";
/// How long a no-wait fetch may stay open on the server (see `fetch`).
const NO_WAIT_EXPIRES: Duration = Duration::from_millis(100);
/// A long poll is cut into slices this long, so a CI job that arrives while
/// a worker waits on the background queue is seen soon.
const POLL_SLICE: Duration = Duration::from_millis(250);

/// How long a result a coordinator pulled stays its own before it is
/// delivered again (to any coordinator): bounds what a coordinator killed
/// mid-batch costs the scans waiting on those results.
pub const RESULTS_ACK_WAIT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct NatsQueue {
    client: async_nats::Client,
    js: Context,
    jobs: stream::Stream,
    ci: PullConsumer,
    background: PullConsumer,
    /// Coordinator only.
    results: Option<PullConsumer>,
    results_messages: Arc<Mutex<Option<pull::Stream>>>,
    dead: Arc<Mutex<Option<async_nats::Subscriber>>>,
    max_deliver: u32,
}

fn jobs_stream_config(settings: &QueueSettings) -> stream::Config {
    stream::Config {
        name: JOBS_STREAM.to_owned(),
        subjects: vec![JOBS_CI_SUBJECT.to_owned(), JOBS_BACKGROUND_SUBJECT.to_owned()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: settings.replicas.max(1),
        duplicate_window: settings.duplicate_window,
        max_messages: settings.max_jobs,
        discard: DiscardPolicy::New,
        ..Default::default()
    }
}

fn job_consumer_config(name: &str, subject: &str, settings: &QueueSettings) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: subject.to_owned(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: i64::from(settings.max_deliver),
        max_ack_pending: settings.max_ack_pending,
        ..Default::default()
    }
}

impl NatsQueue {
    /// Coordinator: create or update the streams and consumers, and
    /// subscribe to the advisories of jobs that ran out of deliveries.
    pub async fn create(
        client: async_nats::Client,
        settings: &QueueSettings,
    ) -> Result<NatsQueue, QueueError> {
        let js = jetstream::new(client.clone());
        js.create_or_update_stream(jobs_stream_config(settings))
            .await
            .map_err(|e| QueueError::nats(format!("creating stream {JOBS_STREAM}"), e))?;
        let jobs = js
            .get_stream(JOBS_STREAM)
            .await
            .map_err(|e| QueueError::nats(format!("stream {JOBS_STREAM}"), e))?;
        let mut consumers = Vec::new();
        for (name, subject) in [
            (CI_CONSUMER, JOBS_CI_SUBJECT),
            (BACKGROUND_CONSUMER, JOBS_BACKGROUND_SUBJECT),
        ] {
            let config = job_consumer_config(name, subject, settings);
            let consumer: PullConsumer = match jobs.create_consumer(config.clone()).await {
                Ok(c) => c,
                // Changing some fields of an existing consumer is refused: replace it.
                Err(_) => {
                    let _ = jobs.delete_consumer(name).await;
                    jobs.create_consumer(config)
                        .await
                        .map_err(|e| QueueError::nats(format!("creating consumer {name}"), e))?
                }
            };
            consumers.push(consumer);
        }
        let background = consumers.pop().ok_or(QueueError::Closed)?;
        let ci = consumers.pop().ok_or(QueueError::Closed)?;

        js.create_or_update_stream(stream::Config {
            name: RESULTS_STREAM.to_owned(),
            subjects: vec![RESULTS_SUBJECT.to_owned()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: settings.replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| QueueError::nats(format!("creating stream {RESULTS_STREAM}"), e))?;
        let results_stream = js
            .get_stream(RESULTS_STREAM)
            .await
            .map_err(|e| QueueError::nats(format!("stream {RESULTS_STREAM}"), e))?;
        let results: PullConsumer = results_stream
            .create_consumer(pull::Config {
                durable_name: Some(RESULTS_CONSUMER.to_owned()),
                ack_policy: AckPolicy::Explicit,
                // A coordinator acks a result once its layer record is
                // stored (milliseconds); one that died holding results has
                // them redelivered to the others after this. (Created or
                // updated: an existing consumer takes the new value.)
                ack_wait: RESULTS_ACK_WAIT,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .map_err(|e| QueueError::nats(format!("creating consumer {RESULTS_CONSUMER}"), e))?;
        let dead = client
            .subscribe(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.*"
            ))
            .await
            .map_err(|e| QueueError::nats("subscribing to max-deliveries advisories", e))?;
        Ok(NatsQueue {
            client,
            js,
            jobs,
            ci,
            background,
            results: Some(results),
            results_messages: Arc::new(Mutex::new(None)),
            dead: Arc::new(Mutex::new(Some(dead))),
            max_deliver: settings.max_deliver,
        })
    }

    /// Worker: bind to the streams and consumers the coordinator made.
    /// Fails (to be retried by the caller) until they exist.
    pub async fn bind(client: async_nats::Client) -> Result<NatsQueue, QueueError> {
        let js = jetstream::new(client.clone());
        let jobs = js
            .get_stream(JOBS_STREAM)
            .await
            .map_err(|e| QueueError::nats(format!("stream {JOBS_STREAM} (has a coordinator started?)"), e))?;
        let ci: PullConsumer = jobs
            .get_consumer(CI_CONSUMER)
            .await
            .map_err(|e| QueueError::nats(format!("consumer {CI_CONSUMER}"), e))?;
        let background: PullConsumer = jobs
            .get_consumer(BACKGROUND_CONSUMER)
            .await
            .map_err(|e| QueueError::nats(format!("consumer {BACKGROUND_CONSUMER}"), e))?;
        let max_deliver = u32::try_from(ci.cached_info().config.max_deliver).unwrap_or(u32::MAX);
        Ok(NatsQueue {
            client,
            js,
            jobs,
            ci,
            background,
            results: None,
            results_messages: Arc::new(Mutex::new(None)),
            dead: Arc::new(Mutex::new(None)),
            max_deliver,
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn max_deliver(&self) -> u32 {
        self.max_deliver
    }

    /// The job consumers' `ack_wait`, as the server has it.
    pub fn ack_wait(&self) -> Duration {
        self.ci.cached_info().config.ack_wait
    }

    pub async fn publish_job(
        &self,
        job: &v1::LayerJob,
        priority: Priority,
        msg_id: &str,
        traceparent: Option<&str>,
    ) -> Result<bool, QueueError> {
        let subject = match priority {
            Priority::Ci => JOBS_CI_SUBJECT,
            Priority::Background => JOBS_BACKGROUND_SUBJECT,
        };
        let mut message = PublishMessage::build().payload(encode(job)).message_id(msg_id);
        if let Some(tp) = traceparent {
            message = message.header(TRACEPARENT, tp);
        }
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| publish_error(subject, e))?
            .await
            .map_err(|e| publish_error(subject, e))?;
        Ok(!ack.duplicate)
    }

    pub async fn next_jobs(&self, max: usize, wait: Duration) -> Result<Vec<JobDelivery>, QueueError> {
        let max = max.max(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            for consumer in [&self.ci, &self.background] {
                let got = deliveries(fetch(consumer, max, None).await?);
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            // Long-poll the CI queue for a slice, then look at both again.
            let got = deliveries(fetch(&self.ci, max, Some(left.min(POLL_SLICE))).await?);
            if !got.is_empty() {
                return Ok(got);
            }
        }
    }

    pub async fn publish_result(
        &self,
        result: &v1::LayerResult,
        traceparent: Option<&str>,
    ) -> Result<(), QueueError> {
        let mut message = PublishMessage::build().payload(encode(result));
        if let Some(tp) = traceparent {
            message = message.header(TRACEPARENT, tp);
        }
        self.js
            .send_publish(RESULTS_SUBJECT, message)
            .await
            .map_err(|e| publish_error(RESULTS_SUBJECT, e))?
            .await
            .map_err(|e| publish_error(RESULTS_SUBJECT, e))?;
        Ok(())
    }

    pub async fn next_results(&self, max: usize, wait: Duration) -> Result<Vec<ResultDelivery>, QueueError> {
        let consumer = self.results.as_ref().ok_or(QueueError::Closed)?;
        let mut guard = self.results_messages.lock().await;
        if guard.is_none() {
            let stream = consumer
                .stream()
                .max_messages_per_batch(max.clamp(1, 1000))
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| QueueError::nats("reading results", e))?;
            *guard = Some(stream);
        }
        let Some(stream) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, stream.next()).await {
            Err(_) => return Ok(out),
            Ok(next) => next,
        };
        let mut next = first;
        loop {
            match next {
                Some(Ok(message)) => match decode_result(&message.payload) {
                    Ok(result) => {
                        let traceparent = header(message.headers.as_ref());
                        out.push(ResultDelivery {
                            result,
                            traceparent,
                            handle: ResultHandle::Nats(Box::new(message)),
                        });
                    }
                    Err(err) => {
                        // A result nobody can read is dropped, not retried forever.
                        tracing::warn!(error = %err, "dropping an undecodable layer result");
                        let _ = message.ack().await;
                    }
                },
                Some(Err(err)) => {
                    // The stream broke (a reconnect, a deleted consumer): make a new one next time.
                    *guard = None;
                    if out.is_empty() {
                        return Err(QueueError::nats("reading results", err));
                    }
                    return Ok(out);
                }
                None => {
                    *guard = None;
                    return Ok(out);
                }
            }
            if out.len() >= max {
                return Ok(out);
            }
            match futures::FutureExt::now_or_never(stream.next()) {
                Some(n) => next = n,
                None => return Ok(out),
            }
        }
    }

    pub async fn next_dead_jobs(&self, wait: Duration) -> Result<Vec<v1::LayerJob>, QueueError> {
        let mut guard = self.dead.lock().await;
        let Some(sub) = guard.as_mut() else {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        };
        let Ok(Some(advisory)) = tokio::time::timeout(wait, sub.next()).await else {
            return Ok(Vec::new());
        };
        #[derive(serde::Deserialize)]
        struct MaxDeliveries {
            stream_seq: u64,
        }
        let seq = match serde_json::from_slice::<MaxDeliveries>(&advisory.payload) {
            Ok(a) => a.stream_seq,
            Err(err) => {
                tracing::warn!(error = %err, "unreadable max-deliveries advisory");
                return Ok(Vec::new());
            }
        };
        let message = match self.jobs.get_raw_message(seq).await {
            Ok(m) => m,
            // Already gone (acked at the last moment): nothing to mark.
            Err(_) => return Ok(Vec::new()),
        };
        let job = decode_job(&message.payload)?;
        // It will never be delivered again: take it out of the work queue.
        let _ = self.jobs.delete_message(seq).await;
        Ok(vec![job])
    }

    pub async fn publish_heartbeat(&self, heartbeat: &v1::WorkerHeartbeat) {
        let subject = format!("{HEARTBEAT_PREFIX}.{}", subject_token(&heartbeat.worker_id));
        if let Err(err) = self.client.publish(subject, encode(heartbeat)).await {
            tracing::debug!(error = %err, "heartbeat not sent");
        }
    }

    pub async fn heartbeats(&self) -> Result<HeartbeatStream, QueueError> {
        let sub = self
            .client
            .subscribe(format!("{HEARTBEAT_PREFIX}.*"))
            .await
            .map_err(|e| QueueError::nats("subscribing to heartbeats", e))?;
        Ok(sub
            .filter_map(|m| async move { prost::Message::decode(m.payload.as_ref()).ok() })
            .boxed())
    }

    pub async fn lag(&self) -> Result<Vec<Lag>, QueueError> {
        let mut out = Vec::new();
        for (priority, consumer) in [(Priority::Ci, &self.ci), (Priority::Background, &self.background)] {
            let mut consumer = consumer.clone();
            let info = consumer
                .info()
                .await
                .map_err(|e| QueueError::nats(format!("consumer info ({})", priority.as_str()), e))?;
            out.push(Lag {
                priority,
                pending: info.num_pending,
                in_flight: info.num_ack_pending as u64,
            });
        }
        Ok(out)
    }
}

/// Worker ids become subject tokens: keep them to safe characters.
fn subject_token(id: &str) -> String {
    let token: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if token.is_empty() { "_".to_owned() } else { token }
}

fn header(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(TRACEPARENT))
        .map(|v| v.as_str().to_owned())
}

fn publish_error(subject: &str, e: impl std::fmt::Display + HasKind) -> QueueError {
    let text = e.to_string();
    if text.contains("maximum messages") || text.contains("maximum bytes") {
        return QueueError::Full(format!("{JOBS_STREAM}: {text}"));
    }
    if e.kind() == Some(PublishErrorKind::MaxAckPending) {
        return QueueError::Full(format!("{subject}: too many publishes in flight"));
    }
    QueueError::nats(format!("publishing to {subject}"), text)
}

/// The publish error's kind where it has one.
trait HasKind {
    fn kind(&self) -> Option<PublishErrorKind>;
}
impl HasKind for jetstream::context::PublishError {
    fn kind(&self) -> Option<PublishErrorKind> {
        Some(jetstream::context::PublishError::kind(self))
    }
}

/// At most `max` messages: what is there now (`expires: None`), or what
/// arrives within `expires`.
async fn fetch(
    consumer: &PullConsumer,
    max: usize,
    expires: Option<Duration>,
) -> Result<Vec<jetstream::Message>, QueueError> {
    let mut batch = match expires {
        // A no-wait fetch still needs an expiry: when the consumer is at
        // `max_ack_pending`, the server delivers what it may and then holds
        // the request open; without one it stayed open until `ack_wait`
        // passed and filled up with redeliveries of jobs still held.
        None => consumer
            .fetch()
            .max_messages(max)
            .expires(NO_WAIT_EXPIRES)
            .messages()
            .await
            .map_err(|e| QueueError::nats("fetching jobs", e))?,
        Some(expires) => consumer
            .batch()
            .max_messages(max)
            .expires(expires.max(Duration::from_millis(10)))
            .messages()
            .await
            .map_err(|e| QueueError::nats("fetching jobs", e))?,
    };
    let mut out = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(m) => out.push(m),
            // A timeout or a "no messages" status ends the batch.
            Err(err) => {
                tracing::debug!(error = %err, "fetch ended");
                break;
            }
        }
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// The decodable jobs among `messages`; an undecodable one (which no
/// worker can ever run: only something other than Strata publishes those)
/// is terminated, so it is not redelivered, and logged.
fn deliveries(messages: Vec<jetstream::Message>) -> Vec<JobDelivery> {
    messages
        .into_iter()
        .filter_map(|m| match job_delivery(m) {
            Ok(d) => Some(d),
            Err(err) => {
                tracing::warn!(error = %err, "dropping an undecodable layer job");
                None
            }
        })
        .collect()
}

fn job_delivery(message: jetstream::Message) -> Result<JobDelivery, QueueError> {
    let attempt = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let traceparent = header(message.headers.as_ref());
    let job = match decode_job(&message.payload) {
        Ok(job) => job,
        Err(err) => {
            let m = message;
            tokio::spawn(async move {
                let _ = m.ack_with(jetstream::AckKind::Term).await;
            });
            return Err(err);
        }
    };
    Ok(JobDelivery {
        job,
        attempt,
        traceparent,
        handle: JobHandle::Nats(Box::new(message)),
    })
}
