//! `strata sbom` as a user runs it: the real binary against a real
//! registry, an OCI layout directory and a docker-archive tarball built by
//! the harness from the same image, with layers that replace and delete.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use strata_harness::image::{Compression, Image, Layer};
use strata_harness::registry::Registry;

const STATUS_V1: &str = "\
Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5

Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u2

Package: curl
Status: install ok installed
Architecture: amd64
Version: 7.88.1-10+deb12u4
";

/// Layer 2's status: libssl3 upgraded (source version given), curl removed.
const STATUS_V2: &str = "\
Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5

Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl (3.0.13-1~deb12u1)
Version: 3.0.13-1~deb12u1
";

const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        // No credentials from the machine's own ~/.docker.
        .env("DOCKER_CONFIG", "/nonexistent/strata-test")
        .output()
        .expect("run strata")
}

fn demo_image(compression: Compression) -> Image {
    let base = Layer::builder()
        .file("etc/os-release", OS_RELEASE)
        .file("var/lib/dpkg/status", STATUS_V1)
        .file("usr/share/doc/readme", "x")
        .build(compression)
        .unwrap();
    let upgrade = Layer::builder()
        .file("var/lib/dpkg/status", STATUS_V2)
        .build(Compression::Zstd)
        .unwrap();
    // A later layer deletes a directory; nothing of the dpkg database is in it.
    let cleanup = Layer::builder()
        .whiteout("usr/share/doc")
        .build(Compression::Gzip)
        .unwrap();
    Image::builder()
        .layer(base)
        .layer(upgrade)
        .layer(cleanup)
        .build()
        .unwrap()
}

/// (name, version, source, layer digest) of every package in `strata sbom -f json` output.
fn packages(stdout: &[u8]) -> BTreeSet<(String, String, String, String)> {
    let doc: serde_json::Value = serde_json::from_slice(stdout).expect("sbom json");
    assert_eq!(doc["schema"], "strata.inventory/v1");
    doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("version"), s("source_name"), s("layer"))
        })
        .collect()
}

fn expect_ok(out: &Output) -> &[u8] {
    assert!(
        out.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    &out.stdout
}

/// Exit code 2 and one line on stderr that contains `needle`.
fn expect_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbom_is_the_same_from_registry_oci_layout_and_docker_archive() {
    let image = demo_image(Compression::Gzip);
    let upgrade_layer = image.layers[1].digest.clone();
    let expected: BTreeSet<_> = [
        ("base-files", "12.4+deb12u5", "base-files"),
        ("libssl3", "3.0.13-1~deb12u1", "openssl"),
    ]
    .into_iter()
    .map(|(n, v, s)| (n.to_owned(), v.to_owned(), s.to_owned(), upgrade_layer.clone()))
    .collect();

    let registry = Registry::start().unwrap();
    image.push(&registry, "demo/app", "1.0").await.unwrap();
    let reference = format!("{}/demo/app:1.0", registry.host());
    let from_registry = strata(&[
        "sbom",
        "--insecure-registry",
        &registry.host(),
        &reference,
        "--format",
        "json",
    ]);
    assert_eq!(packages(expect_ok(&from_registry)), expected);
    // The manifest digest is reported.
    let doc: serde_json::Value = serde_json::from_slice(&from_registry.stdout).unwrap();
    assert_eq!(doc["image"]["digest"], image.manifest_digest.as_str());
    assert_eq!(doc["os_release"]["version_id"], "12");

    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image.write_oci_layout(&layout, "1.0").unwrap();
    let from_layout = strata(&["sbom", &format!("oci-dir:{}", layout.display()), "-f", "json"]);
    assert_eq!(packages(expect_ok(&from_layout)), expected);

    let archive = dir.path().join("image.tar");
    image.write_docker_archive(&archive, "demo/app:1.0").unwrap();
    let from_archive = strata(&[
        "sbom",
        &format!("docker-archive:{}", archive.display()),
        "-f",
        "json",
    ]);
    // A docker archive holds uncompressed layers: same packages, but the
    // layer digests are those of the uncompressed tars.
    let names = |set: BTreeSet<(String, String, String, String)>| -> BTreeSet<(String, String, String)> {
        set.into_iter().map(|(n, v, s, _)| (n, v, s)).collect()
    };
    assert_eq!(names(packages(expect_ok(&from_archive))), names(expected));

    // The other formats parse and name the packages.
    for format in ["cyclonedx", "spdx", "table"] {
        let out = strata(&["sbom", &format!("oci-dir:{}", layout.display()), "-f", format]);
        let text = String::from_utf8(expect_ok(&out).to_vec()).unwrap();
        assert!(
            text.contains("libssl3") && !text.contains("curl"),
            "{format}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_missing_images_and_auth_failures_exit_2_with_one_line() {
    expect_error(&strata(&["sbom", "not a reference"]), "bad image reference");
    expect_error(&strata(&["sbom", &"a".repeat(100_000)]), "bad image reference");
    expect_error(&strata(&["sbom", "oci-dir:/nonexistent/strata"]), "not found");
    expect_error(
        &strata(&["sbom", "docker-archive:/nonexistent/strata.tar"]),
        "not found",
    );

    let registry = Registry::start().unwrap();
    demo_image(Compression::Gzip)
        .push(&registry, "demo/app", "1.0")
        .await
        .unwrap();
    let host = registry.host();
    expect_error(
        &strata(&[
            "sbom",
            "--insecure-registry",
            &host,
            &format!("{host}/demo/app:nope"),
        ]),
        "not found",
    );
    expect_error(
        &strata(&[
            "sbom",
            "--insecure-registry",
            &host,
            &format!("{host}/demo/none:1"),
        ]),
        "not found",
    );
    let platform = strata(&[
        "sbom",
        "--insecure-registry",
        &host,
        "--platform",
        "linux/s390x",
        &format!("{host}/demo/app:1.0"),
    ]);
    assert_eq!(platform.status.code(), Some(2));

    let locked = Registry::builder().htpasswd("ci", "s3cret").start().unwrap();
    let host = locked.host();
    expect_error(
        &strata(&[
            "sbom",
            "--insecure-registry",
            &host,
            &format!("{host}/demo/app:1.0"),
        ]),
        "unauthorized",
    );
}

#[test]
fn a_corrupt_layer_fails_the_image_naming_the_layer() {
    let good = Layer::builder()
        .file("var/lib/dpkg/status", STATUS_V1)
        .build(Compression::Gzip)
        .unwrap();
    let bad = Layer::garbage(
        Compression::Gzip,
        b"\x1f\x8b\x08\x00this is not deflate data".to_vec(),
    );
    let bad_digest = bad.digest.clone();
    let image = Image::builder().layer(good).layer(bad).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image.write_oci_layout(&layout, "bad").unwrap();
    let out = strata(&["sbom", &format!("oci-dir:{}", layout.display())]);
    expect_error(&out, &bad_digest);
    assert_no_files_left(dir.path(), &layout);
}

/// The layout holds what the harness wrote; nothing else appeared beside it.
fn assert_no_files_left(root: &Path, layout: &Path) {
    let entries: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries, vec![layout.to_path_buf()]);
}

#[test]
fn caps_set_on_the_command_line_fail_the_layer_naming_the_limit() {
    let image = demo_image(Compression::Gzip);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image.write_oci_layout(&layout, "1").unwrap();
    let oci = format!("oci-dir:{}", layout.display());
    // The dpkg status is ~400 bytes: a 100-byte file cap rejects it.
    let out = strata(&["sbom", "--max-file-bytes", "100", &oci]);
    expect_error(&out, "max_file_bytes");
    let out = strata(&["sbom", "--max-entries", "1", &oci]);
    expect_error(&out, "max_entries");
    // Generous caps change nothing.
    expect_ok(&strata(&[
        "sbom",
        "--max-file-bytes",
        "1000000",
        "--max-entries",
        "1000",
        &oci,
    ]));
}
