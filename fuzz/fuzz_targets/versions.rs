//! Every version scheme: parse, compare (which must be reflexive and
//! antisymmetric: a sort relies on it), the comma-joined constraints of the
//! fleet query, apk's fuzzy operators and npm's ranges.
//! First byte: the scheme (`Scheme::ALL`) and which check; the rest is
//! split at the first newline into two versions (or range and version).
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use strata_coordinator::versions::constraint::Conjunction;
use strata_coordinator::versions::semver::npm_range::{Options, Range};
use strata_coordinator::versions::{self, Scheme, apk, semver::SemverVersion};
use strata_fuzz::{pick, text};

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, Scheme::ALL.len() * 2 + 2) else {
        return;
    };
    let Some(s) = text(rest) else { return };
    let (a, b) = s.split_once('\n').unwrap_or((s, s));
    if which < Scheme::ALL.len() * 2 {
        let scheme = Scheme::ALL[which / 2];
        if which % 2 == 0 {
            let (Ok(va), Ok(vb)) = (versions::parse(scheme, a), versions::parse(scheme, b)) else {
                return;
            };
            assert_eq!(
                va.cmp(&va),
                Ordering::Equal,
                "{scheme:?}: {a:?} is not equal to itself"
            );
            assert_eq!(
                va.cmp(&vb),
                vb.cmp(&va).reverse(),
                "{scheme:?}: compare({a:?}, {b:?}) is not antisymmetric"
            );
            let _ = va.to_string();
        } else if let Ok(range) = Conjunction::parse(a)
            && let Ok(parsed) = range.try_map(|v| versions::parse(scheme, v))
            && let Ok(v) = versions::parse(scheme, b)
        {
            let _ = parsed.satisfied_by(&v);
        }
    } else if which == Scheme::ALL.len() * 2 {
        // The operator is the first one or two characters of the second line.
        let cut = b.char_indices().nth(2).map_or(b.len(), |(i, _)| i);
        let (op, rest) = b.split_at(cut);
        let _ = apk::fuzzy_match(a, op, rest);
    } else {
        for loose in [false, true] {
            let opts = Options {
                loose,
                include_prerelease: !loose,
            };
            if let Ok(range) = Range::parse(a, opts)
                && let Ok(v) = SemverVersion::parse_loose(b)
            {
                let _ = range.satisfies(&v);
            }
        }
    }
});
