//! The worker's instruments: jobs in hand, done and failed, bytes fetched,
//! analysis time, registries that throttled us.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};

use super::Metrics;

/// The worker's instruments, on a process's [`Metrics`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    jobs_in_flight: UpDownCounter<i64>,
    jobs_done: Counter<u64>,
    jobs_failed: Counter<u64>,
    bytes_fetched: Counter<u64>,
    analysis_seconds: Histogram<f64>,
    registry_throttled: Counter<u64>,
}

impl WorkerMetrics {
    pub fn new(metrics: &Metrics) -> WorkerMetrics {
        let meter = metrics.meter();
        WorkerMetrics {
            jobs_in_flight: meter
                .i64_up_down_counter("strata_jobs_in_flight")
                .with_description("Layer jobs being worked on now.")
                .build(),
            jobs_done: meter
                .u64_counter("strata_jobs_done")
                .with_description("Layer jobs finished successfully.")
                .build(),
            jobs_failed: meter
                .u64_counter("strata_jobs_failed")
                .with_description("Layer jobs that failed, by whether the failure is permanent.")
                .build(),
            bytes_fetched: meter
                .u64_counter("strata_bytes_fetched")
                .with_description("Layer blob bytes fetched.")
                .with_unit("By")
                .build(),
            analysis_seconds: metrics.seconds_histogram(
                "strata_layer_analysis_seconds",
                "Time to fetch and analyse one layer.",
            ),
            registry_throttled: meter
                .u64_counter("strata_registry_throttled")
                .with_description("Registry responses that asked us to slow down (429).")
                .build(),
        }
    }

    /// Jobs in flight went up or down (`strata_jobs_in_flight`).
    pub fn jobs_in_flight_add(&self, delta: i64) {
        self.jobs_in_flight.add(delta, &[]);
    }

    /// A job finished (`strata_jobs_done_total`).
    pub fn jobs_done(&self) {
        self.jobs_done.add(1, &[]);
    }

    /// A job failed (`strata_jobs_failed_total{permanent}`).
    pub fn jobs_failed(&self, permanent: bool) {
        self.jobs_failed.add(1, &[KeyValue::new("permanent", permanent)]);
    }

    /// Blob bytes fetched (`strata_bytes_fetched_total`).
    pub fn bytes_fetched(&self, n: u64) {
        self.bytes_fetched.add(n, &[]);
    }

    /// One layer's analysis time (`strata_layer_analysis_seconds`).
    pub fn analysis_seconds(&self, secs: f64) {
        self.analysis_seconds.record(secs, &[]);
    }

    /// A registry throttled us (`strata_registry_throttled_total{registry}`).
    pub fn registry_throttled(&self, registry: &str) {
        self.registry_throttled
            .add(1, &[KeyValue::new("registry", registry.to_owned())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_workers_instruments() {
        let metrics = Metrics::new("strata-test", None).expect("metrics");
        let m = WorkerMetrics::new(&metrics);
        m.jobs_in_flight_add(3);
        m.jobs_in_flight_add(-1);
        m.jobs_done();
        m.jobs_failed(true);
        m.jobs_failed(false);
        m.jobs_failed(false);
        m.bytes_fetched(1000);
        m.bytes_fetched(24);
        m.analysis_seconds(0.2);
        m.registry_throttled("r:5000");
        let text = metrics.render_prometheus();
        super::super::check::check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for line in [
            "# TYPE strata_jobs_in_flight gauge",
            "strata_jobs_in_flight 2",
            "strata_jobs_done_total 1",
            "strata_jobs_failed_total{permanent=\"true\"} 1",
            "strata_jobs_failed_total{permanent=\"false\"} 2",
            "strata_bytes_fetched_total 1024",
            "strata_layer_analysis_seconds_count 1",
            "strata_registry_throttled_total{registry=\"r:5000\"} 1",
            "# HELP strata_jobs_done_total Layer jobs finished successfully.",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}
