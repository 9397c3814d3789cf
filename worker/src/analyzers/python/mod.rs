//! python: installed distributions, from their core metadata.
//!
//! Reads, anywhere in the image (`site-packages`, `dist-packages`, a
//! virtualenv, `/opt/...`):
//! - `NAME-VER.dist-info/METADATA` (wheels, pip ≥ 20),
//! - `NAME-VER.egg-info/PKG-INFO` (setuptools `install`/`develop`) and
//!   `NAME.egg/EGG-INFO/PKG-INFO` (eggs),
//! - a *file* named `NAME-VER-pyX.Y.egg-info` (distutils, Debian's
//!   `python3-*` packages): the same format.
//!
//! Suffixes are matched ignoring ASCII case (`DIST-INFO` exists in the wild).
//! Only the `Name` and `Version` fields of the RFC 822-style header are
//! read, and reading stops at the first blank line: the body is the
//! description. `RECORD`, `top_level.txt` and the other files of these
//! directories are not read: the files `RECORD` lists belong to the one
//! distribution, they are not packages.
//!
//! Names: `name` is the declared name (`Jinja2`), as pip shows it; the purl
//! carries the PEP 503 normalised name (`pkg:pypi/jinja2@3.1.2`), as the purl
//! spec asks, and matching normalises both sides the same way
//! (`Ecosystem::normalise_name`, the coordinator's `Key::of`). Versions are as
//! declared (PEP 440 ordering is the coordinator's). Evidence `Installed`;
//! `path` is the METADATA/PKG-INFO (or `.egg-info`) file, so a whiteout of the
//! distribution's directory removes it.
//!
//! Contract: one package per file; a file without `Name` or `Version`, not
//! UTF-8 in those fields, or over [`MAX_FILE_BYTES`] is a warning and the
//! other files still count. Never an error. Returns empty when handed no
//! files.

use strata_proto::{Ecosystem, Evidence};

use super::common::{field_str, file_name, lines, parent, per_file};
use super::{Analysis, AnalyzeError, Analyzer, LayerFile};

const NAME: &str = "python";

/// Largest METADATA we read. Long descriptions (a whole README) make some
/// a few hundred KiB; one of many MiB is not real metadata.
pub(crate) const MAX_FILE_BYTES: u64 = 8 << 20;

pub struct Python;

/// ASCII-case-insensitive `s.ends_with(suffix)`, without allocating.
fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.is_char_boundary(s.len() - suffix.len())
        && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

impl Analyzer for Python {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn wants(&self, path: &str) -> bool {
        let file = file_name(path);
        if file.eq_ignore_ascii_case("METADATA") {
            return ends_with_ci(parent(path), ".dist-info");
        }
        if file.eq_ignore_ascii_case("PKG-INFO") {
            let dir = parent(path);
            return ends_with_ci(dir, ".egg-info") || file_name(dir) == "EGG-INFO";
        }
        // A distutils `.egg-info` file (a directory of that name is never
        // passed here: the layer reader asks only about regular files).
        ends_with_ci(file, ".egg-info") && file.len() > ".egg-info".len()
    }

    fn max_file_bytes(&self, _path: &str) -> u64 {
        MAX_FILE_BYTES
    }

    fn analyze(&self, files: &[LayerFile<'_>]) -> Result<Analysis, AnalyzeError> {
        let cap = |p: &str| self.wants(p).then_some(MAX_FILE_BYTES);
        Ok(per_file(NAME, files, cap, |file, finds| {
            match header(file.data) {
                Ok((name, version)) => {
                    finds.add(Ecosystem::PyPI, name, version, Evidence::Installed);
                }
                Err(why) => finds.warn(why),
            }
        }))
    }
}

/// `Name` and `Version` of a core metadata header (the first of each; field
/// names ignore case, as RFC 822's do). Continuation lines are skipped; the
/// first empty line ends the header.
fn header(data: &[u8]) -> Result<(&str, &str), String> {
    let (mut name, mut version) = (None, None);
    for (_, line) in lines(data) {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        if key.eq_ignore_ascii_case(b"Name") && name.is_none() {
            name = Some(field_str("Name", value)?);
        } else if key.eq_ignore_ascii_case(b"Version") && version.is_none() {
            version = Some(field_str("Version", value)?);
        }
        if name.is_some() && version.is_some() {
            break;
        }
    }
    match (name, version) {
        (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => Ok((n, v)),
        _ => Err("no Name and Version in the metadata header: skipped".into()),
    }
}

#[cfg(test)]
mod tests;
