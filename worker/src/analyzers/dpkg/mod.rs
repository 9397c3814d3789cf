//! dpkg: Debian and Ubuntu packages from `/var/lib/dpkg/status` and the
//! distroless `/var/lib/dpkg/status.d/*` files.
//!
//! Contract:
//! - Only packages whose files are on disk are reported (see
//!   `parse::State::is_present`): `config-files` and `not-installed`
//!   stanzas are skipped, as are stanzas without `Status` in the main status
//!   file (dpkg's rule). In `status.d/*` a stanza without `Status` but with
//!   a `Version` is an installed package: distroless writes only installed
//!   packages there, without that field.
//! - `/var/lib/dpkg/status` that dpkg would reject (see `parse`) is an
//!   error for the whole analysis, as `dpkg-query` refuses it too. A bad
//!   `status.d/*` file is a warning and the other files still count: each
//!   such file is one package, written by image build tools.
//! - The ecosystem is always `Debian`; composition switches it to `Ubuntu`
//!   from os-release. Returns empty, not an error, when handed no files.

pub(crate) mod parse;

use strata_proto::{Ecosystem, Package};

use super::common::{MAX_PACKAGES, os_purl, warn};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};
use parse::MissingStatus;

const NAME: &str = "dpkg";
const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_D: &str = "/var/lib/dpkg/status.d/";

/// Files in `status.d/` that are not stanzas (distroless puts md5sums there).
const IGNORED_SUFFIXES: &[&str] = &[
    ".md5sums",
    ".list",
    ".conffiles",
    ".preinst",
    ".postinst",
    ".prerm",
    ".postrm",
    ".triggers",
    ".shlibs",
    ".symbols",
    ".templates",
    ".config",
];

pub struct Dpkg;

impl Analyzer for Dpkg {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        if path == STATUS {
            return true;
        }
        match path.strip_prefix(STATUS_D) {
            Some(file) => {
                !file.is_empty()
                    && !file.contains('/')
                    && !file.starts_with('.')
                    && !IGNORED_SUFFIXES.iter().any(|s| file.ends_with(s))
            }
            None => false,
        }
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let mut analysis = Analysis::default();
        // The main database first, then status.d in path order, so output
        // does not depend on tar order.
        let mut files: Vec<&LayerFile<'_>> = files.iter().filter(|f| self.wants(f.path)).collect();
        files.sort_by_key(|f| (f.path != STATUS, f.path));
        for file in files {
            let missing = if file.path == STATUS {
                MissingStatus::NotInstalled
            } else {
                MissingStatus::InstalledIfVersioned
            };
            let entries = match parse::parse(file.data, missing) {
                Ok(e) => e,
                Err(reason) if file.path == STATUS => {
                    return Err(AnalyzeError {
                        analyzer: NAME,
                        path: file.path.to_owned(),
                        reason,
                    });
                }
                Err(reason) => {
                    warn(&mut analysis.warnings, format!("{NAME}: {}: {reason}", file.path));
                    continue;
                }
            };
            if analysis.packages.len() + entries.len() > MAX_PACKAGES {
                return Err(AnalyzeError {
                    analyzer: NAME,
                    path: file.path.to_owned(),
                    reason: format!("more than {MAX_PACKAGES} packages in this layer's dpkg files"),
                });
            }
            for e in entries {
                let purl = match os_purl(Ecosystem::Debian, &e.name, &e.version, e.arch.as_deref()) {
                    Ok(p) => p,
                    Err(err) => {
                        warn(
                            &mut analysis.warnings,
                            format!("{NAME}: {}: {}: {err}", file.path, e.name),
                        );
                        continue;
                    }
                };
                let source_version = (e.source_version != e.version).then_some(e.source_version);
                analysis.packages.push(Package {
                    ecosystem: Ecosystem::Debian,
                    name: e.name,
                    version: e.version,
                    source_name: Some(e.source_name),
                    source_version,
                    arch: e.arch,
                    purl,
                    path: file.path.to_owned(),
                    layer: None,
                    evidence: Default::default(),
                });
            }
        }
        Ok(analysis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_status_and_status_d_but_not_md5sums() {
        let d = Dpkg;
        assert!(d.wants("/var/lib/dpkg/status"));
        assert!(d.wants("/var/lib/dpkg/status.d/libc6"));
        assert!(d.wants("/var/lib/dpkg/status.d/libpython3.11-minimal"));
        assert!(!d.wants("/var/lib/dpkg/status.d/libc6.md5sums"));
        assert!(!d.wants("/var/lib/dpkg/status-old"));
        assert!(!d.wants("/var/lib/dpkg/status.d/"));
        assert!(!d.wants("/var/lib/dpkg/status.d/x/y"));
    }

    #[test]
    fn distroless_file_yields_package_with_source() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/pkgdb/anchore+syft/syft/pkg/cataloger/debian/testdata/",
            "image-distroless-deb/var/lib/dpkg/status.d/libsqlite3-0"
        ))
        .unwrap();
        let path = "/var/lib/dpkg/status.d/libsqlite3-0";
        let a = Dpkg.analyze(&[LayerFile { path, data: &data }]).unwrap();
        assert_eq!(a.packages.len(), 1);
        let p = &a.packages[0];
        assert_eq!(p.name, "libsqlite3-0");
        assert_eq!(p.version, "3.34.1-3");
        assert_eq!(p.source_name.as_deref(), Some("sqlite3"));
        assert_eq!(p.source_version, None);
        assert_eq!(p.arch.as_deref(), Some("arm64"));
        assert_eq!(p.purl, "pkg:deb/debian/libsqlite3-0@3.34.1-3?arch=arm64");
        assert_eq!(p.path, path);
        assert_eq!(p.ecosystem, Ecosystem::Debian);
    }

    #[test]
    fn broken_status_is_an_error_broken_status_d_a_warning() {
        let bad = b"Package:\n\nPackage: a\nStatus: install ok installed\nVersion: 1\n";
        let good = b"Package: b\nVersion: 2\n";
        let err = Dpkg
            .analyze(&[LayerFile {
                path: STATUS,
                data: bad,
            }])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("dpkg: /var/lib/dpkg/status: stanza at line 1"),
            "{err}"
        );
        let a = Dpkg
            .analyze(&[
                LayerFile {
                    path: "/var/lib/dpkg/status.d/bad",
                    data: bad,
                },
                LayerFile {
                    path: "/var/lib/dpkg/status.d/b",
                    data: good,
                },
            ])
            .unwrap();
        assert_eq!(a.packages.len(), 1);
        assert_eq!(a.packages[0].name, "b");
        assert_eq!(a.warnings.len(), 1);
    }
}
