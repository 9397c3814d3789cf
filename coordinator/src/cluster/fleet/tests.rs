//! Coordinator-level tests of the fleet: tag listings against a canned
//! registry, and stored scans hit by a new advisory without rescanning.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use object_store::ObjectStoreExt as _;
use strata_proto::{Ecosystem, OsRelease, Package, Report, Severity, SeverityCounts, v1};

use super::{AffectedQuery, ImageFilter, MAX_TAGS, PackageQuery};
use crate::cluster::error::to_json;
use crate::cluster::records::{ImageRecord, ScanRecord, ScanStatus, image_key};
use crate::cluster::{Coordinator, CoordinatorError};

/// A registry on a local port answering tag lists by repository with
/// canned HTTP/1.1 answers (one request per connection).
/// `throttled/app` answers `429` with `Retry-After: 1` to its first two
/// requests.
async fn canned_registry() -> String {
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let throttled = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let throttled = Arc::clone(&throttled);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                let path = path.split('?').next().unwrap_or("");
                let mut extra = "";
                let (status, body) = match path {
                    "/v2/" => ("200 OK", "{}".to_owned()),
                    "/v2/throttled/app/tags/list" if throttled.fetch_add(1, Ordering::SeqCst) < 2 => {
                        extra = "Retry-After: 1\r\n";
                        ("429 Too Many Requests", "slow down".to_owned())
                    }
                    "/v2/throttled/app/tags/list" => {
                        ("200 OK", r#"{"name":"throttled/app","tags":["v1"]}"#.to_owned())
                    }
                    "/v2/ok/app/tags/list" => ("200 OK", r#"{"name":"ok/app","tags":["b","a"]}"#.to_owned()),
                    "/v2/empty/app/tags/list" => ("200 OK", r#"{"name":"empty/app","tags":null}"#.to_owned()),
                    "/v2/locked/app/tags/list" => ("403 Forbidden", "go away".to_owned()),
                    "/v2/flaky/app/tags/list" => ("500 Internal Server Error", "disk on fire".to_owned()),
                    "/v2/huge/app/tags/list" => {
                        let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
                        ("200 OK", serde_json::json!({"name": "huge/app", "tags": tags}).to_string())
                    }
                    _ => (
                        "404 Not Found",
                        r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#
                            .to_owned(),
                    ),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    host
}

#[tokio::test]
async fn tag_listing_maps_the_registry_answers() {
    use crate::cluster::{Buckets, CoordinatorConfig, VulnData};
    use crate::vulndb::Db;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let buckets = Buckets::local(&dir.path().join("state.redb")).unwrap();
    let host = canned_registry().await;
    let mut config = CoordinatorConfig::new("memory:///");
    config.source.docker_config = Some(dir.path().join("no-docker-config.json"));
    // The server lists it: callers may then ask for plain HTTP to it.
    config.source.insecure_registries = vec![host.clone(), "127.0.0.1:1".to_owned()];
    config.resolve_timeout = std::time::Duration::from_secs(20);
    let c = Coordinator::new(
        config,
        strata_worker::queue::Queue::memory(Default::default()),
        buckets,
        store,
        VulnData::new(&Db::from_advisories(vec![], vec![])),
        strata_worker::telemetry::Metrics::new("test", None).unwrap(),
    );
    let list = |repo: &str| {
        let repository = format!("{host}/{repo}");
        let c = &c;
        async move { c.list_tags(&repository, true).await }
    };
    assert_eq!(list("ok/app").await.unwrap(), ["a", "b"]);
    assert!(list("empty/app").await.unwrap().is_empty());
    let err = list("gone/app").await.unwrap_err();
    assert!(
        matches!(&err, CoordinatorError::NotFound(m) if m.contains("not known")),
        "{err:?}"
    );
    let err = list("locked/app").await.unwrap_err();
    assert!(matches!(err, CoordinatorError::Unauthorized(_)), "{err:?}");
    let err = list("flaky/app").await.unwrap_err();
    assert!(
        matches!(&err, CoordinatorError::Unavailable(m) if m.contains("disk on fire")),
        "{err:?}"
    );
    let err = list("huge/app").await.unwrap_err();
    assert!(matches!(err, CoordinatorError::Full(_)), "{err:?}");
    // Two 429s with Retry-After: 1 are waited out, then the list arrives.
    let started = Instant::now();
    assert_eq!(list("throttled/app").await.unwrap(), ["v1"]);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let err = c.list_tags("127.0.0.1:1/nothing/here", true).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::Unavailable(_)), "{err:?}");
    // Plain HTTP to a registry the server does not list: refused, naming the rule.
    let err = c.list_tags("127.0.0.1:2/nothing/here", true).await.unwrap_err();
    assert!(
        matches!(&err, CoordinatorError::Unauthorized(m) if m.contains("(registry policy: insecure_registries)")),
        "{err:?}"
    );
}

/// A coordinator over a local state file and an in-memory store, with
/// one image whose stored report was matched by an empty database.
async fn coordinator_with_one_image(dir: &std::path::Path) -> (Coordinator, String) {
    coordinator_with_packages(dir, &["libfoo"]).await
}

/// One registered image whose report lists Debian 12 packages `names`, each at 1.0-1.
async fn coordinator_with_packages(dir: &std::path::Path, names: &[&str]) -> (Coordinator, String) {
    use crate::cluster::{Buckets, CoordinatorConfig, VulnData};
    use crate::vulndb::Db;
    use object_store::PutPayload;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let buckets = Buckets::local(&dir.join("state.redb")).unwrap();
    let empty = Db::from_advisories(vec![], vec![]);
    let layer = format!("sha256:{}", "1".repeat(64));
    let digest = format!("sha256:{}", "2".repeat(64));
    let reference = "registry.test/app:v1".to_owned();
    let scan_id = "s-0123456789abcdef01234567".to_owned();
    let report = Report {
        scan_id: scan_id.clone(),
        image_reference: reference.clone(),
        image_digest: digest.parse().ok(),
        platform: String::new(),
        os_release: Some(OsRelease {
            id: "debian".into(),
            version_id: "12".into(),
            ..Default::default()
        }),
        packages: names
            .iter()
            .map(|name| Package {
                ecosystem: Ecosystem::Debian,
                name: (*name).into(),
                version: "1.0-1".into(),
                source_name: None,
                source_version: None,
                arch: None,
                purl: String::new(),
                path: "/var/lib/dpkg/status".into(),
                layer: layer.parse().ok(),
                evidence: Default::default(),
            })
            .collect(),
        findings: vec![],
        counts: SeverityCounts::default(),
        suppressed: 0,
        vulndb_version: VulnData::new(&empty).matcher.vulndb_version().to_owned(),
        created_unix_ms: 1,
        layer_errors: vec![],
    };
    let key = crate::cluster::report_path(&scan_id);
    store
        .put(&key, PutPayload::from(serde_json::to_vec(&report).unwrap()))
        .await
        .unwrap();
    let scan = ScanRecord {
        id: scan_id.clone(),
        reference: reference.clone(),
        platform: String::new(),
        priority: "background".into(),
        insecure_registry: false,
        analyzer_set: "test".into(),
        status: ScanStatus::Complete,
        image_digest: digest.clone(),
        resolved_platform: String::new(),
        layers: vec![],
        location: None,
        error: None,
        created_unix_ms: 1,
        updated_unix_ms: 2,
        completed_unix_ms: 3,
        counts: Default::default(),
        packages: names.len() as u32,
        findings: 0,
        vulndb_version: report.vulndb_version.clone(),
        report_key: Some(key.to_string()),
    };
    buckets
        .scans
        .put(&scan_id, to_json(&scan).unwrap())
        .await
        .unwrap();
    let image = ImageRecord {
        reference: reference.clone(),
        platform: String::new(),
        insecure_registry: false,
        registered: true,
        digest,
        scan_id,
        updated_unix_ms: 3,
    };
    buckets
        .images
        .put(&image_key(&reference), to_json(&image).unwrap())
        .await
        .unwrap();
    let queue = strata_worker::queue::Queue::memory(Default::default());
    let metrics = strata_worker::telemetry::Metrics::new("test", None).unwrap();
    let c = Coordinator::new(
        CoordinatorConfig::new("memory:///"),
        queue,
        buckets,
        store,
        VulnData::new(&empty),
        metrics,
    );
    (c, layer)
}

#[tokio::test]
async fn a_new_advisory_hits_stored_scans_without_rescanning() {
    use crate::vulndb::Db;
    let dir = tempfile::tempdir().unwrap();
    let (c, layer) = coordinator_with_one_image(dir.path()).await;
    let q = AffectedQuery::vulnerability("DSA-9999-1").unwrap();
    // Loaded lazily from the buckets and the store (as after a restart).
    assert!(c.fleet_affected(&q, 0, "").await.unwrap().0.is_empty());
    let (images, _) = c.fleet_images(&ImageFilter::default(), 0, "").await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].status, v1::ScanStatus::Complete as i32);

    let db = Db::from_advisories(
        vec![debian_advisory("DSA-9999-1", "CVE-2099-0001", "libfoo")],
        vec![],
    );
    c.set_vulndb(crate::cluster::VulnData::new(&db));
    for id in ["DSA-9999-1", "cve-2099-0001"] {
        let q = AffectedQuery::vulnerability(id).unwrap();
        let (hit, next) = c.fleet_affected(&q, 0, "").await.unwrap();
        assert!(next.is_empty());
        assert_eq!(hit.len(), 1, "{id}");
        let p = &hit[0].packages[0];
        assert_eq!(p.package.as_ref().unwrap().layer_digest, layer);
        assert_eq!(p.fixed_versions, ["1.0-2"]);
        assert_eq!(p.vulnerability_ids, ["DSA-9999-1"]);
    }
    let summary = c.fleet_summary(0).await.unwrap();
    assert_eq!(summary.findings.high, 1);
    assert_eq!(summary.top[0].id, "DSA-9999-1");
    assert_eq!(summary.top[0].images_affected, 1);
    let high = ImageFilter {
        min_severity: Some(Severity::High),
        ..Default::default()
    };
    assert_eq!(c.fleet_images(&high, 0, "").await.unwrap().0.len(), 1);
    let critical = ImageFilter {
        min_severity: Some(Severity::Critical),
        ..Default::default()
    };
    assert!(c.fleet_images(&critical, 0, "").await.unwrap().0.is_empty());
    let pq = PackageQuery::new("Debian", "libfoo", ">=1.0-1, <1.0-2").unwrap();
    assert_eq!(
        c.fleet_affected(&AffectedQuery::Package(pq), 0, "")
            .await
            .unwrap()
            .0
            .len(),
        1
    );
    let pq = PackageQuery::new("Debian", "libfoo", ">1.0-1").unwrap();
    assert!(
        c.fleet_affected(&AffectedQuery::Package(pq), 0, "")
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

/// A Debian 12 advisory on `name` below 1.0-2.
fn debian_advisory(id: &str, alias: &str, name: &str) -> crate::vulndb::Advisory {
    use crate::vulndb::{Advisory, AffectedEntry, EvalRange, Event, RangeKind};
    Advisory {
        id: id.into(),
        modified: String::new(),
        aliases: vec![alias.into()],
        summary: String::new(),
        severity: Severity::High,
        score: None,
        score_source: String::new(),
        affected: vec![AffectedEntry {
            ecosystem: Ecosystem::Debian,
            release: Some("12".into()),
            name: name.into(),
            ranges: vec![EvalRange {
                kind: RangeKind::Ecosystem,
                events: vec![Event::Introduced("0".into()), Event::Fixed("1.0-2".into())],
            }],
            versions: vec![],
        }],
    }
}

/// The incremental re-match moves only the names a scan gains or loses in
/// the vulnerability index: an alias two advisories share stays while one
/// of them is kept, and findings stay sorted as histories expect.
#[tokio::test]
async fn an_update_moves_only_the_names_an_image_gains_or_loses() {
    use crate::vulndb::Db;
    use crate::vulndb::diff::diff;
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = coordinator_with_packages(dir.path(), &["libfoo", "libbar", "libbaz"]).await;
    let affected = |c: &Coordinator, id: &str| {
        let q = AffectedQuery::vulnerability(id).unwrap();
        let c = c.clone();
        async move { c.fleet_affected(&q, 0, "").await.unwrap().0.len() }
    };
    // A on libfoo and B on libbar share the alias CVE-2099-1.
    let v1 = Db::from_advisories(
        vec![
            debian_advisory("DSA-1", "CVE-2099-1", "libfoo"),
            debian_advisory("DSA-2", "CVE-2099-1", "libbar"),
        ],
        vec![],
    );
    c.set_vulndb(crate::cluster::VulnData::new(&v1));
    assert_eq!(affected(&c, "cve-2099-1").await, 1);
    // B withdrawn: libbar matched again; the alias stays (A is kept).
    let v2 = Db::from_advisories(vec![debian_advisory("DSA-1", "CVE-2099-1", "libfoo")], vec![]);
    let changes = diff(&v1, &v2);
    let summary = c
        .apply_vulndb(crate::cluster::VulnData::new(&v2), &changes)
        .await
        .unwrap();
    assert_eq!(summary.images, 1);
    assert_eq!(affected(&c, "DSA-2").await, 0);
    assert_eq!(affected(&c, "CVE-2099-1").await, 1);
    assert_eq!(affected(&c, "DSA-1").await, 1);
    // C on libbaz and D on libbar come (D's alias new, C's shared with A);
    // A withdrawn: its id goes, the alias stays with C.
    let v3 = Db::from_advisories(
        vec![
            debian_advisory("DSA-0", "CVE-2099-1", "libbaz"),
            debian_advisory("DSA-4", "CVE-2099-4", "libbar"),
        ],
        vec![],
    );
    let changes = diff(&v2, &v3);
    c.apply_vulndb(crate::cluster::VulnData::new(&v3), &changes)
        .await
        .unwrap();
    assert_eq!(affected(&c, "DSA-1").await, 0);
    assert_eq!(affected(&c, "CVE-2099-1").await, 1);
    assert_eq!(affected(&c, "DSA-0").await, 1);
    assert_eq!(affected(&c, "cve-2099-4").await, 1);
    let state = c.inner.fleet.read();
    let m = state.scans.values().find_map(|e| e.report.clone()).unwrap();
    let ids: Vec<&str> = m.hits.iter().map(|h| h.vuln.id.as_str()).collect();
    assert_eq!(ids, ["DSA-0", "DSA-4"], "sorted by finding key");
}
