//! PyPI version ordering: PEP 440 (epochs, pre/post/dev releases, local
//! versions), with PEP 440's normalisation (`1.0-DEV1` is `1.0.dev1`).
//!
//! Uses the `pep440_rs` crate (the parser uv is built on): it passes every
//! vector from `packaging`'s own test suite below, including rejecting every
//! version `packaging` rejects. Its `Version` is an `Arc` with an inline
//! fast path for common versions, so clones and compares are cheap.

use std::cmp::Ordering;
use std::str::FromStr;

use super::{Scheme, VersionError};

#[derive(Clone, Debug)]
pub struct Pep440Version {
    s: Box<str>,
    v: pep440_rs::Version,
}

impl Pep440Version {
    pub fn parse(input: &str) -> Result<Pep440Version, VersionError> {
        VersionError::check_len(Scheme::Pep440, input)?;
        let v = pep440_rs::Version::from_str(input)
            .map_err(|_| VersionError::invalid(Scheme::Pep440, input, "not a PEP 440 version"))?;
        Ok(Pep440Version {
            s: input.trim().into(),
            v,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    /// The PEP 440 normal form (`1.0.dev0` for `1.0dev`).
    pub fn normalized(&self) -> String {
        self.v.to_string()
    }
}

/// The PEP 440 normal form of `s`, or an error when `s` is not PEP 440.
pub fn normalize(s: &str) -> Result<String, VersionError> {
    Ok(Pep440Version::parse(s)?.normalized())
}

impl Ord for Pep440Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.v.cmp(&other.v)
    }
}

impl PartialOrd for Pep440Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pep440Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pep440Version {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::vectors::{check_pairs, rows};
    use crate::versions::{compare, parse};

    #[test]
    fn packaging_pairs() {
        let n = check_pairs("pep440-packaging-pairs.tsv", |a, b| compare(Scheme::Pep440, a, b));
        assert!(n > 6000, "only {n} vectors");
    }

    /// `packaging`'s normalisation table: each version equals its normal
    /// form, and normalises to exactly that string.
    #[test]
    fn packaging_normalized() {
        let rows = rows("pep440-packaging-normalized.tsv");
        assert!(rows.len() > 60);
        let mut failures = Vec::new();
        for r in &rows {
            match (compare(Scheme::Pep440, &r[0], &r[1]), normalize(&r[0])) {
                (Ok(Ordering::Equal), Ok(n)) if n == r[1] => {}
                other => failures.push(format!("{:?} -> {:?}: got {other:?}", r[0], r[1])),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn packaging_invalid() {
        let rows = rows("pep440-packaging-invalid.tsv");
        assert!(rows.len() > 10);
        for r in &rows {
            assert_eq!(r[1], "invalid");
            assert!(
                parse(Scheme::Pep440, &r[0]).is_err(),
                "{:?} should be invalid",
                r[0]
            );
        }
    }

    #[test]
    fn equal_versions_are_equal_values() {
        let a = parse(Scheme::Pep440, "1.0").unwrap();
        let b = parse(Scheme::Pep440, "1.0.0").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "1.0");
    }
}
