//! Maven version ordering, as osv.dev orders Maven versions
//! (`osv/ecosystems/maven.py`), which implements the POM reference's
//! "Version Order Specification"
//! (<https://maven.apache.org/pom.html#Version_Order_Specification>).
//! Advisories are written against osv.dev's ordering, so that is the one
//! that decides whether a range holds a version.
//!
//! Hand-written: no crate implements it. The rules:
//! - Tokens: the version is split at `.` and `-` (the separator is kept as
//!   the token's prefix), and each part again at every switch between
//!   digits and non-digits, the later pieces taking `-` as their prefix
//!   (`1.0.0rc0` is `1 .0 .0 -rc -0`; `_` is an ordinary letter). Tokens are
//!   lower-cased; an empty token is `0`; `cr` is `rc`; `ga`, `final` and
//!   `release` are `""`; `a`, `b`, `m` followed by digits are `alpha`,
//!   `beta`, `milestone`; numbers lose their leading zeros.
//! - Trimming: from the end, trailing null tokens (`0`, `""`) are dropped,
//!   then again before each remaining `-` from end to start (`1.0-1.0` is
//!   `1-1`); the first token always stays.
//! - Comparison, token by token, the shorter version padded with nulls of
//!   the other's prefix (`.0` or `-""`). Same prefix: numbers numerically,
//!   a number after any qualifier, qualifiers in the order
//!   `alpha < beta < milestone < rc < snapshot < "" < sp` with unknown ones
//!   after them, lexically (a padded `.0` counts as the unknown qualifier
//!   `"0"` against a qualifier). Different prefixes:
//!   `.qualifier < -qualifier < -number < .number`.
//!
//! Where this differs from Maven's own `ComparableVersion` (3.9), osv.dev
//! wins: `2.9.0-1 < 2.9.0.RC1` (trimmed, `2.9-1` against `2.9.0.rc-1`: `-1`
//! meets `.0`, and `-number < .number`), `1.0.0rc0 < 1.0.beta8` (`1-rc`
//! against `1.0.beta-8`), `1.2.48.sec10 < 1.2.48_noneautotype` (`.sec`
//! against `-_noneautotype`), `2-1 < 2.0.a`, and `1.alpha1 < 1-alpha-1`
//! (Maven 3.9 reads a `.qualifier` as `-qualifier`, MNG-7644; osv.dev does
//! not).
//! osv.dev's order is not transitive in corner cases (`1-alpha-1 < 1 <
//! 1.foo < 1-alpha-1`); every pair compares as osv.dev compares it, and
//! callers that sort Maven versions must use a sort that tolerates that
//! (`matching::range` does).
//!
//! Any non-empty string is a Maven version; empty strings and control
//! characters are errors. Only ASCII digits are digits.

use std::cmp::Ordering;

use super::{Scheme, VersionError};

/// A token's prefix: the separator before it (`None` for the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sep {
    None,
    Dot,
    Dash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    sep: Sep,
    /// Digits only (no leading zeros; zero is `""`), else a qualifier.
    numeric: bool,
    /// A padding token, standing for a missing one.
    pad: bool,
    text: Box<str>,
}

/// Known qualifiers in order; unknown ones come after, lexically.
const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

impl Token {
    fn is_null(&self) -> bool {
        self.text.is_empty()
    }

    /// The padding that stands against `other` when this side ran out.
    fn pad_for(other: &Token) -> Token {
        Token {
            sep: other.sep,
            numeric: other.sep != Sep::Dash,
            pad: true,
            text: "".into(),
        }
    }

    /// The qualifier text a token compares by among qualifiers (a padded
    /// `.0` is the unknown qualifier `"0"`).
    fn qualifier(&self) -> &str {
        if self.numeric { "0" } else { &self.text }
    }

    /// `.qualifier < -qualifier < -number < .number`.
    fn prefix_rank(&self) -> u8 {
        match (self.numeric, self.sep) {
            (false, Sep::Dash) => 1,
            (false, _) => 0,
            (true, Sep::Dash) => 2,
            (true, _) => 3,
        }
    }

    fn same(&self, other: &Token) -> bool {
        self.sep == other.sep && self.numeric == other.numeric && self.text == other.text
    }

    fn cmp_to(&self, other: &Token) -> Ordering {
        if self.same(other) {
            return Ordering::Equal;
        }
        if self.sep != other.sep {
            return self.prefix_rank().cmp(&other.prefix_rank());
        }
        match (self.numeric, other.numeric) {
            (true, true) => cmp_digits(&self.text, &other.text),
            (true, false) if !self.pad => Ordering::Greater,
            (false, true) if !other.pad => Ordering::Less,
            _ => {
                let (a, b) = (self.qualifier(), other.qualifier());
                let rank = |q: &str| {
                    QUALIFIERS
                        .iter()
                        .position(|k| *k == q)
                        .unwrap_or(QUALIFIERS.len())
                };
                match (rank(a), rank(b)) {
                    (ra, rb) if ra == QUALIFIERS.len() && rb == QUALIFIERS.len() => a.cmp(b),
                    (ra, rb) => ra.cmp(&rb),
                }
            }
        }
    }
}

/// Compares digit strings without leading zeros.
fn cmp_digits(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// One token from a piece of a part (never empty except a whole empty part).
fn token(sep: Sep, piece: &str, before_digits: bool) -> Token {
    if piece.is_empty() || piece.bytes().all(|b| b.is_ascii_digit()) {
        return Token {
            sep,
            numeric: true,
            pad: false,
            text: piece.trim_start_matches('0').into(),
        };
    }
    let lower = piece.to_lowercase();
    let text = match lower.as_str() {
        "cr" => "rc",
        "ga" | "final" | "release" => "",
        "a" if before_digits => "alpha",
        "b" if before_digits => "beta",
        "m" if before_digits => "milestone",
        other => other,
    };
    Token {
        sep,
        numeric: false,
        pad: false,
        text: text.into(),
    }
}

fn tokenize(v: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut sep = Sep::None;
    let mut rest = v;
    loop {
        let end = rest.find(['.', '-']).unwrap_or(rest.len());
        push_part(&mut tokens, sep, &rest[..end]);
        let Some(&next) = rest.as_bytes().get(end) else {
            break;
        };
        sep = if next == b'-' { Sep::Dash } else { Sep::Dot };
        rest = &rest[end + 1..];
    }
    trim(&mut tokens);
    tokens
}

/// The tokens of one part between separators: split at each switch
/// between ASCII digits and anything else (always a char boundary), the
/// pieces after the first taking `-` as their prefix.
fn push_part(tokens: &mut Vec<Token>, sep: Sep, part: &str) {
    let b = part.as_bytes();
    if b.is_empty() {
        tokens.push(token(sep, "", false));
        return;
    }
    let mut start = 0;
    let mut piece_sep = sep;
    for j in 1..=b.len() {
        if j == b.len() || b[j].is_ascii_digit() != b[j - 1].is_ascii_digit() {
            tokens.push(token(piece_sep, &part[start..j], j < b.len()));
            piece_sep = Sep::Dash;
            start = j;
        }
    }
}

/// Drops trailing null tokens, then those before each remaining `-` from
/// end to start; the first token always stays.
fn trim(tokens: &mut Vec<Token>) {
    let mut i = tokens.len().saturating_sub(1);
    while i > 0 {
        if tokens[i].is_null() {
            tokens.remove(i);
            i -= 1;
            continue;
        }
        // Back to the `-` that opened this group, then before it.
        while tokens[i].sep != Sep::Dash {
            if i == 0 {
                return;
            }
            i -= 1;
        }
        if i == 0 {
            return;
        }
        i -= 1;
    }
}

#[derive(Clone, Debug)]
pub struct MavenVersion {
    s: Box<str>,
    tokens: Vec<Token>,
}

impl MavenVersion {
    pub fn parse(input: &str) -> Result<MavenVersion, VersionError> {
        VersionError::check_len(Scheme::Maven, input)?;
        let s = input.trim();
        if s.is_empty() {
            return Err(VersionError::invalid(Scheme::Maven, input, "empty version"));
        }
        if s.chars().any(char::is_control) {
            return Err(VersionError::invalid(Scheme::Maven, input, "control character"));
        }
        Ok(MavenVersion {
            s: s.into(),
            tokens: tokenize(s),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl Ord for MavenVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.tokens, &other.tokens);
        for i in 0..a.len().max(b.len()) {
            let o = match (a.get(i), b.get(i)) {
                (Some(l), Some(r)) => l.cmp_to(r),
                (Some(l), None) => l.cmp_to(&Token::pad_for(l)),
                (None, Some(r)) => Token::pad_for(r).cmp_to(r),
                (None, None) => Ordering::Equal,
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for MavenVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MavenVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MavenVersion {}

#[cfg(test)]
mod tests;
