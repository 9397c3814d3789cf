//! RPM version ordering (Red Hat, AlmaLinux, Rocky Linux, SUSE, openSUSE):
//! `[epoch:]version[-release]`, epochs numerically, then version and release
//! each with rpm's `rpmvercmp` (rpmio/rpmvercmp.c), including `~` (sorts
//! before anything, even the end) and `^` (sorts after the end, before
//! anything else).
//!
//! Hand-written rather than the `rpm-version` crate: `rpmvercmp` is a short
//! byte loop and this keeps one string plus offsets and compares without
//! allocating. Checked against rpm's own `rpmvercmp.at` and go-rpm-version's
//! table.
//!
//! Parsing: a missing epoch is 0; the release is what follows the last `-`
//! (none when there is no `-`, which orders before any release). The empty
//! string is a valid (lowest) version, as rpm treats it. Errors: a
//! non-numeric or oversized epoch, non-ASCII or control characters.

use std::cmp::Ordering;

use super::{Scheme, VersionError};

#[derive(Clone, Debug)]
pub struct RpmVersion {
    s: Box<str>,
    epoch: u64,
    /// Byte range of the version in `s`.
    ver: (u32, u32),
    /// Start of the release in `s`, `None` without a `-`.
    rel: Option<u32>,
}

fn err(s: &str, reason: &'static str) -> VersionError {
    VersionError::invalid(Scheme::Rpm, s, reason)
}

impl RpmVersion {
    pub fn parse(input: &str) -> Result<RpmVersion, VersionError> {
        VersionError::check_len(Scheme::Rpm, input)?;
        let s = input.trim();
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(input, "non-printable, blank or non-ASCII character"));
        }
        let (epoch, start) = match s.find(':') {
            Some(i) => {
                let e = &s[..i];
                let epoch = if e.is_empty() {
                    0
                } else if e.bytes().all(|b| b.is_ascii_digit()) {
                    e.parse().map_err(|_| err(input, "epoch too big"))?
                } else {
                    return Err(err(input, "epoch is not a number"));
                };
                (epoch, i + 1)
            }
            None => (0, 0),
        };
        let (ver_end, rel) = match s[start..].rfind('-') {
            // An empty release (`1.0-`) is no release, as rpm reads it.
            Some(i) if start + i + 1 == s.len() => (start + i, None),
            Some(i) => (start + i, Some((start + i + 1) as u32)),
            None => (s.len(), None),
        };
        Ok(RpmVersion {
            s: s.into(),
            epoch,
            ver: (start as u32, ver_end as u32),
            rel,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn version(&self) -> &str {
        &self.s[self.ver.0 as usize..self.ver.1 as usize]
    }

    pub fn release(&self) -> Option<&str> {
        self.rel.map(|r| &self.s[r as usize..])
    }
}

impl Ord for RpmVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| rpmvercmp(self.version().as_bytes(), other.version().as_bytes()))
            .then_with(|| match (self.release(), other.release()) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(a), Some(b)) => rpmvercmp(a.as_bytes(), b.as_bytes()),
            })
    }
}

impl PartialOrd for RpmVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for RpmVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for RpmVersion {}

/// rpm's `rpmvercmp`: segments of digits (numeric, leading zeros ignored)
/// or letters (bytewise), separated by anything else; a numeric segment is
/// newer than an alphabetic one; whichever string has segments left wins.
pub fn rpmvercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(ca), Some(_)) = (ca, cb) else {
            break;
        };
        let numeric = ca.is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let (si, sj) = (i, j);
        while i < a.len() && class(&a[i]) {
            i += 1;
        }
        while j < b.len() && class(&b[j]) {
            j += 1;
        }
        let (mut sa, mut sb) = (&a[si..i], &b[sj..j]);
        if sb.is_empty() {
            // Different segment types: the numeric one is newer.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let ord = if numeric {
            while sa.first() == Some(&b'0') {
                sa = &sa[1..];
            }
            while sb.first() == Some(&b'0') {
                sb = &sb[1..];
            }
            sa.len().cmp(&sb.len()).then_with(|| sa.cmp(sb))
        } else {
            sa.cmp(sb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::vectors::check_pairs;
    use crate::versions::{compare, parse};

    /// Both shared files are `rpmvercmp` vectors: rpm's `rpmvercmp.at`
    /// calls it directly, and go-rpm-version's test feeds its table in as a
    /// bare version field (no epoch/release split), so `1-2-3-4` there is
    /// one string, not version `1-2-3` release `4`. They run through
    /// [`rpmvercmp`], and through [`RpmVersion`] wherever the two agree (no
    /// `-` or `:` in either side).
    #[test]
    fn rpm_vectors() {
        let raw = |a: &str, b: &str| Ok(rpmvercmp(a.as_bytes(), b.as_bytes()));
        let n = check_pairs("rpm-rpmvercmp.at.tsv", raw) + check_pairs("rpm-go-rpm-version.tsv", raw);
        assert!(n > 3600, "only {n} vectors");
        let parsed = |a: &str, b: &str| {
            if a.contains(['-', ':']) || b.contains(['-', ':']) {
                Ok(rpmvercmp(a.as_bytes(), b.as_bytes()))
            } else {
                compare(Scheme::Rpm, a, b)
            }
        };
        check_pairs("rpm-rpmvercmp.at.tsv", parsed);
        check_pairs("rpm-go-rpm-version.tsv", parsed);
    }

    /// go-rpm-version's `TestParseAndCompare` cases (full EVR labels).
    #[test]
    fn evr_labels() {
        let c = |a, b| compare(Scheme::Rpm, a, b).unwrap();
        assert_eq!(c("2.9.1-6.0.1.el7_2.3", "2.9.1-6.el7_2.3"), Ordering::Greater);
        assert_eq!(c("3.10.0-327.28.3.el7", "3.10.0-327.el7"), Ordering::Greater);
        assert_eq!(c("3.14.3-23.3.el6_8", "3.14.3-23.el6_7"), Ordering::Greater);
        assert_eq!(c("2.23.2-22.el7_1", "2.23.2-22.el7_1.1"), Ordering::Less);
        assert_eq!(c("1.0-1^", "1.0-1"), Ordering::Greater);
        assert_eq!(c("1.0-1^git1", "1.0-1.1"), Ordering::Less);
        assert_eq!(c("1:1.0^git1", "1:1.0"), Ordering::Greater);
        assert_eq!(c("1:1.0~rc1", "0:1.0~rc1"), Ordering::Greater);
        assert_eq!(c("1.0~rc1", "2:1.0~rc1"), Ordering::Less);
        assert_eq!(c("0:0-", "0"), Ordering::Equal);
        // Splitting matters: a longer version with a smaller release is newer.
        assert_eq!(c("2.4-10.el8", "2.4.1-1.el8"), Ordering::Less);
    }

    #[test]
    fn epoch_version_release() {
        let c = |a, b| compare(Scheme::Rpm, a, b).unwrap();
        assert_eq!(c("1:1.0-1.el8", "2.0-1.el8"), Ordering::Greater);
        assert_eq!(c("0:1.0-1.el8", "1.0-1.el8"), Ordering::Equal);
        assert_eq!(c("1.0-1.el8", "1.0.1-1.el8"), Ordering::Less);
        assert_eq!(c("1.0-2.el8", "1.0-10.el8"), Ordering::Less);
        assert_eq!(c("1.0", "1.0-1"), Ordering::Less);
        assert_eq!(c("1.0~rc1-1", "1.0-1"), Ordering::Less);
        assert_eq!(c("1.0^git1-1", "1.0-1"), Ordering::Greater);
        let v = RpmVersion::parse("3:1.2-3.el9_1").unwrap();
        assert_eq!((v.epoch(), v.version(), v.release()), (3, "1.2", Some("3.el9_1")));
    }

    #[test]
    fn invalid_versions_are_errors() {
        for bad in ["a:1.0", "1 0", "1.0\u{e9}", "99999999999999999999999:1"] {
            assert!(parse(Scheme::Rpm, bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
