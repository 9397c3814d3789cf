//! `package-lock.json` and `npm-shrinkwrap.json`.
//!
//! - v2 and v3: the `packages` map, keyed by install path
//!   (`node_modules/a/node_modules/@s/b`). The root (`""`) and workspace
//!   members (keys without `node_modules/`) are the project's own; `link`
//!   entries point at them. The name is the entry's `name` (an alias's real
//!   package) or the key's last `node_modules/` segment.
//! - v1: the nested `dependencies` tree (v2 carries it too, for old npm
//!   versions: read only when `packages` is absent). An alias's version is
//!   `npm:real@1.0.0`.

use std::collections::BTreeMap;

use serde::Deserialize;
use strata_proto::Evidence;

use super::{add, split_at_version};
use crate::analyzers::common::{FileFinds, is_version};

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    packages: Option<BTreeMap<String, Entry>>,
    #[serde(default)]
    dependencies: Option<BTreeMap<String, Dependency>>,
}

/// One `packages` entry (v2, v3).
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    link: Option<bool>,
}

/// One `dependencies` entry (v1), nested. serde_json's nesting limit bounds
/// the depth.
#[derive(Deserialize)]
struct Dependency {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    dependencies: Option<BTreeMap<String, Dependency>>,
}

pub(super) fn parse(data: &[u8], finds: &mut FileFinds<'_>) {
    let Some(lock) = finds.json::<Lock>(data, "package-lock.json") else {
        return;
    };
    match (lock.packages, lock.dependencies) {
        (Some(packages), _) => {
            for (key, e) in &packages {
                let Some(i) = key.rfind("node_modules/") else {
                    continue;
                };
                if e.link == Some(true) {
                    continue;
                }
                let name = e.name.as_deref().unwrap_or(&key[i + "node_modules/".len()..]);
                let Some(version) = e.version.as_deref().filter(|v| is_version(v)) else {
                    continue;
                };
                if !add(finds, name, version, Evidence::Lockfile) {
                    return;
                }
            }
        }
        (None, Some(deps)) => {
            let mut stack: Vec<&BTreeMap<String, Dependency>> = vec![&deps];
            while let Some(map) = stack.pop() {
                for (name, d) in map {
                    if let Some(nested) = &d.dependencies {
                        stack.push(nested);
                    }
                    let Some(version) = d.version.as_deref() else {
                        continue;
                    };
                    let (name, version) = match version.strip_prefix("npm:").and_then(split_at_version) {
                        Some(real) => real,
                        None => (name.as_str(), version),
                    };
                    if is_version(version) && !add(finds, name, version, Evidence::Lockfile) {
                        return;
                    }
                }
            }
        }
        (None, None) => {}
    }
}
