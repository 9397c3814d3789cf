//! NuGet version ordering: `NuGet.Versioning`'s `NuGetVersion` and
//! `VersionComparer.Default`, which osv.dev's `osv/ecosystems/nuget.py`
//! follows.
//!
//! Hand-written: SemVer 2.0 with NuGet's differences
//! (<https://learn.microsoft.com/nuget/concepts/package-versioning>):
//! - `major[.minor[.patch[.revision]]][-prerelease][+metadata]`: one to four
//!   numeric parts (each a 32-bit signed integer, leading zeros allowed),
//!   missing ones are 0, so `1.0 = 1.0.0 = 1.0.0.0` and `1.0.01 = 1.0.1`.
//! - Prerelease and metadata are dot-separated non-empty labels of
//!   `[0-9A-Za-z-]`. Metadata is ignored by the ordering.
//! - A release sorts after its prereleases; labels compare one by one, a
//!   label that parses as an integer numerically and before any other, the
//!   others case-insensitively (ordinal, upper-cased); more labels sort
//!   after fewer when the shared ones are equal.
//! - Leading and trailing white space is ignored. Anything else (`1beta`,
//!   `1.2.3.4.5`, `v1.0`, `1.4.7-`) is invalid, as `NuGetVersion.Parse` says.

use std::cmp::Ordering;

use super::{Scheme, VersionError};

#[derive(Clone, Debug)]
pub struct NuGetVersion {
    s: Box<str>,
    parts: [u32; 4],
    /// Prerelease labels as written; empty for a release.
    pre: Vec<Box<str>>,
}

fn invalid(input: &str, reason: &'static str) -> VersionError {
    VersionError::invalid(Scheme::NuGet, input, reason)
}

/// A label of `[0-9A-Za-z-]`, non-empty.
fn valid_label(l: &str) -> bool {
    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl NuGetVersion {
    pub fn parse(input: &str) -> Result<NuGetVersion, VersionError> {
        VersionError::check_len(Scheme::NuGet, input)?;
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid(input, "empty version"));
        }
        let (rest, metadata) = match s.split_once('+') {
            Some((r, m)) => (r, Some(m)),
            None => (s, None),
        };
        if let Some(m) = metadata
            && !m.split('.').all(valid_label)
        {
            return Err(invalid(input, "bad metadata label"));
        }
        let (numbers, pre) = match rest.split_once('-') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        };
        let mut parts = [0u32; 4];
        for (count, n) in numbers.split('.').enumerate() {
            let slot = parts
                .get_mut(count)
                .ok_or_else(|| invalid(input, "more than four numeric parts"))?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(input, "numeric part is not a number"));
            }
            *slot = n
                .parse()
                .ok()
                .filter(|v| *v <= i32::MAX as u32)
                .ok_or_else(|| invalid(input, "numeric part over 2147483647"))?;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => {
                if !p.split('.').all(valid_label) {
                    return Err(invalid(input, "bad prerelease label"));
                }
                p.split('.').map(Into::into).collect()
            }
        };
        Ok(NuGetVersion {
            s: s.into(),
            parts,
            pre,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}

/// A label as .NET's `int.TryParse` reads it (a label may start with `-`).
fn label_number(l: &str) -> Option<i32> {
    l.parse().ok()
}

/// `VersionComparer.CompareRelease` for one label.
fn cmp_label(a: &str, b: &str) -> Ordering {
    match (label_number(a), label_number(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a
            .bytes()
            .map(|c| c.to_ascii_uppercase())
            .cmp(b.bytes().map(|c| c.to_ascii_uppercase())),
    }
}

impl Ord for NuGetVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts
            .cmp(&other.parts)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = cmp_label(a, b);
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for NuGetVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for NuGetVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for NuGetVersion {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::vectors::{check_rows, local_rows};
    use crate::versions::{compare, parse};

    #[test]
    fn vectors() {
        let rows = local_rows("nuget/vectors.tsv");
        let (pairs, validity): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.len() == 3);
        let n = check_rows("nuget/vectors.tsv", &pairs, |a, b| compare(Scheme::NuGet, a, b));
        assert!(n >= 50, "{n}");
        let mut failures = Vec::new();
        for r in &validity {
            let ok = parse(Scheme::NuGet, &r[0]).is_ok();
            if ok != (r[1] == "valid") {
                failures.push(format!("{:?}: want {}, parsed: {ok}", r[0], r[1]));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert!(validity.len() >= 20);
    }

    #[test]
    fn normalisation_and_case() {
        let c = |a: &str, b: &str| compare(Scheme::NuGet, a, b).unwrap();
        assert_eq!(c("1.0", "1.0.0.0"), Ordering::Equal);
        assert_eq!(c("1", "1.0.0"), Ordering::Equal);
        assert_eq!(c("1.0.01", "1.0.1.0"), Ordering::Equal);
        assert_eq!(c("1.0.0-BETA+AA", "1.0.0-beta+aa"), Ordering::Equal);
        assert_eq!(c("1.0.0", "1.0.0.1-alpha"), Ordering::Less);
        assert_eq!(c("1.0.0-alpha.2", "1.0.0-alpha.10"), Ordering::Less);
        assert_eq!(c("13.0.1", "13.0.3"), Ordering::Less);
        assert!(parse(Scheme::NuGet, "2147483648.0").is_err());
    }
}
