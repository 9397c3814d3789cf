//! The synthetic registry against the OCI Distribution API's behaviour, a
//! real client (`skopeo`, Debian's, installed by `.ci/install-deps`) and
//! `strata sbom`: what it serves is what a registry holding the same image
//! would serve.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use sha2::Digest as _;
use strata_loadtest::fleetgen::{Fleet, FleetConfig, RealData, data};
use strata_loadtest::synthreg::{RegistryOptions, SyntheticRegistry};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn small_fleet(images: usize) -> Fleet {
    let data = Arc::new(RealData::load(&data::default_testdata()).unwrap());
    let config = FleetConfig {
        images,
        seed: 3,
        base_bytes: 64 << 10,
        app_bytes: 4 << 10,
        ..FleetConfig::default()
    };
    Fleet::generate(config, data)
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().no_proxy().build().unwrap()
}

fn url(r: &SyntheticRegistry, path: &str) -> String {
    format!("http://{}{path}", r.host())
}

/// Every tag of `repo`, following `Link` headers page by page.
fn all_tags(r: &SyntheticRegistry, repo: &str, n: usize) -> (Vec<String>, usize) {
    let mut next = Some(format!("/v2/{repo}/tags/list?n={n}"));
    let (mut tags, mut pages) = (Vec::new(), 0);
    while let Some(path) = next.take() {
        let resp = http().get(url(r, &path)).send().unwrap();
        assert_eq!(resp.status(), 200);
        next = resp.headers().get("link").map(|l| {
            l.to_str()
                .unwrap()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_owned()
        });
        let body: serde_json::Value = resp.json().unwrap();
        assert_eq!(body["name"], repo);
        tags.extend(
            body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned()),
        );
        pages += 1;
    }
    (tags, pages)
}

#[test]
fn it_speaks_the_distribution_api() {
    let fleet = small_fleet(60);
    let repo = fleet
        .repositories
        .iter()
        .find(|r| r.tags.len() >= 4)
        .expect("a repository with several tags")
        .clone();
    let registry = SyntheticRegistry::start(fleet, RegistryOptions::default()).unwrap();
    let client = http();
    let base = client.get(url(&registry, "/v2/")).send().unwrap();
    assert_eq!(base.status(), 200);

    // Tags, paged two at a time, in order, `latest` included.
    let (tags, pages) = all_tags(&registry, &repo.name, 2);
    let mut expected: Vec<String> = repo.tags.iter().map(|(t, _)| t.clone()).collect();
    expected.sort();
    assert_eq!(tags, expected);
    assert_eq!(pages, expected.len().div_ceil(2));
    // The catalog pages the same way.
    let catalog: serde_json::Value = client
        .get(url(&registry, "/v2/_catalog?n=1000"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        catalog["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &repo.name)
    );

    // A manifest by tag and by digest; HEAD names the digest and length.
    let (tag, image) = repo.tags[0].clone();
    let by_tag = client
        .get(url(&registry, &format!("/v2/{}/manifests/{tag}", repo.name)))
        .send()
        .unwrap();
    assert_eq!(by_tag.status(), 200);
    let digest = by_tag.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(digest, registry.image_digest(image));
    let manifest = by_tag.bytes().unwrap();
    assert_eq!(
        digest,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&manifest)))
    );
    let head = client
        .head(url(&registry, &format!("/v2/{}/manifests/{digest}", repo.name)))
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        manifest.len().to_string().as_str()
    );

    // Every blob it names has the digest it names, however often asked.
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    digests.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    for d in &digests {
        for _ in 0..2 {
            let blob = client
                .get(url(&registry, &format!("/v2/{}/blobs/{d}", repo.name)))
                .send()
                .unwrap()
                .bytes()
                .unwrap();
            assert_eq!(d, &format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob))));
        }
        assert_eq!(registry.blob_gets(d), 2);
    }

    // The spec's errors.
    for (path, code) in [
        ("/v2/no/such/tags/list".to_owned(), "NAME_UNKNOWN"),
        (format!("/v2/{}/manifests/nope", repo.name), "MANIFEST_UNKNOWN"),
        (
            format!("/v2/{}/blobs/sha256:{}", repo.name, "0".repeat(64)),
            "BLOB_UNKNOWN",
        ),
    ] {
        let resp = client.get(url(&registry, &path)).send().unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: serde_json::Value = resp.json().unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
}

fn skopeo_copy(registry: &SyntheticRegistry, repo: &str, tag: &str, dir: &Path, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--src-tls-verify=false", "--retry-times", "3"]);
    if let Some(creds) = creds {
        cmd.args(["--src-creds", creds]);
    }
    let out = cmd
        .arg(format!("docker://{}", registry.reference(repo, tag)))
        .arg(format!("oci:{}:{tag}", dir.display()))
        .output()
        .expect("skopeo (installed by .ci/install-deps)");
    assert!(
        out.status.success(),
        "skopeo copy {repo}:{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `strata sbom -f json` packages of `image`, sorted (the document's other
/// fields name where the image came from).
fn sbom_packages(image: &str, insecure: &str) -> Vec<serde_json::Value> {
    let out = Command::new(STRATA)
        .args(["sbom", "-f", "json", "--insecure-registry", insecure, image])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata sbom {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut packages = doc["packages"].as_array().cloned().unwrap_or_default();
    packages.sort_by_key(|p| p.to_string());
    packages
}

#[test]
fn skopeo_copies_its_images_and_strata_sees_what_a_layout_holds() {
    let fleet = small_fleet(40);
    // A sample across bases: each repository's first tag, four of them.
    let sample: Vec<(String, String)> = fleet
        .repositories
        .iter()
        .step_by(3)
        .take(4)
        .map(|r| (r.name.clone(), r.tags[0].0.clone()))
        .collect();
    let registry = SyntheticRegistry::start(fleet, RegistryOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, (repo, tag)) in sample.iter().enumerate() {
        let layout = dir.path().join(format!("layout{i}"));
        skopeo_copy(&registry, repo, tag, &layout, None);
        let served = sbom_packages(&registry.reference(repo, tag), &registry.host());
        let copied = sbom_packages(&format!("oci-dir:{}:{tag}", layout.display()), &registry.host());
        assert!(!served.is_empty(), "{repo}:{tag} has packages");
        assert_eq!(served, copied, "{repo}:{tag}");
    }
}

#[test]
fn bearer_auth_and_429s_are_what_clients_expect() {
    let fleet = small_fleet(20);
    let (repo, tag) = (
        fleet.repositories[0].name.clone(),
        fleet.repositories[0].tags[0].0.clone(),
    );
    let options = RegistryOptions {
        bearer: Some(Some(("ci".into(), "s3cret".into()))),
        throttle_every: 2,
        ..RegistryOptions::default()
    };
    let registry = SyntheticRegistry::start(fleet, options).unwrap();
    let resp = http().get(url(&registry, "/v2/")).send().unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer realm=\"http://"), "{challenge}");
    let bad = http()
        .get(url(&registry, "/token?scope=repository:x:pull"))
        .basic_auth("ci", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 401);

    // skopeo logs in, waits out every other blob GET's 429, and copies.
    let dir = tempfile::tempdir().unwrap();
    skopeo_copy(&registry, &repo, &tag, dir.path(), Some("ci:s3cret"));
    assert!(registry.throttled() > 0);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn a_moved_tag_names_a_new_image_sharing_all_but_its_code_layer() {
    let fleet = small_fleet(30);
    let registry = SyntheticRegistry::start(fleet, RegistryOptions::default()).unwrap();
    let before = registry.fleet();
    let moved = registry.move_tags(3, 9);
    assert_eq!(moved.len(), 3);
    let after = registry.fleet();
    for (repo, tag) in &moved {
        let index_of = |f: &Fleet| {
            f.repositories
                .iter()
                .find(|r| &r.name == repo)
                .and_then(|r| r.tags.iter().find(|(t, _)| t == tag))
                .map(|(_, i)| *i)
                .unwrap()
        };
        let old = index_of(&before);
        let resp = http()
            .get(url(&registry, &format!("/v2/{repo}/manifests/{tag}")))
            .send()
            .unwrap();
        let digest = resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(digest, registry.image_digest(old), "{repo}:{tag} moved");
        let m: serde_json::Value = resp.json().unwrap();
        let layers: Vec<String> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect();
        let old_layers = registry.image_layers(old);
        let same = layers.iter().filter(|l| old_layers.contains(l)).count();
        assert_eq!(same, layers.len() - 1, "{repo}:{tag}: one new layer");
        let _ = &after;
    }
}
