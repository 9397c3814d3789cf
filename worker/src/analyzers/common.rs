//! Small helpers shared by the analysers: purls, line splitting, the caps
//! every analyser applies to what the input controls, and for application
//! ecosystems [`per_file`] (their loop over a layer's files) and
//! [`FileFinds`] (one file's packages, deduplicated and capped).

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use strata_proto::purl::Purl;
use strata_proto::{Ecosystem, Evidence, Package};

use super::{Analysis, LayerFile};

/// Most packages one database may yield; more is treated as hostile input.
pub(crate) const MAX_PACKAGES: usize = 200_000;

/// Longest name, version, architecture or source field we accept. Real
/// values are far shorter; a longer one is a broken or hostile database.
pub(crate) const MAX_FIELD_LEN: usize = 4096;

/// At most this many warnings per analysis, so a garbage file cannot make
/// the warning list as large as the input.
pub(crate) const MAX_WARNINGS: usize = 100;

/// Adds a warning unless the cap is reached (then one final note).
pub(crate) fn warn(warnings: &mut Vec<String>, msg: String) {
    if warnings.len() < MAX_WARNINGS {
        warnings.push(msg);
    } else if warnings.len() == MAX_WARNINGS {
        warnings.push("further warnings suppressed".into());
    }
}

/// A value shortened for an error message (input may be hostile).
pub(crate) fn clip(s: &str) -> String {
    strata_proto::text::cut_marked(s, 80)
}

/// The purl of an OS package (`pkg:deb/debian/NAME@VERSION?arch=ARCH`):
/// type and namespace are the ecosystem's, from the ecosystem table, built
/// by `strata_proto::purl` (which refuses values that would not read back
/// as this package). The error is a message for a warning.
pub(crate) fn os_purl(
    ecosystem: Ecosystem,
    name: &str,
    version: &str,
    arch: Option<&str>,
) -> Result<String, String> {
    Purl::package(ecosystem, name, version, arch)
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

/// Lines of `data` without their `\n` (and a `\r` before it), numbered
/// from 1. A final line without a newline is still yielded.
pub(crate) fn lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let mut iter = (!data.is_empty()).then(|| data.split(|b| *b == b'\n'));
    std::iter::from_fn(move || iter.as_mut()?.next())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// A field value as UTF-8, trimmed, bounded by [`MAX_FIELD_LEN`].
pub(crate) fn field_str<'a>(field: &str, value: &'a [u8]) -> Result<&'a str, String> {
    if value.len() > MAX_FIELD_LEN {
        return Err(format!("{field} longer than {MAX_FIELD_LEN} bytes"));
    }
    let s = std::str::from_utf8(value).map_err(|_| format!("{field} is not valid UTF-8"))?;
    Ok(s.trim())
}

/// True (after a warning) when `file` is larger than `max` bytes: the
/// analyser skips it. A real manifest or lockfile is far smaller; a larger
/// one is broken or hostile, and reading it would cost time for nothing.
pub(crate) fn oversized(analyzer: &str, file: &LayerFile<'_>, max: u64, out: &mut Analysis) -> bool {
    let len = file.data.len() as u64;
    if len <= max {
        return false;
    }
    warn(
        &mut out.warnings,
        format!(
            "{analyzer}: {}: {len} bytes, more than the {max} this analyser reads: skipped",
            file.path
        ),
    );
    true
}

/// Whether `v` looks like a released version of a language package: it
/// starts with a digit. What lockfiles write for git, file and tarball
/// dependencies (`git+https://…`, `file:../x`) does not, and no advisory
/// range could place it.
pub(crate) fn is_version(v: &str) -> bool {
    v.starts_with(|c: char| c.is_ascii_digit())
}

/// The packages of one application manifest or lockfile, as they are
/// found: purls built from the ecosystem table, duplicates within the file
/// dropped (a lockfile names a package once per dependant), every problem a
/// warning naming the analyser and the file, and [`MAX_PACKAGES`] per
/// analysis: past it the rest of the file is skipped with one warning.
pub(crate) struct FileFinds<'a> {
    analyzer: &'static str,
    path: &'a str,
    out: &'a mut Analysis,
    seen: HashSet<(String, String)>,
    full: bool,
}

impl<'a> FileFinds<'a> {
    pub(crate) fn new(analyzer: &'static str, path: &'a str, out: &'a mut Analysis) -> Self {
        FileFinds {
            analyzer,
            path,
            out,
            seen: HashSet::new(),
            full: false,
        }
    }

    /// The file parsed as JSON into `T` (which names only the fields it
    /// reads), or a warning (`what` the file should have been) and `None`.
    /// serde_json stops at 128 levels of nesting, so hostile input cannot
    /// exhaust the stack; parsing is linear in the input's size.
    pub(crate) fn json<T: DeserializeOwned>(&mut self, data: &[u8], what: &str) -> Option<T> {
        match serde_json::from_slice(data) {
            Ok(v) => Some(v),
            Err(e) => {
                self.warn(format_args!("not a {what}: {}", clip(&e.to_string())));
                None
            }
        }
    }

    /// A warning about this file.
    pub(crate) fn warn(&mut self, msg: impl std::fmt::Display) {
        warn(
            &mut self.out.warnings,
            format!("{}: {}: {msg}", self.analyzer, self.path),
        );
    }

    /// Adds a package named and versioned as the file writes them (trimmed),
    /// unless this file already named it. The purl is built from the
    /// ecosystem's normalised name (PEP 503 for PyPI), `name` stays as
    /// declared. An empty or overlong name or version, one with whitespace
    /// or control characters, or one whose purl would not read back as the
    /// same package, is a warning. Returns false once the cap is
    /// reached: the caller stops reading the file.
    pub(crate) fn add(
        &mut self,
        ecosystem: Ecosystem,
        name: &str,
        version: &str,
        evidence: Evidence,
    ) -> bool {
        if self.full {
            return false;
        }
        let (name, version) = (name.trim(), version.trim());
        let bad = |s: &str| {
            s.is_empty() || s.len() > MAX_FIELD_LEN || s.chars().any(|c| c.is_control() || c.is_whitespace())
        };
        if bad(name) || bad(version) {
            self.warn(format!(
                "package {:?} version {:?}: empty, too long, or with whitespace or control characters: skipped",
                clip(name),
                clip(version)
            ));
            return true;
        }
        if self.seen.contains(&(name.to_owned(), version.to_owned())) {
            return true;
        }
        if self.out.packages.len() >= MAX_PACKAGES {
            self.full = true;
            self.warn(format!(
                "more than {MAX_PACKAGES} packages: the rest of the file is skipped"
            ));
            return false;
        }
        let purl = match canonical_purl(ecosystem, name, version) {
            Ok(p) => p,
            Err(e) => {
                self.warn(format!("{}@{}: {e}", clip(name), clip(version)));
                return true;
            }
        };
        self.seen.insert((name.to_owned(), version.to_owned()));
        self.out.packages.push(Package {
            ecosystem,
            name: name.to_owned(),
            version: version.to_owned(),
            source_name: None,
            source_version: None,
            arch: None,
            purl,
            path: self.path.to_owned(),
            layer: None,
            evidence,
        });
        true
    }
}

/// The purl of a language package, built from the name as the purl spec
/// writes it for the ecosystem (normalised or as declared: the table's
/// `PurlForm::normalised`); `Purl::package` refuses values that would not
/// read back as this package.
fn canonical_purl(ecosystem: Ecosystem, name: &str, version: &str) -> Result<String, String> {
    let name = if ecosystem.row().purl.normalised {
        ecosystem.normalise_name(name)
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    Purl::package(ecosystem, &name, version, None)
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

/// The directory of an absolute path (`/app/yarn.lock` → `/app`; `/x` → ``).
pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The file name of a path (`/app/yarn.lock` → `yarn.lock`).
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, f)| f)
}

/// The loop every application analyser runs: each file `cap` takes
/// (`Some(its largest size)`; `None` leaves it alone), in path order so the
/// output does not depend on tar order, handed to `each` with the
/// [`FileFinds`] of that file. A file over its cap is skipped with a warning.
pub(crate) fn per_file(
    analyzer: &'static str,
    files: &[LayerFile<'_>],
    cap: impl Fn(&str) -> Option<u64>,
    mut each: impl FnMut(&LayerFile<'_>, &mut FileFinds<'_>),
) -> Analysis {
    let mut out = Analysis::default();
    let mut taken: Vec<(&LayerFile<'_>, u64)> =
        files.iter().filter_map(|f| Some((f, cap(f.path)?))).collect();
    taken.sort_by_key(|(f, _)| f.path);
    for (file, max) in taken {
        if oversized(analyzer, file, max, &mut out) {
            continue;
        }
        each(file, &mut FileFinds::new(analyzer, file.path, &mut out));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_encodes_epoch_and_sorts_qualifiers() {
        let p = os_purl(Ecosystem::Debian, "git-core", "1:2.14.2-1", Some("all")).unwrap();
        assert_eq!(p, "pkg:deb/debian/git-core@1:2.14.2-1?arch=all");
        let p = os_purl(Ecosystem::Alpine, "musl", "1.2.3-r5", None).unwrap();
        assert_eq!(p, "pkg:apk/alpine/musl@1.2.3-r5");
        assert!(os_purl(Ecosystem::Debian, "", "1", None).is_err());
        let p = os_purl(
            Ecosystem::Debian,
            "libpam-runtime",
            "1.5.2-6+deb12u1~x",
            Some("all"),
        )
        .unwrap();
        assert_eq!(p, "pkg:deb/debian/libpam-runtime@1.5.2-6%2Bdeb12u1~x?arch=all");
    }

    #[test]
    fn lines_handles_crlf_and_missing_final_newline() {
        let got: Vec<_> = lines(b"a\r\nb\n\nc").collect();
        assert_eq!(got, vec![(1, &b"a"[..]), (2, b"b"), (3, b""), (4, b"c")]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"\n").count(), 0);
    }

    #[test]
    fn file_finds_dedupes_normalises_the_purl_and_caps() {
        let mut out = Analysis::default();
        let mut f = FileFinds::new("t", "/x/METADATA", &mut out);
        assert!(f.add(Ecosystem::PyPI, "Jinja2", "3.1.2", Evidence::Installed));
        assert!(f.add(Ecosystem::PyPI, " Jinja2 ", "3.1.2", Evidence::Installed));
        assert!(f.add(Ecosystem::PyPI, "zope.interface", "6.0", Evidence::Installed));
        assert!(f.add(Ecosystem::PyPI, "", "1", Evidence::Installed));
        assert!(f.add(Ecosystem::Npm, "a\nb", "1", Evidence::Installed));
        let got: Vec<_> = out
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.purl.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Jinja2", "pkg:pypi/jinja2@3.1.2"),
                ("zope.interface", "pkg:pypi/zope-interface@6.0")
            ]
        );
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(
            out.warnings[0].starts_with("t: /x/METADATA: "),
            "{:?}",
            out.warnings
        );

        let mut out = Analysis {
            packages: vec![out.packages[0].clone(); MAX_PACKAGES],
            ..Analysis::default()
        };
        let mut f = FileFinds::new("t", "/y", &mut out);
        assert!(!f.add(Ecosystem::Npm, "a", "1", Evidence::Lockfile));
        assert!(!f.add(Ecosystem::Npm, "b", "1", Evidence::Lockfile));
        assert_eq!(out.warnings.len(), 1);
    }

    #[test]
    fn paths_split() {
        assert_eq!(
            (parent("/app/yarn.lock"), file_name("/app/yarn.lock")),
            ("/app", "yarn.lock")
        );
        assert_eq!((parent("/x"), file_name("/x")), ("", "x"));
        assert!(is_version("1.0") && !is_version("git+https://x") && !is_version(""));
    }
}
