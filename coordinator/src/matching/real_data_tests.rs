//! Matcher tests on real OSV records (/work/shared/testdata/osv/from-testdata,
//! the PyPI and Go `all.zip`s there, and two records copied into `testdata/`). Expected results were read off
//! the records by hand.
//!
//! The records go through the real importer (`crate::vulndb::import`).

use super::tests::{os, pkg};
use super::*;
use crate::vulndb::Source;
use strata_proto::domain::Evidence;

const SHARED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/osv/from-testdata/"
);
const LOCAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/matching/testdata/");

/// Import the records through the real importer (normalisation, alias
/// merging, range checks) into a temporary database, and match against it.
fn load(paths: &[String]) -> Matcher {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    let sources: Vec<Source> = paths.iter().map(|p| Source::parse(p).unwrap()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(crate::vulndb::import(&sources, &out)).unwrap();
    Matcher::new(&Db::open(&out).unwrap())
}

fn shared(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{SHARED}{n}.json")).collect()
}

/// The ids (with their fixed versions) hitting one package.
fn hits(m: &Matcher, os: Option<&OsRelease>, p: Package) -> Vec<(String, Vec<String>)> {
    m.match_packages(os, &[p])
        .into_iter()
        .map(|f| (f.vulnerability_id, f.fixed_versions))
        .collect()
}

fn ids(m: &Matcher, os: Option<&OsRelease>, p: Package) -> Vec<String> {
    hits(m, os, p).into_iter().map(|(id, _)| id).collect()
}

#[test]
fn pypi_django_three_intervals() {
    // PYSEC-2024-28 (CVE-2024-24680): 3.2 ≤ v < 3.2.24, 4.2 ≤ v < 4.2.10, 5.0 ≤ v < 5.0.2.
    let m = load(&[format!("{LOCAL}PYSEC-2024-28.json")]);
    let dj = |v: &str| pkg(Ecosystem::PyPI, "Django", v);
    assert_eq!(
        hits(&m, None, dj("4.2.9")),
        [(
            "PYSEC-2024-28".to_owned(),
            vec!["4.2.10".to_owned(), "5.0.2".to_owned()]
        )]
    );
    assert_eq!(ids(&m, None, dj("3.2")), ["PYSEC-2024-28"]);
    assert_eq!(ids(&m, None, dj("3.2.23")), ["PYSEC-2024-28"]);
    assert_eq!(ids(&m, None, dj("5.0.1")), ["PYSEC-2024-28"]);
    // Not in the versions list but inside a range: ranges decide.
    assert_eq!(ids(&m, None, dj("4.2.9.post1")), ["PYSEC-2024-28"]);
    for fixed in ["3.2.24", "4.2.10", "5.0.2", "4.1.13", "3.1.14", "2.2", "5.1"] {
        assert!(ids(&m, None, dj(fixed)).is_empty(), "{fixed}");
    }
    let f = m.match_packages(None, &[dj("4.2.9")]);
    assert_eq!(f[0].aliases, ["CVE-2024-24680"]);
}

#[test]
fn crates_time_many_prerelease_pairs() {
    // RUSTSEC-2020-0071: 0.0.0-0 ≤ v < 0.2.0, then one-version holes 0.2.1..0.2.6
    // closed by their own release, and 0.2.7-0 ≤ v < 0.2.23.
    let m = load(&[format!("{LOCAL}RUSTSEC-2020-0071.json")]);
    let t = |v: &str| pkg(Ecosystem::CratesIo, "time", v);
    for affected in ["0.1.44", "0.2.7", "0.2.22", "0.2.1-beta.1"] {
        assert_eq!(ids(&m, None, t(affected)), ["RUSTSEC-2020-0071"], "{affected}");
    }
    for fixed in ["0.2.0", "0.2.1", "0.2.6", "0.2.23", "0.3.0"] {
        assert!(ids(&m, None, t(fixed)).is_empty(), "{fixed}");
    }
    assert_eq!(hits(&m, None, t("0.2.22"))[0].1, ["0.2.23"]);
}

#[test]
fn go_stdlib_and_modules() {
    let m = load(&shared(&["GO-2022-1144", "GO-2023-1572"]));
    let std = |v: &str| pkg(Ecosystem::Go, "stdlib", v);
    assert_eq!(ids(&m, None, std("1.18.8")), ["GO-2022-1144"]);
    assert_eq!(ids(&m, None, std("v1.19.3")), ["GO-2022-1144"]);
    assert!(ids(&m, None, std("1.18.9")).is_empty());
    assert!(ids(&m, None, std("1.19.4")).is_empty());
    // As Go binaries record it.
    assert_eq!(ids(&m, None, std("go1.19.3")), ["GO-2022-1144"]);
    assert!(ids(&m, None, std("go1.19.4")).is_empty());
    let net = |v: &str| pkg(Ecosystem::Go, "golang.org/x/net", v);
    assert_eq!(ids(&m, None, net("v0.3.0")), ["GO-2022-1144"]);
    assert!(ids(&m, None, net("v0.4.0")).is_empty());
    // A pseudo-version before the fix is affected.
    let img = |v: &str| pkg(Ecosystem::Go, "golang.org/x/image", v);
    assert_eq!(
        ids(&m, None, img("v0.0.0-20220722155232-062f8c9fd539")),
        ["GO-2023-1572"]
    );
    assert!(ids(&m, None, img("v0.5.0")).is_empty());
}

#[test]
fn maven_last_affected_and_date_versions() {
    let m = load(&shared(&["GHSA-c4r9-r8fh-9vj2", "GHSA-6phf-73q6-gh87"]));
    // jmx_prometheus_httpserver_java6: introduced 0, last_affected 0.18.0 (inclusive).
    let jmx = |v: &str| {
        pkg(
            Ecosystem::Maven,
            "io.prometheus.jmx:jmx_prometheus_httpserver_java6",
            v,
        )
    };
    assert_eq!(ids(&m, None, jmx("0.18.0")), ["GHSA-c4r9-r8fh-9vj2"]);
    assert!(ids(&m, None, jmx("0.18.1")).is_empty());
    // be.cylab:snakeyaml has only a versions list: 1.25.1 and nothing else.
    let cylab = |v: &str| pkg(Ecosystem::Maven, "be.cylab:snakeyaml", v);
    assert_eq!(ids(&m, None, cylab("1.25.1")), ["GHSA-c4r9-r8fh-9vj2"]);
    assert!(ids(&m, None, cylab("1.25.0")).is_empty());
    let f = m.match_packages(None, &[pkg(Ecosystem::Maven, "org.yaml:snakeyaml", "1.30")]);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].fixed_versions, ["1.31"]);
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::Maven, "org.yaml:snakeyaml", "1.31")])
            .is_empty()
    );
    // commons-beanutils: introduced 0, fixed 1.9.4, introduced 20020520 (date versions).
    let bu = |v: &str| pkg(Ecosystem::Maven, "commons-beanutils:commons-beanutils", v);
    assert_eq!(ids(&m, None, bu("1.9.3")), ["GHSA-6phf-73q6-gh87"]);
    assert!(ids(&m, None, bu("1.9.4")).is_empty());
    assert_eq!(ids(&m, None, bu("20030211.134440")), ["GHSA-6phf-73q6-gh87"]);
}

#[test]
fn alpine_releases_from_real_record() {
    // CVE-2022-27449: mariadb fixed 10.6.8-r0 on Alpine v3.16, 10.5.16-r0 on v3.14.
    let m = load(&shared(&["CVE-2022-27449"]));
    let mut lib = pkg(Ecosystem::Alpine, "mariadb-common", "10.6.7-r0");
    lib.source_name = Some("mariadb".into());
    let a316 = os("alpine", "3.16.2");
    assert_eq!(
        hits(&m, Some(&a316), lib.clone()),
        [("CVE-2022-27449".to_owned(), vec!["10.6.8-r0".to_owned()])]
    );
    lib.version = "10.6.8-r0".into();
    assert!(ids(&m, Some(&a316), lib.clone()).is_empty());
    // 10.5.16-r0 on 3.14 is fixed; on 3.17 (no entry) nothing applies.
    lib.version = "10.5.15-r0".into();
    assert_eq!(
        ids(&m, Some(&os("alpine", "3.14.8")), lib.clone()),
        ["CVE-2022-27449"]
    );
    assert!(ids(&m, Some(&os("alpine", "3.17.0")), lib.clone()).is_empty());
    assert!(ids(&m, None, lib).is_empty());
}

#[test]
fn debian_releases_and_source_packages_from_real_records() {
    let m = load(&shared(&["DSA-3029-1", "CVE-2024-3847"]));
    // DSA-3029-1: nginx on Debian 7, fixed 1.2.1-2.2+wheezy3, matched by source.
    let mut common = pkg(Ecosystem::Debian, "nginx-common", "1.2.1-2.2+wheezy2");
    common.source_name = Some("nginx".into());
    let wheezy = os("debian", "7");
    assert_eq!(ids(&m, Some(&wheezy), common.clone()), ["DSA-3029-1"]);
    common.version = "1.2.1-2.2+wheezy3".into();
    assert!(ids(&m, Some(&wheezy), common.clone()).is_empty());
    common.version = "1.2.1-2.2+wheezy2".into();
    assert!(ids(&m, Some(&os("debian", "8")), common).is_empty());
    // CVE-2024-3847: chromium on Debian 10 and 11, introduced 0, no fix.
    let chromium = pkg(Ecosystem::Debian, "chromium", "124.0.6367.60-1~deb11u1");
    assert_eq!(
        ids(&m, Some(&os("debian", "11")), chromium.clone()),
        ["CVE-2024-3847"]
    );
    assert!(ids(&m, Some(&os("debian", "12")), chromium).is_empty());
}

#[test]
fn fleet_equals_per_image_on_real_records() {
    let mut paths: Vec<String> = std::fs::read_dir(SHARED)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().to_string_lossy().into_owned()))
        .filter(|p| p.ends_with(".json"))
        .collect();
    paths.sort();
    paths.push(format!("{LOCAL}PYSEC-2024-28.json"));
    paths.push(format!("{LOCAL}RUSTSEC-2020-0071.json"));
    let m = load(&paths);
    // 43 records; the importer merges the ones that alias each other.
    assert!(m.stats().advisories >= 35, "{:?}", m.stats());
    // Packages at versions around the records' boundaries, and a few oddities.
    let src = |name: &str, source: &str, v: &str, eco: Ecosystem| {
        let mut p = pkg(eco, name, v);
        p.source_name = Some(source.into());
        p
    };
    let pool = vec![
        pkg(Ecosystem::PyPI, "django", "4.2.9"),
        pkg(Ecosystem::PyPI, "Django", "4.2.10"),
        pkg(Ecosystem::PyPI, "django", "not-a-version"),
        pkg(Ecosystem::CratesIo, "time", "0.2.22"),
        pkg(Ecosystem::CratesIo, "smallvec", "1.6.0"),
        pkg(Ecosystem::CratesIo, "regex", "1.5.4"),
        pkg(Ecosystem::Go, "stdlib", "go1.19.3"),
        pkg(Ecosystem::Go, "golang.org/x/net", "v0.3.0"),
        pkg(Ecosystem::Maven, "org.yaml:snakeyaml", "1.30"),
        src("nginx-common", "nginx", "1.2.1-2.2+wheezy2", Ecosystem::Debian),
        src("mariadb-common", "mariadb", "10.5.15-r0", Ecosystem::Alpine),
        pkg(Ecosystem::Debian, "chromium", "120.0-1"),
    ];
    let oses = [
        None,
        Some(os("debian", "7")),
        Some(os("debian", "11")),
        Some(os("alpine", "3.14.2")),
    ];
    // A small xorshift: deterministic, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let images: Vec<(Option<OsRelease>, Vec<Package>)> = (0..60)
        .map(|_| {
            let os = oses[next(oses.len())].clone();
            let n = next(pool.len() + 1);
            (os, (0..n).map(|_| pool[next(pool.len())].clone()).collect())
        })
        .collect();
    let fleet = m.match_fleet(&images);
    let mut total = 0;
    for ((os, pkgs), got) in images.iter().zip(&fleet) {
        assert_eq!(got, &m.match_packages(os.as_ref(), pkgs));
        total += got.len();
    }
    assert!(total > 60, "the fleet should hit something: {total}");
}

const OSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/osv/");

fn with_evidence(mut p: Package, e: Evidence) -> Package {
    p.evidence = e;
    p
}

#[test]
fn pypi_requests_from_the_whole_zip() {
    let m = load(&[format!("{OSV}PyPI/all.zip")]);
    let req = |name: &str, v: &str| pkg(Ecosystem::PyPI, name, v);
    // PYSEC-2018-28 (CVE-2018-18074): introduced 0, fixed 2.20.0.
    let old = ids(&m, None, req("requests", "2.19.1"));
    assert!(old.iter().any(|id| id == "PYSEC-2018-28"), "{old:?}");
    let f = m.match_packages(None, &[req("requests", "2.19.1")]);
    let pysec = f.iter().find(|f| f.vulnerability_id == "PYSEC-2018-28").unwrap();
    assert!(
        pysec.aliases.iter().any(|a| a == "CVE-2018-18074"),
        "{:?}",
        pysec.aliases
    );
    // PEP 503: the name as a wheel's METADATA may spell it.
    assert!(ids(&m, None, req("Requests", "2.19.1")).contains(&"PYSEC-2018-28".to_owned()));
    assert!(!ids(&m, None, req("requests", "2.31.0")).contains(&"PYSEC-2018-28".to_owned()));
    // The image's own application named `requests`: listed, never matched.
    assert!(ids(&m, None, with_evidence(req("requests", "2.19.1"), Evidence::App)).is_empty());
    // A guess from a file name, and a lockfile entry, are matched.
    for e in [Evidence::FileName, Evidence::Lockfile] {
        let f = m.match_packages(None, &[with_evidence(req("requests", "2.19.1"), e)]);
        assert!(f.iter().any(|f| f.vulnerability_id == "PYSEC-2018-28"), "{e:?}");
        assert!(
            f.iter().all(|f| f.package.evidence == e),
            "findings say the evidence"
        );
    }
}

#[test]
fn go_toolchain_main_modules_and_major_versions_from_the_whole_zip() {
    let m = load(&[format!("{OSV}Go/all.zip")]);
    let go = |name: &str, v: &str| pkg(Ecosystem::Go, name, v);
    // GO-2023-1751 and GO-2023-1752: stdlib fixed in 1.19.9.
    for v in ["1.19.8", "go1.19.8"] {
        let hits = ids(&m, None, go("stdlib", v));
        for id in ["GO-2023-1751", "GO-2023-1752"] {
            assert!(hits.iter().any(|h| h == id), "{v}: {id} not in {hits:?}");
        }
    }
    let fixed = ids(&m, None, go("stdlib", "1.19.9"));
    assert!(!fixed.iter().any(|h| h == "GO-2023-1751" || h == "GO-2023-1752"));
    // A main module built from a checkout: `(devel)` matches nothing, quietly.
    assert!(ids(&m, None, go("github.com/nats-io/nats-server/v2", "(devel)")).is_empty());
    // The v2 module, named as Syft's purl says (`…/nats-server@v2.15.1#v2`),
    // is not the old v1 module: the v1 name at v2.15.1 would be affected by
    // every v1 entry.
    let from_syft =
        crate::output::purl::parse("pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2").unwrap();
    assert_eq!(from_syft.name, "github.com/nats-io/nats-server/v2");
    assert!(ids(&m, None, go(&from_syft.name, "v2.15.1")).is_empty());
    assert!(ids(&m, None, go("github.com/nats-io/nats-server", "v2.15.1")).len() >= 10);
    // GO-2023-2133: the v2 module, 2.10.0 ≤ v < 2.10.2.
    assert!(ids(&m, None, go(&from_syft.name, "v2.10.1")).contains(&"GO-2023-2133".to_owned()));
    // An application package never matches, whatever its name and version.
    assert!(ids(&m, None, with_evidence(go("stdlib", "1.19.8"), Evidence::App)).is_empty());
}

#[test]
fn maven_app_packages_are_never_matched() {
    let m = load(&shared(&["GHSA-c4r9-r8fh-9vj2"]));
    let yaml = pkg(Ecosystem::Maven, "org.yaml:snakeyaml", "1.30");
    assert_eq!(m.match_packages(None, std::slice::from_ref(&yaml)).len(), 1);
    assert!(
        m.match_packages(None, &[with_evidence(yaml, Evidence::App)])
            .is_empty()
    );
}
