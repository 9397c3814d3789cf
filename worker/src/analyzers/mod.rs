//! Package analysers: one folder per ecosystem, each behind [`Analyzer`].
//!
//! The layer reader walks a layer's tar once and, for every regular file,
//! asks each analyser whether it [`wants`](Analyzer::wants) the path. Wanted
//! files are read into memory (capped) and handed to
//! [`analyze`](Analyzer::analyze) together, once per layer. The list of
//! analysers is explicit: see [`all`].
//!
//! # The analysers
//! - [`dpkg`] reads `/var/lib/dpkg/status`, `/var/lib/dpkg/status.d/*`.
//! - [`apk`] reads `/lib/apk/db/installed`.
//! - [`rpm`] reads `rpmdb.sqlite` and BerkeleyDB `Packages` under `/var/lib/rpm/`
//!   or `/usr/lib/sysimage/rpm/`; NDB `Packages.db` only yields a warning.
//! - [`os_release`] reads `/etc/os-release`, `/usr/lib/os-release`, distro files.
//! - [`python`] reads installed distributions anywhere: `*.dist-info/METADATA`,
//!   `*.egg-info/PKG-INFO`, `EGG-INFO/PKG-INFO`, `*.egg-info` files.
//! - [`npm`] reads `node_modules/[@scope/]name/package.json` at any depth,
//!   and `package-lock.json`, `npm-shrinkwrap.json`, `yarn.lock`,
//!   `pnpm-lock.yaml` where no `node_modules` is beside them in the layer
//!   (evidence `lockfile`); a project's own `package.json` (evidence `app`).
//! - [`ruby`] reads installed `specifications/*.gemspec` (and `default/`) and
//!   `Gemfile.lock` / `gems.locked`.
//! - [`php`] reads `vendor/composer/installed.json` (Composer 1 and 2) and
//!   `composer.lock` where no `vendor/` is beside it in the layer.
//! - [`dotnet`] reads `*.deps.json` (`libraries` of type `package`).
//! - [`cargo`] reads `Cargo.lock` (v1–v4; crates without a `source` are the
//!   project's own: evidence `app`).
//!
//! Every one is checked by the conformance suite (`conformance.rs`: empty,
//! garbage, truncated and mutated input) and, where real tools' output
//! exists, against it (`expected.rs`: every `pkgdb-expected` file).

pub mod apk;
pub mod cargo;
mod common;
#[cfg(test)]
mod conformance;
pub mod dotnet;
pub mod dpkg;
#[cfg(test)]
mod expected;
pub mod npm;
pub mod os_release;
pub mod php;
pub mod python;
pub mod rpm;
pub mod ruby;
#[cfg(test)]
mod testutil;

use strata_proto::{OsRelease, Package};

/// One file captured from a layer, in memory. `path` is absolute and
/// normalised (`/var/lib/dpkg/status`, no `./` prefix, no trailing `/`).
#[derive(Debug, Clone, Copy)]
pub struct LayerFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

/// What one analyser found in one layer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Analysis {
    /// Packages, with `layer` left `None` (the layer reader sets it).
    pub packages: Vec<Package>,
    /// Set only by the OS release analyser.
    pub os_release: Option<OsRelease>,
    /// Non-fatal problems (a record skipped, one file of several unreadable):
    /// partial results are normal.
    pub warnings: Vec<String>,
}

/// An analyser could not make sense of its input at all.
#[derive(Debug, thiserror::Error)]
#[error("{analyzer}: {path}: {reason}")]
pub struct AnalyzeError {
    pub analyzer: &'static str,
    pub path: String,
    pub reason: String,
}

/// A package analyser. Synchronous and CPU-bound: callers run it off the
/// async runtime.
///
/// Contract: never panics on any input; returns an empty [`Analysis`], not an
/// error, when it was handed no files.
pub trait Analyzer: Send + Sync {
    /// Stable name, persisted with results.
    fn name(&self) -> &'static str;
    /// Bump when the output for the same input may change: part of the
    /// layer dedup key, so a new version re-analyses exactly what it must.
    fn version(&self) -> u32;
    /// Cheap filter called for every regular file during the tar walk.
    fn wants(&self, path: &str) -> bool;
    /// Turn the wanted files of one layer into packages.
    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError>;
}

/// Every analyser, in a fixed order.
pub fn all() -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(dpkg::Dpkg),
        Box::new(apk::Apk),
        Box::new(rpm::Rpm),
        Box::new(os_release::OsReleaseAnalyzer),
        Box::new(python::Python),
        Box::new(npm::Npm),
        Box::new(ruby::Ruby),
        Box::new(php::Php),
        Box::new(dotnet::Dotnet),
        Box::new(cargo::Cargo),
    ]
}

/// The analyser-set version: every analyser's name and version, so a change
/// to any one re-analyses every layer. Part of inventory keys and job ids,
/// so it uses only `[a-z0-9-]`.
pub fn analyzer_set_version(analyzers: &[Box<dyn Analyzer>]) -> String {
    let mut parts: Vec<String> = analyzers
        .iter()
        .map(|a| format!("{}{}", a.name(), a.version()))
        .collect();
    parts.sort();
    if parts.is_empty() {
        return "none".into();
    }
    parts.join("-")
}
