//! The plain-HTTP side port every process serves: `GET /metrics` (Prometheus
//! text format), `GET /healthz` (the process answers: liveness) and
//! `GET /readyz` (it can do its job: 503 while a [`Ready`] flag it was given
//! is down, e.g. the coordinator without NATS; a readiness probe that works
//! whether or not the gRPC port speaks TLS).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::Metrics;

/// The content type of the Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the process is ready (see the module header); set by its owner.
pub type Ready = Arc<AtomicBool>;

/// The router alone, for embedding in another server. `ready`: `None`
/// means always ready.
pub fn router(metrics: Metrics, ready: Option<Ready>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.is_none_or(|r| r.load(Ordering::Relaxed)) {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: NATS is not connected",
                        )
                    }
                }
            }),
        )
        .with_state(metrics)
}

async fn metrics_handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        metrics.render_prometheus(),
    )
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` resolves
/// (then finishes in-flight requests and returns).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    ready: Option<Ready>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Metrics::new("strata-test", None).expect("metrics");
        metrics
            .meter()
            .u64_counter("strata_jobs_queued")
            .build()
            .add(1, &[opentelemetry::KeyValue::new("priority", "normal")]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ready: Ready = Arc::new(AtomicBool::new(false));
        let server = tokio::spawn(serve_metrics(
            listener,
            metrics.clone(),
            Some(ready.clone()),
            async {
                let _ = stopped.await;
            },
        ));

        let client = reqwest::Client::new();
        let response = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let body = response.text().await.expect("body");
        assert!(
            body.lines()
                .any(|l| l == "strata_jobs_queued_total{priority=\"normal\"} 1"),
            "{body}"
        );
        crate::telemetry::metrics::check::check_exposition(&body).expect("valid exposition");

        let health = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("GET /healthz");
        assert_eq!(health.status(), reqwest::StatusCode::OK);
        assert_eq!(health.text().await.expect("body"), "ok");

        // Not ready until the owner says so; alive all along.
        let readyz = |c: reqwest::Client| async move {
            c.get(format!("http://{addr}/readyz"))
                .send()
                .await
                .expect("GET /readyz")
                .status()
        };
        assert_eq!(
            readyz(client.clone()).await,
            reqwest::StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(readyz(client.clone()).await, reqwest::StatusCode::OK);

        let missing = client
            .get(format!("http://{addr}/nope"))
            .send()
            .await
            .expect("GET /nope");
        assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);

        drop(client);
        stop.send(()).expect("server still running");
        server.await.expect("server task").expect("server exits cleanly");
    }
}
