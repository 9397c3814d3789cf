//! The coordinator's instruments: jobs queued, the queue's lag, the layer
//! cache, scans by status, composition and matching time, advisory feed
//! polls, their age and failures, vulnerability data updates, fleet events
//! published and webhook deliveries. Built on the
//! process's [`Metrics`] (the worker crate's provider and `/metrics`
//! renderer), so `strata serve` shows the coordinator's and the worker's
//! instruments on one endpoint.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, UpDownCounter};
use strata_worker::telemetry::Metrics;

/// The coordinator's instruments. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    jobs_queued: Counter<u64>,
    queue_lag: Gauge<u64>,
    queue_pending: Gauge<u64>,
    queue_ack_pending: Gauge<u64>,
    layer_cache_hits: Counter<u64>,
    layer_cache_misses: Counter<u64>,
    match_seconds: Histogram<f64>,
    compose_seconds: Histogram<f64>,
    scans: UpDownCounter<i64>,
    feed_polls: Counter<u64>,
    feed_age: Gauge<f64>,
    feed_failures: Gauge<u64>,
    vulndb_updates: Counter<u64>,
    events_published: Counter<u64>,
    webhook_deliveries: Counter<u64>,
    webhook_failures: Counter<u64>,
    webhook_dead_letters: Counter<u64>,
}

impl CoordinatorMetrics {
    pub fn new(metrics: &Metrics) -> CoordinatorMetrics {
        let meter = metrics.meter();
        CoordinatorMetrics {
            jobs_queued: meter
                .u64_counter("strata_jobs_queued")
                .with_description("Layer jobs published to the queue.")
                .build(),
            queue_lag: meter
                .u64_gauge("strata_queue_lag")
                .with_description("Layer jobs not yet done: pending plus awaiting ack.")
                .build(),
            queue_pending: meter
                .u64_gauge("strata_queue_pending")
                .with_description("Layer jobs not yet delivered to a worker.")
                .build(),
            queue_ack_pending: meter
                .u64_gauge("strata_queue_ack_pending")
                .with_description("Layer jobs delivered and not yet acknowledged.")
                .build(),
            layer_cache_hits: meter
                .u64_counter("strata_layer_cache_hits")
                .with_description("Layers whose inventory was already stored.")
                .build(),
            layer_cache_misses: meter
                .u64_counter("strata_layer_cache_misses")
                .with_description("Layers that had to be fetched and analysed.")
                .build(),
            match_seconds: metrics.seconds_histogram(
                "strata_match_seconds",
                "Time to match one image's packages against the advisories.",
            ),
            compose_seconds: metrics.seconds_histogram(
                "strata_compose_seconds",
                "Time to compose one image's layer inventories.",
            ),
            scans: meter
                .i64_up_down_counter("strata_scans")
                .with_description("Scans, by status.")
                .build(),
            feed_polls: meter
                .u64_counter("strata_feed_polls")
                .with_description("Advisory feed polls, by feed and outcome (unchanged, changed, failed).")
                .build(),
            feed_age: meter
                .f64_gauge("strata_feed_age_seconds")
                .with_description("Seconds since the feed's last successful poll.")
                .build(),
            feed_failures: meter
                .u64_gauge("strata_feed_consecutive_failures")
                .with_description("Failed polls of the feed since its last success.")
                .build(),
            vulndb_updates: meter
                .u64_counter("strata_vulndb_updates")
                .with_description("Vulnerability data updates from the feeds, by outcome (applied, failed).")
                .build(),
            events_published: meter
                .u64_counter("strata_events_published")
                .with_description("Fleet events appended to the event log (duplicates dropped), by kind.")
                .build(),
            webhook_deliveries: meter
                .u64_counter("strata_webhook_deliveries")
                .with_description("Events a webhook accepted.")
                .build(),
            webhook_failures: meter
                .u64_counter("strata_webhook_failures")
                .with_description("Webhook requests that failed (each try).")
                .build(),
            webhook_dead_letters: meter
                .u64_counter("strata_webhook_dead_letters")
                .with_description("Events a webhook was given up on after its tries.")
                .build(),
        }
    }

    /// A layer job was queued (`strata_jobs_queued_total{priority}`).
    pub fn jobs_queued(&self, priority: &str) {
        self.jobs_queued
            .add(1, &[KeyValue::new("priority", priority.to_owned())]);
    }

    /// The queue's state for one priority: `strata_queue_lag{priority}` =
    /// `pending + in_flight`, plus `strata_queue_pending` and
    /// `strata_queue_ack_pending`.
    pub fn set_queue_lag(&self, priority: &str, pending: u64, in_flight: u64) {
        let attrs = [KeyValue::new("priority", priority.to_owned())];
        self.queue_lag.record(pending.saturating_add(in_flight), &attrs);
        self.queue_pending.record(pending, &attrs);
        self.queue_ack_pending.record(in_flight, &attrs);
    }

    /// A layer's inventory was found in storage (`strata_layer_cache_hits_total`).
    pub fn layer_cache_hit(&self) {
        self.layer_cache_hits.add(1, &[]);
    }

    /// A layer had to be analysed (`strata_layer_cache_misses_total`).
    pub fn layer_cache_miss(&self) {
        self.layer_cache_misses.add(1, &[]);
    }

    /// One image's matching time (`strata_match_seconds`).
    pub fn match_seconds(&self, secs: f64) {
        self.match_seconds.record(secs, &[]);
    }

    /// One image's composition time (`strata_compose_seconds`).
    pub fn compose_seconds(&self, secs: f64) {
        self.compose_seconds.record(secs, &[]);
    }

    /// One poll of a feed (URL without credentials) and what it found
    /// (`strata_feed_polls_total{feed,outcome}`).
    pub fn feed_poll(&self, feed: &str, outcome: &'static str) {
        self.feed_polls.add(
            1,
            &[
                KeyValue::new("feed", feed.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Seconds since the feed's last success (`strata_feed_age_seconds{feed}`).
    pub fn feed_age(&self, feed: &str, seconds: f64) {
        self.feed_age
            .record(seconds, &[KeyValue::new("feed", feed.to_owned())]);
    }

    /// Failed polls in a row (`strata_feed_consecutive_failures{feed}`).
    pub fn feed_consecutive_failures(&self, feed: &str, failures: u64) {
        self.feed_failures
            .record(failures, &[KeyValue::new("feed", feed.to_owned())]);
    }

    /// New data from the feeds put in force, or not for an error
    /// (`strata_vulndb_updates_total{outcome="applied"|"failed"}`).
    pub fn vulndb_update(&self, outcome: &'static str) {
        self.vulndb_updates.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// Scans by status went up or down (`strata_scans{status}`).
    pub fn scans(&self, status: &str, delta: i64) {
        self.scans
            .add(delta, &[KeyValue::new("status", status.to_owned())]);
    }

    /// A fleet event was published (`strata_events_published_total{kind}`).
    pub fn event_published(&self, kind: &'static str) {
        self.events_published.add(1, &[KeyValue::new("kind", kind)]);
    }

    /// A webhook accepted an event (`strata_webhook_deliveries_total`).
    pub fn webhook_delivered(&self) {
        self.webhook_deliveries.add(1, &[]);
    }

    /// One webhook request failed (`strata_webhook_failures_total`).
    pub fn webhook_failed(&self) {
        self.webhook_failures.add(1, &[]);
    }

    /// A webhook was given up on for one event (`strata_webhook_dead_letters_total`).
    pub fn webhook_dead_letter(&self) {
        self.webhook_dead_letters.add(1, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_coordinators_instruments() {
        let metrics = Metrics::new("strata-test", None).expect("metrics");
        let m = CoordinatorMetrics::new(&metrics);
        m.jobs_queued("ci");
        m.jobs_queued("ci");
        m.jobs_queued("background");
        m.set_queue_lag("ci", 7, 2);
        m.set_queue_lag("ci", 5, 1);
        m.layer_cache_hit();
        m.layer_cache_miss();
        m.layer_cache_miss();
        m.match_seconds(0.5);
        m.compose_seconds(0.01);
        m.scans("running", 2);
        m.scans("running", -1);
        m.scans("complete", 1);
        m.feed_poll("https://h/PyPI/all.zip", "unchanged");
        m.feed_poll("https://h/PyPI/all.zip", "failed");
        m.feed_poll("https://h/PyPI/all.zip", "failed");
        m.feed_age("https://h/PyPI/all.zip", 90.0);
        m.feed_consecutive_failures("https://h/PyPI/all.zip", 2);
        m.vulndb_update("applied");
        m.event_published("finding_new");
        m.event_published("finding_new");
        m.webhook_delivered();
        m.webhook_failed();
        m.webhook_failed();
        m.webhook_dead_letter();
        let text = metrics.render_prometheus();
        for line in [
            "# TYPE strata_jobs_queued_total counter",
            "strata_jobs_queued_total{priority=\"ci\"} 2",
            "strata_jobs_queued_total{priority=\"background\"} 1",
            "# TYPE strata_queue_lag gauge",
            "strata_queue_lag{priority=\"ci\"} 6",
            "strata_queue_pending{priority=\"ci\"} 5",
            "strata_queue_ack_pending{priority=\"ci\"} 1",
            "strata_layer_cache_hits_total 1",
            "strata_layer_cache_misses_total 2",
            "# TYPE strata_match_seconds histogram",
            "strata_match_seconds_count 1",
            "strata_compose_seconds_count 1",
            "# TYPE strata_scans gauge",
            "strata_scans{status=\"running\"} 1",
            "strata_scans{status=\"complete\"} 1",
            "# TYPE strata_feed_polls_total counter",
            "strata_feed_polls_total{feed=\"https://h/PyPI/all.zip\",outcome=\"unchanged\"} 1",
            "strata_feed_polls_total{feed=\"https://h/PyPI/all.zip\",outcome=\"failed\"} 2",
            "# TYPE strata_feed_age_seconds gauge",
            "strata_feed_age_seconds{feed=\"https://h/PyPI/all.zip\"} 90",
            "strata_feed_consecutive_failures{feed=\"https://h/PyPI/all.zip\"} 2",
            "strata_vulndb_updates_total{outcome=\"applied\"} 1",
            "# TYPE strata_events_published_total counter",
            "strata_events_published_total{kind=\"finding_new\"} 2",
            "strata_webhook_deliveries_total 1",
            "strata_webhook_failures_total 2",
            "strata_webhook_dead_letters_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}
