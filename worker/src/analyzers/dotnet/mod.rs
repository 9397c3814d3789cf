//! dotnet: NuGet packages a .NET application was published with, from its
//! `*.deps.json`.
//!
//! The `libraries` map, keyed `Name/Version`: entries of `"type": "package"`
//! are NuGet packages deployed with the application (their assemblies sit
//! beside it): evidence `Installed`. Skipped: `project` (the application
//! and its own projects), `reference`/`referenceassembly` (framework
//! reference assemblies), `runtimepack` (the runtime of a self-contained
//! app: the .NET runtime, not a NuGet package's version line) and anything
//! else. `targets` is not read: it repeats the same libraries per runtime.
//! Names are kept as the file writes them (NuGet ids are case-insensitive;
//! `deps.json` carries the package's own casing, which is nuget.org's and
//! OSV's).
//!
//! Contract: every problem is a warning naming the file; never an error.
//! Returns empty when handed no files.

use std::collections::BTreeMap;

use serde::Deserialize;
use strata_proto::{Ecosystem, Evidence};

use super::common::{clip, per_file};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "dotnet";

/// Largest file we read: a large ASP.NET app's deps.json is a few MiB
/// (every assembly of every package, per runtime).
pub(crate) const MAX_FILE_BYTES: u64 = 32 << 20;

pub struct Dotnet;

#[derive(Deserialize)]
struct DepsJson {
    #[serde(default)]
    libraries: Option<BTreeMap<String, Library>>,
}

#[derive(Deserialize)]
struct Library {
    #[serde(default, rename = "type")]
    ty: Option<String>,
}

impl Analyzer for Dotnet {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        path.ends_with(".deps.json") && !path.ends_with("/.deps.json")
    }

    fn max_file_bytes(&self, _path: &str) -> u64 {
        MAX_FILE_BYTES
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let cap = |p: &str| self.wants(p).then_some(MAX_FILE_BYTES);
        Ok(per_file(NAME, files, cap, |file, finds| {
            let Some(deps) = finds.json::<DepsJson>(file.data, "deps.json") else {
                return;
            };
            for (key, lib) in deps.libraries.unwrap_or_default() {
                if lib.ty.as_deref() != Some("package") {
                    continue;
                }
                let Some((name, version)) = key.split_once('/') else {
                    finds.warn(format_args!("library {:?} is not Name/Version", clip(&key)));
                    continue;
                };
                if !finds.add(Ecosystem::NuGet, name, version, Evidence::Installed) {
                    break;
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzers::testutil::{local, rows};

    fn run(path: &str, data: &[u8]) -> Analysis {
        Dotnet.analyze(&[LayerFile { path, data }]).unwrap()
    }

    #[test]
    fn wants_deps_json_only() {
        assert!(Dotnet.wants("/app/ExampleApp1.deps.json"));
        assert!(
            Dotnet.wants(
                "/usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.0/Microsoft.NETCore.App.deps.json"
            )
        );
        for no in [
            "/app/.deps.json",
            "/app/x.deps.json.bak",
            "/app/x.runtimeconfig.json",
            "/app/deps.json",
        ] {
            assert!(!Dotnet.wants(no), "{no}");
        }
    }

    #[test]
    fn packages_only() {
        let a = run(
            "/app/ExampleApp1.deps.json",
            &local("dotnet/testdata/ExampleApp1.deps.json"),
        );
        assert_eq!(
            rows(&a),
            [(
                "Newtonsoft.Json",
                "13.0.1",
                "pkg:nuget/Newtonsoft.Json@13.0.1",
                Evidence::Installed
            )]
        );
        assert_eq!(a.packages[0].ecosystem, Ecosystem::NuGet);
        let a = run("/app/MyApp.deps.json", &local("dotnet/testdata/MyApp.deps.json"));
        assert_eq!(
            rows(&a),
            [(
                "Newtonsoft.Json",
                "13.0.3",
                "pkg:nuget/Newtonsoft.Json@13.0.3",
                Evidence::Installed
            )]
        );
        assert!(a.warnings.is_empty());
        let a = run(
            "/app/x.deps.json",
            br#"{"libraries":{"runtimepack.Microsoft.NETCore.App.Runtime.linux-x64/8.0.0":{"type":"runtimepack"},"NoVersion":{"type":"package"},"A/1.0":{"type":"package"},"A/1.0 ":{"type":"package"}}}"#,
        );
        assert_eq!(rows(&a), [("A", "1.0", "pkg:nuget/A@1.0", Evidence::Installed)]);
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        let a = run("/app/x.deps.json", b"{\"libraries\": 5}");
        assert!(a.packages.is_empty() && a.warnings.len() == 1);
    }
}
