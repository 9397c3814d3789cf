//! Version ordering per ecosystem: one folder per version scheme, each with
//! its vectors test beside it.
//!
//! Contract: [`parse`] turns a version string into a [`Version`] that is
//! cheap to compare (parse once, compare many times; comparison never
//! allocates). A string the scheme's reference implementation would reject
//! is an error ([`VersionError::Invalid`]), never a guess. Two `Version`s of
//! the same scheme order by that scheme's rules; `Version`s of different
//! schemes order by scheme first (consistent, never a panic).
//!
//! # Layout
//! - `dpkg/`: Debian, Ubuntu (dpkg's `verrevcmp`, epochs, `~`).
//! - `apk/`: Alpine, Wolfi, Chainguard (apk-tools' `version.c` tokens).
//! - `rpm/`: Red Hat family, SUSE (`rpmvercmp` on epoch, version, release).
//! - `pep440/`: PyPI (the `pep440_rs` crate, checked against `packaging`'s vectors).
//! - `semver/`: npm and crates.io (semver 2.0 precedence, node-semver loose
//!   parsing, and node-semver range evaluation in `semver::npm_range`).
//! - `golang/`: Go modules (semver with `v`, pseudo-versions, `+incompatible`).
//! - `maven/`: Maven (the POM spec's order as osv.dev implements it).
//! - `rubygems/`: RubyGems (`Gem::Version`).
//! - `nuget/`: NuGet (`NuGet.Versioning`: four parts, case-insensitive
//!   prerelease labels, metadata ignored).
//! - `composer/`: Packagist (Composer's `VersionParser::normalize`, then
//!   PHP's `version_compare`).
//! - `constraint.rs`: comparisons (`>=1.2`, `<2`) and their conjunctions,
//!   over any scheme's versions (fleet queries, npm ranges).
//!
//! Which ecosystem uses which scheme is a column of the ecosystem table
//! (`strata_proto::ecosystem`); [`Scheme`] is that column's type.

pub mod apk;
pub mod composer;
pub mod constraint;
pub mod dpkg;
pub mod golang;
pub mod maven;
pub mod nuget;
pub mod pep440;
pub mod rpm;
pub mod rubygems;
pub mod semver;

use std::cmp::Ordering;
use std::fmt;

pub use strata_proto::Ecosystem;

/// Longest version string accepted by any scheme: real versions are far
/// shorter, and the bound keeps input-driven allocation small.
pub const MAX_VERSION_LEN: usize = 1024;

/// A version ordering scheme, as the ecosystem table names it; this
/// module holds the implementations (one folder each).
pub use strata_proto::ecosystem::VersionScheme as Scheme;

/// The version scheme an ecosystem orders its versions by, from its row of
/// the ecosystem table; `Err(Unsupported)` for an ecosystem without one
/// (none today).
pub fn scheme(eco: Ecosystem) -> Result<Scheme, VersionError> {
    eco.version_scheme().ok_or(VersionError::Unsupported(eco))
}

/// Errors from parsing or comparing versions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    #[error("{scheme}: invalid version {version:?}: {reason}")]
    Invalid {
        scheme: Scheme,
        version: String,
        reason: &'static str,
    },
    #[error("{scheme}: invalid range {range:?}: {reason}")]
    InvalidRange {
        scheme: Scheme,
        range: String,
        reason: &'static str,
    },
    #[error("{}: no version ordering implemented for this ecosystem", .0.as_str())]
    Unsupported(Ecosystem),
}

impl VersionError {
    /// An `Invalid` error; the version is cut to 200 characters so a huge
    /// input cannot make a huge error.
    pub(crate) fn invalid(scheme: Scheme, version: &str, reason: &'static str) -> VersionError {
        VersionError::Invalid {
            scheme,
            version: version.chars().take(200).collect(),
            reason,
        }
    }

    /// The shared length bound, checked by every scheme's parser.
    pub(crate) fn check_len(scheme: Scheme, s: &str) -> Result<(), VersionError> {
        if s.len() > MAX_VERSION_LEN {
            return Err(VersionError::invalid(scheme, s, "longer than 1024 bytes"));
        }
        Ok(())
    }

    pub(crate) fn invalid_range(scheme: Scheme, range: &str, reason: &'static str) -> VersionError {
        VersionError::InvalidRange {
            scheme,
            range: range.chars().take(200).collect(),
            reason,
        }
    }
}

/// A parsed version of one scheme.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(Repr);

// Variant order is the cross-scheme order; within a variant each type
// implements its scheme's ordering (and an equality consistent with it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Repr {
    Dpkg(dpkg::DpkgVersion),
    Apk(apk::ApkVersion),
    Rpm(rpm::RpmVersion),
    Pep440(pep440::Pep440Version),
    Semver(semver::SemverVersion),
    Go(golang::GoVersion),
    Maven(maven::MavenVersion),
    RubyGems(rubygems::GemVersion),
    NuGet(nuget::NuGetVersion),
    Composer(composer::ComposerVersion),
}

impl Version {
    pub fn scheme(&self) -> Scheme {
        match &self.0 {
            Repr::Dpkg(_) => Scheme::Dpkg,
            Repr::Apk(_) => Scheme::Apk,
            Repr::Rpm(_) => Scheme::Rpm,
            Repr::Pep440(_) => Scheme::Pep440,
            Repr::Semver(_) => Scheme::Semver,
            Repr::Go(_) => Scheme::Go,
            Repr::Maven(_) => Scheme::Maven,
            Repr::RubyGems(_) => Scheme::RubyGems,
            Repr::NuGet(_) => Scheme::NuGet,
            Repr::Composer(_) => Scheme::Composer,
        }
    }

    /// The version string as given (trimmed where the scheme trims).
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Dpkg(v) => v.as_str(),
            Repr::Apk(v) => v.as_str(),
            Repr::Rpm(v) => v.as_str(),
            Repr::Pep440(v) => v.as_str(),
            Repr::Semver(v) => v.as_str(),
            Repr::Go(v) => v.as_str(),
            Repr::Maven(v) => v.as_str(),
            Repr::RubyGems(v) => v.as_str(),
            Repr::NuGet(v) => v.as_str(),
            Repr::Composer(v) => v.as_str(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `s` under `scheme`; an error when the scheme rejects it.
pub fn parse(scheme: Scheme, s: &str) -> Result<Version, VersionError> {
    if s.len() > MAX_VERSION_LEN {
        return Err(VersionError::invalid(scheme, s, "longer than 1024 bytes"));
    }
    let repr = match scheme {
        Scheme::Dpkg => Repr::Dpkg(dpkg::DpkgVersion::parse(s)?),
        Scheme::Apk => Repr::Apk(apk::ApkVersion::parse(s)?),
        Scheme::Rpm => Repr::Rpm(rpm::RpmVersion::parse(s)?),
        Scheme::Pep440 => Repr::Pep440(pep440::Pep440Version::parse(s)?),
        Scheme::Semver => Repr::Semver(semver::SemverVersion::parse(s)?),
        Scheme::Go => Repr::Go(golang::GoVersion::parse(s)?),
        Scheme::Maven => Repr::Maven(maven::MavenVersion::parse(s)?),
        Scheme::RubyGems => Repr::RubyGems(rubygems::GemVersion::parse(s)?),
        Scheme::NuGet => Repr::NuGet(nuget::NuGetVersion::parse(s)?),
        Scheme::Composer => Repr::Composer(composer::ComposerVersion::parse(s)?),
    };
    Ok(Version(repr))
}

/// Parses both and compares them; an error if either does not parse.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(parse(scheme, a)?.cmp(&parse(scheme, b)?))
}

/// Shared by the per-scheme vectors tests.
#[cfg(test)]
pub(crate) mod vectors {
    use std::cmp::Ordering;

    /// Reads `/work/shared/testdata/versions/<name>` as tab-separated rows.
    /// Fails the test when the file is missing or has no rows.
    pub fn rows(name: &str) -> Vec<Vec<String>> {
        let path = format!(
            "{}/../../shared/testdata/versions/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let rows: Vec<Vec<String>> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect();
        assert!(!rows.is_empty(), "{path}: no vectors");
        rows
    }

    pub fn ordering(s: &str) -> Ordering {
        match s {
            "<" => Ordering::Less,
            "=" => Ordering::Equal,
            ">" => Ordering::Greater,
            other => panic!("bad expected column {other:?}"),
        }
    }

    /// Reads `coordinator/src/versions/<path>`, a vectors file kept beside
    /// its scheme: tab-separated rows, `#` lines are comments (where the
    /// vectors come from, their licence). Fails the test when it has no rows.
    pub fn local_rows(path: &str) -> Vec<Vec<String>> {
        let full = format!("{}/src/versions/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
        let rows: Vec<Vec<String>> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect();
        assert!(!rows.is_empty(), "{full}: no vectors");
        rows
    }

    /// [`check_rows`] over `/work/shared/testdata/versions/<name>`.
    pub fn check_pairs(
        name: &str,
        cmp: impl Fn(&str, &str) -> Result<Ordering, super::VersionError>,
    ) -> usize {
        check_rows(name, &rows(name), cmp)
    }

    /// Checks `cmp(a, b) == expected` for every row (and the reverse),
    /// collecting all failures; returns how many rows it checked.
    pub fn check_rows(
        name: &str,
        rows: &[Vec<String>],
        cmp: impl Fn(&str, &str) -> Result<Ordering, super::VersionError>,
    ) -> usize {
        let mut failures = Vec::new();
        for r in rows {
            assert!(r.len() >= 3, "{name}: short row {r:?}");
            let want = ordering(&r[2]);
            match cmp(&r[0], &r[1]) {
                Ok(got) if got == want => {}
                other => failures.push(format!("{:?} vs {:?}: want {want:?}, got {other:?}", r[0], r[1])),
            }
            match cmp(&r[1], &r[0]) {
                Ok(got) if got == want.reverse() => {}
                other => failures.push(format!(
                    "reversed {:?} vs {:?}: want {:?}, got {other:?}",
                    r[1],
                    r[0],
                    want.reverse()
                )),
            }
        }
        assert!(
            failures.is_empty(),
            "{name}: {} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ecosystem_has_a_scheme() {
        for &eco in Ecosystem::ALL {
            if let Err(e) = scheme(eco) {
                panic!("{e}");
            }
        }
        assert_eq!(scheme(Ecosystem::Debian).ok(), Some(Scheme::Dpkg));
        assert_eq!(scheme(Ecosystem::Wolfi).ok(), Some(Scheme::Apk));
        assert_eq!(scheme(Ecosystem::NuGet).ok(), Some(Scheme::NuGet));
        assert_eq!(scheme(Ecosystem::Packagist).ok(), Some(Scheme::Composer));
    }

    #[test]
    fn versions_of_different_schemes_compare_without_panic() {
        let a = parse(Scheme::Dpkg, "1.0").unwrap();
        let b = parse(Scheme::Rpm, "1.0").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.cmp(&b), a.scheme().cmp(&b.scheme()));
    }

    /// Garbage, empty and odd input: every scheme answers (an error or a
    /// version equal to itself), never panics.
    #[test]
    fn garbage_never_panics() {
        let nested = "a1".repeat(500);
        let digits = "9".repeat(1000);
        let inputs = [
            "",
            " ",
            "\0",
            "-",
            ":",
            "~",
            "^",
            ".",
            "+",
            "_",
            "v",
            "=",
            "1:",
            ":1",
            "-r",
            "1-",
            "1..",
            "🦀",
            "1.🦀",
            "é1",
            "1é",
            "1.0-é",
            "0:",
            "1.0~~~",
            "v1.2.3-+",
            "1.2.3-.",
            "99999999999999999999999999",
            &nested,
            &digits,
            "1-1-1-1-1-1-1-1-1-1-1",
            "1.0a1b2c3",
            "\u{7f}",
        ];
        for scheme in Scheme::ALL {
            for s in inputs {
                if let Ok(v) = parse(scheme, s) {
                    assert_eq!(v.cmp(&v), Ordering::Equal, "{scheme} {s:?}");
                    assert_eq!(v.scheme(), scheme);
                }
            }
        }
    }

    #[test]
    fn overlong_versions_are_rejected() {
        let long = "1".repeat(MAX_VERSION_LEN + 1);
        assert!(matches!(
            parse(Scheme::Dpkg, &long),
            Err(VersionError::Invalid { .. })
        ));
    }
}
