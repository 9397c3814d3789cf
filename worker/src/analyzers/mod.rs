//! Package analysers: one folder per ecosystem, each behind [`Analyzer`].
//!
//! The layer reader walks a layer's tar once. An analyser takes part in two
//! ways, either or both:
//! - **Whole files, by path** (package databases, manifests, lockfiles):
//!   for every regular file the reader asks [`wants`](Analyzer::wants); a
//!   wanted file is read into memory (capped: the layer's
//!   `max_file_bytes` and the analyser's own
//!   [`max_file_bytes`](Analyzer::max_file_bytes), over which it is skipped
//!   with a warning) and all of one layer's are handed to
//!   [`analyze`](Analyzer::analyze) together, at the end of the layer.
//! - **Streams, by content** (executables, archives: what a file is shows in
//!   its mode and first bytes, not its name, and capturing every binary of a
//!   base image whole would cost hundreds of MB): an analyser whose
//!   [`streams`](Analyzer::streams) is true is shown every regular file's
//!   [`EntryHead`] (path, mode, size, first [`HEAD_BYTES`] bytes) and may
//!   [`open`](Analyzer::open) an [`EntrySink`] that is fed the file's bytes
//!   in order as they stream past, holding only what it needs, and says
//!   what it found when the file ends. The walk stays one pass: a file's
//!   bytes are read once whoever consumes them.
//!
//! The list of analysers is explicit: see [`all`].
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
//! - [`golang`] streams executables (ELF, Mach-O, PE) for Go build information:
//!   the toolchain (`stdlib`), the main module and every dependency.
//! - [`cargo_auditable`] streams executables for the dependency list
//!   `cargo auditable` embeds (crates.io packages of Rust binaries).
//! - [`java`] streams Java archives (`.jar`, `.war`, `.ear`, `.jpi`, `.hpi`)
//!   for Maven artifacts: every `pom.properties`, else the manifest, else
//!   the file name (low confidence); nested archives to the nesting cap.
//!
//! Every one is checked by the conformance suite (`conformance.rs`: empty,
//! garbage, truncated and mutated input) and, where real tools' output
//! exists, against it (`expected.rs`: every `pkgdb-expected` file).

pub mod apk;
pub mod cargo;
pub mod cargo_auditable;
mod common;
#[cfg(test)]
mod conformance;
pub mod dotnet;
pub mod dpkg;
pub(crate) mod elf;
#[cfg(test)]
mod expected;
pub mod golang;
pub mod java;
pub mod npm;
pub mod os_release;
pub mod php;
pub mod python;
pub mod rpm;
pub mod ruby;
#[cfg(test)]
mod testutil;

use strata_proto::{OsRelease, Package};

use crate::layer::Limits;

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

/// Bytes of a file's start shown to streaming analysers in [`EntryHead`]:
/// enough for any magic number, a zip header, and an ELF header with its
/// program headers (which say where the loaded segments lie).
pub const HEAD_BYTES: usize = 4096;

/// A regular file as the walk meets it, before its content streams past.
#[derive(Debug, Clone, Copy)]
pub struct EntryHead<'a> {
    /// Absolute and normalised, as in [`LayerFile`].
    pub path: &'a str,
    /// Unix permission bits (`0o755`); executables have an `x` bit.
    pub mode: u32,
    /// The file's size in bytes.
    pub size: u64,
    /// Its first `min(size, HEAD_BYTES)` bytes.
    pub head: &'a [u8],
    /// The layer's caps (nesting depth, file sizes), for sinks that open
    /// archives inside the file.
    pub limits: &'a Limits,
}

/// Consumes one file's bytes as they stream past. Holds only what it needs
/// (bounded whatever the input); never panics.
pub trait EntrySink {
    /// The next bytes of the file, in order; the first call starts at byte
    /// 0 (the head again). Returns `false` once nothing more is wanted: the
    /// rest of the file streams past without it.
    fn write(&mut self, chunk: &[u8]) -> bool;
    /// The file ended (`complete`: all its bytes were given or the sink
    /// stopped early; `false`: the entry was cut short) — what it found.
    /// Packages' `path` is the file's (or `file!/inner/path` inside an
    /// archive); `layer` is left `None`.
    fn finish(self: Box<Self>, complete: bool) -> Analysis;
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
    /// Cheap filter called for every regular file during the tar walk
    /// (none, for an analyser that only streams).
    fn wants(&self, path: &str) -> bool {
        let _ = path;
        false
    }
    /// Turn the wanted files of one layer into packages.
    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let _ = files;
        Ok(Analysis::default())
    }
    /// The largest file at `path` (one it wants) this analyser takes whole:
    /// a bigger one is not captured for it, with a warning (the rest of the
    /// layer goes on). The layer's own `max_file_bytes` applies as well.
    fn max_file_bytes(&self, path: &str) -> u64 {
        let _ = path;
        u64::MAX
    }
    /// Whether [`Self::open`] can ever return a sink; only then is the
    /// analyser shown every file's head.
    fn streams(&self) -> bool {
        false
    }
    /// A sink for this file's bytes, when its head shows it is one this
    /// analyser reads. Called for every regular file of every layer: decide
    /// from the mode, size and first bytes, cheaply.
    fn open(&self, entry: &EntryHead<'_>) -> Option<Box<dyn EntrySink>> {
        let _ = entry;
        None
    }
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
        Box::new(golang::GoBinaries),
        Box::new(cargo_auditable::CargoAuditable),
        Box::new(java::JavaArchives),
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
