//! The Prometheus text exposition format (0.0.4) of collected metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// One metric family of the output: its `# HELP`/`# TYPE` and samples.
struct Family {
    help: String,
    kind: &'static str,
    samples: String,
}

/// Renders collected metrics. Families are sorted by name; the same name from
/// two scopes is merged into one family (the first one's type wins).
pub(super) fn render(rm: &ResourceMetrics) -> String {
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
mod tests {
    use super::*;

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
}
