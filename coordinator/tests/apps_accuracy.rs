//! Application packages end to end, on content installed by the real tools
//! (`.ci/fixtures`, made by `.ci/install-deps`: `pip install --target`,
//! `npm install`, Debian's `liblog4j2-java` and `nats-server` packages, and
//! PyPI's official `nats-server` build), stacked into one image with a layer
//! that deletes some of it:
//! - `strata sbom` finds every package Syft (1.18.1, the pinned peer) finds
//!   in those ecosystems, with the same names and versions; each difference
//!   is listed in [`DIFFERENCES`] with why ours is right;
//! - `strata scan` with the real advisories in `../shared/testdata/osv`
//!   reports the known vulnerabilities of the old versions and nothing for
//!   packages past every fix or deleted by the later layer;
//! - scanning Syft's CycloneDX SBOM of the image (`strata scan --sbom`)
//!   gives the same findings as scanning the image.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_harness::image::{Compression, Image, Layer};

const SITE: &str = "/usr/local/lib/python3.11/site-packages";
const APP: &str = "/srv/app";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    let dir = workspace().join(".ci/fixtures");
    assert!(
        dir.join(".version").exists(),
        "{} is missing: run .ci/install-deps (make test does)",
        dir.display()
    );
    dir
}

fn venv(bin: &str) -> PathBuf {
    let path = workspace().join(".ci/.venv/bin").join(bin);
    assert!(
        path.exists(),
        "{} is missing: run .ci/install-deps",
        path.display()
    );
    path
}

/// Base (a dpkg package and os-release), then one layer per ecosystem, then
/// a layer deleting urllib3 and the top-level `ms` (the nested one stays).
fn image() -> Image {
    let f = fixtures();
    let layer = |b: strata_harness::image::LayerBuilder| b.build(Compression::Gzip).unwrap();
    let go = std::fs::read(venv("nats-server")).unwrap();
    Image::builder()
        .layer(layer(
            Layer::builder()
                .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
                .file(
                    "var/lib/dpkg/status",
                    "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n",
                ),
        ))
        .layer(layer(Layer::builder().tree(SITE, &f.join("python/site-packages")).unwrap()))
        .layer(layer(Layer::builder().tree(APP, &f.join("node/app")).unwrap()))
        .layer(layer(Layer::builder().tree("/", &f.join("java")).unwrap()))
        .layer(layer(
            Layer::builder()
                .file_mode("usr/local/bin/nats-server", go, 0o755)
                .tree("/", &f.join("go-debian"))
                .unwrap(),
        ))
        .layer(layer(
            Layer::builder()
                .whiteout(&format!("{SITE}/urllib3"))
                .whiteout(&format!("{SITE}/urllib3-1.23.dist-info"))
                .whiteout(&format!("{APP}/node_modules/ms")),
        ))
        .build()
        .unwrap()
}

/// The image as an OCI layout, written once for both tests (under the
/// target directory's test scratch space, replaced on each run).
fn layout() -> &'static Path {
    static LAYOUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("apps-accuracy-layout");
        let _ = std::fs::remove_dir_all(&dir);
        image().write_oci_layout(&dir, "latest").unwrap();
        dir
    })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn strata() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.env("DOCKER_CONFIG", "/nonexistent/strata-test");
    c
}

/// (ecosystem, name, version) as each tool names them, made comparable:
/// PyPI names PEP 503-normalised, Maven as `group:artifact`, Go's standard
/// library without the `go` Syft keeps (`go1.19.8`; OSV writes `1.19.8`).
type Found = BTreeSet<(String, String, String)>;

fn pep503(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn ours(sbom: &serde_json::Value) -> Found {
    let mut found = Found::new();
    for p in sbom["packages"].as_array().expect("packages") {
        let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
        let eco = s("ecosystem");
        let name = if eco == "PyPI" {
            pep503(&s("name"))
        } else {
            s("name")
        };
        found.insert((eco, name, s("version")));
    }
    found
}

fn syfts(doc: &serde_json::Value) -> Found {
    let mut found = Found::new();
    for a in doc["artifacts"].as_array().expect("artifacts") {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let (name, version) = (s(&a["name"]), s(&a["version"]));
        let entry = match a["type"].as_str().unwrap_or_default() {
            "python" => ("PyPI", pep503(&name), version),
            "npm" => ("npm", name, version),
            "go-module" if name == "stdlib" => ("Go", name, version.trim_start_matches("go").to_owned()),
            "go-module" => ("Go", name, version),
            "java-archive" => {
                let m = &a["metadata"];
                let group = [&m["pomProperties"]["groupId"], &m["pomProject"]["groupId"]]
                    .into_iter()
                    .map(s)
                    .find(|g| !g.is_empty())
                    .unwrap_or_default();
                ("Maven", format!("{group}:{name}"), version)
            }
            _ => continue,
        };
        found.insert((entry.0.to_owned(), entry.1, entry.2));
    }
    found
}

/// Where Strata and Syft disagree on this content, and why ours is right:
/// (ecosystem, name, version, who has it, why).
const DIFFERENCES: &[(&str, &str, &str, &str, &str)] = &[(
    "npm",
    "strata-fixture-app",
    "1.0.0",
    "strata",
    "the image's own private root package, listed with evidence `app` and never matched",
)];

#[test]
fn strata_finds_what_syft_finds_in_application_layers() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout();
    let reference = format!("oci-dir:{}:latest", layout.display());

    let sbom = run(strata().args(["sbom", &reference, "-f", "json"]));
    let sbom: serde_json::Value = serde_json::from_slice(&sbom.stdout).unwrap();
    let syft = run(Command::new(venv("syft"))
        .args([&format!("oci-dir:{}", layout.display()), "-o", "json", "-q"])
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .env("HOME", dir.path()));
    let syft: serde_json::Value = serde_json::from_slice(&syft.stdout).unwrap();

    let (ours, syfts) = (ours(&sbom), syfts(&syft));
    let explained = |who: &str, (e, n, v): &(String, String, String)| {
        DIFFERENCES
            .iter()
            .any(|d| (d.0, d.1, d.2, d.3) == (e.as_str(), n.as_str(), v.as_str(), who))
    };
    let ecosystems = ["PyPI", "npm", "Maven", "Go"];
    let mut report = BTreeMap::new();
    for eco in ecosystems {
        let only_syft: Vec<_> = syfts
            .difference(&ours)
            .filter(|p| p.0 == eco && !explained("syft", p))
            .collect();
        let only_ours: Vec<_> = ours
            .difference(&syfts)
            .filter(|p| p.0 == eco && !explained("strata", p))
            .collect();
        if !only_syft.is_empty() || !only_ours.is_empty() {
            report.insert(eco, (only_syft, only_ours));
        }
        assert!(
            syfts.iter().any(|p| p.0 == eco),
            "Syft found no {eco} packages: the fixture is not what this test expects"
        );
    }
    assert!(
        report.is_empty(),
        "unexplained differences (only Syft, only Strata) per ecosystem: {report:#?}"
    );

    // The later layer's deletions hold for application packages too.
    let has = |name: &str, version: &str| ours.iter().any(|p| p.1 == name && p.2 == version);
    assert!(!has("urllib3", "1.23"), "urllib3 was deleted by the last layer");
    assert!(
        !has("ms", "2.1.1"),
        "the top-level ms was deleted by the last layer"
    );
    assert!(has("ms", "2.0.0"), "the nested ms (under debug) stays");
    assert!(has("requests", "2.19.1") && has("lodash", "4.17.4") && has("stdlib", "1.19.8"));
    assert!(has("github.com/nats-io/nats-server/v2", "v2.15.1"));
    assert!(has("org.apache.logging.log4j:log4j-core", "2.19.0"));
}

/// Findings of `strata scan ARGS`: (package name, version) → ids and aliases.
type Hits = BTreeMap<(String, String), BTreeSet<String>>;

/// The database of the real advisories (PyPI, Go, and the records from
/// other scanners' fixtures), built once.
fn vulndb() -> &'static Path {
    static DB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let db = Path::new(env!("CARGO_TARGET_TMPDIR")).join("apps-accuracy-vulndb");
        let osv = workspace().join("../shared/testdata/osv");
        run(strata().args(["db", "import", "--db"]).arg(&db).args([
            osv.join("PyPI/all.zip"),
            osv.join("Go/all.zip"),
            osv.join("from-testdata"),
        ]));
        db
    })
}

fn scan(target: &[&str]) -> Hits {
    // The exit code says whether findings gate; the report is what is checked.
    let out = strata()
        .arg("scan")
        .args(target)
        .args(["-f", "json", "--db"])
        .arg(vulndb())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut hits = Hits::new();
    for f in report["findings"].as_array().expect("findings") {
        let p = &f["package"];
        let key = (
            pep503(p["name"].as_str().unwrap_or_default()),
            p["version"].as_str().unwrap_or_default().to_owned(),
        );
        let mut ids: BTreeSet<String> = f["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        ids.insert(f["vulnerability_id"].as_str().unwrap_or_default().to_owned());
        hits.entry(key).or_default().extend(ids);
    }
    hits
}

#[test]
fn strata_scan_reports_known_vulnerabilities_of_old_versions_only() {
    let reference = format!("oci-dir:{}:latest", layout().display());
    let hits = scan(&[&reference]);
    let of = |name: &str, version: &str| hits.get(&(name.to_owned(), version.to_owned()));
    // requests < 2.20.0 sends credentials on an https→http redirect.
    let requests = of("requests", "2.19.1").expect("requests 2.19.1 has findings");
    assert!(requests.contains("CVE-2018-18074"), "{requests:?}");
    // certifi 2018.4.16 still trusts e-Tugra's root.
    let certifi = of("certifi", "2018.4.16").expect("certifi 2018.4.16 has findings");
    assert!(certifi.contains("CVE-2022-23491"), "{certifi:?}");
    // Go 1.19.8's standard library: advisories fixed in 1.19.9 and later.
    let stdlib = of("stdlib", "1.19.8").expect("stdlib 1.19.8 has findings");
    assert!(stdlib.contains("CVE-2023-24539"), "{stdlib:?}");
    assert!(stdlib.len() > 20, "{}", stdlib.len());
    // Past every fix in this data: jinja2 2.10.1 (CVE-2019-10906 was fixed
    // in 2.10.1 itself), the PyPI build's toolchain (1.27.2).
    assert!(of("jinja2", "2.10.1").is_none(), "{:?}", of("jinja2", "2.10.1"));
    assert!(of("stdlib", "1.27.2").is_none(), "{:?}", of("stdlib", "1.27.2"));
    // Deleted by the last layer: urllib3 1.23 (which has advisories).
    assert!(of("urllib3", "1.23").is_none(), "a deleted package has findings");
    // The Debian build's main module is `(devel)`: nothing matches it.
    assert!(of("github.com/nats-io/nats-server", "(devel)").is_none());
}

#[test]
fn scanning_syfts_cyclonedx_sbom_gives_the_image_findings() {
    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("syft.cdx.json");
    let out = run(Command::new(venv("syft"))
        .args([
            &format!("oci-dir:{}", layout().display()),
            "-o",
            "cyclonedx-json",
            "-q",
        ])
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .env("HOME", dir.path()));
    std::fs::write(&sbom, &out.stdout).unwrap();
    let from_sbom = scan(&["--sbom", sbom.to_str().unwrap()]);
    let from_image = scan(&[&format!("oci-dir:{}:latest", layout().display())]);
    // Syft writes the Go toolchain as `go1.19.8`; OSV and Strata as `1.19.8`.
    let normalise = |hits: Hits| -> Hits {
        hits.into_iter()
            .map(|((n, v), ids)| {
                let v = if n == "stdlib" {
                    v.trim_start_matches("go").to_owned()
                } else {
                    v
                };
                ((n, v), ids)
            })
            .collect()
    };
    let (from_sbom, from_image) = (normalise(from_sbom), normalise(from_image));
    assert!(!from_image.is_empty());
    assert_eq!(
        from_sbom.keys().collect::<Vec<_>>(),
        from_image.keys().collect::<Vec<_>>(),
        "packages with findings differ"
    );
    assert_eq!(from_sbom, from_image);
}
