//! Strata's metric instruments, on a per-process OpenTelemetry meter provider,
//! and the Prometheus text rendering of them.
//!
//! The provider has a `ManualReader` that `/metrics` collects from on each
//! scrape and, when an OTLP endpoint is configured, a periodic OTLP reader
//! too; both see the same instruments. The Prometheus text exposition format
//! (0.0.4) is rendered by hand here: the `opentelemetry-prometheus` crate is
//! unmaintained, and the format is small.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _, UpDownCounter};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};

use super::TelemetryError;

/// Bucket bounds (seconds) for the duration histograms: from 1 ms to 5 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// How often the OTLP reader pushes.
const OTLP_INTERVAL: Duration = Duration::from_secs(15);

/// The instruments of one process. Cheap to clone (an `Arc`).
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: SdkMeterProvider,
    reader: SharedReader,
    jobs_queued: Counter<u64>,
    jobs_in_flight: UpDownCounter<i64>,
    jobs_done: Counter<u64>,
    jobs_failed: Counter<u64>,
    queue_lag: Gauge<u64>,
    queue_pending: Gauge<u64>,
    queue_ack_pending: Gauge<u64>,
    layer_cache_hits: Counter<u64>,
    layer_cache_misses: Counter<u64>,
    bytes_fetched: Counter<u64>,
    analysis_seconds: Histogram<f64>,
    match_seconds: Histogram<f64>,
    compose_seconds: Histogram<f64>,
    scans: UpDownCounter<i64>,
    registry_throttled: Counter<u64>,
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
    /// Builds this process's meter provider and instruments. With
    /// `otlp_endpoint`, metrics are also pushed by OTLP/gRPC every 15 s; that
    /// needs a Tokio runtime context ([`TelemetryError::NoRuntime`] otherwise).
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

        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(description)
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        let inner = Inner {
            jobs_queued: meter
                .u64_counter("strata_jobs_queued")
                .with_description("Layer jobs published to the queue.")
                .build(),
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
            bytes_fetched: meter
                .u64_counter("strata_bytes_fetched")
                .with_description("Layer blob bytes fetched.")
                .with_unit("By")
                .build(),
            analysis_seconds: seconds(
                "strata_layer_analysis_seconds",
                "Time to fetch and analyse one layer.",
            ),
            match_seconds: seconds(
                "strata_match_seconds",
                "Time to match one image's packages against the advisories.",
            ),
            compose_seconds: seconds(
                "strata_compose_seconds",
                "Time to compose one image's layer inventories.",
            ),
            scans: meter
                .i64_up_down_counter("strata_scans")
                .with_description("Scans, by status.")
                .build(),
            registry_throttled: meter
                .u64_counter("strata_registry_throttled")
                .with_description("Registry responses that asked us to slow down (429).")
                .build(),
            provider,
            reader,
        };
        Ok(Metrics {
            inner: Arc::new(inner),
        })
    }

    /// A layer job was queued (`strata_jobs_queued_total{priority}`).
    pub fn jobs_queued(&self, priority: &str) {
        self.inner
            .jobs_queued
            .add(1, &[KeyValue::new("priority", priority.to_owned())]);
    }

    /// Jobs in flight went up or down (`strata_jobs_in_flight`).
    pub fn jobs_in_flight_add(&self, delta: i64) {
        self.inner.jobs_in_flight.add(delta, &[]);
    }

    /// A job finished (`strata_jobs_done_total`).
    pub fn jobs_done(&self) {
        self.inner.jobs_done.add(1, &[]);
    }

    /// A job failed (`strata_jobs_failed_total{permanent}`).
    pub fn jobs_failed(&self, permanent: bool) {
        self.inner
            .jobs_failed
            .add(1, &[KeyValue::new("permanent", permanent)]);
    }

    /// The queue's state for one priority: `strata_queue_lag{priority}` =
    /// `pending + in_flight`, plus `strata_queue_pending` and
    /// `strata_queue_ack_pending`.
    pub fn set_queue_lag(&self, priority: &str, pending: u64, in_flight: u64) {
        let attrs = [KeyValue::new("priority", priority.to_owned())];
        self.inner
            .queue_lag
            .record(pending.saturating_add(in_flight), &attrs);
        self.inner.queue_pending.record(pending, &attrs);
        self.inner.queue_ack_pending.record(in_flight, &attrs);
    }

    /// A layer's inventory was found in storage (`strata_layer_cache_hits_total`).
    pub fn layer_cache_hit(&self) {
        self.inner.layer_cache_hits.add(1, &[]);
    }

    /// A layer had to be analysed (`strata_layer_cache_misses_total`).
    pub fn layer_cache_miss(&self) {
        self.inner.layer_cache_misses.add(1, &[]);
    }

    /// Blob bytes fetched (`strata_bytes_fetched_total`).
    pub fn bytes_fetched(&self, n: u64) {
        self.inner.bytes_fetched.add(n, &[]);
    }

    /// One layer's analysis time (`strata_layer_analysis_seconds`).
    pub fn analysis_seconds(&self, secs: f64) {
        self.inner.analysis_seconds.record(secs, &[]);
    }

    /// One image's matching time (`strata_match_seconds`).
    pub fn match_seconds(&self, secs: f64) {
        self.inner.match_seconds.record(secs, &[]);
    }

    /// One image's composition time (`strata_compose_seconds`).
    pub fn compose_seconds(&self, secs: f64) {
        self.inner.compose_seconds.record(secs, &[]);
    }

    /// Scans by status went up or down (`strata_scans{status}`).
    pub fn scans(&self, status: &str, delta: i64) {
        self.inner
            .scans
            .add(delta, &[KeyValue::new("status", status.to_owned())]);
    }

    /// A registry throttled us (`strata_registry_throttled_total{registry}`).
    pub fn registry_throttled(&self, registry: &str) {
        self.inner
            .registry_throttled
            .add(1, &[KeyValue::new("registry", registry.to_owned())]);
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
        Ok(render(&rm))
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

/// One metric family of the output: its `# HELP`/`# TYPE` and samples.
struct Family {
    help: String,
    kind: &'static str,
    samples: String,
}

/// Renders collected metrics. Families are sorted by name; the same name from
/// two scopes is merged into one family (the first one's type wins).
fn render(rm: &ResourceMetrics) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for scope in rm.scope_metrics() {
        for metric in scope.metrics() {
            render_metric(metric, &mut families);
        }
    }
    let mut out = String::new();
    for (name, family) in &families {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        out.push_str(&family.samples);
    }
    out
}

fn render_metric(metric: &Metric, families: &mut BTreeMap<String, Family>) {
    match metric.data() {
        AggregatedMetrics::F64(data) => render_data(metric, data, families),
        AggregatedMetrics::U64(data) => render_data(metric, data, families),
        AggregatedMetrics::I64(data) => render_data(metric, data, families),
    }
}

fn render_data<T: Sample>(metric: &Metric, data: &MetricData<T>, families: &mut BTreeMap<String, Family>) {
    let base = sanitize_metric_name(metric.name());
    let (name, kind) = match data {
        MetricData::Sum(sum) if sum.is_monotonic() => {
            let stem = base.strip_suffix("_total").unwrap_or(&base);
            (format!("{stem}_total"), "counter")
        }
        MetricData::Sum(_) | MetricData::Gauge(_) => (base, "gauge"),
        MetricData::Histogram(_) => (base, "histogram"),
        // Not produced by our instruments (no exponential-histogram views).
        MetricData::ExponentialHistogram(_) => return,
    };
    let family = families.entry(name.clone()).or_insert_with(|| Family {
        help: metric.description().to_owned(),
        kind,
        samples: String::new(),
    });
    if family.kind != kind {
        return;
    }
    let out = &mut family.samples;
    match data {
        MetricData::Sum(sum) => {
            for point in sum.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}{labels} {}", point.value().render());
            }
        }
        MetricData::Gauge(gauge) => {
            for point in gauge.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}{labels} {}", point.value().render());
            }
        }
        MetricData::Histogram(histogram) => {
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                for (bound, count) in point.bounds().zip(point.bucket_counts()) {
                    cumulative = cumulative.saturating_add(count);
                    let labels = labels(point.attributes(), Some(&format_f64(bound)));
                    let _ = writeln!(out, "{name}_bucket{labels} {cumulative}");
                }
                let labels_inf = labels(point.attributes(), Some("+Inf"));
                let _ = writeln!(out, "{name}_bucket{labels_inf} {}", point.count());
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}_sum{labels} {}", point.sum().render());
                let _ = writeln!(out, "{name}_count{labels} {}", point.count());
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// A sample value as the exposition format spells it.
trait Sample: Copy {
    fn render(self) -> String;
}

impl Sample for u64 {
    fn render(self) -> String {
        self.to_string()
    }
}

impl Sample for i64 {
    fn render(self) -> String {
        self.to_string()
    }
}

impl Sample for f64 {
    fn render(self) -> String {
        format_f64(self)
    }
}

fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        // Rust's shortest round-trip form: `1`, `0.005`, `1e-7`; all valid Go
        // `ParseFloat` input, which is what Prometheus uses.
        v.to_string()
    }
}

/// `{k="v",...}` from the attributes (sorted by key) and an optional `le`;
/// empty when there are no labels.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = attributes
        .map(|kv| (sanitize_label_name(kv.key.as_str()), kv.value.to_string()))
        .collect();
    pairs.sort();
    if let Some(le) = le {
        pairs.push(("le".to_owned(), le.to_owned()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{key}=\"{}\"", escape_label_value(value));
    }
    out.push('}');
    out
}

/// Metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else becomes `_`.
fn sanitize_metric_name(name: &str) -> String {
    sanitize(name, true)
}

/// Label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn sanitize_label_name(name: &str) -> String {
    sanitize(name, false)
}

fn sanitize(name: &str, colon_ok: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        let ok =
            c.is_ascii_alphabetic() || c == '_' || (colon_ok && c == ':') || (i > 0 && c.is_ascii_digit());
        if ok {
            out.push(c);
        } else if i == 0 && c.is_ascii_digit() {
            out.push('_');
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Label values: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: `\` → `\\`, newline → `\n`.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A line-by-line checker of the text exposition format 0.0.4: comment
    /// syntax, one HELP/TYPE per family before its samples, sample names that
    /// belong to their family's type, label syntax and escapes, float values,
    /// families not interleaved, and histogram bucket consistency.
    pub(crate) fn check_exposition(text: &str) -> Result<(), String> {
        #[derive(Default)]
        struct Hist {
            last_bucket: Option<f64>,
            inf: Option<f64>,
            count: Option<f64>,
            saw_inf: bool,
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps: HashSet<String> = HashSet::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut hists: HashMap<String, Hist> = HashMap::new();
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("output does not end with a newline".into());
        }
        for (n, line) in text.lines().enumerate() {
            let err = |m: &str| Err(format!("line {}: {m}: {line:?}", n + 1));
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                let mut parts = rest.splitn(3, ' ');
                let keyword = parts.next().unwrap_or("");
                if keyword != "HELP" && keyword != "TYPE" {
                    continue; // plain comment
                }
                let Some(name) = parts.next() else {
                    return err("HELP/TYPE without a name");
                };
                if !valid_metric_name(name) {
                    return err("bad metric name");
                }
                let text = parts.next().unwrap_or("");
                if current.as_deref() != Some(name) {
                    if let Some(prev) = current.take() {
                        finished.insert(prev);
                    }
                    if finished.contains(name) {
                        return err("family interleaved with another");
                    }
                    current = Some(name.to_owned());
                }
                if keyword == "HELP" {
                    if !helps.insert(name.to_owned()) {
                        return err("second HELP");
                    }
                    if !valid_help_escapes(text) {
                        return err("bad escape in HELP");
                    }
                } else {
                    if types.contains_key(name) {
                        return err("second TYPE");
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&text) {
                        return err("unknown TYPE");
                    }
                    types.insert(name.to_owned(), text.to_owned());
                }
                continue;
            }
            let (name, labels, rest) = match parse_sample(line) {
                Ok(parsed) => parsed,
                Err(m) => return err(&m),
            };
            let mut fields = rest.split_whitespace();
            let Some(value) = fields.next() else {
                return err("no value");
            };
            let Some(value) = parse_value(value) else {
                return err("bad value");
            };
            if let Some(ts) = fields.next()
                && ts.parse::<i64>().is_err()
            {
                return err("bad timestamp");
            }
            if fields.next().is_some() {
                return err("trailing text");
            }
            // Which family does this sample belong to?
            let family = current.clone().unwrap_or_else(|| name.clone());
            let kind = types.get(&family).map(String::as_str).unwrap_or("untyped");
            let ok_name = match kind {
                "histogram" => [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name),
                "summary" => {
                    name == family || name == format!("{family}_sum") || name == format!("{family}_count")
                }
                _ => name == family,
            };
            if !ok_name {
                return err("sample name does not belong to its family");
            }
            if finished.contains(&family) {
                return err("family interleaved with another");
            }
            if kind == "counter" && !(value >= 0.0 || value.is_nan()) {
                return err("negative counter");
            }
            if kind == "histogram" {
                let key: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                let hist = hists.entry(format!("{family}{key:?}")).or_default();
                if name.ends_with("_bucket") {
                    let Some((_, le)) = labels.iter().find(|(k, _)| k == "le") else {
                        return err("bucket without le");
                    };
                    let Some(bound) = parse_value(le) else {
                        return err("bad le");
                    };
                    if hist.last_bucket.is_some_and(|last| value < last) {
                        return err("buckets not cumulative");
                    }
                    hist.last_bucket = Some(value);
                    if bound == f64::INFINITY {
                        hist.saw_inf = true;
                        hist.inf = Some(value);
                    }
                } else if name.ends_with("_count") {
                    hist.count = Some(value);
                }
            }
        }
        for (key, hist) in &hists {
            if !hist.saw_inf {
                return Err(format!("histogram {key} has no +Inf bucket"));
            }
            if hist.count.is_some() && hist.count != hist.inf {
                return Err(format!("histogram {key}: _count differs from +Inf bucket"));
            }
        }
        Ok(())
    }

    fn valid_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn valid_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn valid_help_escapes(text: &str) -> bool {
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                return false;
            }
        }
        true
    }

    fn parse_value(v: &str) -> Option<f64> {
        match v {
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => v.parse::<f64>().ok().filter(|f| f.is_finite()),
        }
    }

    type Parsed = (String, Vec<(String, String)>, String);

    /// `name{labels} rest` → (name, labels unescaped, rest).
    fn parse_sample(line: &str) -> Result<Parsed, String> {
        let end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..end];
        if !valid_metric_name(name) {
            return Err("bad metric name".into());
        }
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(mut s) = rest.strip_prefix('{') {
            loop {
                s = s.trim_start();
                if let Some(after) = s.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = s.find('=').ok_or("label without =")?;
                let key = s[..eq].trim();
                if !valid_label_name(key) {
                    return Err(format!("bad label name {key:?}"));
                }
                if labels.iter().any(|(k, _): &(String, String)| k == key) {
                    return Err(format!("duplicate label {key:?}"));
                }
                s = s[eq + 1..]
                    .trim_start()
                    .strip_prefix('"')
                    .ok_or("label value not quoted")?;
                let mut value = String::new();
                let mut chars = s.char_indices();
                let close = loop {
                    match chars.next() {
                        None => return Err("unterminated label value".into()),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err("bad escape in label value".into()),
                        },
                        Some((_, '\n')) => return Err("raw newline in label value".into()),
                        Some((_, c)) => value.push(c),
                    }
                };
                labels.push((key.to_owned(), value));
                s = &s[close + 1..];
                s = s.trim_start();
                if let Some(after) = s.strip_prefix(',') {
                    s = after;
                } else if !s.starts_with('}') {
                    return Err("expected , or } after label".into());
                }
            }
        }
        if !rest.starts_with(' ') {
            return Err("no space before value".into());
        }
        Ok((name.to_owned(), labels, rest.to_owned()))
    }

    #[test]
    fn checker_rejects_bad_text() {
        let bad = [
            "# TYPE a counter\n# TYPE a counter\n",
            "# TYPE a_total counter\na_total{x=\"1} 1\n",
            "# TYPE a_total counter\na_total{x=\"\\q\"} 1\n",
            "# TYPE a_total counter\na_total abc\n",
            "# TYPE a gauge\nb 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n",
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n",
        ];
        for text in bad {
            assert!(check_exposition(text).is_err(), "accepted {text:?}");
        }
        let good = "# HELP a A \\\\ help.\n# TYPE a gauge\na{x=\"q\\\"\\n\\\\\"} 1.5\n";
        assert_eq!(check_exposition(good), Ok(()));
    }

    #[test]
    fn renders_recorded_values() {
        let metrics = Metrics::new("strata-test", None).expect("metrics");
        metrics.jobs_queued("high");
        metrics.jobs_queued("high");
        metrics.jobs_queued("low");
        metrics.jobs_in_flight_add(3);
        metrics.jobs_in_flight_add(-1);
        metrics.jobs_done();
        metrics.jobs_failed(true);
        metrics.jobs_failed(false);
        metrics.jobs_failed(false);
        metrics.set_queue_lag("high", 7, 2);
        metrics.set_queue_lag("high", 5, 1);
        metrics.layer_cache_hit();
        metrics.layer_cache_miss();
        metrics.layer_cache_miss();
        metrics.bytes_fetched(1000);
        metrics.bytes_fetched(24);
        metrics.analysis_seconds(0.003);
        metrics.analysis_seconds(0.2);
        metrics.analysis_seconds(1000.0);
        metrics.match_seconds(0.5);
        metrics.compose_seconds(0.01);
        metrics.scans("running", 2);
        metrics.scans("running", -1);
        metrics.scans("done", 1);
        metrics.registry_throttled("registry \"quoted\"\\path\nnext");

        let text = metrics.render_prometheus();
        check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let expected = [
            "# TYPE strata_jobs_queued_total counter",
            "strata_jobs_queued_total{priority=\"high\"} 2",
            "strata_jobs_queued_total{priority=\"low\"} 1",
            "# TYPE strata_jobs_in_flight gauge",
            "strata_jobs_in_flight 2",
            "strata_jobs_done_total 1",
            "strata_jobs_failed_total{permanent=\"true\"} 1",
            "strata_jobs_failed_total{permanent=\"false\"} 2",
            "# TYPE strata_queue_lag gauge",
            "strata_queue_lag{priority=\"high\"} 6",
            "strata_queue_pending{priority=\"high\"} 5",
            "strata_queue_ack_pending{priority=\"high\"} 1",
            "strata_layer_cache_hits_total 1",
            "strata_layer_cache_misses_total 2",
            "strata_bytes_fetched_total 1024",
            "# TYPE strata_layer_analysis_seconds histogram",
            "strata_layer_analysis_seconds_bucket{le=\"0.001\"} 0",
            "strata_layer_analysis_seconds_bucket{le=\"0.005\"} 1",
            "strata_layer_analysis_seconds_bucket{le=\"0.25\"} 2",
            "strata_layer_analysis_seconds_bucket{le=\"300\"} 2",
            "strata_layer_analysis_seconds_bucket{le=\"+Inf\"} 3",
            "strata_layer_analysis_seconds_sum 1000.203",
            "strata_layer_analysis_seconds_count 3",
            "strata_match_seconds_count 1",
            "strata_compose_seconds_count 1",
            "# TYPE strata_scans gauge",
            "strata_scans{status=\"running\"} 1",
            "strata_scans{status=\"done\"} 1",
            "strata_registry_throttled_total{registry=\"registry \\\"quoted\\\"\\\\path\\nnext\"} 1",
        ];
        for line in expected {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(text.contains("# HELP strata_jobs_done_total Layer jobs finished successfully.\n"));
    }

    #[test]
    fn processes_do_not_share_metrics() {
        let a = Metrics::new("a", None).expect("metrics a");
        let b = Metrics::new("b", None).expect("metrics b");
        a.jobs_done();
        let clone = a.clone();
        clone.jobs_done();
        assert!(a.render_prometheus().contains("strata_jobs_done_total 2\n"));
        assert!(!b.render_prometheus().contains("strata_jobs_done_total"));
    }

    #[test]
    fn names_and_values_are_sanitized() {
        assert_eq!(
            sanitize_metric_name("http.server.duration"),
            "http_server_duration"
        );
        assert_eq!(sanitize_metric_name("1abc:x"), "_1abc:x");
        assert_eq!(sanitize_label_name("a:b-c"), "a_b_c");
        assert_eq!(format_f64(f64::INFINITY), "+Inf");
        assert_eq!(format_f64(1.0), "1");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    // A multi-thread runtime: shutting the exporter down blocks this thread
    // while tonic's connection task needs a runtime thread to finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_reader_builds_inside_a_runtime() {
        let metrics = Metrics::new("strata-test", Some("http://127.0.0.1:9")).expect("metrics");
        metrics.jobs_done();
        assert!(metrics.render_prometheus().contains("strata_jobs_done_total 1\n"));
    }

    #[test]
    fn otlp_outside_a_runtime_is_an_error() {
        assert!(matches!(
            Metrics::new("strata-test", Some("http://127.0.0.1:9")),
            Err(TelemetryError::NoRuntime)
        ));
    }
}
