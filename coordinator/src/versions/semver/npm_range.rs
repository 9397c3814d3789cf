//! node-semver range evaluation (npm): `||` alternatives of space-separated
//! comparators, with `^`, `~`/`~>`, x-ranges (`1.x`, `1.2.*`, `*`), hyphen
//! ranges (`1.2 - 2`), and the options `loose` and `includePrerelease`.
//!
//! Follows node-semver's `Range`: each shorthand is rewritten into plain
//! comparators (`^1.2.3` is `>=1.2.3 <2.0.0-0`) exactly as node-semver
//! rewrites it, then a version satisfies a set when it satisfies every
//! comparator, and a pre-release version only when some comparator of the
//! set has a pre-release on the same `major.minor.patch` (unless
//! `include_prerelease`). An unparseable range is an error (node-semver
//! throws); in loose mode, as there, unparseable comparators are dropped.
//! Operators are read by [`constraint::strip_op`] in its `Npm` syntax (the
//! crate's one operator table) and compared by [`Op::holds`].

use super::{Mode, SemverVersion, parse_parts};
use crate::versions::constraint::{self, Op, Syntax};
use crate::versions::{Scheme, VersionError};

/// Longest range accepted: real ranges are short; this bounds the work.
const MAX_RANGE_LEN: usize = 4096;

/// node-semver's options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub loose: bool,
    pub include_prerelease: bool,
}

#[derive(Clone, Debug)]
enum Comparator {
    Any,
    Cmp(Op, SemverVersion),
}

/// A parsed npm range.
#[derive(Clone, Debug)]
pub struct Range {
    sets: Vec<Vec<Comparator>>,
    opts: Options,
}

fn err(range: &str, reason: &'static str) -> VersionError {
    VersionError::invalid_range(Scheme::Semver, range, reason)
}

/// One `X[.Y[.Z[-pre][+build]]]` where each number may be `x`, `X`, `*` or
/// missing (`None`), after any leading `v`/`=`/blanks.
#[derive(Debug, Default)]
struct XRange<'a> {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: &'a str,
    /// The text matched, from the first number on (used as-is by hyphen
    /// ranges, like node-semver does).
    text: &'a str,
}

/// Parses node-semver's `XRANGEPLAIN` (the whole of `s`), or `None`.
fn xrange(s: &str, loose: bool) -> Option<XRange<'_>> {
    let s = s.trim_start_matches(|c: char| c == 'v' || c == '=' || c.is_whitespace());
    let mut out = XRange {
        text: s,
        ..XRange::default()
    };
    let mut rest = s;
    let mut nums = [None; 3];
    for (k, slot) in nums.iter_mut().enumerate() {
        if k > 0 {
            match rest.strip_prefix('.') {
                Some(r) => rest = r,
                None => break,
            }
        }
        let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if end == 0 {
            let r = rest.strip_prefix(['x', 'X', '*'])?;
            rest = r;
            continue; // stays None
        }
        let digits = &rest[..end];
        if !loose && digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        *slot = Some(
            digits
                .parse::<u64>()
                .ok()
                .filter(|&n| n <= super::MAX_SAFE_INTEGER)?,
        );
        rest = &rest[end..];
        if k == 2 {
            // Pre-release and build only after a full X.Y.Z.
            if rest.is_empty() {
                break;
            }
            // Reuse the version parser on the tail for its identifier rules.
            let full = format!(
                "0.0.0{}{rest}",
                if loose || rest.starts_with(['-', '+']) {
                    ""
                } else {
                    "?"
                }
            );
            let mode = if loose { Mode::Loose } else { Mode::Strict };
            let p = parse_parts(&full, 0, mode).ok()?;
            let pre = &full[p.pre.0 as usize..p.pre.1 as usize];
            // Map the pre-release back into `s`.
            let off = s.len() - rest.len();
            let at = rest.find(pre).filter(|_| !pre.is_empty()).map(|i| off + i);
            out.pre = at.map_or("", |i| &s[i..i + pre.len()]);
            rest = "";
        }
    }
    if !rest.is_empty() {
        return None;
    }
    [out.major, out.minor, out.patch] = nums;
    // `1.x.3` is treated like `1.x`: a missing part wipes out the parts after it.
    if out.major.is_none() {
        out.minor = None;
    }
    if out.minor.is_none() {
        out.patch = None;
    }
    Some(out)
}

/// Rewrites one comparator token (`^1.2`, `~1`, `>=1.x`, `1.2.3`) into
/// plain comparator strings, as node-semver's `parseComparator` does.
fn expand(tok: &str, opts: Options) -> Result<Vec<String>, ()> {
    let z = if opts.include_prerelease { "-0" } else { "" };
    if let Some(rest) = tok.strip_prefix('^') {
        let x = xrange(rest, opts.loose).ok_or(())?;
        let pre = if x.pre.is_empty() {
            String::new()
        } else {
            format!("-{}", x.pre)
        };
        let Some(ma) = x.major else {
            return Ok(vec![String::new()]);
        };
        let Some(mi) = x.minor else {
            return Ok(vec![format!(">={ma}.0.0{z}"), format!("<{}.0.0-0", ma + 1)]);
        };
        let Some(pa) = x.patch else {
            return Ok(if ma == 0 {
                vec![format!(">={ma}.{mi}.0{z}"), format!("<{ma}.{}.0-0", mi + 1)]
            } else {
                vec![format!(">={ma}.{mi}.0{z}"), format!("<{}.0.0-0", ma + 1)]
            });
        };
        let lower = if x.pre.is_empty() {
            format!(">={ma}.{mi}.{pa}")
        } else {
            format!(">={ma}.{mi}.{pa}{pre}")
        };
        let upper = if ma == 0 && mi == 0 {
            format!("<{ma}.{mi}.{}-0", pa + 1)
        } else if ma == 0 {
            format!("<{ma}.{}.0-0", mi + 1)
        } else {
            format!("<{}.0.0-0", ma + 1)
        };
        return Ok(vec![lower, upper]);
    }
    if let Some(rest) = tok.strip_prefix('~') {
        let rest = rest.strip_prefix('>').unwrap_or(rest);
        let x = xrange(rest, opts.loose).ok_or(())?;
        let Some(ma) = x.major else {
            return Ok(vec![String::new()]);
        };
        let Some(mi) = x.minor else {
            return Ok(vec![format!(">={ma}.0.0{z}"), format!("<{}.0.0-0", ma + 1)]);
        };
        let Some(pa) = x.patch else {
            return Ok(vec![format!(">={ma}.{mi}.0{z}"), format!("<{ma}.{}.0-0", mi + 1)]);
        };
        let lower = if x.pre.is_empty() {
            format!(">={ma}.{mi}.{pa}")
        } else {
            format!(">={ma}.{mi}.{pa}-{}", x.pre)
        };
        return Ok(vec![lower, format!("<{ma}.{}.0-0", mi + 1)]);
    }
    // `GTLT` then an x-range.
    let op_len = constraint::strip_op(tok, Syntax::Npm).map_or(0, |(_, rest)| tok.len() - rest.len());
    let (mut op, rest) = tok.split_at(op_len);
    let Some(x) = xrange(rest, opts.loose) else {
        // Not an x-range: left for the comparator parser to accept or reject.
        return Ok(vec![tok.to_owned()]);
    };
    let any_x = x.patch.is_none();
    if !any_x {
        return Ok(vec![tok.to_owned()]);
    }
    if op == "=" {
        op = "";
    }
    let Some(mut ma) = x.major else {
        return Ok(vec![if op == ">" || op == "<" {
            "<0.0.0-0".to_owned()
        } else {
            String::new()
        }]);
    };
    let mut pre = z;
    if !op.is_empty() {
        let (mut mi, mut pa) = (x.minor.unwrap_or(0), 0);
        let mut op = op;
        if op == ">" {
            op = ">=";
            if x.minor.is_none() {
                ma += 1;
                mi = 0;
            } else {
                mi += 1;
            }
            pa = 0;
        } else if op == "<=" {
            op = "<";
            if x.minor.is_none() {
                ma += 1;
            } else {
                mi += 1;
            }
        }
        if op == "<" {
            pre = "-0";
        }
        return Ok(vec![format!("{op}{ma}.{mi}.{pa}{pre}")]);
    }
    match x.minor {
        None => Ok(vec![format!(">={ma}.0.0{pre}"), format!("<{}.0.0-0", ma + 1)]),
        Some(mi) => Ok(vec![
            format!(">={ma}.{mi}.0{pre}"),
            format!("<{ma}.{}.0-0", mi + 1),
        ]),
    }
}

/// node-semver's hyphen range `A - B`.
fn hyphen(from: &XRange<'_>, to: &XRange<'_>, opts: Options) -> Vec<String> {
    let z = if opts.include_prerelease { "-0" } else { "" };
    let mut out = Vec::with_capacity(2);
    match (from.major, from.minor, from.patch) {
        (None, _, _) => {}
        (Some(ma), None, _) => out.push(format!(">={ma}.0.0{z}")),
        (Some(ma), Some(mi), None) => out.push(format!(">={ma}.{mi}.0{z}")),
        _ if !from.pre.is_empty() => out.push(format!(">={}", from.text)),
        _ => out.push(format!(">={}{z}", from.text)),
    }
    match (to.major, to.minor, to.patch) {
        (None, _, _) => {}
        (Some(ma), None, _) => out.push(format!("<{}.0.0-0", ma + 1)),
        (Some(ma), Some(mi), None) => out.push(format!("<{ma}.{}.0-0", mi + 1)),
        (Some(ma), Some(mi), Some(pa)) if !to.pre.is_empty() => {
            out.push(format!("<={ma}.{mi}.{pa}-{}", to.pre))
        }
        (Some(ma), Some(mi), Some(pa)) if opts.include_prerelease => {
            out.push(format!("<{ma}.{mi}.{}-0", pa + 1))
        }
        _ => out.push(format!("<={}", to.text)),
    }
    out
}

/// Parses one plain comparator (`>=1.2.3`, `1.2.3`, or empty for any).
fn comparator(c: &str, opts: Options) -> Option<Comparator> {
    if c.is_empty() {
        return Some(Comparator::Any);
    }
    let (op, rest) = constraint::strip_op(c, Syntax::Npm).unwrap_or((Op::Eq, c));
    let rest = rest.trim_start();
    let v = if opts.loose {
        SemverVersion::parse_loose(rest)
    } else {
        SemverVersion::parse(rest)
    };
    v.ok().map(|v| Comparator::Cmp(op, v))
}

fn parse_set(part: &str, opts: Options, whole: &str) -> Result<Vec<Comparator>, VersionError> {
    let toks: Vec<&str> = part.split_whitespace().collect();
    let mut strings = Vec::new();
    // Hyphen range: exactly `A - B`.
    let hy = match toks.as_slice() {
        [a, "-", b] => xrange(a, opts.loose).zip(xrange(b, opts.loose)),
        _ => None,
    };
    if let Some((a, b)) = &hy {
        strings = hyphen(a, b, opts);
    } else {
        // Glue a lone operator to the version after it (`>= 1.2`, `~ 1`, `^ 1`).
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i];
            let lone = matches!(t, "<" | ">" | "<=" | ">=" | "=" | "~" | "~>" | "^");
            let tok = if lone && i + 1 < toks.len() {
                i += 1;
                // `~> 1` is `~1` (node-semver's tilde trim drops the `>`).
                let op = if t == "~>" { "~" } else { t };
                format!("{op}{}", toks[i])
            } else {
                t.to_owned()
            };
            i += 1;
            match expand(&tok, opts) {
                Ok(v) => strings.extend(v),
                Err(()) if opts.loose => {}
                Err(()) => return Err(err(whole, "invalid comparator")),
            }
        }
    }
    // An empty set (`""`, `x - x`) is "any"; a set whose comparators loose
    // mode all dropped is no set at all (as in node-semver).
    if toks.is_empty() || (hy.is_some() && strings.is_empty()) {
        strings.push(String::new());
    }
    let gte0 = if opts.include_prerelease {
        ">=0.0.0-0"
    } else {
        ">=0.0.0"
    };
    let mut set = Vec::with_capacity(strings.len());
    for s in &strings {
        let s = if s == gte0 { "" } else { s.as_str() };
        match comparator(s, opts) {
            Some(c) => set.push(c),
            None if opts.loose => {}
            None => return Err(err(whole, "invalid comparator")),
        }
    }
    // `*` next to real comparators adds nothing.
    if set.len() > 1 {
        set.retain(|c| !matches!(c, Comparator::Any));
    }
    Ok(set)
}

impl Range {
    /// Parses a node-semver range.
    pub fn parse(range: &str, opts: Options) -> Result<Range, VersionError> {
        if range.len() > MAX_RANGE_LEN {
            return Err(err(range, "longer than 4096 bytes"));
        }
        let mut sets = Vec::new();
        for part in range.split("||") {
            let set = parse_set(part.trim(), opts, range)?;
            if !set.is_empty() {
                sets.push(set);
            }
        }
        if sets.is_empty() {
            return Err(err(range, "no valid comparator set"));
        }
        Ok(Range { sets, opts })
    }

    /// Whether `v` satisfies the range.
    pub fn satisfies(&self, v: &SemverVersion) -> bool {
        self.sets.iter().any(|set| test_set(set, v, self.opts))
    }
}

fn test_comparator(c: &Comparator, v: &SemverVersion) -> bool {
    match c {
        Comparator::Any => true,
        Comparator::Cmp(op, bound) => op.holds(v.cmp(bound)),
    }
}

fn test_set(set: &[Comparator], v: &SemverVersion, opts: Options) -> bool {
    if !set.iter().all(|c| test_comparator(c, v)) {
        return false;
    }
    if v.prerelease().is_empty() || opts.include_prerelease {
        return true;
    }
    // A pre-release only matches a set that names a pre-release of the same
    // major.minor.patch (so `^1.2.3` never pulls in `2.0.0-beta`).
    set.iter().any(|c| match c {
        Comparator::Cmp(_, b) => {
            !b.prerelease().is_empty()
                && (b.major(), b.minor(), b.patch()) == (v.major(), v.minor(), v.patch())
        }
        Comparator::Any => false,
    })
}

/// node-semver's `satisfies(version, range, options)`. An error when the
/// range or the version does not parse (node-semver answers `false`).
pub fn satisfies(range: &str, version: &str, opts: Options) -> Result<bool, VersionError> {
    let r = Range::parse(range, opts)?;
    let v = if opts.loose {
        SemverVersion::parse_loose(version)?
    } else {
        SemverVersion::parse(version)?
    };
    Ok(r.satisfies(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::vectors::rows;

    fn opts(s: &str) -> Options {
        match s {
            "" => Options::default(),
            "loose" => Options {
                loose: true,
                ..Options::default()
            },
            "includePrerelease" => Options {
                include_prerelease: true,
                ..Options::default()
            },
            other => panic!("bad option {other:?}"),
        }
    }

    #[test]
    fn node_semver_range_include_and_exclude() {
        let mut n = 0;
        let mut failures = Vec::new();
        for f in [
            "semver-node-semver-range-include.tsv",
            "semver-node-semver-range-exclude.tsv",
        ] {
            for r in rows(f) {
                let o = opts(r.get(3).map_or("", String::as_str));
                let want = match r[2].as_str() {
                    "include" => true,
                    "exclude" => false,
                    other => panic!("bad column {other:?}"),
                };
                // TSV cannot hold a tab, so the fixture's one tab is written `\t`.
                let range = r[0].replace("\\t", "\t");
                // node-semver answers false for a range or version it cannot parse.
                let got = satisfies(&range, &r[1], o).unwrap_or(false);
                if got != want {
                    failures.push(format!("{:?} {:?} {o:?}: want {want}", r[0], r[1]));
                }
                n += 1;
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(n > 170, "only {n} vectors");
    }

    #[test]
    fn invalid_ranges_are_errors() {
        assert!(Range::parse("^foo", Options::default()).is_err());
        assert!(Range::parse(">=1.2.3 bar", Options::default()).is_err());
        assert!(Range::parse(&"1 ".repeat(3000), Options::default()).is_err());
        assert!(satisfies("^1.2.3", "not-a-version", Options::default()).is_err());
        let loose = Options {
            loose: true,
            ..Options::default()
        };
        assert!(
            Range::parse("^foo", loose).is_err(),
            "a range loose mode empties is invalid, not any"
        );
        assert_eq!(satisfies("== 1.0.0 || foo", "1.0.0", loose).ok(), Some(true));
        assert_eq!(satisfies("== 1.0.0 || foo", "1.0.1", loose).ok(), Some(false));
        // An empty alternative matches anything.
        assert_eq!(
            satisfies("1.2.3 ||", "9.9.9", Options::default()).ok(),
            Some(true)
        );
        assert_eq!(satisfies("x - x", "9.9.9", Options::default()).ok(), Some(true));
    }
}
