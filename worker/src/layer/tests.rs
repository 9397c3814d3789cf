//! Layers built in memory (tar + gzip / zstd / none) run through the reader
//! with small test-only analysers.

use std::io::Write;
use std::sync::{Arc, Mutex};

use sha2::Digest as _;
use strata_proto::{Digest, Ecosystem, OsRelease, Package};

use super::*;
use crate::analyzers::{Analysis, AnalyzeError, Analyzer, LayerFile};

// ---- test analysers --------------------------------------------------------

type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Wants every file under `prefix`; yields one package per file, named by
/// the file's first line, and records what it was handed.
struct Probe {
    name: &'static str,
    prefix: &'static str,
    seen: Seen,
}

impl Analyzer for Probe {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        1
    }
    fn wants(&self, path: &str) -> bool {
        path.starts_with(self.prefix)
    }
    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let mut seen = self.seen.lock().map_err(|_| AnalyzeError {
            analyzer: self.name,
            path: String::new(),
            reason: "poisoned".into(),
        })?;
        let mut out = Analysis::default();
        for f in files {
            seen.push((f.path.to_owned(), f.data.to_vec()));
            let name = String::from_utf8_lossy(f.data)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            out.packages.push(pkg(&name, f.path));
            if f.path == "/etc/os-release" {
                out.os_release = Some(OsRelease {
                    id: name,
                    path: f.path.to_owned(),
                    ..Default::default()
                });
            }
        }
        Ok(out)
    }
}

/// Fails (or panics) on whatever it is given.
struct Broken {
    panics: bool,
}

impl Analyzer for Broken {
    fn name(&self) -> &'static str {
        if self.panics { "panicky" } else { "broken" }
    }
    fn version(&self) -> u32 {
        1
    }
    fn wants(&self, path: &str) -> bool {
        path == "/broken"
    }
    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        if self.panics {
            panic!("test analyser panics on purpose");
        }
        Err(AnalyzeError {
            analyzer: "broken",
            path: files.first().map(|f| f.path.to_owned()).unwrap_or_default(),
            reason: "cannot parse".into(),
        })
    }
}

fn pkg(name: &str, path: &str) -> Package {
    Package {
        ecosystem: Ecosystem::Debian,
        name: name.into(),
        version: "1".into(),
        source_name: None,
        source_version: None,
        arch: None,
        purl: format!("pkg:deb/debian/{name}@1"),
        path: path.into(),
        layer: None,
        evidence: Default::default(),
    }
}

/// A `Probe` on `/var/lib/dpkg/` and one on `/etc/`, with their records.
fn probes() -> (Vec<Box<dyn Analyzer>>, Seen, Seen) {
    let dpkg = Seen::default();
    let etc = Seen::default();
    let analyzers: Vec<Box<dyn Analyzer>> = vec![
        Box::new(Probe {
            name: "dpkgprobe",
            prefix: "/var/lib/dpkg/",
            seen: Arc::clone(&dpkg),
        }),
        Box::new(Probe {
            name: "etcprobe",
            prefix: "/etc/",
            seen: Arc::clone(&etc),
        }),
    ];
    (analyzers, dpkg, etc)
}

fn seen_paths(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
}

// ---- building layers -------------------------------------------------------

/// A tar written entry by entry with raw names (the `tar` crate's own path
/// setters refuse `..`, which these tests need).
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn raw(&mut self, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        if name.len() > 100 {
            // GNU long name, written by the crate.
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            self.b.append_data(&mut h, name, data).unwrap();
            return self;
        }
        self.raw(name.as_bytes(), tar::EntryType::Regular, b"", data)
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), tar::EntryType::Directory, b"", b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), tar::EntryType::Symlink, target.as_bytes(), b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), tar::EntryType::Link, target.as_bytes(), b"")
    }

    fn tar(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn digest(data: &[u8]) -> Digest {
    Digest::sha256_from_hex(&hex::encode(sha2::Sha256::digest(data))).unwrap()
}

fn run(
    blob: &[u8],
    media_type: Option<&str>,
    analyzers: &[Box<dyn Analyzer>],
    limits: &Limits,
) -> LayerResult {
    analyze_layer(blob, &digest(blob), media_type, analyzers, limits)
}

type LayerResult = Result<LayerAnalysis, LayerError>;

fn sample_tar() -> Vec<u8> {
    Layer::new()
        .dir("./")
        .dir("./etc/")
        .file("./etc/os-release", b"debian\n")
        .file("./etc/hostname", b"box\n")
        .dir("./var/lib/dpkg/")
        .file("./var/lib/dpkg/status", b"libc6\nmore")
        .file("var//lib/./dpkg/status.d/base", b"base-files\n")
        .file("./usr/bin/ls", &[0x7f, b'E', b'L', b'F', 0, 1, 2, 3])
        .tar()
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

// ---- capture and dispatch --------------------------------------------------

#[test]
fn captures_wanted_files_from_gzip_zstd_and_plain_layers() {
    let tar = sample_tar();
    for (blob, mt) in [
        (gzip(&tar), Some(GZ)),
        (zstd(&tar), Some(ZST)),
        (tar.clone(), Some(TAR)),
        (gzip(&tar), None),
    ] {
        let (analyzers, dpkg, etc) = probes();
        let out = run(&blob, mt, &analyzers, &Limits::default()).unwrap();
        assert_eq!(
            seen_paths(&dpkg),
            ["/var/lib/dpkg/status", "/var/lib/dpkg/status.d/base"],
            "{mt:?}"
        );
        assert_eq!(dpkg.lock().unwrap()[0].1, b"libc6\nmore");
        assert_eq!(seen_paths(&etc), ["/etc/os-release", "/etc/hostname"]);
        let inv = &out.inventory;
        assert_eq!(inv.digest.as_ref(), Some(&digest(&blob)));
        assert_eq!(inv.analyzer_set_version, "dpkgprobe1-etcprobe1");
        assert_eq!(
            inv.analyzed_files,
            [
                "/etc/hostname",
                "/etc/os-release",
                "/var/lib/dpkg/status",
                "/var/lib/dpkg/status.d/base"
            ]
        );
        let names: Vec<&str> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libc6", "base-files", "debian", "box"]);
        assert!(
            inv.packages
                .iter()
                .all(|p| p.layer.as_ref() == Some(&digest(&blob)))
        );
        assert_eq!(inv.os_release.as_ref().map(|o| o.id.as_str()), Some("debian"));
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(out.entries, 8);
        assert_eq!(out.captured_bytes, 10 + 11 + 7 + 4);
    }
}

#[test]
fn multi_member_gzip_is_read_whole() {
    let tar = sample_tar();
    let (a, b) = tar.split_at(700);
    let blob = [gzip(a), gzip(b)].concat();
    let (analyzers, dpkg, _) = probes();
    run(&blob, Some(GZ), &analyzers, &Limits::default()).unwrap();
    assert_eq!(seen_paths(&dpkg).len(), 2);
}

#[test]
fn magic_bytes_win_over_a_wrong_media_type() {
    let blob = gzip(&sample_tar());
    let (analyzers, dpkg, _) = probes();
    let out = run(&blob, Some(TAR), &analyzers, &Limits::default()).unwrap();
    assert_eq!(seen_paths(&dpkg).len(), 2);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0]
            .message
            .contains("says uncompressed tar but the blob is gzip")
    );
}

#[test]
fn encrypted_layers_are_refused() {
    let blob = gzip(&sample_tar());
    let err = run(
        &blob,
        Some("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
        &[],
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::MediaType { .. }), "{err}");
}

#[test]
fn analysers_without_files_are_not_called_and_empty_set_still_reads() {
    let blob = gzip(&sample_tar());
    let out = run(&blob, Some(GZ), &[], &Limits::default()).unwrap();
    assert!(out.inventory.packages.is_empty());
    assert!(out.inventory.analyzed_files.is_empty());
    assert_eq!(out.inventory.analyzer_set_version, "none");
}

#[test]
fn whiteouts_and_opaque_dirs_are_recorded_not_handed_to_analysers() {
    let tar = Layer::new()
        .file("./etc/.wh.hostname", b"")
        .file("./var/lib/dpkg/.wh.status", b"")
        .file("./var/lib/dpkg/status.d/.wh..wh..opq", b"")
        .file("./.wh.opt", b"")
        .file("./.wh..wh.plnk", b"")
        .file("./var/lib/dpkg/status", b"new\n")
        .tar();
    let (analyzers, dpkg, etc) = probes();
    let out = run(&gzip(&tar), Some(GZ), &analyzers, &Limits::default()).unwrap();
    let inv = &out.inventory;
    assert_eq!(inv.whiteouts, ["/etc/hostname", "/opt", "/var/lib/dpkg/status"]);
    assert_eq!(inv.opaque_dirs, ["/var/lib/dpkg/status.d"]);
    assert_eq!(seen_paths(&dpkg), ["/var/lib/dpkg/status"]);
    assert!(seen_paths(&etc).is_empty());
    assert_eq!(inv.analyzed_files, ["/var/lib/dpkg/status"]);
}

#[test]
fn hard_links_share_a_captured_target_and_warn_otherwise() {
    let tar = Layer::new()
        .file("./var/lib/dpkg/status", b"libc6\n")
        .hardlink("./etc/status-copy", "./var/lib/dpkg/status")
        // A link to nothing earlier in this layer.
        .hardlink("./etc/motd", "usr/share/motd")
        .tar();
    let (analyzers, _, etc) = probes();
    let out = run(&tar, None, &analyzers, &Limits::default()).unwrap();
    assert_eq!(
        etc.lock().unwrap().as_slice(),
        [("/etc/status-copy".to_owned(), b"libc6\n".to_vec())]
    );
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].message.contains("/etc/motd -> /usr/share/motd"),
        "{}",
        out.warnings[0]
    );
    // The link costs no extra captured bytes.
    assert_eq!(out.captured_bytes, 6);
}

/// The hostile-input report of issue 16: `var/lib/dpkg/status` a hard link
/// to `status-old`, which came first and no analyser reads. Its bytes have
/// gone past: the layer is refused, naming both, where it used to be
/// reported with no packages ("No vulnerabilities found").
#[test]
fn a_wanted_hard_link_to_bytes_not_kept_fails_the_layer() {
    let tar = Layer::new()
        .file("./var/lib/dpkg/status-old", b"Package: libc6\n")
        .hardlink("./var/lib/dpkg/status", "./var/lib/dpkg/status-old")
        .tar();
    let analyzers = crate::analyzers::all();
    let err = run(&tar, None, &analyzers, &Limits::default()).unwrap_err();
    assert!(matches!(err, LayerError::UnkeptLinkTarget { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("\"/var/lib/dpkg/status\"") && message.contains("/var/lib/dpkg/status-old"),
        "{message}"
    );
    // The same link to a file that an analyser keeps is read through.
    let (probes, dpkg, _) = probes();
    run(&tar, None, &probes, &Limits::default()).unwrap();
    assert_eq!(
        seen_paths(&dpkg),
        ["/var/lib/dpkg/status-old", "/var/lib/dpkg/status"]
    );
}

/// The same layer read again keeping the link's target: the link gets its
/// bytes (the target itself still goes to no analyser), one more read of
/// the blob, as `analyze_layer_reopening` does on the error above.
#[test]
fn a_second_pass_keeping_the_target_resolves_the_link() {
    let status = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n\n";
    let tar = Layer::new()
        .file("./var/lib/dpkg/status-old", status)
        .hardlink("./var/lib/dpkg/status", "./var/lib/dpkg/status-old")
        .tar();
    let analyzers = crate::analyzers::all();
    let keep = std::collections::BTreeSet::from(["/var/lib/dpkg/status-old".to_owned()]);
    let out = crate::layer::analyze_layer_keeping(
        &tar[..],
        &digest(&tar),
        None,
        &analyzers,
        &Limits::default(),
        &keep,
    )
    .unwrap();
    let names: Vec<&str> = out.inventory.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["libc6"], "{:?}", out.inventory);
    assert_eq!(out.inventory.packages[0].path, "/var/lib/dpkg/status");
}

#[tokio::test]
async fn reopening_reads_the_layer_again_for_each_unkept_target_within_a_bound() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let status = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n\n";
    let tar = Layer::new()
        .file("./var/lib/dpkg/status-old", status)
        .hardlink("./var/lib/dpkg/status", "./var/lib/dpkg/status-old")
        .tar();
    let analyzers = std::sync::Arc::new(crate::analyzers::all());
    let opened = AtomicUsize::new(0);
    let open = || {
        opened.fetch_add(1, Ordering::SeqCst);
        let reader: crate::source::LayerReader = Box::new(std::io::Cursor::new(tar.clone()));
        std::future::ready(Ok::<_, std::convert::Infallible>(reader))
    };
    let d = digest(&tar);
    let out = crate::layer::analyze_layer_reopening(
        open,
        &d,
        "application/vnd.oci.image.layer.v1.tar",
        analyzers.clone(),
        Limits::default(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.inventory.packages.len(), 1);
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "one more read, for the one target"
    );

    // More unkept targets than the bound: the error, after the bound's reads.
    let mut layer = Layer::new();
    let n = crate::layer::MAX_LINK_TARGET_PASSES + 1;
    for i in 0..n {
        layer.file(&format!("./srv/{i}"), b"x");
    }
    // Each link is wanted (a dpkg status.d entry), each target distinct.
    for i in 0..n {
        layer.hardlink(&format!("./var/lib/dpkg/status.d/p{i}"), &format!("./srv/{i}"));
    }
    let tar = layer.tar();
    let d = digest(&tar);
    let opened = AtomicUsize::new(0);
    let open = || {
        opened.fetch_add(1, Ordering::SeqCst);
        let reader: crate::source::LayerReader = Box::new(std::io::Cursor::new(tar.clone()));
        std::future::ready(Ok::<_, std::convert::Infallible>(reader))
    };
    let err = crate::layer::analyze_layer_reopening(
        open,
        &d,
        "application/vnd.oci.image.layer.v1.tar",
        analyzers,
        Limits::default(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, LayerError::UnkeptLinkTarget { .. }), "{err}");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        crate::layer::MAX_LINK_TARGET_PASSES + 1
    );
}

#[test]
fn later_entries_replace_earlier_ones_at_the_same_path() {
    let tar = Layer::new()
        .file("./var/lib/dpkg/status", b"old\n")
        .file("./var/lib/dpkg/status", b"new\n")
        .file("./etc/os-release", b"debian\n")
        .symlink("./etc/os-release", "../usr/lib/os-release")
        .tar();
    let (analyzers, dpkg, etc) = probes();
    let out = run(&tar, None, &analyzers, &Limits::default()).unwrap();
    assert_eq!(
        dpkg.lock().unwrap().as_slice(),
        [("/var/lib/dpkg/status".to_owned(), b"new\n".to_vec())]
    );
    assert!(
        seen_paths(&etc).is_empty(),
        "a symlink replaced the file and is not followed"
    );
    assert_eq!(out.inventory.os_release, None);
}

#[test]
fn analyser_errors_and_panics_are_warnings_not_failures() {
    let tar = Layer::new()
        .file("./broken", b"x")
        .file("./var/lib/dpkg/status", b"libc6\n")
        .tar();
    let (mut analyzers, _, _) = probes();
    analyzers.push(Box::new(Broken { panics: false }));
    analyzers.push(Box::new(Broken { panics: true }));
    let out = run(&tar, None, &analyzers, &Limits::default()).unwrap();
    assert_eq!(out.inventory.packages.len(), 1);
    let warnings: Vec<String> = out.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "broken: broken: /broken: cannot parse",
            "panicky: analyser panicked"
        ]
    );
    assert!(out.inventory.analyzed_files.contains(&"/broken".to_owned()));
}

// ---- caps -------------------------------------------------------------------

fn limit_of(result: LayerResult) -> (LimitKind, u64) {
    match result {
        Err(LayerError::Limit { which, limit, .. }) => (which, limit),
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn each_cap_fires_with_its_error() {
    let (analyzers, _, _) = probes();
    let big = vec![b'x'; 10_000];
    let tar = Layer::new()
        .file("./var/lib/dpkg/status", &big)
        .file("./var/lib/dpkg/other", &big)
        .file("./usr/bin/x", &big)
        .tar();
    let blob = gzip(&tar);
    let cases = [
        (
            Limits {
                max_entries: 2,
                ..Limits::default()
            },
            LimitKind::Entries,
            2,
        ),
        (
            Limits {
                max_file_bytes: 9_999,
                ..Limits::default()
            },
            LimitKind::FileBytes,
            9_999,
        ),
        (
            Limits {
                max_captured_bytes: 15_000,
                ..Limits::default()
            },
            LimitKind::CapturedBytes,
            15_000,
        ),
        (
            Limits {
                max_uncompressed_bytes: 20_000,
                ..Limits::default()
            },
            LimitKind::UncompressedBytes,
            20_000,
        ),
        (
            Limits {
                max_path_len: 12,
                ..Limits::default()
            },
            LimitKind::PathLength,
            12,
        ),
    ];
    for (limits, which, limit) in cases {
        let err = run(&blob, Some(GZ), &analyzers, &limits).unwrap_err();
        let msg = err.to_string();
        assert_eq!(limit_of(Err(err)).0, which, "{msg}");
        assert!(msg.contains(digest(&blob).as_str()), "{msg}");
        assert!(
            msg.contains(which.config_name()) && msg.contains(&limit.to_string()),
            "{msg}"
        );
    }
    // The same layer within every cap.
    assert!(run(&blob, Some(GZ), &analyzers, &Limits::default()).is_ok());
}

#[test]
fn a_decompression_bomb_stops_at_the_uncompressed_cap() {
    // 16 MiB of zeros in one entry compresses to about 16 KiB.
    let zeros = vec![0u8; 16 << 20];
    let blob = gzip(&Layer::new().file("./bomb", &zeros).tar());
    assert!(blob.len() < 1 << 20);
    let limits = Limits {
        max_uncompressed_bytes: 4 << 20,
        ..Limits::default()
    };
    let (which, limit) = limit_of(run(&blob, Some(GZ), &[], &limits));
    assert_eq!((which, limit), (LimitKind::UncompressedBytes, 4 << 20));
}

#[test]
fn sparse_holes_count_against_the_uncompressed_cap() {
    // A GNU sparse file that is one 64 MiB hole: a few bytes on the wire.
    fn octal(field: &mut [u8; 12], v: u64) {
        field.copy_from_slice(format!("{v:011o}\0").as_bytes());
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(0);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..6].copy_from_slice(b"sparse");
    octal(&mut gnu.realsize, 64 << 20);
    octal(&mut gnu.sparse[0].offset, 64 << 20);
    octal(&mut gnu.sparse[0].numbytes, 0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    assert!(run(&tar, None, &[], &Limits::default()).is_ok());
    let limits = Limits {
        max_uncompressed_bytes: 8 << 20,
        ..Limits::default()
    };
    assert_eq!(
        limit_of(run(&tar, None, &[], &limits)),
        (LimitKind::UncompressedBytes, 8 << 20)
    );
}

#[test]
fn long_names_are_capped_before_they_are_held_in_memory() {
    let long = format!("var/lib/dpkg/{}", "a/".repeat(300));
    let tar = Layer::new().file(&long, b"x").tar();
    let limits = Limits {
        max_path_len: 100,
        ..Limits::default()
    };
    let (which, _) = limit_of(run(&tar, None, &[], &limits));
    assert_eq!(which, LimitKind::PathLength);
    // A GNU long name far past the header budget trips it while the tar
    // crate reads the name (it holds extension headers in memory whole).
    let huge = format!("x/{}", "y".repeat(2 << 20));
    let tar = Layer::new().file(&huge, b"x").tar();
    let (which, limit) = limit_of(run(&tar, None, &[], &limits));
    assert_eq!(
        (which, limit),
        (LimitKind::HeaderBytes, limits.max_header_bytes())
    );
}

// ---- bad input ----------------------------------------------------------------

#[test]
fn digest_mismatch_is_an_error_never_a_result() {
    let blob = gzip(&sample_tar());
    let (analyzers, _, _) = probes();
    let wrong = digest(b"something else");
    let err = analyze_layer(&blob[..], &wrong, Some(GZ), &analyzers, &Limits::default()).unwrap_err();
    match &err {
        LayerError::DigestMismatch {
            expected,
            actual,
            layer,
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, digest(&blob).as_str());
            assert_eq!(layer, wrong.as_str());
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    // sha512 digests are verified too.
    let hex512 = hex::encode(sha2::Sha512::digest(&blob));
    let d512: Digest = format!("sha512:{hex512}").parse().unwrap();
    assert!(analyze_layer(&blob[..], &d512, Some(GZ), &analyzers, &Limits::default()).is_ok());
}

#[test]
fn trailing_bytes_after_the_tar_are_hashed() {
    // A correct tar followed by junk inside the same gzip stream still hashes
    // the whole blob (read to EOF) and succeeds: the tar ended cleanly.
    let mut tar = sample_tar();
    tar.extend_from_slice(&[0u8; 4096]);
    let blob = gzip(&tar);
    assert!(run(&blob, Some(GZ), &[], &Limits::default()).is_ok());
    // Garbage after the gzip member is a decompression error, not ignored.
    let mut junk = gzip(&sample_tar());
    junk.extend_from_slice(b"not gzip at all");
    let err = run(&junk, Some(GZ), &[], &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Decompress {
                compression: Compression::Gzip,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn truncated_gzip_and_zstd_are_decompression_errors() {
    let tar = sample_tar();
    for (full, compression) in [(gzip(&tar), Compression::Gzip), (zstd(&tar), Compression::Zstd)] {
        for cut in [full.len() - 1, full.len() - 8, full.len() / 2, 10] {
            let err = run(&full[..cut], None, &[], &Limits::default()).unwrap_err();
            assert!(
                matches!(&err, LayerError::Decompress { compression: c, .. } if *c == compression),
                "{compression} cut at {cut}: {err}"
            );
        }
    }
}

#[test]
fn truncated_tars_are_tar_errors() {
    let tar = sample_tar();
    // Mid-entry data, mid-header, and exactly at an entry boundary (no
    // end-of-archive block).
    let boundary = tar.len() - 1024 - 512 - 512;
    for cut in [tar.len() - 1024 - 300, 512 + 100, boundary] {
        for blob in [tar[..cut].to_vec(), gzip(&tar[..cut])] {
            let err = run(&blob, None, &[], &Limits::default()).unwrap_err();
            assert!(matches!(err, LayerError::Tar { .. }), "cut at {cut}: {err}");
        }
    }
}

#[test]
fn garbage_and_empty_blobs_are_errors() {
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for blob in [
        garbage.clone(),
        Vec::new(),
        b"\x1f\x8bnot really gzip".to_vec(),
        b"(\xb5/\xfdjunk".to_vec(),
    ] {
        let (analyzers, _, _) = probes();
        let err = run(&blob, None, &analyzers, &Limits::default()).unwrap_err();
        assert!(
            matches!(err, LayerError::Tar { .. } | LayerError::Decompress { .. }),
            "{err}"
        );
    }
}

#[test]
fn path_traversal_names_fail_the_layer() {
    for name in [
        &b"../etc/passwd"[..],
        b"./a/../../x",
        b"/../../var/lib/dpkg/status",
    ] {
        let tar = Layer::new()
            .file("./ok", b"")
            .raw(name, tar::EntryType::Regular, b"", b"x")
            .tar();
        let (analyzers, _, _) = probes();
        let err = run(&tar, None, &analyzers, &Limits::default()).unwrap_err();
        assert!(matches!(err, LayerError::PathTraversal { .. }), "{err}");
    }
    // A hard link pointing out of the root is refused the same way.
    let tar = Layer::new()
        .file("./a", b"x")
        .hardlink("./etc/b", "../../a")
        .tar();
    let err = run(&tar, None, &[], &Limits::default()).unwrap_err();
    assert!(matches!(err, LayerError::PathTraversal { .. }), "{err}");
    // Within the root, `..` is resolved.
    let tar = Layer::new()
        .file("./var/tmp/../lib/dpkg/status", b"libc6\n")
        .tar();
    let (analyzers, dpkg, _) = probes();
    run(&tar, None, &analyzers, &Limits::default()).unwrap();
    assert_eq!(seen_paths(&dpkg), ["/var/lib/dpkg/status"]);
}

#[test]
fn non_utf8_names_are_skipped_with_a_warning() {
    let tar = Layer::new()
        .raw(b"./var/lib/dpkg/\xff", tar::EntryType::Regular, b"", b"x")
        .tar();
    let (analyzers, dpkg, _) = probes();
    let out = run(&tar, None, &analyzers, &Limits::default()).unwrap();
    assert!(seen_paths(&dpkg).is_empty());
    assert_eq!(out.warnings.len(), 1);
}

/// Env var that makes [`disk_child`] do its work (in a child process).
const CHILD_ENV: &str = "STRATA_LAYER_DISK_CHILD";

#[test]
fn nothing_is_written_to_disk() {
    let cwd = tempfile::tempdir().unwrap();
    let canary = format!("strata-layer-canary-{}", std::process::id());
    // Re-run this test binary, only `disk_child`, with an empty cwd.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "layer::tests::disk_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &canary)
        .current_dir(cwd.path())
        .status()
        .unwrap();
    assert!(status.success());
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "cwd not empty: {left:?}");
    assert!(!std::path::Path::new("/tmp").join(&canary).exists());
}

#[test]
fn disk_child() {
    let Ok(canary) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rel = format!("tmp/{canary}/file");
    let tar = Layer::new()
        .dir(&format!("tmp/{canary}/"))
        .file(&rel, b"data")
        .file(&format!("/tmp/{canary}/abs"), b"data")
        .file("./var/lib/dpkg/status", b"libc6\n")
        .file("./usr/bin/big", &vec![7u8; 1 << 20])
        .tar();
    for blob in [tar.clone(), gzip(&tar), zstd(&tar)] {
        let (analyzers, dpkg, _) = probes();
        run(&blob, None, &analyzers, &Limits::default()).unwrap();
        assert_eq!(seen_paths(&dpkg).len(), 1);
    }
}

// ---- analyze_dir ------------------------------------------------------------

#[test]
fn analyze_dir_walks_a_root_without_leaving_it() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside\n").unwrap();
    std::fs::create_dir(outside.path().join("dpkg")).unwrap();
    std::fs::write(outside.path().join("dpkg/status"), b"outside-dir\n").unwrap();

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("var/lib/dpkg/status.d")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/status"), b"libc6\n").unwrap();
    std::fs::write(r.join("var/lib/dpkg/status.d/base"), b"base-files\n").unwrap();
    std::fs::write(r.join("var/lib/dpkg/.wh.gone"), b"").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        r.join("var/lib/dpkg/status.d/evil"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("dpkg"), r.join("var/lib/dpkg/linked")).unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", r.join("etc/os-release")).unwrap();

    let (analyzers, dpkg, etc) = probes();
    let out = analyze_dir(r, &analyzers, &Limits::default()).unwrap();
    assert_eq!(
        seen_paths(&dpkg),
        ["/var/lib/dpkg/status", "/var/lib/dpkg/status.d/base"]
    );
    assert!(seen_paths(&etc).is_empty());
    let inv = &out.inventory;
    assert_eq!(inv.digest, None);
    assert!(inv.packages.iter().all(|p| p.layer.is_none()));
    assert_eq!(inv.whiteouts, ["/var/lib/dpkg/gone"]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    let limits = Limits {
        max_file_bytes: 3,
        ..Limits::default()
    };
    let err = analyze_dir(r, &analyzers, &limits).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Limit {
                which: LimitKind::FileBytes,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("dir:{}", r.display())), "{err}");
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let err = analyze_dir(r, &analyzers, &limits).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Limit {
                which: LimitKind::Entries,
                ..
            }
        ),
        "{err}"
    );

    let err = analyze_dir(&r.join("missing"), &analyzers, &Limits::default()).unwrap_err();
    assert!(matches!(err, LayerError::Io { .. }), "{err}");
}

// ---- streaming analysers ---------------------------------------------------

/// Streams files whose head starts with `STREAM`: counts their bytes (up to
/// `stop_after`, then stops reading) and yields one package named
/// `<bytes>` at the file's path. `PANIC` in a file makes it panic.
struct Counter {
    stop_after: Option<u64>,
}

struct Count {
    path: String,
    bytes: u64,
    stop_after: Option<u64>,
    panic: bool,
}

impl Analyzer for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn version(&self) -> u32 {
        1
    }
    fn streams(&self) -> bool {
        true
    }
    fn open(&self, entry: &crate::analyzers::EntryHead<'_>) -> Option<Box<dyn crate::analyzers::EntrySink>> {
        assert!(entry.head.len() as u64 == entry.size.min(crate::analyzers::HEAD_BYTES as u64));
        entry.head.starts_with(b"STREAM").then(|| {
            Box::new(Count {
                path: entry.path.to_owned(),
                bytes: 0,
                stop_after: self.stop_after,
                panic: entry.head.windows(5).any(|w| w == b"PANIC"),
            }) as Box<dyn crate::analyzers::EntrySink>
        })
    }
}

impl crate::analyzers::EntrySink for Count {
    fn write(&mut self, chunk: &[u8]) -> bool {
        if self.panic {
            panic!("test sink panics on purpose");
        }
        self.bytes += chunk.len() as u64;
        self.stop_after.is_none_or(|n| self.bytes < n)
    }
    fn finish(self: Box<Self>, complete: bool) -> Analysis {
        assert!(complete);
        Analysis {
            packages: vec![pkg(&self.bytes.to_string(), &self.path)],
            ..Analysis::default()
        }
    }
}

fn streamed(out: &LayerAnalysis) -> Vec<(String, String)> {
    out.inventory
        .packages
        .iter()
        .map(|p| (p.path.clone(), p.name.clone()))
        .collect()
}

#[test]
fn streaming_analysers_read_files_by_content_in_one_pass() {
    let mut big = b"STREAM".to_vec();
    big.resize(300_000, b'x');
    let tar = Layer::new()
        .file("./usr/bin/big", &big)
        .file("./usr/bin/small", b"STREAM!")
        .file("./usr/bin/other", b"#!/bin/sh\n")
        .hardlink("./usr/local/bin/big", "./usr/bin/big")
        .file("./usr/bin/gone", b"STREAM gone")
        .file("./usr/bin/gone", b"replaced by a script")
        .file("./usr/bin/boom", b"STREAM PANIC")
        .tar();
    let analyzers: Vec<Box<dyn Analyzer>> = vec![Box::new(Counter { stop_after: None })];
    for blob in [tar.clone(), gzip(&tar), zstd(&tar)] {
        let out = run(&blob, None, &analyzers, &Limits::default()).unwrap();
        assert_eq!(
            streamed(&out),
            [
                ("/usr/bin/big".to_owned(), "300000".to_owned()),
                ("/usr/bin/small".to_owned(), "7".to_owned()),
                ("/usr/local/bin/big".to_owned(), "300000".to_owned()),
            ]
        );
        assert_eq!(out.captured_bytes, 0, "streamed files are never captured");
        assert!(out.inventory.analyzed_files.contains(&"/usr/bin/big".to_owned()));
        assert!(
            !out.inventory
                .analyzed_files
                .contains(&"/usr/bin/other".to_owned())
        );
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        assert!(
            out.warnings[0].message.contains("/usr/bin/boom"),
            "{}",
            out.warnings[0]
        );
    }
}

#[test]
fn a_sink_that_stops_early_lets_the_rest_stream_past() {
    let mut big = b"STREAM".to_vec();
    big.resize(1_000_000, b'x');
    let tar = Layer::new()
        .file("./a", &big)
        .file("./var/lib/dpkg/status", b"libc6\n")
        .tar();
    let mut analyzers: Vec<Box<dyn Analyzer>> = vec![Box::new(Counter {
        stop_after: Some(1000),
    })];
    let (probes, dpkg, _) = probes();
    analyzers.extend(probes);
    let out = run(&gzip(&tar), None, &analyzers, &Limits::default()).unwrap();
    let bytes: u64 = streamed(&out)
        .iter()
        .find(|(p, _)| p == "/a")
        .map(|(_, n)| n.parse().unwrap())
        .unwrap();
    assert!((1000..=1000 + 65_536).contains(&bytes), "{bytes}");
    assert_eq!(seen_paths(&dpkg), ["/var/lib/dpkg/status"]);
}

#[test]
fn a_file_wanted_whole_and_streamed_is_read_once_for_both() {
    let tar = Layer::new()
        .file("./var/lib/dpkg/status", b"STREAM libc6\n")
        .tar();
    let mut analyzers: Vec<Box<dyn Analyzer>> = vec![Box::new(Counter { stop_after: None })];
    let (probes, dpkg, _) = probes();
    analyzers.extend(probes);
    let out = run(&tar, None, &analyzers, &Limits::default()).unwrap();
    assert_eq!(seen_paths(&dpkg), ["/var/lib/dpkg/status"]);
    let names: Vec<String> = out.inventory.packages.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["STREAM libc6", "13"]);
}

/// Wants `/data/*` whole, but nothing over 8 bytes.
struct Small;

impl Analyzer for Small {
    fn name(&self) -> &'static str {
        "small"
    }
    fn version(&self) -> u32 {
        1
    }
    fn wants(&self, path: &str) -> bool {
        path.starts_with("/data/")
    }
    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        Ok(Analysis {
            packages: files.iter().map(|f| pkg("small", f.path)).collect(),
            ..Analysis::default()
        })
    }
    fn max_file_bytes(&self, _path: &str) -> u64 {
        8
    }
}

#[test]
fn a_file_over_an_analysers_own_cap_is_skipped_with_a_warning() {
    let tar = Layer::new()
        .file("./data/ok", b"12345678")
        .file("./data/huge", b"123456789")
        .tar();
    let analyzers: Vec<Box<dyn Analyzer>> = vec![Box::new(Small)];
    let out = run(&tar, None, &analyzers, &Limits::default()).unwrap();
    assert_eq!(streamed(&out), [("/data/ok".to_owned(), "small".to_owned())]);
    assert_eq!(out.captured_bytes, 8);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert_eq!(out.warnings[0].analyzer, Some("small"));
    assert!(
        out.warnings[0].message.contains("/data/huge: 9 bytes"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn analyze_dir_streams_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
    let mut big = b"STREAM".to_vec();
    big.resize(200_000, b'x');
    std::fs::write(dir.path().join("usr/bin/big"), &big).unwrap();
    std::fs::write(dir.path().join("usr/bin/sh"), b"not a stream").unwrap();
    let analyzers: Vec<Box<dyn Analyzer>> = vec![Box::new(Counter { stop_after: None })];
    let out = analyze_dir(dir.path(), &analyzers, &Limits::default()).unwrap();
    assert_eq!(streamed(&out), [("/usr/bin/big".to_owned(), "200000".to_owned())]);
}
