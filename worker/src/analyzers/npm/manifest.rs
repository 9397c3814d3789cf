//! `package.json`: an installed package's, or a project's own.

use serde::Deserialize;
use strata_proto::Evidence;

use super::add;
use crate::analyzers::common::FileFinds;

/// The two fields we read; serde skips the rest (bounded by serde_json's
/// nesting limit).
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// An installed package: name and version are required.
pub(super) fn installed(data: &[u8], finds: &mut FileFinds<'_>) {
    let Some(m) = finds.json::<Manifest>(data, "package.json") else {
        return;
    };
    match (m.name, m.version) {
        (Some(name), Some(version)) => {
            add(finds, &name, &version, Evidence::Installed);
        }
        _ => finds.warn("installed package.json without name or version: skipped"),
    }
}

/// The project's own manifest: listed when it has both, else nothing (a
/// private application often has no version).
pub(super) fn project(data: &[u8], finds: &mut FileFinds<'_>) {
    let Some(m) = finds.json::<Manifest>(data, "package.json") else {
        return;
    };
    if let (Some(name), Some(version)) = (m.name, m.version)
        && !name.trim().is_empty()
        && !version.trim().is_empty()
    {
        add(finds, &name, &version, Evidence::App);
    }
}
