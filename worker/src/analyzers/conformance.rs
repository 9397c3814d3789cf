//! Conformance suite run against EVERY analyser in [`super::all`]: empty,
//! garbage (random bytes, huge lines, NULs, invalid UTF-8), truncated and
//! bit-flipped real fixtures, each fed to every path the analyser wants.
//! The contract: `Ok` (possibly empty or partial) or `Err`, never a panic,
//! and every package returned is well-formed, its purl canonical.

use std::panic::{AssertUnwindSafe, catch_unwind};

use strata_proto::purl::Purl;
use strata_proto::{Ecosystem, Package};

use super::{Analyzer, LayerFile, all};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/pkgdb");

/// Paths any of our analysers may want; each analyser must want one.
const PATHS: &[&str] = &[
    "/var/lib/dpkg/status",
    "/var/lib/dpkg/status.d/base-files",
    "/lib/apk/db/installed",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/alpine-release",
    "/etc/redhat-release",
    "/etc/debian_version",
    "/usr/local/lib/python3.12/site-packages/Jinja2-3.1.2.dist-info/METADATA",
    "/usr/lib/python3/dist-packages/requests-2.28.1.egg-info/PKG-INFO",
    "/usr/lib/python3/dist-packages/python_apt-2.4.0.egg-info",
    "/app/node_modules/@babel/core/package.json",
    "/app/package.json",
    "/srv/package-lock.json",
    "/srv/yarn.lock",
    "/srv/pnpm-lock.yaml",
    "/usr/local/bundle/specifications/rack-2.2.8.gemspec",
    "/srv/Gemfile.lock",
    "/var/www/vendor/composer/installed.json",
    "/srv/composer.lock",
    "/app/MyApp.deps.json",
    "/srv/Cargo.lock",
];

/// Real fixtures whose prefixes and mutations are fed to every analyser.
fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let read = |p: &str| std::fs::read(format!("{TESTDATA}/{p}")).unwrap();
    vec![
        (
            "dpkg valid",
            read("google+osv-scalibr/extractor/filesystem/os/dpkg/testdata/dpkg/valid"),
        ),
        (
            "dpkg postgresql",
            read("quay+claircore/dpkg/testdata/postgresql.status"),
        ),
        (
            "apk installed",
            read("google+osv-scalibr/extractor/filesystem/os/apk/testdata/installed"),
        ),
        (
            "bdb Packages_epoch",
            read("google+osv-scalibr/extractor/filesystem/os/rpm/testdata/Packages_epoch"),
        ),
        (
            "os-release",
            read("anchore+syft/syft/pkg/cataloger/debian/testdata/image-dpkg/etc/os-release"),
        ),
        (
            "bdb Packages-512",
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/analyzers/rpm/testdata/Packages-512"
            ))
            .unwrap(),
        ),
        (
            "rpmdb.sqlite",
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/analyzers/rpm/testdata/rpmdb.sqlite"
            ))
            .unwrap(),
        ),
        // Application ecosystems' fixtures last, so the mutations drawn for
        // the ones above stay what they were.
        (
            "python METADATA",
            read(
                "aquasecurity+trivy/pkg/fanal/analyzer/language/python/pip/testdata/libs/python-dir/lib/python3.10/site-packages/annotated_types-0.7.0.dist-info/METADATA",
            ),
        ),
        (
            "package-lock.json v2",
            read("google+osv-scalibr/annotator/misc/npmsource/testdata/package-lock.json"),
        ),
        (
            "yarn.lock berry",
            read("anchore+syft/syft/pkg/cataloger/javascript/testdata/yarn-berry/yarn.lock"),
        ),
        (
            "yarn.lock v1",
            read("aquasecurity+trivy/pkg/fanal/analyzer/language/nodejs/yarn/testdata/alias/yarn.lock"),
        ),
        (
            "pnpm-lock.yaml v6",
            read("anchore+syft/syft/pkg/cataloger/javascript/testdata/pnpm-v6/pnpm-lock.yaml"),
        ),
        (
            "Gemfile.lock",
            read("anchore+syft/syft/pkg/cataloger/ruby/testdata/Gemfile.lock"),
        ),
        (
            "composer.lock",
            read("anchore+syft/syft/pkg/cataloger/php/testdata/composer.lock"),
        ),
        (
            "deps.json",
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/analyzers/dotnet/testdata/MyApp.deps.json"
            ))
            .unwrap(),
        ),
        (
            "Cargo.lock",
            read("anchore+syft/syft/pkg/cataloger/rust/testdata/image-audit/Cargo.lock"),
        ),
    ]
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn garbage() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("empty file".into(), vec![]),
        ("one newline".into(), b"\n".to_vec()),
        ("NULs".into(), vec![0; 70_000]),
        ("0xff".into(), vec![0xff; 70_000]),
        ("huge line".into(), vec![b'a'; 2 << 20]),
        ("huge field".into(), [&b"Package: "[..], &vec![b'a'; 1 << 20], b"\nVersion: 1\n"].concat()),
        ("huge version".into(), [&b"Package: a\nStatus: install ok installed\nVersion: 1:"[..], &vec![b'-'; 4000], b"\n"].concat()),
        ("huge status".into(), [&b"Package: a\nStatus: "[..], &vec![b'x'; 4000], b"\n"].concat()),
        ("huge apk field".into(), [&b"P:"[..], &vec![b'a'; 1 << 20], b"\nV:1\n"].concat()),
        ("invalid utf-8 fields".into(), b"Package: \xff\xfe\nStatus: install ok installed\nVersion: \xc3\x28\n\nP:\xff\nV:\xfe\nID=\xff\n".to_vec()),
        ("many blank stanzas".into(), b"Package: a\n\n".repeat(50_000)),
        ("colons".into(), b":::::\n:\n::\n".repeat(1000)),
        ("quotes".into(), b"ID=\"unterminated\nVERSION_ID='x\nID=\\".to_vec()),
        ("sqlite magic only".into(), b"SQLite format 3\0".to_vec()),
        ("sqlite header + garbage".into(), [&b"SQLite format 3\0"[..], &[0x10, 0, 2, 2], &rng.bytes(8000)].concat()),
        ("bdb magic page".into(), {
            let mut p = vec![0u8; 4096 * 3];
            p[12..16].copy_from_slice(&0x0006_1561u32.to_le_bytes());
            p[20..24].copy_from_slice(&4096u32.to_le_bytes());
            p[25] = 8;
            p[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
            p[4096 + 25] = 13;
            p[4096 + 20] = 0xff;
            p
        }),
    ];
    for n in [1, 7, 100, 511, 512, 4096, 100_000] {
        out.push((format!("random {n}"), rng.bytes(n)));
    }
    out
}

/// Runs `a` on `data` at `path`, turning a panic into a test failure that
/// names the input, and checks every package returned.
fn check(a: &dyn Analyzer, path: &str, what: &str, data: &[u8]) {
    let result = catch_unwind(AssertUnwindSafe(|| a.analyze(&[LayerFile { path, data }])));
    let result = result.unwrap_or_else(|_| panic!("{} panicked on {what} at {path}", a.name()));
    if let Err(e) = &result {
        // Errors name the analyser and the file, so a log line says where.
        assert_eq!((e.analyzer, e.path.as_str()), (a.name(), path), "{what}: {e}");
        assert!(!e.reason.is_empty() && e.reason.len() < 600, "{what}: {e}");
    }
    if let Ok(analysis) = result {
        for p in &analysis.packages {
            assert!(
                !p.name.is_empty() && !p.version.is_empty(),
                "{} on {what}: {p:?}",
                a.name()
            );
            assert_eq!(p.path, path, "{} on {what}", a.name());
            assert!(p.layer.is_none());
            assert!(p.purl.starts_with("pkg:"), "{} on {what}: {}", a.name(), p.purl);
            check_purl(p, &format!("{} on {what}", a.name()));
        }
        assert!(analysis.warnings.len() <= super::common::MAX_WARNINGS + 1);
    }
}

/// A purl an analyser writes parses back to the package's ecosystem and is
/// canonical: parsed and written again it is the same bytes, so composition
/// can rebuild it for another distribution of the family (`strata_proto::purl`)
/// and change nothing but the namespace, as a string swap would.
pub(super) fn check_purl(p: &Package, what: &str) {
    let purl = Purl::parse(&p.purl).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(purl.ecosystem(), p.ecosystem, "{what}: {}", p.purl);
    assert_eq!(purl.as_str(), p.purl, "{what}: not canonical");
    let ns = |e: Ecosystem| e.row().purl.namespace.unwrap_or_default();
    // Only OS packages have siblings (a family); language ecosystems none.
    if p.ecosystem.family().is_none() {
        return;
    }
    for &sibling in Ecosystem::ALL {
        if sibling == p.ecosystem || sibling.family() != p.ecosystem.family() {
            continue;
        }
        let swapped = p.purl.replacen(
            &format!("/{}/", ns(p.ecosystem)),
            &format!("/{}/", ns(sibling)),
            1,
        );
        let moved = purl.for_distro(sibling).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(moved.as_str(), swapped, "{what}: as {sibling}");
    }
}

fn wanted(a: &dyn Analyzer) -> Vec<&'static str> {
    let paths: Vec<_> = PATHS.iter().copied().filter(|p| a.wants(p)).collect();
    assert!(!paths.is_empty(), "{} wants none of the known paths", a.name());
    paths
}

#[test]
fn no_files_gives_empty_analysis() {
    for a in all() {
        let got = a.analyze(&[]).unwrap_or_else(|e| panic!("{}: {e}", a.name()));
        assert_eq!(got, super::Analysis::default(), "{}", a.name());
    }
}

#[test]
fn unwanted_files_are_ignored() {
    for a in all() {
        assert!(!a.wants("/usr/bin/bash") && !a.wants("") && !a.wants("/"));
        let got = a
            .analyze(&[LayerFile {
                path: "/usr/bin/bash",
                data: b"\x7fELF",
            }])
            .unwrap();
        assert!(
            got.packages.is_empty() && got.os_release.is_none(),
            "{}",
            a.name()
        );
    }
}

#[test]
fn garbage_never_panics() {
    let inputs = garbage();
    for a in all() {
        for path in wanted(a.as_ref()) {
            for (what, data) in &inputs {
                check(a.as_ref(), path, what, data);
            }
        }
    }
}

#[test]
fn truncated_fixtures_never_panic() {
    for (what, data) in fixtures() {
        // Every prefix of files up to 1,500 bytes; about 1,500 evenly
        // spaced prefixes (plus the edges) of larger ones.
        let step = (data.len() / 1500).max(1);
        let mut lens: Vec<usize> = (0..=data.len()).step_by(step).collect();
        lens.extend([data.len().saturating_sub(1), 99, 100, 101, 4095, 4096, 4097]);
        lens.retain(|n| *n <= data.len());
        for a in all() {
            for path in wanted(a.as_ref()) {
                for n in &lens {
                    check(a.as_ref(), path, &format!("{what} cut at {n}"), &data[..*n]);
                }
            }
        }
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for (what, data) in fixtures() {
        for round in 0..150 {
            let mut d = data.clone();
            for _ in 0..1 + round % 8 {
                let i = (rng.next() as usize) % d.len();
                d[i] = rng.next() as u8;
            }
            for a in all() {
                for path in wanted(a.as_ref()) {
                    check(a.as_ref(), path, &format!("{what} mutation {round}"), &d);
                }
            }
        }
    }
}

#[test]
fn many_files_at_once() {
    // The layer reader hands every wanted file of a layer in one call.
    let fx = fixtures();
    let files: Vec<LayerFile<'_>> = PATHS
        .iter()
        .zip(fx.iter().cycle())
        .map(|(path, (_, data))| LayerFile { path, data })
        .collect();
    for a in all() {
        let _ = a.analyze(&files);
    }
}
