//! The real package names and versions a synthetic fleet is made of, read
//! from `../shared/testdata` (see its `SOURCES.md`): Debian packages and
//! versions from the security tracker's DSA/DLA lists, Alpine packages and
//! versions from the Alpine secdb, and PyPI packages at versions OSV lists
//! as affected (so matching the fleet gives real findings).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The default `testdata` directory: `../shared/testdata` beside the checkout.
pub fn default_testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata")
}

/// Records read from the PyPI export at most (it has ~17k; a pool of a few
/// thousand names is plenty and keeps start-up short).
const MAX_PYPI_RECORDS: usize = 6_000;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// (name, version) pairs, sorted by name, one version per name.
pub type Packages = Vec<(String, String)>;

#[derive(Debug, Clone)]
pub struct RealData {
    /// Debian 11 (`bullseye`) packages (the tracker snapshot here predates
    /// bookworm's).
    pub bullseye: Packages,
    /// Debian 10 (`buster`) packages.
    pub buster: Packages,
    /// Alpine 3.10 `main` packages.
    pub alpine: Packages,
    /// PyPI name → versions OSV lists as affected (sorted, deduplicated).
    pub pypi: BTreeMap<String, Vec<String>>,
}

impl RealData {
    pub fn load(testdata: &Path) -> Result<RealData, DataError> {
        let tracker = testdata.join("distro-feeds/debian-security-tracker");
        let mut dsa = read_text(&tracker.join("DSA-list"))?;
        dsa.push_str(&read_text(&tracker.join("DLA-list"))?);
        let alpine = testdata.join("distro-feeds/alpine-secdb/v3.10/main.yaml");
        let data = RealData {
            bullseye: debian(&dsa, "bullseye"),
            buster: debian(&dsa, "buster"),
            alpine: alpine_secdb(&read_text(&alpine)?),
            pypi: pypi(&testdata.join("osv/PyPI/all.zip"))?,
        };
        for (what, n) in [
            ("bullseye", data.bullseye.len()),
            ("buster", data.buster.len()),
            ("alpine", data.alpine.len()),
            ("pypi", data.pypi.len()),
        ] {
            if n < 50 {
                return Err(DataError::Format {
                    path: testdata.to_owned(),
                    reason: format!("only {n} {what} packages found"),
                });
            }
        }
        Ok(data)
    }
}

fn read_text(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| DataError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `\t[bookworm] - name version` lines (the first per name: the newest).
fn debian(list: &str, release: &str) -> Packages {
    let prefix = format!("[{release}] - ");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in list.lines() {
        let Some(rest) = line.trim_start().strip_prefix(&prefix) else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
            continue;
        };
        // `<not-affected>`, `<no-dsa>`, …: no version.
        if version.starts_with('<') || !version.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            continue;
        }
        out.entry(name.to_owned()).or_insert_with(|| version.to_owned());
    }
    out.into_iter().collect()
}

/// The secdb's `name:` and its first `secfixes` version.
fn alpine_secdb(yaml: &str) -> Packages {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in yaml.lines() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("name: ") {
            name = Some(n.trim().to_owned());
        } else if let Some(n) = name.as_ref()
            && line.starts_with("        ")
            && !t.starts_with('-')
            && let Some(v) = t.strip_suffix(':').map(|v| v.trim_matches('"'))
            && v.chars().next().is_some_and(|c| c.is_ascii_digit())
        {
            out.entry(n.clone()).or_insert_with(|| v.to_owned());
            name = None;
        }
    }
    out.into_iter().collect()
}

fn pypi(zip_path: &Path) -> Result<BTreeMap<String, Vec<String>>, DataError> {
    let format = |reason: String| DataError::Format {
        path: zip_path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(zip_path).map_err(|source| DataError::Read {
        path: zip_path.to_owned(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format(e.to_string()))?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut text = String::new();
    for i in 0..zip.len().min(MAX_PYPI_RECORDS) {
        let mut entry = zip.by_index(i).map_err(|e| format(e.to_string()))?;
        text.clear();
        // Records are small; a bad one is skipped, not fatal.
        if entry.size() > 1 << 20 || entry.read_to_string(&mut text).is_err() {
            continue;
        }
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if record.get("withdrawn").is_some() {
            continue;
        }
        for affected in record["affected"].as_array().into_iter().flatten() {
            let Some(name) = affected["package"]["name"].as_str() else {
                continue;
            };
            let versions = affected["versions"].as_array().into_iter().flatten();
            let list = out.entry(name.to_ascii_lowercase()).or_default();
            list.extend(versions.filter_map(|v| v.as_str()).map(str::to_owned));
        }
    }
    out.retain(|_, v| {
        v.sort();
        v.dedup();
        !v.is_empty()
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_lines_give_names_and_versions() {
        let list = "[29 Mar 2023] DSA-5380-1 xorg-server - security update\n\
                    \t{CVE-2023-1393}\n\
                    \t[bookworm] - xorg-server 2:21.1.7-3\n\
                    \t[bullseye] - xorg-server 2:1.20.11-1+deb11u6\n\
                    \t[bookworm] - foo <not-affected> (Vulnerable code not present)\n\
                    \t[bookworm] - xorg-server 2:21.1.4-1\n";
        assert_eq!(
            debian(list, "bookworm"),
            [("xorg-server".into(), "2:21.1.7-3".into())]
        );
        assert_eq!(debian(list, "bullseye")[0].1, "2:1.20.11-1+deb11u6");
    }

    #[test]
    fn alpine_secdb_gives_the_first_fixed_version() {
        let yaml = "packages:\n  - pkg:\n      name: ansible\n      secfixes:\n        2.7.13-r0:\n          - CVE-2019-10206\n        2.7.12-r0:\n          - CVE-1\n  - pkg:\n      name: apache2\n      secfixes:\n        \"2.4.41-r0\":\n          - CVE-2\n";
        assert_eq!(
            alpine_secdb(yaml),
            [
                ("ansible".to_owned(), "2.7.13-r0".to_owned()),
                ("apache2".to_owned(), "2.4.41-r0".to_owned())
            ]
        );
    }
}
