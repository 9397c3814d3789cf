//! The registry source against a canned registry on a local port.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oci_client::Reference;
use strata_proto::Digest;

use super::{RegistrySource, SourceConfig, SourceError, TagListError};
use crate::source::manifest;

/// A registry on a local port that wants basic auth `alice:s3cret` for
/// everything, and serves tag lists by repository (see `answer`).
async fn tag_registry() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let host = format!("127.0.0.1:{port}");
    let base = format!("http://{host}");
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
        let base = base.clone();
        async move { answer(&base, &uri, &headers) }
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (host, server)
}

fn answer(
    base: &str,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
) -> axum::response::Response<axum::body::Body> {
    use axum::http::StatusCode;
    use base64::Engine as _;
    let reply = |status: StatusCode, headers: &[(&str, String)], body: String| {
        let mut r = axum::response::Response::builder().status(status);
        for (k, v) in headers {
            r = r.header(*k, v.as_str());
        }
        r.body(axum::body::Body::from(body))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", r#"Basic realm="test""#.to_owned())],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_owned(),
        );
    }
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let tags = |t: &[&str]| serde_json::json!({"name": "x", "tags": t}).to_string();
    let next = |target: String| [("link", format!(r#"<{target}>; rel="next""#))];
    match path {
        "/v2/" => reply(StatusCode::OK, &[], "{}".to_owned()),
        "/v2/paged/app/tags/list" if !query.contains("last") => reply(
            StatusCode::OK,
            &next("/v2/paged/app/tags/list?n=2&last=b".to_owned()),
            tags(&["b", "a"]),
        ),
        "/v2/paged/app/tags/list" if query.contains("last=b") => reply(
            StatusCode::OK,
            &next(format!("{base}/v2/paged/app/tags/list?n=2&last=z")),
            r#"{"name":"paged/app","tags":null}"#.to_owned(),
        ),
        "/v2/paged/app/tags/list" => reply(StatusCode::OK, &[], tags(&["c", "a"])),
        "/v2/busy/app/tags/list" => reply(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", "7".to_owned())],
            String::new(),
        ),
        "/v2/denied/app/tags/list" => reply(StatusCode::FORBIDDEN, &[], "no".to_owned()),
        "/v2/escape/app/tags/list" => reply(
            StatusCode::OK,
            &next("http://elsewhere.invalid/v2/escape/app/tags/list?last=a".to_owned()),
            tags(&["a"]),
        ),
        "/v2/loop/app/tags/list" => reply(
            StatusCode::OK,
            &next("/v2/loop/app/tags/list?last=a".to_owned()),
            tags(&[]),
        ),
        "/v2/heads/app/manifests/1"
            if headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains(manifest::OCI_INDEX)) =>
        {
            reply(
                StatusCode::OK,
                &[("docker-content-digest", format!("sha256:{}", "ab".repeat(32)))],
                String::new(),
            )
        }
        "/v2/heads/app/manifests/bare" => reply(StatusCode::OK, &[], String::new()),
        "/v2/heads/app/manifests/odd" => reply(
            StatusCode::OK,
            &[("docker-content-digest", "md5:0123".to_owned())],
            String::new(),
        ),
        "/v2/busy/app/manifests/1" => reply(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", "7".to_owned())],
            String::new(),
        ),
        "/v2/many/app/tags/list" => reply(StatusCode::OK, &[], tags(&["a", "b", "c", "d", "e"])),
        "/v2/big/app/tags/list" => reply(StatusCode::OK, &[], tags(&[&"x".repeat(4096)])),
        "/v2/garbage/app/tags/list" => reply(StatusCode::OK, &[], "<html>".to_owned()),
        _ => reply(
            StatusCode::NOT_FOUND,
            &[],
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#
                .to_owned(),
        ),
    }
}

#[tokio::test]
async fn head_digest_reads_the_registrys_digest() {
    let (host, server) = tag_registry().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let docker_config = dir.path().join("config.json");
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    };
    std::fs::write(
        &docker_config,
        serde_json::json!({"auths": {&host: {"auth": auth}}}).to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = SourceConfig {
        insecure_registries: vec![host.clone()],
        docker_config: Some(docker_config),
        ..SourceConfig::default()
    };
    let source = |reference: &str| {
        let reference: Reference = format!("{host}/{reference}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        RegistrySource::new(reference, &config).unwrap_or_else(|e| panic!("{e}"))
    };
    let expected: Digest = format!("sha256:{}", "ab".repeat(32))
        .parse()
        .unwrap_or_else(|e| panic!("{e:?}"));

    let s = source("heads/app:1");
    assert_eq!(s.head_digest().await.ok().flatten(), Some(expected.clone()));
    // A reused authorization the registry no longer takes: dropped, tried again.
    *s.last_auth.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((Some("Basic stale".to_owned()), Instant::now()));
    assert_eq!(s.head_digest().await.ok().flatten(), Some(expected.clone()));
    // No usable header: no answer (the caller resolves in full).
    assert_eq!(source("heads/app:bare").head_digest().await.ok(), Some(None));
    assert_eq!(source("heads/app:odd").head_digest().await.ok(), Some(None));
    let err = source("busy/app:1").head_digest().await.err();
    assert!(
        matches!(err, Some(SourceError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(7)),
        "{err:?}"
    );
    let err = source("missing/app:1").head_digest().await.err();
    assert!(matches!(err, Some(SourceError::NotFound(_))), "{err:?}");
    // A reference naming a digest needs no request.
    let pinned = format!("nowhere/app@sha256:{}", "cd".repeat(32));
    let d = source(&pinned).head_digest().await.ok().flatten();
    assert_eq!(
        d.map(|d| d.to_string()),
        Some(format!("sha256:{}", "cd".repeat(32)))
    );
    server.abort();
}

#[tokio::test]
async fn list_tags_pages_with_basic_auth_from_the_docker_config() {
    let (host, server) = tag_registry().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = dir.path().join("good.json");
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    };
    std::fs::write(
        &good,
        serde_json::json!({"auths": {&host: {"auth": auth}}}).to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = |docker_config: PathBuf| SourceConfig {
        insecure_registries: vec![host.clone()],
        docker_config: Some(docker_config),
        ..SourceConfig::default()
    };
    let source = |repo: &str, docker_config: PathBuf| {
        let reference: Reference = format!("{host}/{repo}").parse().unwrap_or_else(|e| panic!("{e}"));
        RegistrySource::new(reference, &config(docker_config)).unwrap_or_else(|e| panic!("{e}"))
    };
    let list = |repo: &str| {
        let s = source(repo, good.clone());
        async move { s.list_tags(4, 5, 1024).await }
    };

    assert_eq!(
        list("paged/app").await.unwrap_or_else(|e| panic!("{e}")),
        ["a", "b", "c"]
    );
    let err = list("busy/app").await.err();
    assert!(
        matches!(
            err,
            Some(TagListError::Source(SourceError::RateLimited { retry_after: Some(d), .. })) if d == Duration::from_secs(7)
        ),
        "{err:?}"
    );
    let err = list("missing/app").await.err();
    assert!(
        matches!(err, Some(TagListError::Source(SourceError::NotFound(_)))),
        "{err:?}"
    );
    let err = list("denied/app").await.err();
    assert!(
        matches!(err, Some(TagListError::Source(SourceError::Unauthorized(_)))),
        "{err:?}"
    );
    let err = list("escape/app").await.err();
    assert!(
        matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("leaves the registry")),
        "{err:?}"
    );
    let err = list("loop/app").await.err();
    assert!(
        matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("more than 5 pages")),
        "{err:?}"
    );
    let err = list("many/app").await.err();
    assert!(
        matches!(&err, Some(TagListError::TooManyTags { limit: 4, .. })),
        "{err:?}"
    );
    assert!(err.is_some_and(|e| e.is_too_many_tags()));
    let err = list("big/app").await.err();
    assert!(
        matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("larger than 1024 bytes")),
        "{err:?}"
    );
    let err = list("garbage/app").await.err();
    assert!(
        matches!(&err, Some(TagListError::Source(SourceError::Registry { message, .. })) if message.contains("not a tag list")),
        "{err:?}"
    );

    // Without credentials, or with wrong ones: refused.
    let none = source("paged/app", dir.path().join("absent.json"));
    let err = none.list_tags(3, 5, 1024).await.err();
    assert!(
        matches!(err, Some(TagListError::Source(SourceError::Unauthorized(_)))),
        "{err:?}"
    );
    let wrong = dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        serde_json::json!({"auths": {&host: {"username": "alice", "password": "nope"}}}).to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = source("paged/app", wrong).list_tags(3, 5, 1024).await.err();
    assert!(
        matches!(err, Some(TagListError::Source(SourceError::Unauthorized(_)))),
        "{err:?}"
    );
    server.abort();
}
