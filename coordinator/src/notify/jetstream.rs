//! The cluster's log: the JetStream stream [`EVENTS_STREAM`].
//!
//! - Subjects `strata.events.<kind>.<severity>` (`finding_new.high`,
//!   `image_severity.critical`, …), so a NATS consumer can pick a slice
//!   without Strata in between. Payload: the event as protobuf, its
//!   sequence left out: an event's sequence *is* its stream sequence.
//! - Limits retention, file storage, the queue's replicas; at most
//!   [`MAX_AGE`] old and [`MAX_BYTES`] large, the oldest dropped first.
//! - Each event is published with `Nats-Msg-Id` = [`event_id`]: the server
//!   drops a message whose id it saw within [`DUPLICATE_WINDOW`], and says
//!   so in its ack (`duplicate`), so `publish` returns only what was kept.
//! - [`after`](JetStreamLog::after) reads through an ordered (ephemeral,
//!   unacknowledged, memory-stored) consumer from sequence `n + 1` up to the
//!   stream's last sequence, then deletes it.
//! - Live events: one ordered consumer tails the stream from the moment the
//!   log is opened and feeds the broadcast channel behind `subscribe`; it is
//!   stopped when the log is dropped.
//!
//! The coordinator creates (or updates) the stream, as it does the job
//! streams.

use std::time::Duration;

use async_nats::jetstream::{
    self, Context,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    message::PublishMessage,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use futures::StreamExt as _;
use strata_proto::v1;
use tokio::sync::broadcast;

use super::{LogStats, NotifyError, decode, encode, event_id, kind_name};

pub const EVENTS_STREAM: &str = "STRATA_EVENTS";
/// Every event's subject falls under this.
pub const EVENTS_SUBJECTS: &str = "strata.events.>";

/// Events older than this are dropped: long enough for a dashboard or a
/// webhook receiver that was down over a holiday to resume where it left
/// off; an audit trail older than that belongs in the receiver's store.
pub(super) const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bound on the stream's disk use next to the job queue and the state
/// buckets (events are ~0.5 KiB: millions of events fit). A flood of events
/// past it drops the oldest, never refuses a new one.
const MAX_BYTES: i64 = 4 << 30;
/// Bound on one event (a finding with hundreds of aliases and fixed
/// versions is still a few KiB).
const MAX_EVENT_BYTES: i32 = 256 << 10;
/// A re-publish of an event within this long after the first is dropped by
/// the server. What re-publishes is a coordinator that published a change,
/// then stopped before recording that it had: on restart it finds the same
/// change and publishes it again within the time of a restart, a few
/// minutes even in a crash loop under Kubernetes' back-off (at most five
/// minutes between tries). An hour covers that with room; the ids the
/// server holds for it cost memory in proportion to an hour of events.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);
/// Events published before their acks are awaited.
const PUBLISH_BATCH: usize = 4096;
/// Bound on waiting for the next message of an `after` read (the messages
/// up to the last sequence exist: this only guards a deleted one).
const READ_WAIT: Duration = Duration::from_secs(5);
/// Pause before the live tail is set up again after it broke.
const TAIL_RETRY: Duration = Duration::from_secs(1);

pub(super) struct JetStreamLog {
    js: Context,
    stream: stream::Stream,
    tail: tokio::task::AbortHandle,
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

fn config(replicas: usize) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.to_owned(),
        description: Some("Strata fleet events (findings new and resolved)".to_owned()),
        subjects: vec![EVENTS_SUBJECTS.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        max_age: MAX_AGE,
        max_bytes: MAX_BYTES,
        max_message_size: MAX_EVENT_BYTES,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// `strata.events.<kind>.<severity>`.
pub fn subject(e: &v1::FleetEvent) -> String {
    let severity =
        strata_proto::Severity::from(v1::Severity::try_from(e.severity).unwrap_or(v1::Severity::Unspecified));
    format!("strata.events.{}.{}", kind_name(e.kind), severity.as_str())
}

impl JetStreamLog {
    pub(super) async fn open(
        js: Context,
        replicas: usize,
        live: broadcast::Sender<v1::FleetEvent>,
    ) -> Result<JetStreamLog, NotifyError> {
        js.create_or_update_stream(config(replicas))
            .await
            .map_err(|e| NotifyError::log(&format!("creating stream {EVENTS_STREAM}"), e))?;
        let stream = js
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|e| NotifyError::log(&format!("stream {EVENTS_STREAM}"), e))?;
        let info = stream
            .get_info()
            .await
            .map_err(|e| NotifyError::log(&format!("stream {EVENTS_STREAM}"), e))?;
        // Set up before returning, so no event published after `open` is missed.
        let messages = tail_from(&stream, info.state.last_sequence + 1).await?;
        let tail =
            tokio::spawn(tail(stream.clone(), messages, info.state.last_sequence, live)).abort_handle();
        Ok(JetStreamLog { js, stream, tail })
    }

    pub(super) async fn publish(
        &self,
        events: Vec<v1::FleetEvent>,
    ) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        let mut kept = Vec::with_capacity(events.len());
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut acks = Vec::with_capacity(PUBLISH_BATCH);
            for e in events.by_ref().take(PUBLISH_BATCH) {
                let subject = subject(&e);
                let message = PublishMessage::build()
                    .payload(encode(&e).into())
                    .message_id(event_id(&e));
                let ack = self
                    .js
                    .send_publish(subject.clone(), message)
                    .await
                    .map_err(|err| NotifyError::log(&format!("publishing to {subject}"), err))?;
                acks.push((e, ack));
            }
            for (mut e, ack) in acks {
                let ack = ack
                    .await
                    .map_err(|err| NotifyError::log(&format!("publishing to {EVENTS_STREAM}"), err))?;
                if !ack.duplicate {
                    e.sequence = ack.sequence;
                    kept.push(e);
                }
            }
        }
        Ok(kept)
    }

    pub(super) async fn after(&self, after: u64, max: usize) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        let state = self.state().await?;
        if state.messages == 0 || after >= state.last_sequence {
            return Ok(Vec::new());
        }
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| NotifyError::log("reading events", e))?;
        let name = consumer.cached_info().name.clone();
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| NotifyError::log("reading events", e))?;
        let mut out = Vec::new();
        while out.len() < max {
            let message = match tokio::time::timeout(READ_WAIT, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(NotifyError::log("reading events", e)),
                Ok(None) | Err(_) => break,
            };
            let seq = message
                .info()
                .map_err(|e| NotifyError::log("reading events", e))?
                .stream_sequence;
            out.push(decode(&message.payload, seq)?);
            if seq >= state.last_sequence {
                break;
            }
        }
        drop(messages);
        // It would go by itself once idle; no need to keep it that long.
        let _ = self.stream.delete_consumer(&name).await;
        Ok(out)
    }

    async fn state(&self) -> Result<stream::State, NotifyError> {
        Ok(self
            .stream
            .get_info()
            .await
            .map_err(|e| NotifyError::log(&format!("stream {EVENTS_STREAM}"), e))?
            .state)
    }

    pub(super) async fn stats(&self) -> Result<LogStats, NotifyError> {
        let state = self.state().await?;
        Ok(LogStats {
            last_sequence: state.last_sequence,
            kept: state.messages,
        })
    }
}

type Tail = jetstream::consumer::pull::Ordered;

async fn tail_from(stream: &stream::Stream, start: u64) -> Result<Tail, NotifyError> {
    stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| NotifyError::log("tailing events", e))?
        .messages()
        .await
        .map_err(|e| NotifyError::log("tailing events", e))
}

/// Feeds `live` from the stream, forever (aborted when the log is dropped);
/// set up again from the last sequence seen when it breaks.
async fn tail(
    stream: stream::Stream,
    mut messages: Tail,
    mut last: u64,
    live: broadcast::Sender<v1::FleetEvent>,
) {
    loop {
        match messages.next().await {
            Some(Ok(message)) => {
                let Ok(info) = message.info() else { continue };
                let seq = info.stream_sequence;
                last = seq;
                match decode(&message.payload, seq) {
                    Ok(e) => {
                        let _ = live.send(e);
                    }
                    Err(err) => tracing::warn!(sequence = seq, error = %err, "skipping an unreadable event"),
                }
                continue;
            }
            Some(Err(err)) => tracing::debug!(error = %err, "event tail broke; setting it up again"),
            None => tracing::debug!("event tail ended; setting it up again"),
        }
        loop {
            tokio::time::sleep(TAIL_RETRY).await;
            match tail_from(&stream, last + 1).await {
                Ok(m) => {
                    messages = m;
                    break;
                }
                Err(err) => tracing::debug!(error = %err, "event tail not set up yet"),
            }
        }
    }
}
