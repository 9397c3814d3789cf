//! Alpine, Wolfi and Chainguard version ordering: apk-tools' rules
//! (src/version.c): `digit{.digit}...{letter}{_suffix{#}}...{~hash}{-r#}`.
//!
//! Hand-written: no maintained crate implements apk ordering. The
//! comparison walks both strings token by token without allocating.
//!
//! - Suffixes `_alpha _beta _pre _rc` sort before the bare version;
//!   `_cvs _svn _git _hg _p` after it. `-rN` is the package revision.
//! - A digit token after a `.` that starts with `0` on either side is
//!   compared as a string (Gentoo's rule), others numerically.
//! - [`ApkVersion::parse`] rejects what `apk_version_validate` rejects.
//!   [`compare_raw`] is apk's comparison on any two strings (apk itself
//!   compares invalid versions that way, and its test table has some);
//!   [`fuzzy_match`] is apk's `~` family of operators.

use std::cmp::Ordering;

use super::{Scheme, VersionError};

#[derive(Clone, Debug)]
pub struct ApkVersion {
    s: Box<str>,
}

impl ApkVersion {
    pub fn parse(input: &str) -> Result<ApkVersion, VersionError> {
        VersionError::check_len(Scheme::Apk, input)?;
        if !is_valid(input) {
            return Err(VersionError::invalid(Scheme::Apk, input, "not an apk version"));
        }
        Ok(ApkVersion { s: input.into() })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl Ord for ApkVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_raw(&self.s, &other.s)
    }
}

impl PartialOrd for ApkVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ApkVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ApkVersion {}

/// Token kinds, in the order apk-tools declares them: the order matters,
/// both for which token may follow which and for the final comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
    Invalid,
}

/// Suffix ranks; `NONE` (a bare version) is the pivot.
const SUFFIXES: [(&str, u8); 9] = [
    ("alpha", 1),
    ("beta", 2),
    ("pre", 3),
    ("rc", 4),
    ("cvs", 6),
    ("svn", 7),
    ("git", 8),
    ("hg", 9),
    ("p", 10),
];
const SUFFIX_NONE: u8 = 5;

struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
    kind: Kind,
    suffix: u8,
    number: u64,
    /// Byte range of the token's text (digits, letter, hash).
    value: (usize, usize),
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Lexer<'a> {
        let mut l = Lexer {
            b: s.as_bytes(),
            pos: 0,
            kind: Kind::InitialDigit,
            suffix: 0,
            number: 0,
            value: (0, 0),
        };
        l.digits();
        l
    }

    fn value(&self) -> &'a [u8] {
        &self.b[self.value.0..self.value.1]
    }

    fn digits(&mut self) {
        let start = self.pos;
        let mut n: u64 = 0;
        while let Some(c) = self.b.get(self.pos).filter(|c| c.is_ascii_digit()) {
            n = n.saturating_mul(10).saturating_add(u64::from(c - b'0'));
            self.pos += 1;
        }
        self.number = n;
        self.value = (start, self.pos);
        if start == self.pos {
            self.kind = Kind::Invalid;
        }
    }

    fn span(&mut self, class: impl Fn(u8) -> bool) {
        let start = self.pos;
        while self.b.get(self.pos).is_some_and(|&c| class(c)) {
            self.pos += 1;
        }
        self.value = (start, self.pos);
    }

    fn next(&mut self) {
        let Some(&c) = self.b.get(self.pos) else {
            self.kind = Kind::End;
            return;
        };
        let prev = self.kind;
        self.kind = Kind::Invalid;
        match c {
            b'a'..=b'z' if prev <= Kind::Digit => {
                self.value = (self.pos, self.pos + 1);
                self.pos += 1;
                self.kind = Kind::Letter;
            }
            b'.' | b'0'..=b'9' => {
                if c == b'.' {
                    if prev > Kind::Digit {
                        return;
                    }
                    self.pos += 1;
                }
                self.kind = match prev {
                    Kind::InitialDigit | Kind::Digit => Kind::Digit,
                    Kind::Suffix => Kind::SuffixNo,
                    _ => return,
                };
                self.digits();
            }
            b'_' if prev <= Kind::SuffixNo => {
                self.pos += 1;
                self.span(|c| c.is_ascii_lowercase());
                let v = self.value();
                if let Some(&(_, rank)) = SUFFIXES.iter().find(|(name, _)| name.as_bytes() == v) {
                    self.suffix = rank;
                    self.kind = Kind::Suffix;
                }
            }
            b'~' if prev < Kind::CommitHash => {
                self.pos += 1;
                self.span(|c| c.is_ascii_hexdigit());
                if self.value.0 < self.value.1 {
                    self.kind = Kind::CommitHash;
                }
            }
            b'-' if prev < Kind::RevisionNo && self.b.get(self.pos + 1) == Some(&b'r') => {
                self.pos += 2;
                self.kind = Kind::RevisionNo;
                self.digits();
            }
            _ => {}
        }
    }
}

/// apk's `apk_version_validate`.
pub fn is_valid(s: &str) -> bool {
    let mut l = Lexer::new(s);
    while l.kind < Kind::End {
        l.next();
    }
    l.kind == Kind::End
}

fn token_cmp(a: &Lexer<'_>, b: &Lexer<'_>) -> Ordering {
    match a.kind {
        Kind::Digit if a.value().first() == Some(&b'0') || b.value().first() == Some(&b'0') => {
            a.value().cmp(b.value())
        }
        Kind::InitialDigit | Kind::Digit | Kind::SuffixNo | Kind::RevisionNo => a.number.cmp(&b.number),
        Kind::Letter => a.value().cmp(b.value()),
        Kind::Suffix => a.suffix.cmp(&b.suffix),
        _ => a.value().cmp(b.value()),
    }
}

fn compare_fuzzy(a: &str, b: &str, fuzzy: bool) -> Ordering {
    let (mut ta, mut tb) = (Lexer::new(a), Lexer::new(b));
    while ta.kind == tb.kind && ta.kind < Kind::End {
        let r = token_cmp(&ta, &tb);
        if r != Ordering::Equal {
            return r;
        }
        ta.next();
        tb.next();
    }
    if ta.kind == tb.kind || (tb.kind == Kind::End && fuzzy) {
        return Ordering::Equal;
    }
    // Equal so far: the longer one is newer, unless what it has left is a
    // pre-release suffix.
    if ta.kind == Kind::Suffix && ta.suffix < SUFFIX_NONE {
        return Ordering::Less;
    }
    if tb.kind == Kind::Suffix && tb.suffix < SUFFIX_NONE {
        return Ordering::Greater;
    }
    // A later token kind means an earlier end of the shared part.
    tb.kind.cmp(&ta.kind)
}

/// apk's `apk_version_compare` on any two strings, valid or not.
pub fn compare_raw(a: &str, b: &str) -> Ordering {
    compare_fuzzy(a, b, false)
}

/// apk's `apk_version_match(a, op, b)`: `op` is made of `<`, `>`, `=`, `~`
/// (fuzzy: `b` matches as a prefix of `a`), optionally led by `!` (negation).
/// `3.6.9 ~ 3.6` holds. An error for an unknown operator.
pub fn fuzzy_match(a: &str, op: &str, b: &str) -> Result<bool, VersionError> {
    let (negate, ops) = match op.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, op),
    };
    if ops.is_empty() {
        return Err(VersionError::invalid_range(Scheme::Apk, op, "empty operator"));
    }
    let (mut less, mut equal, mut greater, mut fuzzy) = (false, false, false, false);
    for c in ops.chars() {
        match c {
            '<' => less = true,
            '>' => greater = true,
            '=' => equal = true,
            '~' => (fuzzy, equal) = (true, true),
            _ => return Err(VersionError::invalid_range(Scheme::Apk, op, "unknown operator")),
        }
    }
    let hit = match compare_fuzzy(a, b, fuzzy) {
        Ordering::Less => less,
        Ordering::Equal => equal,
        Ordering::Greater => greater,
    };
    Ok(hit != negate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::vectors::{check_pairs, rows};
    use crate::versions::{compare, parse};

    /// apk-tools' own table. Pairs where both sides are valid run through
    /// the parsed [`ApkVersion`]; the rest (apk's table also orders invalid
    /// strings like `23_foo`) through [`compare_raw`].
    #[test]
    fn apk_version_data() {
        let raw = check_pairs("apk-version.data.tsv", |a, b| Ok(compare_raw(a, b)));
        let n = check_pairs("apk-version.data.tsv", |a, b| {
            if is_valid(a) && is_valid(b) {
                compare(Scheme::Apk, a, b)
            } else {
                Ok(compare_raw(a, b))
            }
        });
        let parsed = rows("apk-version.data.tsv")
            .iter()
            .filter(|r| is_valid(&r[0]) && is_valid(&r[1]))
            .count();
        assert_eq!(raw, n);
        assert!(n > 550 && parsed > 500, "only {n} vectors, {parsed} valid pairs");
    }

    #[test]
    fn apk_fuzzy() {
        let rows = rows("apk-fuzzy.tsv");
        assert!(rows.len() >= 10);
        for r in &rows {
            assert_eq!(
                fuzzy_match(&r[0], &r[2], &r[1]).ok(),
                Some(true),
                "{} {} {}",
                r[0],
                r[2],
                r[1]
            );
        }
    }

    #[test]
    fn apk_validity() {
        let rows = rows("apk-validity.tsv");
        assert!(rows.len() >= 20);
        for r in &rows {
            let want = match r[1].as_str() {
                "valid" => true,
                "invalid" => false,
                other => panic!("bad validity {other:?}"),
            };
            assert_eq!(is_valid(&r[0]), want, "{:?}", r[0]);
            assert_eq!(parse(Scheme::Apk, &r[0]).is_ok(), want, "{:?}", r[0]);
        }
    }

    #[test]
    fn suffixes_and_revisions() {
        let c = |a, b| compare(Scheme::Apk, a, b).unwrap();
        assert_eq!(c("1.0_alpha1", "1.0_beta1"), Ordering::Less);
        assert_eq!(c("1.0_rc1", "1.0"), Ordering::Less);
        assert_eq!(c("1.0_p1", "1.0"), Ordering::Greater);
        assert_eq!(c("1.0-r1", "1.0-r10"), Ordering::Less);
        assert_eq!(c("1.0-r0", "1.0"), Ordering::Greater);
        assert!(fuzzy_match("1.0", "?", "1.0").is_err());
    }
}
