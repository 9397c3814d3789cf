//! `FleetService` on a real cluster: nats-server, docker-registry, and
//! `strata coordinator` / `strata worker` processes.
//!
//! One cluster serves the whole file (a cluster costs seconds on two cores):
//! the fleet is registered once, then every call is checked against it,
//! across a coordinator restart (the index is rebuilt from the buckets).

// The std Mutex serializes whole tests (each on its own runtime), as in cluster.rs.
#![allow(clippy::await_holding_lock)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use strata_harness::fixtures::{self, build_db, debian_layer, serial};
use strata_harness::image::{Compression, Image, Layer};
use strata_harness::{Cluster, Registry};
use strata_proto::v1::{self, fleet_service_client::FleetServiceClient, list_affected_request::Query};
use tonic::transport::Channel;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const SCAN_LIMIT: Duration = Duration::from_secs(180);
/// Bound on reaching the coordinator's gRPC port (it may be restarting).
const CONNECT_LIMIT: Duration = Duration::from_secs(60);

/// Debian 7 with nginx 1.2.1-2.2: hit by DSA-3029-1 (alias CVE-2014-3616,
/// fixed in 1.2.1-2.2+wheezy3) in the testdata.
const WHEEZY_STATUS: &str = "Package: nginx\nStatus: install ok installed\nArchitecture: amd64\nSource: nginx\nVersion: 1.2.1-2.2\n\n";
/// Debian 11 with chromium: hit by CVE-2024-3847 (no fix for Debian:11), not by DSA-3029-1.
const BULLSEYE_STATUS: &str = "Package: chromium\nStatus: install ok installed\nArchitecture: amd64\nVersion: 120.0.6099.224-1~deb11u1\n\n";

fn base(os_version: &str, status: &str, note: &str) -> Vec<Layer> {
    vec![
        debian_layer(os_version, status),
        Layer::builder()
            .file("usr/share/doc/base", note)
            .build(Compression::Gzip)
            .unwrap(),
    ]
}

/// An image on `base` with one layer of its own.
fn image_on(base: &[Layer], name: &str) -> Image {
    fixtures::image_on(base)
        .layer(
            Layer::builder()
                .file(&format!("srv/{name}"), format!("app {name}"))
                .build(Compression::Gzip)
                .unwrap(),
        )
        .build()
        .unwrap()
}

async fn fleet(cluster: &Cluster) -> FleetServiceClient<Channel> {
    FleetServiceClient::new(fixtures::coordinator_channel(cluster, CONNECT_LIMIT).await)
}

/// Waits for the scan's `Done` event.
async fn wait_done(cluster: &Cluster, scan_id: &str) -> v1::Done {
    fixtures::wait_done(cluster, scan_id, SCAN_LIMIT, CONNECT_LIMIT).await
}

async fn affected(
    c: &mut FleetServiceClient<Channel>,
    query: Query,
) -> Result<Vec<v1::AffectedImage>, tonic::Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let resp = c
            .list_affected(v1::ListAffectedRequest {
                query: Some(query.clone()),
                page_size: 2,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        out.extend(resp.images);
        if resp.next_page_token.is_empty() {
            return Ok(out);
        }
        token = resp.next_page_token;
    }
    panic!("ListAffected never ended");
}

fn vuln(id: &str) -> Query {
    Query::VulnerabilityId(id.to_owned())
}

fn package(ecosystem: &str, name: &str, range: &str) -> Query {
    Query::Package(v1::PackageQuery {
        ecosystem: ecosystem.to_owned(),
        name: name.to_owned(),
        version_range: range.to_owned(),
    })
}

/// Every page of ListImages with this filter, page size 2; also returns the page count.
async fn all_images(
    c: &mut FleetServiceClient<Channel>,
    repository: &str,
    status: v1::ScanStatus,
    min_severity: v1::Severity,
) -> (Vec<v1::ImageSummary>, usize) {
    let mut out = Vec::new();
    let mut token = String::new();
    for pages in 1..100 {
        let resp = c
            .list_images(v1::ListImagesRequest {
                repository: repository.to_owned(),
                status: status.into(),
                min_severity: min_severity.into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.images.len() <= 2);
        out.extend(resp.images);
        if resp.next_page_token.is_empty() {
            return (out, pages);
        }
        token = resp.next_page_token;
    }
    panic!("ListImages never ended");
}

fn refs<'a>(images: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    images.into_iter().cloned().collect()
}

/// Checks ListAffected for the wheezy base's DSA on `fleet`: exactly
/// `expected`, each with nginx from the base's first layer.
fn check_dsa(found: &[v1::AffectedImage], expected: &BTreeSet<String>, base_layer: &str, what: &str) {
    let got: BTreeSet<String> = found.iter().map(|i| i.reference.clone()).collect();
    assert_eq!(&got, expected, "{what}");
    assert_eq!(found.len(), expected.len(), "{what}: each image once");
    for image in found {
        assert_eq!(image.packages.len(), 1, "{what}: {image:?}");
        let p = &image.packages[0];
        let pkg = p.package.as_ref().unwrap();
        assert_eq!(
            (pkg.name.as_str(), pkg.version.as_str()),
            ("nginx", "1.2.1-2.2"),
            "{what}"
        );
        assert_eq!(
            pkg.layer_digest, base_layer,
            "{what}: the layer that brought nginx"
        );
        assert_eq!(p.vulnerability_ids, ["DSA-3029-1"], "{what}");
        assert_eq!(p.fixed_versions, ["1.2.1-2.2+wheezy3"], "{what}");
        assert!(image.digest.starts_with("sha256:"), "{what}");
        assert!(image.tags.contains(&image.reference), "{what}: {:?}", image.tags);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_service_answers_for_the_whole_fleet() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let host = registry.host();

    let wheezy = base("7", WHEEZY_STATUS, "wheezy base");
    let bullseye = base("11", BULLSEYE_STATUS, "bullseye base");
    let web = image_on(&wheezy, "web");
    web.push(&registry, "fleet/web", "v1").await.unwrap();
    web.push(&registry, "fleet/web", "latest").await.unwrap(); // same digest: a second tag
    image_on(&wheezy, "web2")
        .push(&registry, "fleet/web", "v2")
        .await
        .unwrap();
    image_on(&wheezy, "api")
        .push(&registry, "fleet/api", "v1")
        .await
        .unwrap();
    image_on(&bullseye, "svc1")
        .push(&registry, "other/svc", "v1")
        .await
        .unwrap();
    image_on(&bullseye, "svc2")
        .push(&registry, "other/svc", "v2")
        .await
        .unwrap();
    for tag in ["v1.0", "v1.1", "v2.0", "dev"] {
        image_on(&bullseye, &format!("repo-{tag}"))
            .push(&registry, "watched/app", tag)
            .await
            .unwrap();
    }

    let mut cluster = Cluster::builder(STRATA)
        .workers(2)
        .db(&db)
        .insecure_registry(&host)
        // Unreachable, but listed: what a caller meets is the registry being away.
        .insecure_registry("127.0.0.1:1")
        .start()
        .unwrap();
    let mut c = fleet(&cluster).await;

    // ---- register: one bad reference does not stop the others ----
    let on_wheezy: BTreeSet<String> = ["fleet/web:v1", "fleet/web:latest", "fleet/web:v2", "fleet/api:v1"]
        .iter()
        .map(|r| format!("{host}/{r}"))
        .collect();
    let on_bullseye: BTreeSet<String> = ["other/svc:v1", "other/svc:v2"]
        .iter()
        .map(|r| format!("{host}/{r}"))
        .collect();
    let mut references: Vec<String> = on_wheezy.iter().chain(&on_bullseye).cloned().collect();
    references.insert(2, "bad reference".to_owned());
    references.push(format!("{host}/fleet/missing:v1"));
    let registered = c
        .register_images(v1::RegisterImagesRequest {
            references: references.clone(),
            platform: String::new(),
            insecure_registry: true,
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(
        registered.iter().map(|i| &i.reference).collect::<Vec<_>>(),
        references.iter().collect::<Vec<_>>()
    );
    let mut scan_ids = BTreeSet::new();
    for image in &registered {
        let bad = image.reference == "bad reference" || image.reference.contains("missing");
        assert_eq!(image.error.is_empty(), !bad, "{image:?}");
        assert_eq!(image.scan_id.is_empty(), bad, "{image:?}");
        if !bad {
            scan_ids.insert(image.scan_id.clone());
        }
    }
    assert_eq!(scan_ids.len(), 5, "web:v1 and web:latest share a scan");
    for id in &scan_ids {
        let done = wait_done(&cluster, id).await;
        assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
    }
    let all: BTreeSet<String> = on_wheezy.union(&on_bullseye).cloned().collect();
    let base_layer = wheezy[0].digest.clone();

    // ---- ListAffected: by id, by alias, by package; unknown id ----
    let check_affected = |c: FleetServiceClient<Channel>| {
        let on_wheezy = on_wheezy.clone();
        let on_bullseye = on_bullseye.clone();
        let base_layer = base_layer.clone();
        let web_v1 = format!("{host}/fleet/web:v1");
        let web_latest = format!("{host}/fleet/web:latest");
        async move {
            let mut c = c;
            let by_id = affected(&mut c, vuln("DSA-3029-1")).await.unwrap();
            check_dsa(&by_id, &on_wheezy, &base_layer, "by id");
            let v1_image = by_id.iter().find(|i| i.reference == web_v1).unwrap();
            assert_eq!(
                refs(&v1_image.tags),
                refs([&web_latest, &web_v1]),
                "tags: same digest"
            );
            check_dsa(
                &affected(&mut c, vuln("cve-2014-3616")).await.unwrap(),
                &on_wheezy,
                &base_layer,
                "by alias",
            );
            check_dsa(
                &affected(&mut c, vuln("dsa-3029-1")).await.unwrap(),
                &on_wheezy,
                &base_layer,
                "lower case",
            );
            let chromium = affected(&mut c, vuln("CVE-2024-3847")).await.unwrap();
            assert_eq!(
                chromium
                    .iter()
                    .map(|i| i.reference.clone())
                    .collect::<BTreeSet<_>>(),
                on_bullseye
            );
            assert!(affected(&mut c, vuln("CVE-1999-0001")).await.unwrap().is_empty());

            let in_range = affected(&mut c, package("Debian", "nginx", ">=1.2.0, <1.2.1-2.2+wheezy3"))
                .await
                .unwrap();
            check_dsa(&in_range, &on_wheezy, &base_layer, "by package and range");
            let any_eco = affected(&mut c, package("", "nginx", "")).await.unwrap();
            assert_eq!(any_eco.len(), on_wheezy.len());
            assert!(
                affected(&mut c, package("Debian", "nginx", ">=1.2.1-2.2+wheezy3"))
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(
                affected(&mut c, package("Alpine", "nginx", ""))
                    .await
                    .unwrap()
                    .is_empty()
            );
            let chromium_pkg = affected(&mut c, package("Debian", "chromium", "<121"))
                .await
                .unwrap();
            assert_eq!(chromium_pkg.len(), on_bullseye.len());
            assert!(
                chromium_pkg[0].packages[0]
                    .vulnerability_ids
                    .contains(&"CVE-2024-3847".to_owned()),
                "{chromium_pkg:?}"
            );
        }
    };
    check_affected(c.clone()).await;

    // ---- ListImages: filters and paging ----
    let (images, pages) =
        all_images(&mut c, "", v1::ScanStatus::Unspecified, v1::Severity::Unspecified).await;
    let listed: Vec<String> = images.iter().map(|i| i.reference.clone()).collect();
    assert_eq!(listed.len(), all.len(), "each image once: {listed:?}");
    assert_eq!(refs(&listed), all);
    assert!(pages >= 3, "{pages} pages of 2 for {} images", all.len());
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "stable order, by reference");
    for i in &images {
        assert_eq!(i.status, v1::ScanStatus::Complete as i32, "{i:?}");
        assert!(scan_ids.contains(&i.scan_id));
        assert!(i.last_scanned_unix_ms > 0);
        assert!(
            i.counts.unwrap().critical
                + i.counts.unwrap().high
                + i.counts.unwrap().medium
                + i.counts.unwrap().low
                + i.counts.unwrap().unknown
                >= 1,
            "{i:?}"
        );
    }
    let (web_images, _) = all_images(
        &mut c,
        &format!("{host}/fleet/web"),
        v1::ScanStatus::Unspecified,
        v1::Severity::Unspecified,
    )
    .await;
    assert_eq!(
        refs(web_images.iter().map(|i| &i.reference)),
        refs(on_wheezy.iter().filter(|r| r.contains("/fleet/web:")))
    );
    let (complete, _) = all_images(&mut c, "", v1::ScanStatus::Complete, v1::Severity::Unspecified).await;
    assert_eq!(complete.len(), all.len());
    let (running, _) = all_images(&mut c, "", v1::ScanStatus::Running, v1::Severity::Unspecified).await;
    assert!(running.is_empty());
    let (any_finding, _) = all_images(&mut c, "", v1::ScanStatus::Unspecified, v1::Severity::Unknown).await;
    assert_eq!(any_finding.len(), all.len());
    for (severity, count_of) in [
        (
            v1::Severity::Critical,
            (|c: &v1::SeverityCounts| c.critical) as fn(&v1::SeverityCounts) -> u32,
        ),
        (v1::Severity::High, |c| c.critical + c.high),
        (v1::Severity::Low, |c| c.critical + c.high + c.medium + c.low),
    ] {
        let (hit, _) = all_images(&mut c, "", v1::ScanStatus::Unspecified, severity).await;
        let expected: BTreeSet<String> = images
            .iter()
            .filter(|i| count_of(i.counts.as_ref().unwrap()) > 0)
            .map(|i| i.reference.clone())
            .collect();
        assert_eq!(refs(hit.iter().map(|i| &i.reference)), expected, "{severity:?}");
    }

    // ---- Summary ----
    let summary = c
        .summary(v1::SummaryRequest { top_n: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        summary.images_by_status,
        [v1::StatusCount {
            status: v1::ScanStatus::Complete.into(),
            images: all.len() as u32
        }]
    );
    // Findings: over the latest scans, a scan shared by two tags counted once.
    let mut per_scan = BTreeMap::new();
    for i in &images {
        per_scan.insert(i.scan_id.clone(), i.counts.unwrap());
    }
    let sum = per_scan.values().fold(v1::SeverityCounts::default(), |mut a, c| {
        a.critical += c.critical;
        a.high += c.high;
        a.medium += c.medium;
        a.low += c.low;
        a.unknown += c.unknown;
        a
    });
    assert_eq!(summary.findings, Some(sum));
    let top: BTreeMap<&str, &v1::TopVulnerability> = summary.top.iter().map(|t| (t.id.as_str(), t)).collect();
    let dsa = top.get("DSA-3029-1").unwrap_or_else(|| panic!("{summary:?}"));
    assert_eq!(dsa.images_affected, on_wheezy.len() as u32);
    assert!(dsa.aliases.contains(&"CVE-2014-3616".to_owned()), "{dsa:?}");
    assert_eq!(
        top.get("CVE-2024-3847").unwrap().images_affected,
        on_bullseye.len() as u32
    );
    assert_eq!(summary.top[0].id, "DSA-3029-1", "most images first: {summary:?}");
    let one = c
        .summary(v1::SummaryRequest { top_n: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.top.len(), 1);

    // ---- repositories ----
    let watched = format!("{host}/watched/app");
    let tags = c
        .register_repository(v1::RegisterRepositoryRequest {
            repository: watched.clone(),
            tag_pattern: "v1.*".to_owned(),
            platform: String::new(),
            insecure_registry: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tags.tags_registered, 2);
    let (repo_images, _) = all_images(
        &mut c,
        &watched,
        v1::ScanStatus::Unspecified,
        v1::Severity::Unspecified,
    )
    .await;
    assert_eq!(
        refs(repo_images.iter().map(|i| &i.reference)),
        refs(&[format!("{watched}:v1.0"), format!("{watched}:v1.1")])
    );
    let unreachable = c
        .register_repository(v1::RegisterRepositoryRequest {
            repository: "127.0.0.1:1/nothing/here".to_owned(),
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unreachable.code(), tonic::Code::Unavailable, "{unreachable:?}");
    let removed = c
        .unregister_repository(v1::UnregisterRepositoryRequest {
            repository: watched.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed, 2);
    let (repo_images, _) = all_images(
        &mut c,
        &watched,
        v1::ScanStatus::Unspecified,
        v1::Severity::Unspecified,
    )
    .await;
    assert!(repo_images.is_empty(), "{repo_images:?}");

    // ---- bad input ----
    let too_many = c
        .register_images(v1::RegisterImagesRequest {
            references: (0..1001).map(|i| format!("{host}/x:{i}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument, "{too_many:?}");
    let too_many = c
        .unregister_images(v1::UnregisterImagesRequest {
            references: (0..1001).map(|i| format!("{host}/x:{i}")).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument, "{too_many:?}");
    let bad_platform = c
        .register_images(v1::RegisterImagesRequest {
            references: vec![format!("{host}/fleet/web:v1")],
            platform: "not a platform".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_platform.code(),
        tonic::Code::InvalidArgument,
        "{bad_platform:?}"
    );
    let bad_pattern = c
        .register_repository(v1::RegisterRepositoryRequest {
            repository: watched.clone(),
            tag_pattern: "v[1".to_owned(),
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_pattern.code(),
        tonic::Code::InvalidArgument,
        "{bad_pattern:?}"
    );
    for token in ["not-a-token", "r00zz", &"r".repeat(2000)] {
        let bad = c
            .list_images(v1::ListImagesRequest {
                page_token: token.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{token}: {bad:?}");
    }
    for (eco, range) in [
        ("Debian", ">=1.0, <"),
        ("Debian", "~>1.0"),
        ("", "1.0 2.0"),
        ("Nope", ""),
    ] {
        let bad = affected(&mut c, package(eco, "nginx", range)).await.unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{eco} {range}: {bad:?}");
    }
    let bad = c
        .list_affected(v1::ListAffectedRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // ---- unregister an image; the index survives a coordinator restart ----
    let svc_v2 = format!("{host}/other/svc:v2");
    let removed = c
        .unregister_images(v1::UnregisterImagesRequest {
            references: vec![svc_v2.clone(), format!("{host}/never/registered:v1")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed, 1);
    cluster.restart_coordinator().unwrap();
    let c = fleet(&cluster).await;
    check_affected_after_restart(c.clone(), &on_wheezy, &base_layer, &svc_v2).await;
    // Everything else is as before the restart.
    let on_bullseye_left: BTreeSet<String> = on_bullseye.iter().filter(|r| **r != svc_v2).cloned().collect();
    let mut c2 = c.clone();
    let chromium = affected(&mut c2, vuln("CVE-2024-3847")).await.unwrap();
    assert_eq!(
        chromium
            .iter()
            .map(|i| i.reference.clone())
            .collect::<BTreeSet<_>>(),
        on_bullseye_left
    );
}

async fn check_affected_after_restart(
    mut c: FleetServiceClient<Channel>,
    on_wheezy: &BTreeSet<String>,
    base_layer: &str,
    gone: &str,
) {
    let by_id = affected(&mut c, vuln("DSA-3029-1")).await.unwrap();
    check_dsa(&by_id, on_wheezy, base_layer, "after restart");
    let (images, _) = all_images(&mut c, "", v1::ScanStatus::Unspecified, v1::Severity::Unspecified).await;
    assert!(images.iter().all(|i| i.reference != gone));
    assert_eq!(images.len(), on_wheezy.len() + 1);
}

/// The watched fleet stays current: a tag moved to a new image is rescanned
/// by the refresh loop without anyone submitting it, and a tag pushed to a
/// watched repository is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_refresh_loop_follows_moved_tags_and_new_tags() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let registry = Registry::start().unwrap();
    let wheezy = base("7", WHEEZY_STATUS, "wheezy");
    let first = image_on(&wheezy, "first");
    first.push(&registry, "moving/app", "1").await.unwrap();
    image_on(&wheezy, "watched-a")
        .push(&registry, "watched/app", "a")
        .await
        .unwrap();
    let cluster = Cluster::builder(STRATA)
        .workers(1)
        .db(&db)
        .insecure_registry(registry.host())
        .coordinator_args(["--refresh-interval-secs", "1"])
        .start()
        .unwrap();
    let mut c = fleet(&cluster).await;
    let moving = format!("{}/moving/app:1", registry.host());
    let registered = c
        .register_images(v1::RegisterImagesRequest {
            references: vec![moving.clone()],
            insecure_registry: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(registered.images[0].error.is_empty(), "{registered:?}");
    wait_done(&cluster, &registered.images[0].scan_id).await;
    let repository = format!("{}/watched/app", registry.host());
    c.register_repository(v1::RegisterRepositoryRequest {
        repository: repository.clone(),
        insecure_registry: true,
        ..Default::default()
    })
    .await
    .unwrap();

    // Move the tag, push a new tag to the watched repository; submit nothing.
    let second = image_on(&wheezy, "second");
    second.push(&registry, "moving/app", "1").await.unwrap();
    image_on(&wheezy, "watched-b")
        .push(&registry, "watched/app", "b")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let images = c
            .list_images(v1::ListImagesRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        let digest_of = |r: &str| images.iter().find(|i| i.reference == r).map(|i| i.digest.clone());
        let moved = digest_of(&moving).is_some_and(|d| d == second.manifest_digest);
        let new_tag = digest_of(&format!("{repository}:b")).is_some();
        if moved && new_tag {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh did not follow: {images:?}\n{}",
            cluster.coordinator_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
