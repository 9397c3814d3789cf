//! Agreement with the real tools: walks EVERY file under
//! `shared/testdata/pkgdb-expected/` and checks our analysers against it.
//!
//! - `*.dpkg-query.tsv` (real `dpkg-query -W` with the fixture as the status
//!   file). Our rule:
//!   - dpkg-query exit 0: the fixture analysed as `/var/lib/dpkg/status`
//!     yields exactly dpkg-query's rows whose state keeps files on disk
//!     (every state but `c` config-files and `n` not-installed), with the
//!     same version, architecture, source name and source version.
//!     Analysed as a distroless `status.d/*` file it yields at least those
//!     (stanzas without `Status` count as installed there).
//!   - dpkg-query rejected the file (exit ≠ 0, so it lists nothing): we
//!     return an error, or no packages — the latter only where dpkg's
//!     complaint is about a field we do not read (`Depends` syntax) and no
//!     stanza is installed anyway.
//! - `*.apk.tsv` (the P/V/A/o fields of each record): we yield exactly the
//!   records that have both P and V, in order, with the origin as source
//!   (or the name when the record has none).

use std::path::{Path, PathBuf};

use super::conformance::check_purl;
use super::dpkg::Dpkg;
use super::{Analysis, Analyzer, LayerFile, apk::Apk};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata");

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// name, version, arch, source name, source version
type Row = (String, String, String, String, String);

fn dpkg_rows(a: &Analysis) -> Vec<Row> {
    let mut rows: Vec<Row> = a
        .packages
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone(),
                p.arch.clone().unwrap_or_default(),
                p.source_name.clone().unwrap_or_default(),
                p.source_version.clone().unwrap_or_else(|| p.version.clone()),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Returns true when dpkg-query rejected the file and we returned `Ok`
/// with no packages (instead of an error).
fn check_dpkg(expected_file: &Path, fixture: &[u8]) -> bool {
    let text = std::fs::read_to_string(expected_file).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let exit: u32 = header
        .split("exit=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: no exit code in header", expected_file.display()));
    let name = expected_file.display();
    let as_status = Dpkg.analyze(&[LayerFile {
        path: "/var/lib/dpkg/status",
        data: fixture,
    }]);
    if exit != 0 {
        return match as_status {
            Err(_) => false,
            Ok(a) => {
                assert!(
                    a.packages.is_empty() && header.contains("'Depends' field"),
                    "{name}: dpkg-query rejected it; we returned {:?}",
                    a.packages
                );
                true
            }
        };
    }
    let mut want: Vec<Row> = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 6, "{name}: bad row {line:?}");
        let state = cols[3].chars().nth(1).unwrap();
        if state == 'c' || state == 'n' {
            continue;
        }
        want.push((
            cols[0].into(),
            cols[1].into(),
            cols[2].into(),
            cols[4].into(),
            cols[5].into(),
        ));
    }
    want.sort();
    let got = as_status.unwrap_or_else(|e| panic!("{name}: dpkg-query accepted it, we failed: {e}"));
    for p in &got.packages {
        check_purl(p, &name.to_string());
    }
    assert_eq!(dpkg_rows(&got), want, "{name}: as /var/lib/dpkg/status");

    let as_status_d = Dpkg
        .analyze(&[LayerFile {
            path: "/var/lib/dpkg/status.d/fixture",
            data: fixture,
        }])
        .unwrap();
    let got = dpkg_rows(&as_status_d);
    for row in &want {
        assert!(got.contains(row), "{name}: as status.d, missing {row:?}");
    }
    false
}

fn check_apk(expected_file: &Path, fixture: &[u8]) {
    let name = expected_file.display();
    let text = std::fs::read_to_string(expected_file).unwrap();
    let mut want = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "{name}: bad row {line:?}");
        if cols[0].is_empty() || cols[1].is_empty() {
            continue;
        }
        let source = if cols[3].is_empty() { cols[0] } else { cols[3] };
        want.push((
            cols[0].to_owned(),
            cols[1].to_owned(),
            cols[2].to_owned(),
            source.to_owned(),
        ));
    }
    let a = Apk
        .analyze(&[LayerFile {
            path: "/lib/apk/db/installed",
            data: fixture,
        }])
        .unwrap();
    for p in &a.packages {
        check_purl(p, &name.to_string());
    }
    let got: Vec<_> = a
        .packages
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone(),
                p.arch.clone().unwrap_or_default(),
                p.source_name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "{name}");
}

#[test]
fn agrees_with_every_expected_file() {
    let root = Path::new(TESTDATA).join("pkgdb-expected");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    assert!(files.len() >= 40, "only {} expected files found", files.len());
    let (mut dpkg, mut apk) = (0, 0);
    let mut rejected_but_empty = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap().to_str().unwrap();
        let (fixture_rel, is_dpkg) = if let Some(f) = rel.strip_suffix(".dpkg-query.tsv") {
            (f, true)
        } else if let Some(f) = rel.strip_suffix(".apk.tsv") {
            (f, false)
        } else {
            panic!("unknown expected file kind: {rel}");
        };
        let fixture = std::fs::read(Path::new(TESTDATA).join("pkgdb").join(fixture_rel))
            .unwrap_or_else(|e| panic!("{fixture_rel}: {e}"));
        if is_dpkg {
            if check_dpkg(file, &fixture) {
                rejected_but_empty.push(fixture_rel.to_owned());
            }
            dpkg += 1;
        } else {
            check_apk(file, &fixture);
            apk += 1;
        }
    }
    assert_eq!(dpkg + apk, files.len());
    // Only the fixture rejected for `Depends` syntax (with no Status fields)
    // may come back empty instead of as an error.
    assert_eq!(
        rejected_but_empty,
        ["anchore+syft/syft/pkg/cataloger/debian/testdata/var/lib/dpkg/status.d/doc-examples"]
    );
    assert!(dpkg > 0 && apk > 0);
}
