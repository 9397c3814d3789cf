//! Debian and Ubuntu version ordering: `[epoch:]upstream[-revision]`
//! compared with dpkg's `verrevcmp` (lib/dpkg/version.c).
//!
//! Hand-written rather than the `debversion` crate: dpkg's comparison is a
//! short byte loop, and this version stores one string plus offsets and
//! compares without allocating (debversion keeps three `String`s and pulls
//! in `regex`). Checked against dpkg's own vectors and 3,750 pairs decided
//! by `dpkg --compare-versions`.
//!
//! Parsing follows dpkg's `parseversion`: surrounding blanks are trimmed;
//! empty, embedded blanks, a non-numeric or oversized epoch, an empty
//! upstream or revision, and characters outside dpkg's set are errors. An
//! upstream that does not start with a digit is accepted (dpkg only warns).

use std::cmp::Ordering;

use super::{Scheme, VersionError};

#[derive(Clone, Debug)]
pub struct DpkgVersion {
    s: Box<str>,
    epoch: u32,
    /// Byte range of the upstream part in `s`.
    up: (u32, u32),
    /// Start of the revision in `s` (`s.len()` when there is none).
    rev: u32,
}

fn err(s: &str, reason: &'static str) -> VersionError {
    VersionError::invalid(Scheme::Dpkg, s, reason)
}

impl DpkgVersion {
    pub fn parse(input: &str) -> Result<DpkgVersion, VersionError> {
        VersionError::check_len(Scheme::Dpkg, input)?;
        let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
        if s.is_empty() {
            return Err(err(input, "empty version"));
        }
        if s.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(err(input, "embedded blank"));
        }
        let (epoch, up_start) = match s.find(':') {
            Some(i) => {
                let e = &s[..i];
                if e.is_empty() {
                    return Err(err(input, "empty epoch"));
                }
                if !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(input, "epoch is not a number"));
                }
                let epoch: u32 = e.parse().map_err(|_| err(input, "epoch too big"))?;
                if epoch > i32::MAX as u32 {
                    return Err(err(input, "epoch too big"));
                }
                (epoch, i + 1)
            }
            None => (0, 0),
        };
        let rest = &s[up_start..];
        let (up_end, rev) = match rest.rfind('-') {
            Some(i) => (up_start + i, up_start + i + 1),
            None => (s.len(), s.len()),
        };
        if up_end == up_start {
            return Err(err(input, "empty upstream version"));
        }
        if up_end < s.len() && rev == s.len() {
            return Err(err(input, "empty revision"));
        }
        let upstream = &s[up_start..up_end];
        if !upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.~:".contains(&b))
        {
            return Err(err(input, "invalid character in upstream version"));
        }
        if !s[rev..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.~".contains(&b))
        {
            return Err(err(input, "invalid character in revision"));
        }
        Ok(DpkgVersion {
            s: s.into(),
            epoch,
            up: (up_start as u32, up_end as u32),
            rev: rev as u32,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.s[self.up.0 as usize..self.up.1 as usize]
    }

    /// The Debian revision, empty when there is none (which orders like `0`).
    pub fn revision(&self) -> &str {
        &self.s[self.rev as usize..]
    }
}

impl Ord for DpkgVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| verrevcmp(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

impl PartialOrd for DpkgVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for DpkgVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DpkgVersion {}

/// Weight of a non-digit character: `~` sorts before everything, even the
/// end of the string; letters before other characters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (by `order`) and digit runs
/// (numerically, leading zeros ignored).
pub fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let is_digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !is_digit(a, i)) || (j < b.len() && !is_digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while is_digit(a, i) && is_digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if is_digit(a, i) {
            return Ordering::Greater;
        }
        if is_digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::vectors::check_pairs;
    use crate::versions::{compare, parse};

    fn cmp(a: &str, b: &str) -> Result<Ordering, VersionError> {
        compare(Scheme::Dpkg, a, b)
    }

    #[test]
    fn dpkg_vectors() {
        let mut n = 0;
        for f in [
            "dpkg-Dpkg_Version.t.tsv",
            "dpkg-python-debian.tsv",
            "dpkg-go-deb-version.tsv",
            "dpkg-bookworm-oracle.tsv",
        ] {
            n += check_pairs(f, cmp);
        }
        assert!(n > 3700, "only {n} vectors");
    }

    #[test]
    fn parts_and_equality() {
        let v = parse(Scheme::Dpkg, " 1:2.3-4+b1 ").unwrap();
        assert_eq!(v.as_str(), "1:2.3-4+b1");
        let d = DpkgVersion::parse("1:2.3-4-5").unwrap();
        assert_eq!((d.epoch(), d.upstream(), d.revision()), (1, "2.3-4", "5"));
        assert_eq!(
            parse(Scheme::Dpkg, "1.0").unwrap(),
            parse(Scheme::Dpkg, "0:1.0-0").unwrap()
        );
    }

    #[test]
    fn invalid_versions_are_errors() {
        for bad in [
            "",
            "  ",
            "1 .0",
            "a:1.0",
            ":1.0",
            "1:",
            "1.0-",
            "-1",
            "1.0_1",
            "99999999999:1",
            "1.0-a:b",
        ] {
            assert!(parse(Scheme::Dpkg, bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
