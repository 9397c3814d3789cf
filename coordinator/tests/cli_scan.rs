//! `strata db` and `strata scan` as CI runs them: the real binary, a real
//! registry, and the real OSV advisories in `shared/testdata/osv`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_harness::image::{Compression, Image, Layer};
use strata_harness::registry::Registry;

const OSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/osv");
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo");

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent/strata-test")
        .env_remove("STRATA_DB")
        .output()
        .expect("run strata")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Imports the from-testdata records and the crates.io export.
fn build_db(dir: &Path) -> PathBuf {
    let db = dir.join("vulndb");
    ok(&strata(&[
        "db",
        "import",
        "--db",
        db.to_str().unwrap(),
        &format!("{OSV}/from-testdata"),
        &format!("{OSV}/crates-io/all.zip"),
        &format!("{OSV}/PyPI/all.zip"),
    ]));
    db
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json output")
}

fn ids(report: &serde_json::Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["vulnerability_id"].as_str().unwrap_or_default().to_owned(),
                f["package"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn alpine_layer(mariadb: &str) -> Layer {
    let installed = format!(
        "P:musl\nV:1.1.24-r10\nA:x86_64\no:musl\n\nP:mariadb-client\nV:{mariadb}\nA:x86_64\no:mariadb\n\nP:libexif\nV:0.6.19-r0\nA:x86_64\no:libexif\n"
    );
    Layer::builder()
        .file(
            "etc/os-release",
            "ID=alpine\nVERSION_ID=3.12.12\nPRETTY_NAME=\"Alpine Linux v3.12\"\n",
        )
        .file("lib/apk/db/installed", installed)
        .build(Compression::Gzip)
        .unwrap()
}

#[test]
fn db_import_and_status_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let status = json(&strata(&["db", "status", "--db", db.to_str().unwrap(), "--json"]));
    let version = status["version"].as_str().unwrap().to_owned();
    assert!(status["records_per_ecosystem"]["crates.io"].as_u64().unwrap() > 100);
    assert_eq!(status["sources"].as_array().unwrap().len(), 3);
    // Same data again: same version id.
    let again = build_db(&dir.path().join("again"));
    let status2 = json(&strata(&[
        "db",
        "status",
        "--db",
        again.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(status2["version"], version.as_str());

    let missing = strata(&["db", "status", "--db", "/nonexistent/strata/db"]);
    assert_eq!(missing.status.code(), Some(2));
    let bad_source = strata(&[
        "db",
        "import",
        "--db",
        dir.path().join("x").to_str().unwrap(),
        "ftp://nope/x",
    ]);
    assert_eq!(bad_source.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_image_findings_carry_layer_and_gate_ci() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let db = db.to_str().unwrap();

    let registry = Registry::start().unwrap();
    let base = alpine_layer("10.4.24-r0");
    let base_digest = base.digest.clone();
    let image = Image::builder().layer(base).build().unwrap();
    image.push(&registry, "team/db", "1").await.unwrap();
    let host = registry.host();
    let reference = format!("{host}/team/db:1");

    let report = json(&strata(&[
        "scan",
        "--db",
        db,
        "--insecure-registry",
        &host,
        &reference,
        "-f",
        "json",
    ]));
    let found = ids(&report);
    // Alpine 3.12 advisories: mariadb (by origin) and libexif.
    assert!(
        found.contains(&("CVE-2022-27449".into(), "mariadb-client".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("CVE-2012-2812".into(), "libexif".into())),
        "{found:?}"
    );
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["vulnerability_id"] == "CVE-2022-27449")
        .unwrap();
    assert_eq!(finding["package"]["layer"], base_digest.as_str());
    assert_eq!(finding["fixed_versions"][0], "10.4.25-r0");
    assert!(report["vulndb_version"].as_str().unwrap().starts_with("osv-"));

    // Gating: exit 1 at or above the threshold, 0 below it.
    let gated = strata(&[
        "scan",
        "--db",
        db,
        "--insecure-registry",
        &host,
        &reference,
        "--fail-on",
        "unknown",
    ]);
    assert_eq!(
        gated.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&gated.stderr)
    );
    let clean = strata(&[
        "scan",
        "--db",
        db,
        "--insecure-registry",
        &host,
        &reference,
        "--fail-on",
        "critical",
    ]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    // SARIF for code scanning.
    let sarif = json(&strata(&[
        "scan",
        "--db",
        db,
        "--insecure-registry",
        &host,
        &reference,
        "-f",
        "sarif",
    ]));
    assert_eq!(sarif["version"], "2.1.0");
    assert!(!sarif["runs"][0]["results"].as_array().unwrap().is_empty());

    // A fixed mariadb: that finding is gone, libexif's stays.
    let fixed = Image::builder()
        .layer(alpine_layer("10.4.25-r0"))
        .build()
        .unwrap();
    fixed.push(&registry, "team/db", "2").await.unwrap();
    let report = json(&strata(&[
        "scan",
        "--db",
        db,
        "--insecure-registry",
        &host,
        &format!("{host}/team/db:2"),
        "-f",
        "json",
    ]));
    let found = ids(&report);
    assert!(!found.iter().any(|(id, _)| id == "CVE-2022-27449"), "{found:?}");
    assert!(found.iter().any(|(id, _)| id == "CVE-2012-2812"), "{found:?}");
}

#[test]
fn os_release_decides_which_distro_advisories_apply() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    // DSA-3029-1 is for Debian 7's nginx, fixed in 1.2.1-2.2+wheezy3.
    let status =
        "Package: nginx\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.2.1-2.2+wheezy2\n";
    for (version_id, expect) in [("7", true), ("8", false)] {
        let root = dir.path().join(format!("debian{version_id}"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::write(
            root.join("etc/os-release"),
            format!("ID=debian\nVERSION_ID=\"{version_id}\"\n"),
        )
        .unwrap();
        std::fs::write(root.join("var/lib/dpkg/status"), status).unwrap();
        let report = json(&strata(&[
            "scan",
            "--db",
            db.to_str().unwrap(),
            &format!("dir:{}", root.display()),
            "-f",
            "json",
        ]));
        let hit = ids(&report).iter().any(|(id, _)| id == "DSA-3029-1");
        assert_eq!(hit, expect, "debian {version_id}: {report}");
    }
}

#[test]
fn sbom_input_and_suppressions() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let db = db.to_str().unwrap();
    let sbom = format!("{DEMO}/app.cdx.json");
    let report = json(&strata(&["scan", "--db", db, "--sbom", &sbom, "-f", "json"]));
    let found = ids(&report);
    assert!(
        found.contains(&("PYSEC-2021-63".into(), "cryptography".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("RUSTSEC-2019-0012".into(), "smallvec".into())),
        "{found:?}"
    );
    // One vulnerability, one package: one finding, listing its aliases.
    let pysec: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["vulnerability_id"] == "PYSEC-2021-63")
        .collect();
    assert_eq!(pysec.len(), 1);
    assert!(
        pysec[0]["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "CVE-2020-36242")
    );

    // Suppress it by an alias: removed and counted, not hidden.
    let ignore = dir.path().join("ignore.toml");
    std::fs::write(
        &ignore,
        "[[ignore]]\nid = \"CVE-2020-36242\"\nreason = \"not reachable in our use\"\n",
    )
    .unwrap();
    let suppressed = json(&strata(&[
        "scan",
        "--db",
        db,
        "--sbom",
        &sbom,
        "-f",
        "json",
        "--ignore-file",
        ignore.to_str().unwrap(),
    ]));
    assert!(!ids(&suppressed).iter().any(|(id, _)| id == "PYSEC-2021-63"));
    assert_eq!(suppressed["suppressed"], 1);

    // Bad inputs: one line, exit 2.
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{\"not\": \"an sbom\"}").unwrap();
    for args in [
        vec!["scan", "--db", db, "--sbom", garbage.to_str().unwrap()],
        vec!["scan", "--db", "/nonexistent/db", "--sbom", &sbom],
        vec![
            "scan",
            "--db",
            db,
            "--sbom",
            &sbom,
            "--ignore-file",
            "/nonexistent/ignore.toml",
        ],
    ] {
        let out = strata(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end().lines().count(),
            1,
            "{args:?}"
        );
    }
}

/// `strata` with the moto server as its S3 endpoint, through the usual `AWS_*` variables.
fn strata_s3(s3: &strata_harness::s3::S3Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("AWS_ENDPOINT_URL", s3.url())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run strata")
}

/// `s3://` through object_store, against a real S3-compatible server (moto):
/// the same export gives the same database as reading it from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_import_from_s3_matches_the_local_import() {
    let s3 = strata_harness::s3::S3Server::start().unwrap();
    s3.create_bucket("advisories").unwrap();
    let zip = std::fs::read(format!("{OSV}/crates-io/all.zip")).unwrap();
    let put = reqwest::Client::new()
        .put(format!("{}/advisories/osv/crates.io/all.zip", s3.url()))
        .body(zip)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());

    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let remote = dir.path().join("remote");
    ok(&strata(&[
        "db",
        "import",
        "--db",
        local.to_str().unwrap(),
        &format!("{OSV}/crates-io/all.zip"),
    ]));
    let out = strata_s3(
        &s3,
        &[
            "db",
            "import",
            "--db",
            remote.to_str().unwrap(),
            "s3://advisories/osv/crates.io/all.zip",
        ],
    );
    ok(&out);
    let version = |db: &Path| {
        json(&strata(&["db", "status", "--db", db.to_str().unwrap(), "--json"]))["version"].clone()
    };
    assert_eq!(version(&local), version(&remote));

    // A missing object is a one-line error, exit 2.
    let missing = strata_s3(
        &s3,
        &[
            "db",
            "import",
            "--db",
            remote.to_str().unwrap(),
            "s3://advisories/nope.zip",
        ],
    );
    assert_eq!(missing.status.code(), Some(2));
}

/// OpenVEX through the binary: `not_affected` and `fixed` remove findings
/// (counted), `under_investigation` does not.
#[test]
fn openvex_statements_remove_findings_by_product() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let db = db.to_str().unwrap();
    let sbom = format!("{DEMO}/app.cdx.json");
    let before = json(&strata(&["scan", "--db", db, "--sbom", &sbom, "-f", "json"]));
    let count = |r: &serde_json::Value, id: &str| ids(r).iter().filter(|(i, _)| i == id).count();
    assert_eq!(count(&before, "RUSTSEC-2019-0012"), 1);
    assert_eq!(count(&before, "PYSEC-2021-63"), 1);
    assert_eq!(count(&before, "GHSA-m5pq-gvj9-9vr8"), 1);

    let vex = dir.path().join("app.openvex.json");
    std::fs::write(
        &vex,
        r#"{
  "@context": "https://openvex.dev/ns/v0.2.0",
  "@id": "https://example.invalid/vex/demo-1",
  "author": "demo",
  "timestamp": "2026-01-01T00:00:00Z",
  "version": 1,
  "statements": [
    { "vulnerability": { "name": "CVE-2019-15554" }, "products": [{ "@id": "pkg:cargo/smallvec@0.6.9" }],
      "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path" },
    { "vulnerability": { "name": "PYSEC-2021-63" }, "products": [{ "@id": "pkg:pypi/cryptography" }],
      "status": "fixed" },
    { "vulnerability": { "name": "GHSA-m5pq-gvj9-9vr8" }, "products": [{ "@id": "pkg:cargo/regex@1.5.4" }],
      "status": "under_investigation" }
  ]
}"#,
    )
    .unwrap();
    let after = json(&strata(&[
        "scan",
        "--db",
        db,
        "--sbom",
        &sbom,
        "-f",
        "json",
        "--vex",
        vex.to_str().unwrap(),
    ]));
    assert_eq!(
        count(&after, "RUSTSEC-2019-0012"),
        0,
        "matched by its alias CVE-2019-15554"
    );
    assert_eq!(count(&after, "PYSEC-2021-63"), 0, "fixed, purl without a version");
    assert_eq!(
        count(&after, "GHSA-m5pq-gvj9-9vr8"),
        1,
        "under investigation stays"
    );
    assert_eq!(after["suppressed"], 2);
    assert_eq!(ids(&after).len() + 2, ids(&before).len());
}

/// `--sbom` of something with no size to check first (a device, a pipe)
/// stops reading at the cap: `/dev/zero` used to grow to 2 GB first.
#[test]
fn an_endless_sbom_input_stops_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let out = strata(&["scan", "--db", db.to_str().unwrap(), "--sbom", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(stderr.contains("byte limit"), "{stderr}");
}

/// Outside text in the final error line (here a path naming no image)
/// cannot drive the terminal: its control characters come out escaped.
#[test]
fn the_error_line_escapes_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let hostile = dir.path().join("no-such\u{1b}[2J\u{1b}]0;owned\u{7}layout");
    let reference = format!("oci-dir:{}", hostile.display());
    let out = strata(&["scan", "--db", db.to_str().unwrap(), &reference]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
        "{stderr:?}"
    );
    assert!(stderr.contains("no-such\\u{1b}[2J"), "{stderr:?}");
}

/// `make demo` runs from a clone alone: the OSV records shipped in
/// `deploy/demo/osv` give the demo SBOM the same findings as the whole test
/// data set (Go included) does.
#[test]
fn the_demo_records_in_the_repository_give_the_findings_of_the_whole_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    ok(&strata(&[
        "db",
        "import",
        "--db",
        whole.to_str().unwrap(),
        &format!("{OSV}/from-testdata"),
        &format!("{OSV}/crates-io/all.zip"),
        &format!("{OSV}/PyPI/all.zip"),
        &format!("{OSV}/Go/all.zip"),
    ]));
    let shipped = dir.path().join("shipped");
    ok(&strata(&[
        "db",
        "import",
        "--db",
        shipped.to_str().unwrap(),
        &format!("{DEMO}/osv"),
    ]));
    let sbom = format!("{DEMO}/app.cdx.json");
    let findings = |db: &Path| {
        let mut found = ids(&json(&strata(&[
            "scan",
            "--db",
            db.to_str().unwrap(),
            "--sbom",
            &sbom,
            "-f",
            "json",
        ])));
        found.sort();
        found
    };
    let (from_whole, from_shipped) = (findings(&whole), findings(&shipped));
    assert!(from_whole.len() >= 20, "{from_whole:?}");
    assert_eq!(from_shipped, from_whole);
    // Every shipped record names its source and licence.
    let sources = std::fs::read_to_string(format!("{DEMO}/osv/SOURCES.md")).unwrap();
    for entry in std::fs::read_dir(format!("{DEMO}/osv")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert!(
                sources.contains(&format!("`{name}`")),
                "{name} has no source line"
            );
        }
    }
}

/// `db import` follows symbolic links (a feed kept as a link), ends on a
/// link loop, and never replaces a database with one that lost most of its
/// advisories (or read nothing) without `--force`.
#[test]
fn db_import_follows_links_and_guards_a_good_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vulndb");
    let db = db.to_str().unwrap();
    let status = |db: &str| json(&strata(&["db", "status", "--db", db, "-f", "json"]));

    // A source whose records sit behind a linked directory, with a loop beside.
    let linked = dir.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(format!("{OSV}/from-testdata"), linked.join("feed")).unwrap();
    std::os::unix::fs::symlink(&linked, linked.join("loop")).unwrap();
    ok(&strata(&["db", "import", "--db", db, linked.to_str().unwrap()]));
    let good = status(db);
    assert!(good["advisories"].as_u64().unwrap() >= 30, "{good}");

    // An empty source: refused, the database untouched.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = strata(&["db", "import", "--db", db, empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hold no OSV record"),
        "{out:?}"
    );
    assert_eq!(status(db)["version"], good["version"]);

    // Fewer than half the advisories: refused; with --force, replaced.
    let few = dir.path().join("few");
    std::fs::create_dir_all(&few).unwrap();
    std::fs::copy(
        format!("{OSV}/from-testdata/CVE-2012-2812.json"),
        few.join("one.json"),
    )
    .unwrap();
    let out = strata(&["db", "import", "--db", db, few.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("more than half would be lost") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(status(db)["version"], good["version"]);
    ok(&strata(&[
        "db",
        "import",
        "--db",
        db,
        few.to_str().unwrap(),
        "--force",
    ]));
    assert_eq!(status(db)["advisories"], 1);
}
