//! Logs, metrics and traces for every Strata process.
//!
//! - **Metrics** go through the OpenTelemetry SDK: one [`Metrics`] value per
//!   process owns its own `SdkMeterProvider` (never the global one, so tests
//!   can build several), and that provider is the one source of truth.
//! - The **Prometheus** text `/metrics` endpoint ([`http::serve_metrics`]) is
//!   rendered from a `ManualReader` registered on that same provider; the
//!   renderer is ours ([`Metrics::render_prometheus`]).
//! - **OTLP export** (metrics and traces, gRPC through tonic) is off unless an
//!   endpoint is configured. Building an OTLP exporter needs a Tokio runtime
//!   context (the tonic channel spawns its worker there); the SDK then exports
//!   from its own background threads.
//! - **Trace context** travels between processes as W3C `traceparent` /
//!   `tracestate` headers on NATS messages ([`propagation`]). [`init`] always
//!   installs the W3C propagator and a `tracing-opentelemetry` layer (with no
//!   exporter when OTLP is off), so ids exist and propagate even when nothing
//!   is exported.

pub mod http;
pub mod metrics;
pub mod propagation;

pub use metrics::{Metrics, WorkerMetrics};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Telemetry settings of one process.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector endpoint (e.g. `http://127.0.0.1:4317`); `None`
    /// turns OTLP export off.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the OpenTelemetry resource (e.g. `strata-worker`).
    pub service_name: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive string, e.g. `info,strata_worker=debug`.
    pub log_filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "strata".to_owned(),
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
        }
    }
}

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter string does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built (bad endpoint, ...).
    #[error("building the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// OTLP export was asked for outside a Tokio runtime.
    #[error("OTLP export needs a Tokio runtime: call this from inside one")]
    NoRuntime,
    /// The SDK failed to collect or shut down.
    #[error("OpenTelemetry SDK: {0}")]
    Sdk(#[from] opentelemetry_sdk::error::OTelSdkError),
}

/// Keeps the tracer provider alive; flushes and shuts it down on drop.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the trace pipeline down"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    installed: bool,
}

impl TelemetryGuard {
    /// Whether this call installed the global subscriber (false when one was
    /// already set, e.g. by an earlier test).
    pub fn installed_subscriber(&self) -> bool {
        self.installed
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            // Errors here are "already shut down" or an unreachable collector:
            // nothing more can be done while exiting.
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

/// Installs the W3C trace-context propagator globally. Idempotent; [`init`]
/// calls it.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
}

/// The OpenTelemetry resource every signal of this process carries.
pub(crate) fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .build()
}

/// Installs logging and tracing for this process.
///
/// The global `tracing` subscriber gets an `EnvFilter` from
/// `config.log_filter`, a fmt layer on stderr (JSON when asked), and a
/// `tracing-opentelemetry` layer; its spans are exported by OTLP when
/// `config.otlp_endpoint` is set. If a global subscriber is already
/// installed, that is not an error: the existing one stays (see
/// [`TelemetryGuard::installed_subscriber`]).
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    install_propagator();

    let filter = EnvFilter::try_new(&config.log_filter).map_err(|source| TelemetryError::Filter {
        filter: config.log_filter.clone(),
        source,
    })?;

    let mut builder = SdkTracerProvider::builder().with_resource(resource(&config.service_name));
    let exporting = config.otlp_endpoint.is_some();
    if let Some(endpoint) = &config.otlp_endpoint {
        let _runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| TelemetryError::NoRuntime)?
            .enter();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|source| TelemetryError::Exporter {
                signal: "trace",
                source,
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("strata");
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);

    let (text, json) = match config.log_format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(EscapedFields)
                    .with_ansi(stderr_colours())
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            ),
        ),
    };

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(text)
        .with(json)
        .try_init()
        .is_ok();

    if installed && exporting {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(TelemetryGuard {
        // Without an exporter (or without our subscriber) there is nothing to
        // flush; dropping the provider is enough.
        tracer_provider: Some(provider),
        installed,
    })
}

/// The text log's fields, each value escaped with
/// [`strata_proto::text::escape_controls`]: log lines quote outside text
/// (tar paths, tags, registry answers), and tracing's own formatter writes
/// `%value` fields raw, so an image could colour, rewrite or forge log
/// lines. Escaping here, once, covers every event and span field. (JSON
/// logs are escaped by serde_json.)
pub struct EscapedFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, text: &str) {
        let name = field.name();
        // `log` crate records bridged into tracing carry their metadata as
        // fields; the formatter shows it already.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let text = strata_proto::text::escape_controls(text);
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{text}")
        } else {
            write!(self.writer, "{sep}{}={text}", name.trim_start_matches("r#"))
        };
    }
}

/// Whether log lines on stderr may carry colour: only on a terminal (not in
/// a file, a pipe or `kubectl logs`), and not when `NO_COLOR` is set.
pub fn stderr_colours() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_is_fine() {
        let config = TelemetryConfig {
            log_filter: "warn".into(),
            ..TelemetryConfig::default()
        };
        let first = init(&config).expect("first init");
        let second = init(&config).expect("second init");
        assert!(!second.installed_subscriber() || !first.installed_subscriber());
    }

    #[test]
    fn bad_filter_is_an_error() {
        let config = TelemetryConfig {
            log_filter: "strata=notalevel".into(),
            ..TelemetryConfig::default()
        };
        assert!(matches!(init(&config), Err(TelemetryError::Filter { .. })));
    }

    #[test]
    fn otlp_outside_a_runtime_is_an_error() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            ..TelemetryConfig::default()
        };
        assert!(matches!(init(&config), Err(TelemetryError::NoRuntime)));
    }

    // A multi-thread runtime: shutting the exporter down blocks this thread
    // while tonic's connection task needs a runtime thread to finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_inside_a_runtime_builds() {
        // Nothing listens there: building is lazy, export failures are logged
        // by the SDK, and dropping the guard must not hang.
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            log_filter: "warn".into(),
            ..TelemetryConfig::default()
        };
        let guard = init(&config).expect("init with OTLP");
        drop(guard);
    }

    #[test]
    fn log_fields_from_outside_cannot_colour_rewrite_or_forge_lines() {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("grpc", path = %"/a\u{9b}31m");
            let _entered = span.enter();
            let tag = "v1\x1b[2J\rforged line\nINFO fake: ok \u{202e}";
            tracing::warn!(reference = %tag, count = 3, "layer {} failed", "etc/\x1b]0;title\x07");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "one event, one line: {text:?}");
        assert!(
            !text
                .trim_end_matches('\n')
                .chars()
                .any(strata_proto::text::hidden),
            "{text:?}"
        );
        assert!(
            text.contains("reference=v1\\u{1b}[2J\\u{d}forged line\\u{a}INFO fake: ok \\u{202e}"),
            "{text}"
        );
        assert!(text.contains("layer etc/\\u{1b}]0;title\\u{7} failed"), "{text}");
        assert!(text.contains("path=/a\\u{9b}31m"), "span fields too: {text}");
        assert!(text.contains("count=3"), "{text}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
