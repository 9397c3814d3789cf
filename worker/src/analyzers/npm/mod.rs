//! npm: JavaScript packages installed in `node_modules`, and the lockfiles of
//! projects whose `node_modules` is not in the same layer.
//!
//! Reads:
//! - `…/node_modules/NAME/package.json` and `…/node_modules/@SCOPE/NAME/package.json`,
//!   at any depth of nesting (`a/node_modules/b/node_modules/c`, pnpm's
//!   `node_modules/.pnpm/x@1/node_modules/x`): evidence `Installed`, name
//!   and version from the file (an aliased install names the real package).
//!   Any other `package.json` under a `node_modules` directory (a package's
//!   `test/fixtures/package.json`, `lib/package.json`) is not wanted, nor is
//!   a hidden directory's (`node_modules/.cache/x/package.json`).
//! - lockfiles outside `node_modules`: `package-lock.json` and
//!   `npm-shrinkwrap.json` (v1, v2, v3), `yarn.lock` (v1 and berry),
//!   `pnpm-lock.yaml` (v5, v6, v9): evidence `Lockfile`, only where no
//!   `node_modules` is *beside* the lockfile in the same layer. Beside means:
//!   for a lockfile in directory `D`, this layer holds an installed
//!   `D/node_modules/…/package.json`. Then the installed packages are the
//!   truth and the lockfile adds nothing (it may name optional or
//!   platform-specific packages that were never installed). A layer sees
//!   only itself: a lockfile copied in one layer and `npm ci` run in the
//!   next gives both the lockfile's and the installed packages.
//! - a project's own `D/package.json` (outside `node_modules`) with a name
//!   and a version, where `D` has a lockfile or a `node_modules` in this
//!   layer: evidence `App`, listed and never matched. Other `package.json`
//!   files (a tool's data, a project without either) yield nothing.
//!
//! What lockfiles yield: every registry package with a version (deduplicated
//! per file), dev dependencies too (an image that kept its lockfile may well
//! have installed them). Skipped without a warning: the root project and
//! workspace members, links, and git/file/tarball dependencies whose
//! version is not a version (see `common::is_version`).
//!
//! Contract: every problem is a warning naming the file, and the other
//! files still count; never an error. Files over their cap
//! ([`MAX_FILE_BYTES`] for lockfiles, [`MAX_MANIFEST_BYTES`] for
//! `package.json`) are skipped with a warning. Returns empty when handed no
//! files.

mod manifest;
mod package_lock;
mod pnpm;
mod yarn;

use std::collections::HashSet;

use strata_proto::{Ecosystem, Evidence};

use super::common::{FileFinds, clip, parent, per_file};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "npm";
const ECOSYSTEM: Ecosystem = Ecosystem::Npm;

/// Largest lockfile we read. Big monorepos write lockfiles of a few tens of
/// MiB; twice the largest we have seen is the cap.
pub(crate) const MAX_FILE_BYTES: u64 = 64 << 20;

/// Largest `package.json` we read: installed ones are a few KiB (old npm
/// versions copied the README in, some hundreds of KiB).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// What a wanted file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `node_modules/[@scope/]name/package.json`.
    Installed,
    /// A `package.json` outside any `node_modules`: maybe the project's own.
    Project,
    PackageLock,
    Yarn,
    Pnpm,
}

impl Kind {
    fn is_lockfile(self) -> bool {
        matches!(self, Kind::PackageLock | Kind::Yarn | Kind::Pnpm)
    }
}

const NODE_MODULES: &str = "/node_modules";

/// The kind of `path`, or `None` when we do not want it. Suffix checks and
/// at most two scans of the path; no allocation.
fn kind(path: &str) -> Option<Kind> {
    let (dir, file) = path.rsplit_once('/')?;
    let lock = match file {
        "package.json" => return manifest_kind(dir),
        "package-lock.json" | "npm-shrinkwrap.json" => Kind::PackageLock,
        "yarn.lock" => Kind::Yarn,
        "pnpm-lock.yaml" => Kind::Pnpm,
        _ => return None,
    };
    // A lockfile inside node_modules is a dependency's own, never used.
    (!path.contains("/node_modules/")).then_some(lock)
}

/// `dir` holds a `package.json`: an installed package's directory (the
/// child of a `node_modules`, or of a scope directory in one), else
/// anything under `node_modules` is unwanted and anything outside it may be
/// a project.
fn manifest_kind(dir: &str) -> Option<Kind> {
    let Some((up, name)) = dir.rsplit_once('/') else {
        // `/package.json`: a project at the root.
        return dir.is_empty().then_some(Kind::Project);
    };
    if name.is_empty() || name.starts_with('.') {
        return None;
    }
    if up.ends_with(NODE_MODULES) {
        // `node_modules/@scope/package.json`: a scope is not a package.
        return (!name.starts_with('@')).then_some(Kind::Installed);
    }
    if let Some((up2, scope)) = up.rsplit_once('/')
        && scope.len() > 1
        && scope.starts_with('@')
        && up2.ends_with(NODE_MODULES)
    {
        return Some(Kind::Installed);
    }
    if dir.contains("/node_modules/") || dir.ends_with(NODE_MODULES) {
        return None;
    }
    Some(Kind::Project)
}

/// The project directory an installed package belongs to: what comes
/// before the first `/node_modules/` (`/app/node_modules/a/node_modules/b`
/// → `/app`).
fn project_of(path: &str) -> &str {
    path.find("/node_modules/").map_or("", |i| &path[..i])
}

pub struct Npm;

impl Analyzer for Npm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        kind(path).is_some()
    }

    fn max_file_bytes(&self, path: &str) -> u64 {
        match kind(path) {
            Some(Kind::Installed | Kind::Project) => MAX_MANIFEST_BYTES,
            _ => MAX_FILE_BYTES,
        }
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let kinds = || files.iter().filter_map(|f| Some((f.path, kind(f.path)?)));
        // Directories with an installed node_modules, and with a lockfile.
        let installed_in: HashSet<&str> = kinds()
            .filter(|(_, k)| *k == Kind::Installed)
            .map(|(p, _)| project_of(p))
            .collect();
        let locked_in: HashSet<&str> = kinds()
            .filter(|(_, k)| k.is_lockfile())
            .map(|(p, _)| parent(p))
            .collect();
        let cap = |path: &str| {
            let dir = parent(path);
            match kind(path)? {
                Kind::Installed => Some(MAX_MANIFEST_BYTES),
                Kind::Project => {
                    (installed_in.contains(dir) || locked_in.contains(dir)).then_some(MAX_MANIFEST_BYTES)
                }
                _ => (!installed_in.contains(dir)).then_some(MAX_FILE_BYTES),
            }
        };
        Ok(per_file(NAME, files, cap, |file, finds| {
            // `cap` took the file, so it has a kind.
            let Some(kind) = kind(file.path) else { return };
            match kind {
                Kind::Installed => manifest::installed(file.data, finds),
                Kind::Project => manifest::project(file.data, finds),
                Kind::PackageLock => package_lock::parse(file.data, finds),
                Kind::Yarn => yarn::parse(file.data, finds),
                Kind::Pnpm => pnpm::parse(file.data, finds),
            }
        }))
    }
}

/// Adds an npm package after checking the name's shape (`name` or
/// `@scope/name`, nothing else with a `/`); false when the cap says stop.
fn add(finds: &mut FileFinds<'_>, name: &str, version: &str, evidence: Evidence) -> bool {
    let slashes = name.bytes().filter(|b| *b == b'/').count();
    let scoped = name.starts_with('@');
    if slashes != usize::from(scoped) || name.ends_with('/') {
        finds.warn(format_args!(
            "{:?} is not an npm package name: skipped",
            clip(name)
        ));
        return true;
    }
    finds.add(ECOSYSTEM, name, version, evidence)
}

/// `name@rest` split at the `@` after the name (a scoped name starts with
/// one): `@babel/core@^7` → (`@babel/core`, `^7`); no version → `None`.
fn split_at_version(spec: &str) -> Option<(&str, &str)> {
    let from = usize::from(spec.starts_with('@'));
    let at = spec.get(from..)?.find('@')? + from;
    Some((&spec[..at], &spec[at + 1..]))
}

/// `s` without one pair of surrounding `"` or `'`.
fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

#[cfg(test)]
mod tests;
