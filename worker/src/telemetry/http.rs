//! The plain-HTTP side port every process serves: `GET /metrics` (Prometheus
//! text format) and `GET /healthz`.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::Metrics;

/// The content type of the Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The router alone, for embedding in another server.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
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
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
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
        let server = tokio::spawn(serve_metrics(listener, metrics.clone(), async {
            let _ = stopped.await;
        }));

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
