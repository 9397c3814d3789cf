//! Go module version ordering: semantic versions as golang.org/x/mod/semver
//! reads them, with or without the leading `v` (go.mod writes `v1.2.3`,
//! OSV's Go records write `1.2.3`).
//!
//! - `v1` and `v1.2` are shorthands for `v1.0.0` and `v1.2.0`.
//! - Pseudo-versions (`v0.0.0-20191109021931-daa7c04131f5`,
//!   `v1.2.4-0.20191109021931-daa7c04131f5`, `v1.2.3-pre.0.2019…-…`) are
//!   pre-releases whose timestamp makes them order by commit time, and
//!   before the release they precede: plain semver precedence gives that.
//! - `+incompatible` is build metadata and takes no part in ordering.
//!
//! Shares the semver parser and precedence with [`super::semver`].

use std::cmp::Ordering;

use super::VersionError;
use super::semver::{Mode, SemverVersion};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion(SemverVersion);

impl GoVersion {
    pub fn parse(input: &str) -> Result<GoVersion, VersionError> {
        Ok(GoVersion(SemverVersion::parse_mode(input, Mode::Go)?))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether this is a pseudo-version (a pre-release ending in
    /// `yyyymmddhhmmss-abcdefabcdef`).
    pub fn is_pseudo(&self) -> bool {
        let pre = self.0.prerelease();
        let last = pre.rsplit('.').next().unwrap_or("");
        match last.split_once('-') {
            Some((time, rev)) => {
                time.len() == 14
                    && time.bytes().all(|c| c.is_ascii_digit())
                    && rev.len() == 12
                    && rev.bytes().all(|c| c.is_ascii_hexdigit())
            }
            None => false,
        }
    }
}

/// Compares two Go versions (an error if either does not parse).
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(GoVersion::parse(a)?.cmp(&GoVersion::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::{Scheme, parse};

    #[test]
    fn ordering_table() {
        // Increasing order: each entry is less than the next.
        let list = [
            "v0.0.0-20191109021931-daa7c04131f5",
            "v0.0.0-20200101000000-0123456789ab",
            "v0.0.1",
            "v1.0.0-alpha",
            "v1.0.0-alpha.1",
            "v1.0.0-beta",
            "v1.0.0-rc.1",
            "v1.0.0",
            "v1.2.3",
            "v1.2.4-0.20191109021931-daa7c04131f5",
            "v1.2.4",
            "1.10.0",
            "v2.0.0+incompatible",
            "v2.1.0",
            "v10.0.0",
        ];
        for w in list.windows(2) {
            assert_eq!(compare(w[0], w[1]).unwrap(), Ordering::Less, "{w:?}");
            assert_eq!(compare(w[1], w[0]).unwrap(), Ordering::Greater, "{w:?}");
        }
    }

    #[test]
    fn equalities() {
        for (a, b) in [
            ("v1.2.3", "1.2.3"),
            ("v2.0.0+incompatible", "v2.0.0"),
            ("v1", "v1.0.0"),
            ("v1.2", "v1.2.0"),
            ("v1.0.0+meta", "v1.0.0"),
        ] {
            assert_eq!(compare(a, b).unwrap(), Ordering::Equal, "{a} vs {b}");
            assert_eq!(parse(Scheme::Go, a).unwrap(), parse(Scheme::Go, b).unwrap());
        }
    }

    #[test]
    fn pseudo_versions_are_recognised() {
        assert!(
            GoVersion::parse("v0.0.0-20191109021931-daa7c04131f5")
                .unwrap()
                .is_pseudo()
        );
        assert!(
            GoVersion::parse("v1.2.4-0.20191109021931-daa7c04131f5")
                .unwrap()
                .is_pseudo()
        );
        assert!(
            GoVersion::parse("v1.2.3-pre.0.20191109021931-daa7c04131f5+incompatible")
                .unwrap()
                .is_pseudo()
        );
        assert!(!GoVersion::parse("v1.2.3-rc.1").unwrap().is_pseudo());
    }

    #[test]
    fn invalid_versions_are_errors() {
        for bad in [
            "",
            "v",
            "v01.2.3",
            "v1.2.3-01",
            "v1.2-pre",
            "v1.2.3.4",
            "vv1.2.3",
            " v1.2.3",
            "latest",
            "v1.2.3-",
        ] {
            assert!(parse(Scheme::Go, bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
