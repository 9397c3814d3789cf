//! This process's metrics: one OpenTelemetry meter provider per process,
//! read by `/metrics` (Prometheus text) and, when configured, pushed by OTLP.
//!
//! The provider has a `ManualReader` that `/metrics` collects from on each
//! scrape and, when an OTLP endpoint is configured, a periodic OTLP reader
//! too; both see the same instruments.
//!
//! # Layout
//! - this file: [`Metrics`], the provider and its readers; instrument sets
//!   are built on its [`Metrics::meter`];
//! - `worker.rs`: [`WorkerMetrics`], the worker's instruments (the
//!   coordinator's are in the coordinator crate, `metrics.rs`);
//! - `prometheus.rs`: the Prometheus text exposition format (0.0.4),
//!   rendered by hand: the `opentelemetry-prometheus` crate is
//!   unmaintained, and the format is small;
//! - `check.rs` (tests only): a checker of that format.

#[cfg(test)]
pub(crate) mod check;
mod prometheus;
mod worker;

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};

pub use worker::WorkerMetrics;

use super::TelemetryError;

/// Bucket bounds (seconds) for the duration histograms: from 1 ms to 5 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How often the OTLP reader pushes.
const OTLP_INTERVAL: Duration = Duration::from_secs(15);

/// The metrics of one process. Cheap to clone (an `Arc`).
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: SdkMeterProvider,
    reader: SharedReader,
    meter: Meter,
}

/// A `ManualReader` the provider owns and we can still collect from.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

impl Metrics {
    /// Builds this process's meter provider. With `otlp_endpoint`, metrics
    /// are also pushed by OTLP/gRPC every 15 s; that needs a Tokio runtime
    /// context ([`TelemetryError::NoRuntime`] otherwise).
    pub fn new(service_name: &str, otlp_endpoint: Option<&str>) -> Result<Metrics, TelemetryError> {
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let mut builder = SdkMeterProvider::builder()
            .with_resource(super::resource(service_name))
            .with_reader(reader.clone());
        if let Some(endpoint) = otlp_endpoint {
            let _runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| TelemetryError::NoRuntime)?
                .enter();
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.to_owned())
                .build()
                .map_err(|source| TelemetryError::Exporter {
                    signal: "metrics",
                    source,
                })?;
            builder = builder.with_reader(
                PeriodicReader::builder(exporter)
                    .with_interval(OTLP_INTERVAL)
                    .build(),
            );
        }
        let provider = builder.build();
        let meter = provider.meter("strata");
        Ok(Metrics {
            inner: Arc::new(Inner {
                provider,
                reader,
                meter,
            }),
        })
    }

    /// The meter instrument sets are built on.
    pub fn meter(&self) -> &Meter {
        &self.inner.meter
    }

    /// A duration histogram in seconds, with buckets from 1 ms to 5 min.
    pub fn seconds_histogram(&self, name: &'static str, description: &'static str) -> Histogram<f64> {
        self.inner
            .meter
            .f64_histogram(name)
            .with_description(description)
            .with_unit("s")
            .with_boundaries(SECONDS_BUCKETS.to_vec())
            .build()
    }

    /// Flushes the OTLP reader, if any.
    pub fn force_flush(&self) -> Result<(), TelemetryError> {
        Ok(self.inner.provider.force_flush()?)
    }

    /// Collects from the manual reader and renders the Prometheus text
    /// format, or the collection error.
    pub fn try_render_prometheus(&self) -> Result<String, TelemetryError> {
        let mut rm = ResourceMetrics::default();
        self.inner.reader.collect(&mut rm)?;
        Ok(prometheus::render(&rm))
    }

    /// The Prometheus text exposition format (0.0.4) of every instrument.
    /// A failed collection (only after shutdown) is logged and renders empty.
    pub fn render_prometheus(&self) -> String {
        self.try_render_prometheus().unwrap_or_else(|error| {
            tracing::warn!(%error, "collecting metrics for /metrics failed");
            String::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;

    #[test]
    fn renders_every_kind_of_instrument() {
        let metrics = Metrics::new("strata-test", None).expect("metrics");
        let m = metrics.meter();
        let counter = m.u64_counter("t_events").with_description("Events.").build();
        counter.add(2, &[KeyValue::new("kind", "a")]);
        counter.add(1, &[KeyValue::new("kind", "b")]);
        let updown = m.i64_up_down_counter("t_open").build();
        updown.add(3, &[]);
        updown.add(-1, &[]);
        m.u64_gauge("t_level")
            .build()
            .record(7, &[KeyValue::new("q", "x")]);
        let seconds = metrics.seconds_histogram("t_seconds", "Time.");
        for s in [0.003, 0.2, 1000.0] {
            seconds.record(s, &[]);
        }
        m.u64_counter("t_odd")
            .build()
            .add(1, &[KeyValue::new("name", "registry \"quoted\"\\path\nnext")]);

        let text = metrics.render_prometheus();
        check::check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for line in [
            "# HELP t_events_total Events.",
            "# TYPE t_events_total counter",
            "t_events_total{kind=\"a\"} 2",
            "t_events_total{kind=\"b\"} 1",
            "# TYPE t_open gauge",
            "t_open 2",
            "t_level{q=\"x\"} 7",
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{le=\"0.001\"} 0",
            "t_seconds_bucket{le=\"0.005\"} 1",
            "t_seconds_bucket{le=\"0.25\"} 2",
            "t_seconds_bucket{le=\"300\"} 2",
            "t_seconds_bucket{le=\"+Inf\"} 3",
            "t_seconds_sum 1000.203",
            "t_seconds_count 3",
            "t_odd_total{name=\"registry \\\"quoted\\\"\\\\path\\nnext\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn processes_do_not_share_metrics() {
        let a = Metrics::new("a", None).expect("metrics a");
        let b = Metrics::new("b", None).expect("metrics b");
        a.meter().u64_counter("t_done").build().add(1, &[]);
        let clone = a.clone();
        clone.meter().u64_counter("t_done").build().add(1, &[]);
        assert!(a.render_prometheus().contains("t_done_total 2\n"));
        assert!(!b.render_prometheus().contains("t_done_total"));
    }

    // A multi-thread runtime: shutting the exporter down blocks this thread
    // while tonic's connection task needs a runtime thread to finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_reader_builds_inside_a_runtime() {
        let metrics = Metrics::new("strata-test", Some("http://127.0.0.1:9")).expect("metrics");
        metrics.meter().u64_counter("t_done").build().add(1, &[]);
        assert!(metrics.render_prometheus().contains("t_done_total 1\n"));
    }

    #[test]
    fn otlp_outside_a_runtime_is_an_error() {
        assert!(matches!(
            Metrics::new("strata-test", Some("http://127.0.0.1:9")),
            Err(TelemetryError::NoRuntime)
        ));
    }
}
