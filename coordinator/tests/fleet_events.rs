//! The fleet kept current: new vulnerability data re-matches only the
//! packages it touches, from stored inventories (nothing fetched, no job),
//! and every finding that appears or goes is an event; a tag moved to a new
//! digest costs only its new layers, and its findings change as events too.
//! In process (a coordinator and workers on the embedded store, what
//! `strata serve` runs) against a real registry behind a counting proxy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_coordinator::cluster::VulnData;
use strata_coordinator::vulndb::{Advisory, AffectedEntry, Db, EvalRange, Event, RangeKind, diff};
use strata_harness::{ClusterSandbox, Compression, Image, Layer, Registry, RegistryProxy, SandboxQueue};
use strata_proto::{Ecosystem, Severity, v1};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn metadata(name: &str, version: &str) -> String {
    format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
}

fn base() -> Result<Layer, BoxError> {
    Ok(Layer::builder()
        .file(
            "usr/lib/python3/site-packages/Jinja2-2.10.dist-info/METADATA",
            metadata("Jinja2", "2.10"),
        )
        .build(Compression::Gzip)?)
}

/// The shared base, then an app layer with `requests` at `version` and a
/// marker that makes each image's layer its own.
fn image(requests: &str, marker: &str) -> Result<Image, BoxError> {
    Ok(Image::builder()
        .layer(base()?)
        .layer(
            Layer::builder()
                .file(
                    &format!("srv/app/site-packages/requests-{requests}.dist-info/METADATA"),
                    metadata("requests", requests),
                )
                .file("srv/app/marker", marker)
                .build(Compression::Gzip)?,
        )
        .build()?)
}

fn advisory(id: &str, name: &str, fixed: &str, severity: Severity) -> Advisory {
    Advisory {
        id: id.to_owned(),
        aliases: vec![format!("CVE-{id}")],
        severity,
        affected: vec![AffectedEntry {
            ecosystem: Ecosystem::PyPI,
            release: None,
            name: name.to_owned(),
            ranges: vec![EvalRange {
                kind: RangeKind::Ecosystem,
                events: vec![Event::Introduced("0".into()), Event::Fixed(fixed.into())],
            }],
            versions: Vec::new(),
        }],
        ..Advisory::default()
    }
}

async fn sandbox(pull_host: &str, db: &Db) -> Result<ClusterSandbox, BoxError> {
    Ok(ClusterSandbox::builder()
        .queue(SandboxQueue::Memory)
        .workers(2)
        .insecure_registry(pull_host)
        .vulndb(VulnData::new(db))
        .start()
        .await?)
}

/// Waits until the event log holds at least `n` events.
async fn wait_events(s: &ClusterSandbox, n: u64) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.coordinator().event_log().last_sequence().await? < n {
        if Instant::now() > deadline {
            return Err(format!(
                "{} events after 60 s, expected {n}",
                s.coordinator().event_log().last_sequence().await?
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// (kind, vulnerability, reason) → how many, for the events after `after`.
async fn tally(s: &ClusterSandbox, after: u64) -> Result<BTreeMap<(i32, String, i32), usize>, BoxError> {
    let mut out = BTreeMap::new();
    for e in s.coordinator().event_log().after(after, 100_000).await? {
        *out.entry((e.kind, e.vulnerability_id, e.reason)).or_insert(0) += 1;
    }
    Ok(out)
}

const NEW: i32 = v1::EventKind::FindingNew as i32;
const RESOLVED: i32 = v1::EventKind::FindingResolved as i32;
const SEVERITY: i32 = v1::EventKind::ImageSeverity as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_update_rematches_only_what_it_touches_and_tells_what_changed() -> Result<(), BoxError> {
    let registry = Registry::start()?;
    let proxy = RegistryProxy::builder(&registry).start()?;
    // 20 images on one base (jinja2 2.10): 3 with requests 2.19.1, 17 with 2.31.0.
    let mut references = Vec::new();
    for i in 0..20 {
        let requests = if i < 3 { "2.19.1" } else { "2.31.0" };
        image(requests, &format!("image {i}"))?
            .push(&registry, &format!("fleet/app{i}"), "1")
            .await?;
        references.push(format!("{}/fleet/app{i}:1", proxy.host()));
    }
    // v1: one low advisory on jinja2 (every image).
    let v1 = Db::from_advisories(
        vec![advisory("PYSEC-W", "jinja2", "2.11", Severity::Low)],
        Vec::new(),
    );
    let s = sandbox(&proxy.host(), &v1).await?;
    let c = s.coordinator();
    let registered = c.fleet_register(references.clone(), "", true).await?;
    for (reference, result) in registered {
        let id = result.map_err(|e| format!("{reference}: {e}"))?;
        s.wait_scan(&id, Duration::from_secs(120)).await?;
    }
    // Each image's first scan is its baseline: only its severity is told.
    wait_events(&s, 20).await?;
    let first = tally(&s, 0).await?;
    assert_eq!(first, BTreeMap::from([((SEVERITY, String::new(), 0), 20)]));
    let seen = c.event_log().last_sequence().await?;

    // v2: the jinja2 advisory withdrawn, a high one on requests < 2.20.0.
    let v2 = Db::from_advisories(
        vec![advisory("PYSEC-N", "requests", "2.20.0", Severity::High)],
        Vec::new(),
    );
    let changes = diff::diff(&v1, &v2);
    let (requests_before, misses_before) = (proxy.requests(), c.cache_stats().misses);
    let summary = c.apply_vulndb(VulnData::new(&v2), &changes).await?;
    assert_eq!(
        proxy.requests(),
        requests_before,
        "nothing was fetched from the registry"
    );
    assert_eq!(c.cache_stats().misses, misses_before, "no layer job was queued");
    assert_eq!(summary.vulndb_version, v2.version());
    assert_eq!((summary.findings_new, summary.findings_resolved), (3, 20));
    // Each distinct (name, version) matched once: jinja2 2.10, requests ×2.
    assert_eq!(summary.distinct_packages, 3);
    let second = tally(&s, seen).await?;
    let expected = BTreeMap::from([
        (
            (
                RESOLVED,
                "PYSEC-W".into(),
                v1::ResolvedReason::AdvisoryWithdrawn as i32,
            ),
            20,
        ),
        ((NEW, "PYSEC-N".into(), 0), 3),
        ((SEVERITY, String::new(), 0), 3),
    ]);
    assert_eq!(second, expected);
    // The fleet answers with the new data at once.
    let hit = c
        .fleet_affected(
            &strata_coordinator::cluster::fleet::AffectedQuery::vulnerability("PYSEC-N")?,
            0,
            "",
        )
        .await?;
    assert_eq!(hit.0.len(), 3);
    // The same data again changes nothing and tells nothing.
    let again = c.apply_vulndb(VulnData::new(&v2), &diff::diff(&v2, &v2)).await?;
    assert_eq!(
        (again.images, again.findings_new, again.findings_resolved),
        (0, 0, 0)
    );
    assert_eq!(c.event_log().last_sequence().await?, seen + 26);
    // A finding's history: first seen, and once gone, when and why.
    let h = c
        .fleet_history(&references[0])
        .await?
        .expect("a registered image has a history");
    assert_eq!(h.open.len(), 1);
    assert_eq!(h.resolved[0].reason, "advisory_withdrawn");
    assert!(h.resolved[0].finding.first_seen_unix_ms <= h.open[0].first_seen_unix_ms);
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_costs_only_its_new_layers_and_its_findings_change() -> Result<(), BoxError> {
    let registry = Registry::start()?;
    let proxy = RegistryProxy::builder(&registry).start()?;
    let repo = "watched/app";
    let mut layers = Vec::new();
    for tag in 1..=5 {
        let img = image("2.19.1", &format!("tag {tag}"))?;
        layers.extend(img.layers.iter().map(|l| l.digest.clone()));
        img.push(&registry, repo, &format!("v{tag}")).await?;
    }
    let db = Db::from_advisories(
        vec![advisory("PYSEC-N", "requests", "2.20.0", Severity::High)],
        Vec::new(),
    );
    let s = sandbox(&proxy.host(), &db).await?;
    let c = s.coordinator();
    let repository = format!("{}/{repo}", proxy.host());
    assert_eq!(c.fleet_register_repository(&repository, "", "", true).await?, 5);
    // 5 baselines: 5 images at HIGH.
    wait_events(&s, 5).await?;
    let seen = c.event_log().last_sequence().await?;
    layers.sort();
    layers.dedup();
    let gets: Vec<u64> = layers.iter().map(|d| proxy.blob_gets(d)).collect();
    assert!(gets.iter().all(|&n| n == 1), "each layer fetched once: {gets:?}");

    // v3 moves to an image with requests upgraded (same base).
    let moved = image("2.31.0", "tag 3, rebuilt")?;
    moved.push(&registry, repo, "v3").await?;
    let new_layer = moved.layers[1].digest.clone();
    let blob_gets_before = proxy.blob_gets_total();
    c.fleet_refresh().await?;
    wait_events(&s, seen + 1).await?;
    // Give the moved tag's scan time to finish and its events to land.
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let t = tally(&s, seen).await?;
        if t.contains_key(&(
            RESOLVED,
            "PYSEC-N".into(),
            v1::ResolvedReason::PackageUpgraded as i32,
        )) || Instant::now() > deadline
        {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        events,
        BTreeMap::from([(
            (
                RESOLVED,
                "PYSEC-N".into(),
                v1::ResolvedReason::PackageUpgraded as i32
            ),
            1
        )])
    );
    assert_eq!(proxy.blob_gets(&new_layer), 1, "the new layer fetched once");
    let again: Vec<u64> = layers.iter().map(|d| proxy.blob_gets(d)).collect();
    assert_eq!(again, gets, "no old layer fetched again");
    // Everything the refresh fetched: the moved image's config and its one
    // new layer, nothing else.
    assert_eq!(
        proxy.blob_gets_total() - blob_gets_before,
        2,
        "only the moved image's config and new layer"
    );
    assert_eq!(proxy.blob_gets(&moved.config_digest), 1);
    let e = c.event_log().after(seen, 10).await?;
    assert!(
        e[0].image_reference.ends_with(":v3"),
        "{:?}",
        e[0].image_reference
    );
    assert_eq!(e[0].package.as_ref().map(|p| p.version.as_str()), Some("2.19.1"));
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_nothing_references_is_removed_after_the_grace() -> Result<(), BoxError> {
    use object_store::ObjectStoreExt as _;
    let registry = Registry::start()?;
    let db = Db::from_advisories(Vec::new(), Vec::new());
    let first = image("2.19.1", "first")?;
    first.push(&registry, "gc/app", "1").await?;
    let s = sandbox(&registry.host(), &db).await?;
    let c = s.coordinator();
    let reference = format!("{}/gc/app:1", registry.host());
    let (_, id) = c
        .fleet_register(vec![reference.clone()], "", true)
        .await?
        .remove(0);
    let old_scan = s.wait_scan(&id?, Duration::from_secs(60)).await?;
    // The tag moves on: the first scan and its own layer are garbage now;
    // the base layer the new image shares is not.
    let second = image("2.31.0", "second")?;
    second.push(&registry, "gc/app", "1").await?;
    c.fleet_refresh().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let images = c.fleet_images(&Default::default(), 0, "").await?.0;
        if images
            .iter()
            .any(|i| i.digest == second.manifest_digest && i.status == v1::ScanStatus::Complete as i32)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the moved tag was not scanned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let inventory =
        |digest: &str| strata_worker::job::inventory_key(&c.config().analyzer_set, &digest.parse().unwrap());
    let store = s.store().clone();
    let exists = |path: object_store::path::Path| {
        let store = store.clone();
        async move { store.head(&path).await.is_ok() }
    };
    let old_layer = first.layers[1].digest.clone();
    let base = first.layers[0].digest.clone();
    let report = old_scan.report_key.clone().expect("a report");
    assert!(exists(inventory(&old_layer)).await && exists(report.as_str().into()).await);
    // Within the grace: nothing goes.
    let run = c.gc_once(Duration::from_secs(3600)).await?;
    assert_eq!((run.reports, run.inventories), (0, 0));
    // Past it (a zero grace): the old scan's report and its own layer go.
    let run = c.gc_once(Duration::ZERO).await?;
    assert_eq!((run.reports, run.inventories), (1, 1));
    assert!(!exists(report.as_str().into()).await, "the old report is gone");
    assert!(
        !exists(inventory(&old_layer)).await,
        "the old layer's inventory is gone"
    );
    assert!(exists(inventory(&base)).await, "the shared base layer stays");
    assert!(c.scan(&old_scan.id).await?.is_none());
    assert_eq!(
        c.gc_stats()
            .reports_removed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Unregistered: everything it used goes too.
    c.fleet_unregister(&[reference]).await?;
    let run = c.gc_once(Duration::ZERO).await?;
    assert_eq!((run.reports, run.inventories), (1, 2));
    assert!(!exists(inventory(&base)).await);
    s.stop().await?;
    Ok(())
}
