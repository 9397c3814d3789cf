//! rpm: Red Hat family packages from the rpm database.
//!
//! Supported backends, all read from memory:
//! - SQLite `rpmdb.sqlite` (rpm ≥ 4.16: RHEL 9, UBI 9, Fedora ≥ 33), under
//!   `/var/lib/rpm/` or `/usr/lib/sysimage/rpm/` — see `sqlite`.
//! - BerkeleyDB hash `Packages` (RHEL/CentOS 7 and 8, Amazon Linux 2) —
//!   see `bdb`.
//!
//! Not supported: the NDB backend (`Packages.db`, SUSE): when present it
//! yields a warning saying so and no packages.
//!
//! Contract: a database that cannot be opened at all is an error; one
//! unreadable header is a warning and the rest still count. `gpg-pubkey`
//! pseudo-packages (imported signing keys) are skipped. Every package's
//! `version` is `[epoch:]version-release`, its source is the source rpm's
//! name (`bash-5.1.8-9.el9.src.rpm` → `bash`) with the source rpm's
//! `version-release` as `source_version` when that differs. Ecosystem
//! `Red Hat` (composition refines it from os-release). Returns empty when
//! handed no files.

pub(crate) mod bdb;
pub(crate) mod header;
pub(crate) mod sqlite;

use strata_proto::{Ecosystem, Package};

use super::common::{MAX_PACKAGES, os_purl, warn};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "rpm";
const DIRS: &[&str] = &["/var/lib/rpm/", "/usr/lib/sysimage/rpm/"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    BerkeleyDb,
    Ndb,
}

fn backend(path: &str) -> Option<Backend> {
    let file = DIRS.iter().find_map(|d| path.strip_prefix(d))?;
    match file {
        "rpmdb.sqlite" => Some(Backend::Sqlite),
        "Packages" => Some(Backend::BerkeleyDb),
        "Packages.db" => Some(Backend::Ndb),
        _ => None,
    }
}

pub struct Rpm;

impl Analyzer for Rpm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        backend(path).is_some()
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let mut analysis = Analysis::default();
        for file in files {
            let Some(kind) = backend(file.path) else { continue };
            let err = |reason: String| AnalyzeError {
                analyzer: NAME,
                path: file.path.to_owned(),
                reason,
            };
            let mut blobs_seen = 0usize;
            let mut packages = Vec::new();
            let mut warnings = Vec::new();
            let mut each = |blob: &[u8]| {
                blobs_seen += 1;
                match to_package(blob, file.path) {
                    Ok(Some(p)) => packages.push(p),
                    Ok(None) => {}
                    Err(e) => warn(
                        &mut warnings,
                        format!("{NAME}: {}: record {blobs_seen}: {e}", file.path),
                    ),
                }
            };
            match kind {
                Backend::Sqlite => sqlite::for_each_blob(file.data, MAX_PACKAGES, &mut each).map_err(err)?,
                Backend::BerkeleyDb => {
                    let mut bdb_warnings = Vec::new();
                    let res = bdb::for_each_blob(file.data, MAX_PACKAGES, &mut each, |w| {
                        warn(&mut bdb_warnings, w)
                    });
                    res.map_err(err)?;
                    for w in bdb_warnings {
                        warn(&mut warnings, format!("{NAME}: {}: {w}", file.path));
                    }
                }
                Backend::Ndb => warn(
                    &mut warnings,
                    format!(
                        "{NAME}: {}: the NDB rpmdb backend (SUSE) is not supported; no packages read",
                        file.path
                    ),
                ),
            }
            analysis.packages.extend(packages);
            for w in warnings {
                warn(&mut analysis.warnings, w);
            }
        }
        Ok(analysis)
    }
}

/// One header blob → one package (`None` for `gpg-pubkey`).
fn to_package(blob: &[u8], path: &str) -> Result<Option<Package>, String> {
    let h = header::parse(blob)?;
    if h.name == "gpg-pubkey" {
        return Ok(None);
    }
    let version_release = format!("{}-{}", h.version, h.release);
    let version = match h.epoch {
        Some(e) => format!("{e}:{version_release}"),
        None => version_release.clone(),
    };
    let (source_name, source_version) = match h.source_rpm.as_deref().and_then(header::split_source_rpm) {
        Some((name, vr)) => (
            Some(name.to_owned()),
            (vr != version_release).then(|| vr.to_owned()),
        ),
        None => (None, None),
    };
    let purl = os_purl(Ecosystem::RedHat, &h.name, &version, h.arch.as_deref())?;
    Ok(Some(Package {
        ecosystem: Ecosystem::RedHat,
        name: h.name,
        version,
        source_name,
        source_version,
        arch: h.arch,
        purl,
        path: path.to_owned(),
        layer: None,
        evidence: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQLITE_FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/analyzers/rpm/testdata/rpmdb.sqlite"
    );
    const BDB_EPOCH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/pkgdb/google+osv-scalibr/extractor/filesystem/os/rpm/testdata/Packages_epoch"
    );
    const BDB_DIVE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/pkgdb/anchore+syft/cmd/syft/internal/test/integration/testdata/",
        "image-pkg-coverage/pkgs/var/lib/rpm/Packages"
    );

    fn run(path: &str, data: &[u8]) -> Analysis {
        Rpm.analyze(&[LayerFile { path, data }]).unwrap()
    }

    /// (name, version, arch, source name, source version, purl)
    fn summary(a: &Analysis) -> Vec<(String, String, String, String, String, String)> {
        let mut v: Vec<_> = a
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.version.clone(),
                    p.arch.clone().unwrap_or_default(),
                    p.source_name.clone().unwrap_or_default(),
                    p.source_version.clone().unwrap_or_default(),
                    p.purl.clone(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn row(
        n: &str,
        v: &str,
        a: &str,
        s: &str,
        sv: &str,
        purl: &str,
    ) -> (String, String, String, String, String, String) {
        (n.into(), v.into(), a.into(), s.into(), sv.into(), purl.into())
    }

    /// Expected values are what `rpm -qa` (4.18) printed for the fixture;
    /// see testdata/README.md.
    #[test]
    fn sqlite_fixture_matches_rpm_qa() {
        let data = std::fs::read(SQLITE_FIXTURE).unwrap();
        for path in ["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"] {
            let a = run(path, &data);
            assert!(a.warnings.is_empty(), "{:?}", a.warnings);
            assert_eq!(
                summary(&a),
                vec![
                    row(
                        "strata-demo",
                        "2:1.4.0-3.fc40",
                        "noarch",
                        "strata-demo",
                        "",
                        "pkg:rpm/redhat/strata-demo@2:1.4.0-3.fc40?arch=noarch"
                    ),
                    row(
                        "strata-demo-libs",
                        "2:1.4.0-3.fc40",
                        "noarch",
                        "strata-demo",
                        "",
                        "pkg:rpm/redhat/strata-demo-libs@2:1.4.0-3.fc40?arch=noarch"
                    ),
                    row(
                        "tiny",
                        "0.1-1",
                        "x86_64",
                        "tiny",
                        "",
                        "pkg:rpm/redhat/tiny@0.1-1?arch=x86_64"
                    ),
                ]
            );
            assert!(
                a.packages
                    .iter()
                    .all(|p| p.ecosystem == Ecosystem::RedHat && p.path == path)
            );
        }
    }

    /// The sqlite fixture's three headers loaded into BerkeleyDB hash files
    /// with 512-byte pages (so headers span overflow chains), little- and
    /// big-endian; rpm's own `bdb_ro` backend lists the same three.
    #[test]
    fn berkeley_db_multi_page_both_byte_orders() {
        let sqlite = summary(&run(
            "/var/lib/rpm/rpmdb.sqlite",
            &std::fs::read(SQLITE_FIXTURE).unwrap(),
        ));
        for name in ["Packages-512", "Packages-512-be"] {
            let path = format!("{}/src/analyzers/rpm/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
            let a = run("/var/lib/rpm/Packages", &std::fs::read(path).unwrap());
            assert!(a.warnings.is_empty(), "{name}: {:?}", a.warnings);
            assert_eq!(summary(&a), sqlite, "{name}");
        }
    }

    /// Expected values are what rpm 4.18's own read-only BerkeleyDB backend
    /// (`rpm --define '_db_backend bdb_ro' -qa`) printed for these files.
    #[test]
    fn berkeley_db_fixtures_match_rpm_qa() {
        let a = run("/var/lib/rpm/Packages", &std::fs::read(BDB_EPOCH).unwrap());
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        assert_eq!(
            summary(&a),
            vec![row(
                "hello",
                "1:0.0.1-rls",
                "x86_64",
                "hello",
                "",
                "pkg:rpm/redhat/hello@1:0.0.1-rls?arch=x86_64"
            )]
        );
        let a = run("/var/lib/rpm/Packages", &std::fs::read(BDB_DIVE).unwrap());
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        assert_eq!(
            summary(&a),
            vec![row(
                "dive",
                "0.9.2-1",
                "x86_64",
                "dive",
                "",
                "pkg:rpm/redhat/dive@0.9.2-1?arch=x86_64"
            )]
        );
    }

    #[test]
    fn placeholder_files_are_errors_and_ndb_a_warning() {
        for path in ["/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages"] {
            let err = Rpm.analyze(&[LayerFile { path, data: b"bogus" }]).unwrap_err();
            assert!(err.to_string().starts_with(&format!("rpm: {path}: ")), "{err}");
        }
        let a = run("/var/lib/rpm/Packages.db", b"bogus");
        assert!(a.packages.is_empty());
        assert!(a.warnings[0].contains("NDB"), "{:?}", a.warnings);
    }

    #[test]
    fn sqlite_without_packages_table_is_an_error() {
        // Our own fixture with the table renamed in the schema text would need
        // a writer; instead take an sqlite file that has no Packages table.
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE Other (x); CREATE VIEW Packages AS SELECT 1 AS blob, 1 AS hnum;")
            .unwrap();
        let bytes = conn.serialize(rusqlite::MAIN_DB).unwrap().to_vec();
        let err = Rpm
            .analyze(&[LayerFile {
                path: "/var/lib/rpm/rpmdb.sqlite",
                data: &bytes,
            }])
            .unwrap_err();
        assert!(err.reason.contains("not a plain table"), "{err}");
    }

    #[test]
    fn source_version_set_only_when_it_differs() {
        let blob = header::tests::build(&[
            (1000, 6, b"libfoo\0"),
            (1001, 6, b"1.0\0"),
            (1002, 6, b"2.el9\0"),
            (1044, 6, b"foo-1.1-1.el9.src.rpm\0"),
        ]);
        let p = to_package(&blob, "/var/lib/rpm/rpmdb.sqlite").unwrap().unwrap();
        assert_eq!(p.source_name.as_deref(), Some("foo"));
        assert_eq!(p.source_version.as_deref(), Some("1.1-1.el9"));
        assert_eq!(p.arch, None);
        assert_eq!(p.purl, "pkg:rpm/redhat/libfoo@1.0-2.el9");
        let key = header::tests::build(&[(1000, 6, b"gpg-pubkey\0"), (1001, 6, b"1\0"), (1002, 6, b"1\0")]);
        assert_eq!(to_package(&key, "/x").unwrap(), None);
    }
}
