//! RubyGems version ordering: `Gem::Version` (rubygems/version.rb).
//!
//! Hand-written: no crate implements it. A version is digits then any of
//! `.` + alphanumerics, optionally `-` + alphanumerics (a `-` reads as
//! `.pre.`). It splits into numeric and alphabetic segments; any letter
//! makes it a pre-release (`1.0.a < 1.0`). Trailing zero segments are
//! dropped before comparing (`1.0 == 1`), numbers compare as numbers,
//! strings bytewise, and a string segment sorts before a number.
//! Blank or malformed versions are errors (Ruby raises `ArgumentError`;
//! an empty string, which Ruby reads as `0`, is rejected here too).

use std::cmp::Ordering;

use super::{Scheme, VersionError};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Str(Box<str>),
    /// Digits without leading zeros (compared by length, then bytes).
    Num(Box<str>),
}

impl Segment {
    fn is_zero(&self) -> bool {
        matches!(self, Segment::Num(n) if n.is_empty())
    }

    fn cmp_seg(&self, other: &Segment) -> Ordering {
        match (self, other) {
            (Segment::Num(a), Segment::Num(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
            (Segment::Str(a), Segment::Str(b)) => a.cmp(b),
            (Segment::Str(_), Segment::Num(_)) => Ordering::Less,
            (Segment::Num(_), Segment::Str(_)) => Ordering::Greater,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GemVersion {
    s: Box<str>,
    /// Ruby's `canonical_segments`.
    segs: Box<[Segment]>,
}

fn err(s: &str, reason: &'static str) -> VersionError {
    VersionError::invalid(Scheme::RubyGems, s, reason)
}

/// Ruby's `Gem::Version::ANCHORED_VERSION_PATTERN`, without the leading
/// and trailing blanks (trimmed first).
fn valid(s: &str) -> bool {
    let (main, pre) = match s.split_once('-') {
        Some((m, p)) => (m, Some(p)),
        None => (s, None),
    };
    let mut parts = main.split('.');
    let first_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let rest_ok = parts.all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric()));
    let pre_ok = pre.is_none_or(|p| {
        p.split('.')
            .all(|q| !q.is_empty() && q.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    });
    first_ok && rest_ok && pre_ok
}

impl GemVersion {
    pub fn parse(input: &str) -> Result<GemVersion, VersionError> {
        VersionError::check_len(Scheme::RubyGems, input)?;
        let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
        if s.is_empty() {
            return Err(err(input, "empty version"));
        }
        if !valid(s) {
            return Err(err(input, "malformed version number string"));
        }
        // Segments: runs of digits or of letters (`-` is `.pre.`).
        let mut segs = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'-' {
                segs.push(Segment::Str("pre".into()));
                i += 1;
                continue;
            }
            let digit = b[i].is_ascii_digit();
            if !b[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() && b[i].is_ascii_digit() == digit {
                i += 1;
            }
            let t = &s[start..i];
            segs.push(if digit {
                Segment::Num(t.trim_start_matches('0').into())
            } else {
                Segment::Str(t.into())
            });
        }
        // canonical_segments: drop trailing zeros of the numeric part and of
        // the part from the first string on.
        let split = segs
            .iter()
            .position(|g| matches!(g, Segment::Str(_)))
            .unwrap_or(segs.len());
        let mut tail = segs.split_off(split);
        while segs.last().is_some_and(Segment::is_zero) {
            segs.pop();
        }
        while tail.last().is_some_and(Segment::is_zero) {
            tail.pop();
        }
        segs.extend(tail);
        Ok(GemVersion {
            s: s.into(),
            segs: segs.into_boxed_slice(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    /// Whether any segment is a letter run (`1.0.a`, `1.0-rc1`).
    pub fn is_prerelease(&self) -> bool {
        self.segs.iter().any(|g| matches!(g, Segment::Str(_)))
    }
}

impl Ord for GemVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let zero = Segment::Num("".into());
        let n = self.segs.len().max(other.segs.len());
        for i in 0..n {
            let a = self.segs.get(i).unwrap_or(&zero);
            let b = other.segs.get(i).unwrap_or(&zero);
            match a.cmp_seg(b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for GemVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for GemVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for GemVersion {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::{compare, parse};

    fn c(a: &str, b: &str) -> Ordering {
        compare(Scheme::RubyGems, a, b).unwrap()
    }

    /// Cases from `Gem::Version`'s documented rules and its test suite's
    /// kinds of assertions.
    #[test]
    fn ordering_table() {
        let list = [
            "0.9",
            "1.0.a",
            "1.0.a.2",
            "1.0.b1",
            "1.0.rc1",
            "1.0",
            "1.0.1",
            "1.1.pre",
            "1.1",
            "1.1.0.1",
            "1.9",
            "1.10",
            "2.0.0.pre",
            "2.0.0.rc1",
            "2.0",
            "10",
        ];
        for w in list.windows(2) {
            assert_eq!(c(w[0], w[1]), Ordering::Less, "{w:?}");
            assert_eq!(c(w[1], w[0]), Ordering::Greater, "{w:?}");
        }
    }

    /// `Gem::Version` compares segment by segment after canonicalising, so a
    /// `-` pre-release is `.pre.`: `2.0.0-rc1` is `2.0.0.pre.rc.1`, which
    /// sorts after `2.0.0.pre` (Ruby answers the same).
    #[test]
    fn dash_reads_as_pre() {
        assert_eq!(c("2.0.0.pre", "2.0.0-rc1"), Ordering::Greater);
        assert_eq!(c("2.0.0-rc1", "2.0.0"), Ordering::Less);
    }

    #[test]
    fn equalities() {
        for (a, b) in [
            ("1.0", "1"),
            ("1.0.0", "1"),
            (" 1.0 ", "1.0"),
            ("1.0.b1", "1.0.b.1"),
            ("1.01", "1.1"),
            ("1-1", "1.pre.1"),
        ] {
            assert_eq!(c(a, b), Ordering::Equal, "{a} vs {b}");
        }
        assert!(parse(Scheme::RubyGems, "1.0.a").is_ok());
        assert!(GemVersion::parse("1.0.a").unwrap().is_prerelease());
        assert!(!GemVersion::parse("1.0").unwrap().is_prerelease());
    }

    #[test]
    fn invalid_versions_are_errors() {
        for bad in [
            "", "  ", "junk", "1.0\n2.0", "1..2", "1.2.", ".1", "1.0 2", "1.0-", "1_0", "a.1",
        ] {
            assert!(parse(Scheme::RubyGems, bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
