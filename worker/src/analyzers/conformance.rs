//! Conformance suite run against EVERY analyser in [`super::all`]: empty,
//! garbage (random bytes, huge lines, NULs, invalid UTF-8), truncated and
//! bit-flipped real fixtures, each fed to every path the analyser wants,
//! and — for streaming analysers — streamed to it behind every executable
//! and archive magic it might open on, in small and large chunks.
//! The contract: `Ok` (possibly empty or partial) or `Err`, never a panic,
//! and every package returned is well-formed, its purl canonical.

use std::panic::{AssertUnwindSafe, catch_unwind};

use strata_proto::purl::Purl;
use strata_proto::{Ecosystem, Package};

use super::{Analyzer, EntryHead, HEAD_BYTES, LayerFile, all};
use crate::layer::Limits;

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
        // Only OS packages move between sibling distributions.
        if sibling == p.ecosystem
            || p.ecosystem.family().is_none()
            || sibling.family() != p.ecosystem.family()
        {
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
    assert!(
        !paths.is_empty() || a.streams(),
        "{} wants none of the known paths and streams nothing",
        a.name()
    );
    paths
}

/// Magic numbers a streaming analyser may open a file on: each input is
/// also tried behind each of them.
const MAGICS: &[&[u8]] = &[
    b"",
    b"\x7fELF\x02\x01\x01\0",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"MZ",
    b"PK\x03\x04",
];

/// Streams `data` (behind each magic) to `a` as the walk would, in chunks
/// of `chunk` bytes, and checks what it finds like [`check`] does. A file
/// that starts like a zip is shown at a `.jar` path (archives are opened
/// by name and magic), any other at an executable's.
fn check_stream(a: &dyn Analyzer, what: &str, data: &[u8], chunk: usize) {
    let limits = Limits::default();
    for magic in MAGICS {
        let file = [magic, data].concat();
        let path = if file.starts_with(b"PK\x03\x04") {
            "/usr/share/java/x.jar"
        } else {
            "/usr/bin/x"
        };
        let entry = EntryHead {
            path,
            mode: 0o755,
            size: file.len() as u64,
            head: &file[..file.len().min(HEAD_BYTES)],
            limits: &limits,
        };
        let what = format!("{what} behind {magic:?} in chunks of {chunk}");
        let analysis = catch_unwind(AssertUnwindSafe(|| {
            let mut sink = a.open(&entry)?;
            for piece in file.chunks(chunk) {
                if !sink.write(piece) {
                    break;
                }
            }
            Some(sink.finish(true))
        }))
        .unwrap_or_else(|_| panic!("{} panicked on {what}", a.name()));
        let Some(analysis) = analysis else { continue };
        for p in &analysis.packages {
            assert!(
                !p.name.is_empty() && !p.version.is_empty(),
                "{} on {what}: {p:?}",
                a.name()
            );
            assert!(p.path.starts_with(path), "{} on {what}: {}", a.name(), p.path);
            assert!(p.layer.is_none());
            check_purl(p, &format!("{} on {what}", a.name()));
        }
        assert!(analysis.warnings.len() <= super::common::MAX_WARNINGS + 1);
    }
}

/// What a Go 1.18+ toolchain writes into a binary (see `golang/buildinfo.rs`),
/// behind an ELF head: streamed, truncated and mutated like the databases.
fn go_binary() -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
    b.resize(4096, 0x90);
    b.extend_from_slice(b"\xff Go buildinf:\x08\x02");
    b.resize(4096 + 32, 0);
    b.push(8);
    b.extend_from_slice(b"go1.19.8");
    let mut info = vec![
        0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
    ];
    info.extend_from_slice(
        b"path\texample.com/app\nmod\texample.com/app\tv1.2.3\t\ndep\tgolang.org/x/net\tv0.1.0\th1:x=\n=>\tgolang.org/x/net\tv0.2.0\th1:y=\n",
    );
    info.extend_from_slice(&[
        0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
    ]);
    b.push(info.len() as u8);
    b.extend_from_slice(&info);
    b.resize(b.len() + 8192, 0xcc);
    b
}

/// A WAR as Maven and Spring Boot write them (see `java/`): a manifest,
/// `pom.properties`, class files, and a nested jar whose entries carry
/// their sizes in data descriptors; streamed, truncated and mutated like
/// the Go binary.
fn jar() -> Vec<u8> {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};
    let options = |m| SimpleFileOptions::default().compression_method(m);
    let mut inner = ZipWriter::new_stream(Vec::new());
    inner
        .start_file("META-INF/MANIFEST.MF", options(CompressionMethod::Deflated))
        .unwrap();
    inner
        .write_all(b"Manifest-Version: 1.0\r\nImplementation-Version: 1.2\r\n\r\n")
        .unwrap();
    inner
        .start_file("org/x/A.class", options(CompressionMethod::Deflated))
        .unwrap();
    inner.write_all(&[0xca; 300]).unwrap();
    inner
        .start_file(
            "META-INF/maven/org.x/lib/pom.properties",
            options(CompressionMethod::Deflated),
        )
        .unwrap();
    inner
        .write_all(b"groupId=org.x\nartifactId=lib\nversion=1.2\n")
        .unwrap();
    let inner = inner.finish().unwrap().into_inner();
    let mut outer = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    outer
        .start_file("META-INF/MANIFEST.MF", options(CompressionMethod::Deflated))
        .unwrap();
    outer
        .write_all(b"Manifest-Version: 1.0\nBundle-SymbolicName: org.x.app\nBundle-Version: 3\n")
        .unwrap();
    outer
        .start_file("WEB-INF/lib/lib-1.2.jar", options(CompressionMethod::Stored))
        .unwrap();
    outer.write_all(&inner).unwrap();
    outer
        .start_file("WEB-INF/lib/lib2-1.2.jar", options(CompressionMethod::Deflated))
        .unwrap();
    outer.write_all(&inner).unwrap();
    outer
        .start_file(
            "META-INF/maven/org.x/app/pom.properties",
            options(CompressionMethod::Stored),
        )
        .unwrap();
    outer
        .write_all(b"groupId=org.x\nartifactId=app\nversion=3\n")
        .unwrap();
    outer.finish().unwrap().into_inner()
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
        assert!(
            !a.wants("/usr/bin/bash") && !a.wants("") && !a.wants("/"),
            "{}",
            a.name()
        );
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
        if a.streams() {
            for (what, data) in &inputs {
                check_stream(a.as_ref(), what, data, 65_536);
                if data.len() <= 4096 {
                    check_stream(a.as_ref(), what, data, 1);
                }
            }
        }
    }
}

/// What `cargo auditable` embeds in a binary: zlib-compressed JSON.
fn auditable_binary() -> Vec<u8> {
    use std::io::Write as _;
    let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
    b.resize(4096, 0x90);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(
        br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"smallvec","version":"1.6.0","source":"crates.io"}]}"#,
    )
    .unwrap();
    b.extend_from_slice(&z.finish().unwrap());
    b.resize(b.len() + 8192, 0xcc);
    b
}

#[test]
fn streamed_binaries_cut_and_mutated_never_panic() {
    let mut rng = Rng(0x0bad_5eed_0000_0001);
    // Each fixture, and where mutations mostly land: the Go build
    // information; anywhere in the jar (headers are everywhere).
    let jar = jar();
    let auditable = auditable_binary();
    let fixtures = [
        ("go binary", go_binary(), 4096..4296),
        (
            "auditable binary",
            auditable.clone(),
            4096..auditable.len() - 8192,
        ),
        ("jar", jar.clone(), 0..jar.len()),
    ];
    for a in all().into_iter().filter(|a| a.streams()) {
        for (name, binary, hot) in &fixtures {
            for n in (0..=binary.len()).step_by(31) {
                check_stream(a.as_ref(), &format!("{name} cut at {n}"), &binary[..n], 4096);
            }
            for round in 0..300 {
                let mut d = binary.clone();
                for _ in 0..1 + round % 8 {
                    let i = if round % 3 == 0 {
                        (rng.next() as usize) % d.len()
                    } else {
                        hot.start + (rng.next() as usize) % hot.len()
                    };
                    d[i] = rng.next() as u8;
                }
                check_stream(
                    a.as_ref(),
                    &format!("{name} mutation {round}"),
                    &d,
                    1 + round % 300,
                );
            }
        }
    }
}

#[test]
fn jar_fixture_is_read() {
    let a = all().into_iter().find(|a| a.name() == "java-archive").unwrap();
    let limits = Limits::default();
    let file = jar();
    let entry = EntryHead {
        path: "/srv/app.war",
        mode: 0o644,
        size: file.len() as u64,
        head: &file[..file.len().min(HEAD_BYTES)],
        limits: &limits,
    };
    let mut sink = a.open(&entry).expect("a jar");
    for piece in file.chunks(100) {
        if !sink.write(piece) {
            break;
        }
    }
    let got: Vec<_> = sink
        .finish(true)
        .packages
        .into_iter()
        .map(|p| (p.path, p.name))
        .collect();
    assert_eq!(
        got,
        [
            ("/srv/app.war".to_owned(), "org.x:app".to_owned()),
            (
                "/srv/app.war!/WEB-INF/lib/lib-1.2.jar".to_owned(),
                "org.x:lib".to_owned()
            ),
            (
                "/srv/app.war!/WEB-INF/lib/lib2-1.2.jar".to_owned(),
                "org.x:lib".to_owned()
            ),
        ]
    );
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
            if a.streams() {
                for n in lens.iter().step_by(10) {
                    check_stream(a.as_ref(), &format!("{what} cut at {n}"), &data[..*n], 4096);
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
                if a.streams() && round % 10 == 0 {
                    check_stream(a.as_ref(), &format!("{what} mutation {round}"), &d, 4096);
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
