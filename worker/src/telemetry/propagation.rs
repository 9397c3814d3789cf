//! W3C trace context (`traceparent`, `tracestate`) over NATS message headers.
//!
//! The publisher calls [`inject_current`] on the headers of each message; the
//! consumer calls [`set_parent`] on the span it opens for the message, so the
//! work done in another process joins the same trace. Both go through the
//! global text-map propagator, which [`super::init`] (or
//! [`super::install_propagator`]) sets to W3C `TraceContextPropagator`.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Writes NATS headers; invalid names or values are skipped (never a panic).
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (key.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            self.0.insert(name, value);
        }
    }
}

/// Reads NATS headers; the exact name first, then case-insensitively (NATS
/// header names are case-sensitive, HTTP-style peers may capitalise them).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Ok(name) = key.parse::<HeaderName>()
            && let Some(value) = self.0.get(name)
        {
            return Some(value.as_str());
        }
        self.0
            .iter()
            .find(|(name, _)| {
                let name: &str = name.as_ref();
                name.eq_ignore_ascii_case(key)
            })
            .and_then(|(_, values)| values.first())
            .map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the current `tracing` span's trace context into `headers`
/// (`traceparent`, and `tracestate` when there is one). Writes nothing when
/// the current span has no OpenTelemetry context (no OTel layer, or no span).
pub fn inject_current(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    inject_context(&cx, headers);
}

/// Writes the given context into `headers`.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut HeaderInjector(headers));
    });
}

/// The remote context carried by `headers`; an empty context when there are
/// no headers or no valid `traceparent`.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        }),
        None => Context::new(),
    }
}

/// Makes `span` a child of the remote context in `headers`. Does nothing when
/// there is no valid remote context (the span keeps its local parent) or the
/// span is disabled or not tracked by an OpenTelemetry layer.
pub fn set_parent(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let cx = extract(headers);
    if cx.span().span_context().is_valid() {
        // Err only when the span is not tracked by an OTel layer, or has
        // already started: then it simply keeps its local parent.
        let _ = span.set_parent(cx);
    }
}

/// The current span's `traceparent` value, for in-process queues and logs.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span_context = cx.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    Some(format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    ))
}

/// [`set_parent`] from a bare `traceparent` value (the in-process queue
/// carries just that string).
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", tp);
    set_parent(span, Some(&headers));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    fn subscriber() -> impl tracing::Subscriber + Send + Sync {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("strata-test");
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    fn is_traceparent(v: &str) -> bool {
        let parts: Vec<&str> = v.split('-').collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        parts.len() == 4 && parts[0] == "00" && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
    }

    #[test]
    fn inject_then_extract_keeps_the_trace() {
        super::super::install_propagator();
        tracing::subscriber::with_default(subscriber(), || {
            let span = tracing::info_span!("publish");
            let _entered = span.enter();
            let mut headers = HeaderMap::new();
            inject_current(&mut headers);
            let traceparent = headers
                .get("traceparent")
                .map(|v| v.as_str().to_owned())
                .expect("traceparent written");
            assert!(is_traceparent(&traceparent), "{traceparent}");
            assert_eq!(current_traceparent().as_deref(), Some(traceparent.as_str()));

            let local = tracing::Span::current().context();
            let remote = extract(Some(&headers));
            let local_trace = local.span().span_context().trace_id();
            assert_eq!(remote.span().span_context().trace_id(), local_trace);
            assert!(remote.span().span_context().is_remote());

            // A consumer span parented on the headers joins the same trace.
            let consume = tracing::info_span!(parent: None, "consume");
            set_parent(&consume, Some(&headers));
            let _consume = consume.enter();
            let child = tracing::Span::current().context();
            assert_eq!(child.span().span_context().trace_id(), local_trace);
            let child_tp = current_traceparent().expect("child traceparent");
            assert!(child_tp.contains(&format!("-{local_trace}-")), "{child_tp}");
            assert_ne!(child_tp, traceparent, "the child has its own span id");
        });
    }

    #[test]
    fn extract_accepts_other_capitalisation() {
        super::super::install_propagator();
        let mut headers = HeaderMap::new();
        headers.insert(
            "TraceParent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let cx = extract(Some(&headers));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn nothing_to_propagate_is_quiet() {
        super::super::install_propagator();
        // No OTel layer in this thread's default subscriber... and no span.
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let mut headers = HeaderMap::new();
            inject_current(&mut headers);
            assert!(headers.get("traceparent").is_none());
            assert_eq!(current_traceparent(), None);
        });
        assert!(!extract(None).span().span_context().is_valid());
        let mut garbage = HeaderMap::new();
        garbage.insert("traceparent", "not-a-trace");
        assert!(!extract(Some(&garbage)).span().span_context().is_valid());
        // A span outside any OTel layer: set_parent is a no-op, not a panic.
        set_parent(&tracing::Span::none(), Some(&garbage));
    }
}
