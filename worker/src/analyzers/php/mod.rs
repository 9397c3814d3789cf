//! php: Composer packages from `vendor/composer/installed.json` and
//! `composer.lock`.
//!
//! - `…/vendor/composer/installed.json`: what Composer installed into that
//!   `vendor/`; Composer 1 writes an array of packages, Composer 2
//!   `{"packages": [...], "dev": …}`. Evidence `Installed` (dev packages
//!   too: they are on disk).
//! - `composer.lock`: `packages` and `packages-dev`, evidence `Lockfile`,
//!   only where the same layer has no `vendor/composer/installed.json`
//!   beside it (in the lockfile's directory): then the installed list is
//!   the truth. A `composer.lock` inside a `vendor/` directory is a
//!   dependency's own and is not wanted.
//!
//! Names are `vendor/name` as Composer writes them (lowercase); one without
//! a vendor is a warning. Versions: a leading `v` before a digit is dropped
//! (`v1.8.1` → `1.8.1`): Composer itself ignores it (`version_normalized`
//! is `1.8.1.0`), and OSV's Packagist advisories (from GHSA) write their
//! ranges without it, and osv.dev's Packagist ordering drops it too. Syft
//! keeps it as written; so our purl for such a package differs from
//! Syft's. Branch versions (`dev-main`) are not releases and are skipped.
//!
//! Contract: every problem is a warning naming the file; never an error.
//! Returns empty when handed no files.

use std::collections::HashSet;

use serde::Deserialize;
use strata_proto::{Ecosystem, Evidence};

use super::common::{clip, file_name, is_version, parent, per_file};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "php";
const INSTALLED: &str = "/vendor/composer/installed.json";

/// Largest file we read: a large application's lockfile is a few MiB
/// (descriptions, autoload maps, every package's `require`).
pub(crate) const MAX_FILE_BYTES: u64 = 32 << 20;

pub struct Php;

fn is_lock(path: &str) -> bool {
    file_name(path) == "composer.lock" && !path.contains("/vendor/")
}

impl Analyzer for Php {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        path.ends_with(INSTALLED) || is_lock(path)
    }

    fn max_file_bytes(&self, _path: &str) -> u64 {
        MAX_FILE_BYTES
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        // Project directories whose vendor/ is in this layer.
        let vendored: HashSet<&str> = files
            .iter()
            .filter_map(|f| f.path.strip_suffix(INSTALLED))
            .collect();
        let cap = |p: &str| {
            let beside_vendor = is_lock(p) && vendored.contains(parent(p));
            (self.wants(p) && !beside_vendor).then_some(MAX_FILE_BYTES)
        };
        Ok(per_file(NAME, files, cap, |file, finds| {
            let (packages, evidence) = if is_lock(file.path) {
                let Some(l) = finds.json::<Lock>(file.data, "composer.lock") else {
                    return;
                };
                let mut all = l.packages.unwrap_or_default();
                all.extend(l.packages_dev.unwrap_or_default());
                (all, Evidence::Lockfile)
            } else {
                // Composer 1 wrote an array, Composer 2 an object (told
                // apart by the first byte, not by serde's `untagged`, which
                // would buffer the whole document first).
                let what = "Composer installed.json";
                let packages = if file.data.trim_ascii_start().starts_with(b"[") {
                    finds.json::<Vec<ComposerPackage>>(file.data, what)
                } else {
                    finds
                        .json::<Installed>(file.data, what)
                        .map(|i| i.packages.unwrap_or_default())
                };
                let Some(packages) = packages else { return };
                (packages, Evidence::Installed)
            };
            for p in packages {
                let (Some(name), Some(version)) = (p.name, p.version) else {
                    finds.warn("a package without name or version: skipped");
                    continue;
                };
                let version = version
                    .strip_prefix(['v', 'V'])
                    .filter(|v| is_version(v))
                    .unwrap_or(&version);
                if !is_version(version) {
                    continue;
                }
                if !name.contains('/') {
                    finds.warn(format_args!("{:?} is not vendor/name: skipped", clip(&name)));
                    continue;
                }
                if !finds.add(Ecosystem::Packagist, &name, version, evidence) {
                    break;
                }
            }
        }))
    }
}

/// One package of either file; the rest of its fields are skipped.
#[derive(Deserialize)]
struct ComposerPackage {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    packages: Option<Vec<ComposerPackage>>,
    #[serde(default, rename = "packages-dev")]
    packages_dev: Option<Vec<ComposerPackage>>,
}

/// Composer 2's `installed.json`.
#[derive(Deserialize)]
struct Installed {
    #[serde(default)]
    packages: Option<Vec<ComposerPackage>>,
}

#[cfg(test)]
mod tests;
