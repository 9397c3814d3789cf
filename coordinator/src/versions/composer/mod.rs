//! Packagist (Composer) version ordering: Composer's
//! `VersionParser::normalize` (composer/semver), then PHP's
//! `version_compare` on the normalised strings, as Composer's `Comparator`
//! does.
//!
//! Hand-written (no crate implements either):
//! - [`normalize`]: trims; drops an ` as alias` and an `@stability` flag;
//!   `master`/`trunk`/`default` become `dev-…`, and `dev-…` branches stay as
//!   they are; drops `+build` metadata; a classical version (`v` optional,
//!   a major of at most five digits and up to three more numeric parts) is
//!   padded to four parts (`1.0` → `1.0.0.0`); a date version
//!   (`2010-01-02` → `2010.01.02`) keeps its parts; either may end in a
//!   stability suffix (`stable`, `alpha`/`a`, `beta`/`b`, `RC`, `patch`/
//!   `pl`/`p`, then numbers, then `-dev`: `1.0.0RC1dev` → `1.0.0.0-RC1-dev`);
//!   `1.x-dev` becomes `1.9999999.9999999.9999999-dev`. Anything else is
//!   invalid (`1.0.0-meh`, `1.0.0.0.0`, `1.0.1-SNAPSHOT`).
//! - `version_compare` (php-src `ext/standard/versioning.c`): `-`, `_`, `+`
//!   and other non-alphanumerics become `.`, and a `.` is put between
//!   digits and non-digits; parts compare left to right, numbers
//!   numerically, words as special forms (by prefix, case-sensitive):
//!   any other word `< dev < alpha = a < beta = b < RC = rc < number <
//!   pl = p` (so `patch` is `p`). When one runs out, a following number
//!   makes the longer one greater, a following word is compared with a
//!   number.
//! - `dev-` branches are below every numbered version (`version_compare`
//!   sees the word `dev` against a number); Composer leaves two branches
//!   unordered, here they order by name so the order is total.
//!
//! osv.dev's `packagist.py` compares raw strings with its own
//! approximation of `version_compare` (no Composer normalisation, special
//! forms matched whole): it has `1.0.0 > 1.0`, where Composer (and this
//! module) have `1.0 = 1.0.0`.

mod normalize;

use std::cmp::Ordering;

pub use normalize::normalize;

use super::{Scheme, VersionError};

#[derive(Clone, Debug)]
pub struct ComposerVersion {
    s: Box<str>,
    /// Composer's normalised form (`1.0.0.0-beta2`).
    normalized: Box<str>,
    /// The parts of `version_compare`'s canonical form of `normalized`.
    parts: Vec<Box<[u8]>>,
    branch: bool,
}

impl ComposerVersion {
    pub fn parse(input: &str) -> Result<ComposerVersion, VersionError> {
        VersionError::check_len(Scheme::Composer, input)?;
        if input.chars().any(char::is_control) {
            return Err(VersionError::invalid(
                Scheme::Composer,
                input,
                "control character",
            ));
        }
        let normalized = normalize(input)
            .ok_or_else(|| VersionError::invalid(Scheme::Composer, input, "not a Composer version"))?;
        let canonical = canonicalize(normalized.as_bytes());
        Ok(ComposerVersion {
            s: input.trim().into(),
            branch: normalized.starts_with("dev-"),
            parts: canonical.split(|&b| b == b'.').map(Into::into).collect(),
            normalized: normalized.into(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    /// Composer's normalised form.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// php-src's `php_canonicalize_version`, byte for byte.
fn canonicalize(v: &[u8]) -> Vec<u8> {
    let Some((&first, rest)) = v.split_first() else {
        return Vec::new();
    };
    let isdig = |x: u8| x.is_ascii_digit();
    let isndig = |x: u8| !x.is_ascii_digit() && x != b'.';
    let mut out = Vec::with_capacity(v.len() * 2);
    out.push(first);
    let mut lp = first;
    for &p in rest {
        let lq = out.last().copied().unwrap_or(0);
        if matches!(p, b'-' | b'_' | b'+') {
            if lq != b'.' {
                out.push(b'.');
            }
        } else if (isndig(lp) && isdig(p)) || (isdig(lp) && isndig(p)) {
            if lq != b'.' {
                out.push(b'.');
            }
            out.push(p);
        } else if !p.is_ascii_alphanumeric() {
            if lq != b'.' {
                out.push(b'.');
            }
        } else {
            out.push(p);
        }
        lp = p;
    }
    out
}

/// The special form a word starts with, in php-src's order; -1 for none.
fn special_form(w: &[u8]) -> i8 {
    const FORMS: [(&[u8], i8); 10] = [
        (b"dev", 0),
        (b"alpha", 1),
        (b"a", 1),
        (b"beta", 2),
        (b"b", 2),
        (b"RC", 3),
        (b"rc", 3),
        (b"#", 4),
        (b"pl", 5),
        (b"p", 5),
    ];
    FORMS
        .iter()
        .find(|(f, _)| w.starts_with(f))
        .map_or(-1, |(_, o)| *o)
}

/// What `version_compare` pads a shorter version with: `#N#`, a number.
const NUMBER: &[u8] = b"#N#";

fn starts_digit(p: &[u8]) -> bool {
    p.first().is_some_and(u8::is_ascii_digit)
}

/// Leading digits as `strtol` reads them, without leading zeros.
fn leading_number(p: &[u8]) -> &[u8] {
    let end = p.iter().position(|b| !b.is_ascii_digit()).unwrap_or(p.len());
    let digits = &p[..end];
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    &digits[zeros..]
}

fn cmp_part(a: &[u8], b: &[u8]) -> Ordering {
    match (starts_digit(a), starts_digit(b)) {
        (true, true) => {
            let (x, y) = (leading_number(a), leading_number(b));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (false, false) => special_form(a).cmp(&special_form(b)),
        (true, false) => special_form(NUMBER).cmp(&special_form(b)),
        (false, true) => special_form(a).cmp(&special_form(NUMBER)),
    }
}

/// `php_version_compare(rest, "#N#")` for the parts that follow where the
/// other version ran out.
fn cmp_tail_with_number(rest: &[Box<[u8]>]) -> Ordering {
    match rest {
        [] => Ordering::Equal,
        [only] if only.is_empty() => Ordering::Less,
        [first, more @ ..] => match cmp_part(first, NUMBER) {
            Ordering::Equal => match more.first() {
                None => Ordering::Equal,
                Some(next) if starts_digit(next) => Ordering::Greater,
                Some(_) => cmp_tail_with_number(more),
            },
            o => o,
        },
    }
}

/// php-src's `php_version_compare` over canonical parts.
fn version_compare(a: &[Box<[u8]>], b: &[Box<[u8]>]) -> Ordering {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        let o = cmp_part(&a[i], &b[i]);
        if o != Ordering::Equal {
            return o;
        }
        // The loop goes on while both have a non-empty rest.
        let rest_a = a.len() > i + 1 && !(a.len() == i + 2 && a[i + 1].is_empty());
        let rest_b = b.len() > i + 1 && !(b.len() == i + 2 && b[i + 1].is_empty());
        if !(rest_a && rest_b) {
            break;
        }
        i += 1;
    }
    let (more_a, more_b) = (a.len() > i + 1, b.len() > i + 1);
    if more_a {
        if starts_digit(&a[i + 1]) {
            Ordering::Greater
        } else {
            cmp_tail_with_number(&a[i + 1..])
        }
    } else if more_b {
        if starts_digit(&b[i + 1]) {
            Ordering::Less
        } else {
            cmp_tail_with_number(&b[i + 1..]).reverse()
        }
    } else {
        Ordering::Equal
    }
}

impl Ord for ComposerVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.branch, other.branch) {
            (true, true) => self.normalized.cmp(&other.normalized),
            // What `version_compare` says too: the word `dev` against a number.
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => version_compare(&self.parts, &other.parts),
        }
    }
}

impl PartialOrd for ComposerVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ComposerVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ComposerVersion {}

#[cfg(test)]
mod tests;
