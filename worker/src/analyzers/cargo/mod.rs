//! cargo: Rust crates from `Cargo.lock` (format v1 to v4).
//!
//! Every `[[package]]` with a `source` (`registry+…`, `sparse+…`, `git+…`)
//! is a dependency: evidence `Lockfile`. One without a `source` is a
//! workspace member or a path dependency, the project's own code: evidence
//! `App` (listed, never matched: its name may be any crate's). v1's
//! `[metadata]` checksums and every other field are ignored.
//!
//! Parsed with the `toml` crate (already the workspace's), whose parser
//! stops at a fixed nesting depth, so hostile input cannot exhaust the
//! stack. Binaries built with `cargo auditable` are another analyser's.
//!
//! Contract: every problem is a warning naming the file; never an error.
//! Returns empty when handed no files.

use serde::Deserialize;
use strata_proto::{Ecosystem, Evidence};

use super::common::{clip, per_file};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "cargo";

/// Largest file we read: the lockfiles of the largest workspaces are about
/// 1 MiB.
pub(crate) const MAX_FILE_BYTES: u64 = 16 << 20;

pub struct Cargo;

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    #[serde(default)]
    source: Option<String>,
}

impl Analyzer for Cargo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        path.ends_with("/Cargo.lock")
    }

    fn max_file_bytes(&self, _path: &str) -> u64 {
        MAX_FILE_BYTES
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let cap = |p: &str| self.wants(p).then_some(MAX_FILE_BYTES);
        Ok(per_file(NAME, files, cap, |file, finds| {
            let lock: Lock = match std::str::from_utf8(file.data)
                .map_err(|e| e.to_string())
                .and_then(|s| toml::from_str(s).map_err(|e| e.to_string()))
            {
                Ok(l) => l,
                Err(e) => return finds.warn(format_args!("not a Cargo.lock: {}", clip(&e))),
            };
            for p in &lock.package {
                let evidence = if p.source.is_some() {
                    Evidence::Lockfile
                } else {
                    Evidence::App
                };
                if !finds.add(Ecosystem::CratesIo, &p.name, &p.version, evidence) {
                    break;
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzers::testutil::{fixture, rows};
    use strata_proto::Evidence::{App, Lockfile};

    fn run(rel: &str) -> Analysis {
        let data = fixture(rel);
        Cargo
            .analyze(&[LayerFile {
                path: "/src/app/Cargo.lock",
                data: &data,
            }])
            .unwrap()
    }

    #[test]
    fn wants_cargo_lock_only() {
        assert!(Cargo.wants("/src/app/Cargo.lock"));
        assert!(!Cargo.wants("/src/app/Cargo.toml"));
        assert!(!Cargo.wants("/src/app/Cargo.lock.orig"));
        assert!(!Cargo.wants("/src/app/xCargo.lock"));
    }

    #[test]
    fn path_dependencies_are_the_app() {
        let a = run("anchore+syft/syft/pkg/cataloger/rust/testdata/path-deps/Cargo.lock");
        assert_eq!(
            rows(&a),
            [
                ("app", "1.0.0", "pkg:cargo/app@1.0.0", App),
                ("memchr", "2.7.4", "pkg:cargo/memchr@2.7.4", Lockfile),
                ("telemetry", "0.1.0", "pkg:cargo/telemetry@0.1.0", App),
            ]
        );
        assert!(a.packages.iter().all(|p| p.ecosystem == Ecosystem::CratesIo));
    }

    #[test]
    fn versions_1_to_4() {
        // v1/v2 (no `version` line): 14 packages, all from the registry.
        let a = run("anchore+syft/syft/pkg/cataloger/rust/testdata/Cargo.lock");
        assert_eq!(a.packages.len(), 14);
        assert!(a.packages.iter().all(|p| p.evidence == Lockfile));
        assert_eq!(
            rows(&a)[0],
            ("ansi_term", "0.12.1", "pkg:cargo/ansi_term@0.12.1", Lockfile)
        );
        // v4: one workspace member.
        let a = run("anchore+syft/syft/pkg/cataloger/rust/testdata/image-audit/Cargo.lock");
        assert_eq!(a.packages.len(), 10);
        assert_eq!(a.packages.iter().filter(|p| p.evidence == App).count(), 1);
        let a = run("aquasecurity+trivy/integration/testdata/fixtures/repo/trivy-ci-test/Cargo.lock");
        assert_eq!(a.packages.len(), 74);
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn garbage_and_deep_nesting_are_warnings() {
        for data in [
            b"[[package]]\nname = \"a\"\n".to_vec(),
            b"\xff\xfe".to_vec(),
            [&b"x = "[..], &b"[".repeat(100_000)].concat(),
            [&b"x = "[..], &b"{a=".repeat(100_000)].concat(),
        ] {
            let a = Cargo
                .analyze(&[LayerFile {
                    path: "/Cargo.lock",
                    data: &data,
                }])
                .unwrap();
            assert!(a.packages.is_empty() && a.warnings.len() == 1, "{:?}", a.warnings);
        }
    }
}
