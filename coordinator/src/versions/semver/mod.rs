//! npm and crates.io version ordering: semver 2.0 precedence (major, minor,
//! patch numerically; a pre-release sorts before its release; pre-release
//! identifiers numeric-before-alphanumeric, numeric ones by value; build
//! metadata ignored), parsed the way node-semver parses.
//!
//! Hand-written rather than the `semver` crate: that crate orders build
//! metadata (semver 2.0 says it has no precedence, and node-semver's
//! `compare` ignores it) and has no loose mode or npm ranges. Range
//! evaluation lives in [`npm_range`].
//!
//! [`SemverVersion::parse`] is node-semver's strict parse (surrounding
//! blanks and one leading `v` allowed); [`SemverVersion::parse_loose`] is
//! its loose mode (`=v 1.2.3`, leading zeros, `1.2.3beta`).

pub mod npm_range;

use std::cmp::Ordering;

use super::{Scheme, VersionError};

/// node-semver refuses longer versions.
const MAX_LENGTH: usize = 256;
/// node-semver refuses numbers above JavaScript's `Number.MAX_SAFE_INTEGER`.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// node-semver strict: `v?` then `X.Y.Z[-pre][+build]`, no leading zeros.
    Strict,
    /// node-semver loose: `[v=\s]*`, leading zeros, `-` before pre optional.
    Loose,
    /// Go modules (golang.org/x/mod/semver): `v?`, strict identifiers,
    /// `vX` and `vX.Y` shorthands for `vX.0.0` and `vX.Y.0`, no length cap.
    Go,
}

/// A parsed semver: numbers plus byte ranges of the pre-release and build
/// in the source string (empty ranges when absent).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Parts {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: (u32, u32),
    pub build: (u32, u32),
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// Parses a decimal number starting at `*i` (at least one digit).
fn number(b: &[u8], i: &mut usize, leading_zeros_ok: bool) -> Result<u64, &'static str> {
    let start = *i;
    while b.get(*i).is_some_and(u8::is_ascii_digit) {
        *i += 1;
    }
    let digits = &b[start..*i];
    if digits.is_empty() {
        return Err("expected a number");
    }
    if !leading_zeros_ok && digits.len() > 1 && digits[0] == b'0' {
        return Err("number with a leading zero");
    }
    let mut n: u64 = 0;
    for &d in digits {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or("number too large")?;
    }
    Ok(n)
}

/// Checks dot-separated identifiers; numeric ones must not have leading
/// zeros unless `leading_zeros_ok`.
fn identifiers(s: &[u8], leading_zeros_ok: bool) -> Result<(), &'static str> {
    for id in s.split(|&c| c == b'.') {
        if id.is_empty() {
            return Err("empty identifier");
        }
        if !id.iter().all(|&c| is_ident_char(c)) {
            return Err("invalid character in identifier");
        }
        if !leading_zeros_ok && id.len() > 1 && id[0] == b'0' && id.iter().all(u8::is_ascii_digit) {
            return Err("numeric identifier with a leading zero");
        }
    }
    Ok(())
}

/// Parses `s[start..]` (already trimmed, prefix skipped) as a whole version.
pub(crate) fn parse_parts(s: &str, start: usize, mode: Mode) -> Result<Parts, &'static str> {
    let b = s.as_bytes();
    let loose = mode == Mode::Loose;
    let mut i = start;
    let mut p = Parts {
        major: number(b, &mut i, loose)?,
        ..Parts::default()
    };
    let mut shorthand = false;
    if mode == Mode::Go && i == b.len() {
        shorthand = true;
    } else {
        if b.get(i) != Some(&b'.') {
            return Err("expected major.minor.patch");
        }
        i += 1;
        p.minor = number(b, &mut i, loose)?;
        if mode == Mode::Go && i == b.len() {
            shorthand = true;
        } else {
            if b.get(i) != Some(&b'.') {
                return Err("expected major.minor.patch");
            }
            i += 1;
            p.patch = number(b, &mut i, loose)?;
        }
    }
    if mode != Mode::Go && [p.major, p.minor, p.patch].iter().any(|&n| n > MAX_SAFE_INTEGER) {
        return Err("number too large");
    }
    if shorthand {
        p.pre = (i as u32, i as u32);
        p.build = (i as u32, i as u32);
        return Ok(p);
    }
    // Pre-release: up to `+` or the end.
    let has_dash = b.get(i) == Some(&b'-');
    if has_dash || (loose && i < b.len() && b[i] != b'+') {
        if has_dash {
            i += 1;
        }
        let pre_start = i;
        while i < b.len() && b[i] != b'+' {
            i += 1;
        }
        identifiers(&b[pre_start..i], loose)?;
        p.pre = (pre_start as u32, i as u32);
    } else {
        p.pre = (i as u32, i as u32);
    }
    if b.get(i) == Some(&b'+') {
        i += 1;
        identifiers(&b[i..], true)?;
        p.build = (i as u32, b.len() as u32);
    } else if i != b.len() {
        return Err("unexpected character");
    } else {
        p.build = (i as u32, i as u32);
    }
    Ok(p)
}

/// Compares one pre-release identifier: numeric ones by value, numeric
/// before alphanumeric, alphanumeric ones bytewise.
fn cmp_identifier(a: &str, b: &str) -> Ordering {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (num(a), num(b)) {
        (true, true) => {
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Semver 2.0 precedence of two pre-release strings (empty = a release).
pub(crate) fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let (mut ia, mut ib) = (a.split('.'), b.split('.'));
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match cmp_identifier(x, y) {
                Ordering::Equal => {}
                other => return other,
            },
        }
    }
}

/// A semver version (npm, crates.io).
#[derive(Clone, Debug)]
pub struct SemverVersion {
    s: Box<str>,
    p: Parts,
}

impl SemverVersion {
    /// node-semver's strict parse.
    pub fn parse(input: &str) -> Result<SemverVersion, VersionError> {
        Self::parse_mode(input, Mode::Strict)
    }

    /// node-semver's loose parse.
    pub fn parse_loose(input: &str) -> Result<SemverVersion, VersionError> {
        Self::parse_mode(input, Mode::Loose)
    }

    pub(crate) fn parse_mode(input: &str, mode: Mode) -> Result<SemverVersion, VersionError> {
        let scheme = if mode == Mode::Go {
            Scheme::Go
        } else {
            Scheme::Semver
        };
        VersionError::check_len(scheme, input)?;
        if mode != Mode::Go && input.len() > MAX_LENGTH {
            return Err(VersionError::invalid(scheme, input, "longer than 256 bytes"));
        }
        let s = if mode == Mode::Go { input } else { input.trim() };
        let start = match mode {
            Mode::Strict | Mode::Go => usize::from(s.starts_with('v')),
            Mode::Loose => {
                s.len()
                    - s.trim_start_matches(|c: char| c == 'v' || c == '=' || c.is_whitespace())
                        .len()
            }
        };
        let p = parse_parts(s, start, mode).map_err(|reason| VersionError::invalid(scheme, input, reason))?;
        Ok(SemverVersion { s: s.into(), p })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    pub fn major(&self) -> u64 {
        self.p.major
    }

    pub fn minor(&self) -> u64 {
        self.p.minor
    }

    pub fn patch(&self) -> u64 {
        self.p.patch
    }

    /// The pre-release identifiers (empty for a release).
    pub fn prerelease(&self) -> &str {
        &self.s[self.p.pre.0 as usize..self.p.pre.1 as usize]
    }

    /// Build metadata (empty when none); it takes no part in ordering.
    pub fn build(&self) -> &str {
        &self.s[self.p.build.0 as usize..self.p.build.1 as usize]
    }
}

impl Ord for SemverVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.p.major, self.p.minor, self.p.patch)
            .cmp(&(other.p.major, other.p.minor, other.p.patch))
            .then_with(|| cmp_prerelease(self.prerelease(), other.prerelease()))
    }
}

impl PartialOrd for SemverVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SemverVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SemverVersion {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::vectors::{ordering, rows};
    use crate::versions::{compare, parse};

    /// node-semver's comparison and equality fixtures: the 4th column says
    /// whether node-semver parsed them loose or strict.
    #[test]
    fn node_semver_comparisons_and_equality() {
        let mut n = 0;
        for f in [
            "semver-node-semver-comparisons.tsv",
            "semver-node-semver-equality.tsv",
        ] {
            for r in rows(f) {
                let parse = |s: &str| match r[3].as_str() {
                    "loose" => SemverVersion::parse_loose(s),
                    "strict" => SemverVersion::parse(s),
                    other => panic!("bad mode {other:?}"),
                };
                let (a, b) = (parse(&r[0]).unwrap(), parse(&r[1]).unwrap());
                let want = ordering(&r[2]);
                assert_eq!(a.cmp(&b), want, "{f}: {:?} vs {:?}", r[0], r[1]);
                assert_eq!(b.cmp(&a), want.reverse(), "{f}: {:?} vs {:?}", r[1], r[0]);
                if r[3] == "strict" {
                    assert_eq!(compare(Scheme::Semver, &r[0], &r[1]).unwrap(), want);
                }
                n += 1;
            }
        }
        assert!(n > 45, "only {n} vectors");
    }

    #[test]
    fn semver_2_precedence() {
        // The list from semver.org, section 11, in increasing order.
        let list = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for w in list.windows(2) {
            assert_eq!(
                compare(Scheme::Semver, w[0], w[1]).unwrap(),
                Ordering::Less,
                "{w:?}"
            );
        }
        assert_eq!(
            compare(Scheme::Semver, "1.0.0+a", "1.0.0+b").unwrap(),
            Ordering::Equal
        );
    }

    #[test]
    fn strict_rejects_what_node_semver_rejects() {
        for bad in [
            "1.2",
            "01.2.3",
            "1.2.3-01",
            "=1.2.3",
            "1.2.3beta",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "x.2.3",
            "",
        ] {
            assert!(parse(Scheme::Semver, bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(parse(Scheme::Semver, "9007199254740992.0.0").is_err());
        assert!(SemverVersion::parse_loose("=v01.2.3beta").is_ok());
        let v = SemverVersion::parse(" v1.2.3-rc.1+b5 ").unwrap();
        assert_eq!(
            (v.major(), v.minor(), v.patch(), v.prerelease(), v.build()),
            (1, 2, 3, "rc.1", "b5")
        );
    }
}
