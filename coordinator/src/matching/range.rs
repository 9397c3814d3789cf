//! One OSV range (`SEMVER` or `ECOSYSTEM`), compiled once and evaluated many
//! times, following the schema's evaluation rules
//! (<https://ossf.github.io/osv-schema/#evaluation>).
//!
//! Contract: [`CompiledRange::compile`] parses every event version once with
//! the range's scheme and sorts the events; it is an error (the caller drops
//! the range and keeps only the explicit `versions` list) when any event
//! version does not parse. [`CompiledRange::affects`] never fails: the caller
//! parses the installed version with [`CompiledRange::scheme`] first, and an
//! installed version that does not parse matches no range.
//!
//! Semantics: events are sorted by version (`introduced: "0"` first); walking
//! them in order, `introduced` at or below the version sets "affected",
//! `fixed` at or below it clears it (fixed is exclusive), `last_affected`
//! strictly below it clears it (last_affected is inclusive). When the range
//! has `limit` events, the version must also be below one of them (`"*"` is
//! no limit).

use std::cmp::Ordering;

use crate::versions::{self, Scheme, Version, VersionError};

/// One event of a range, as the advisory model gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Introduced,
    Fixed,
    LastAffected,
    Limit,
}

#[derive(Clone, Debug)]
enum Step {
    /// `introduced`; `None` is `"0"`, before every version.
    Introduced(Option<Version>),
    LastAffected(Version),
    Fixed(Version),
}

impl Step {
    // At one version: introduced before last_affected before fixed, so
    // `introduced: X, fixed: X` is an empty range, never "affected from X".
    fn rank(&self) -> u8 {
        match self {
            Step::Introduced(_) => 0,
            Step::LastAffected(_) => 1,
            Step::Fixed(_) => 2,
        }
    }

    fn version(&self) -> Option<&Version> {
        match self {
            Step::Introduced(v) => v.as_ref(),
            Step::LastAffected(v) | Step::Fixed(v) => Some(v),
        }
    }
}

/// A range ready to evaluate.
#[derive(Clone, Debug)]
pub struct CompiledRange {
    scheme: Scheme,
    steps: Vec<Step>,
    /// `limit` events; empty means no limit. `None` is `"*"`.
    limits: Vec<Option<Version>>,
}

impl CompiledRange {
    /// Parses and sorts `events` under `scheme`. An error names the first
    /// event version that does not parse.
    pub fn compile<'a>(
        scheme: Scheme,
        events: impl IntoIterator<Item = (EventKind, &'a str)>,
    ) -> Result<CompiledRange, VersionError> {
        let mut steps = Vec::new();
        let mut limits = Vec::new();
        for (kind, s) in events {
            match kind {
                EventKind::Introduced if s == "0" => steps.push(Step::Introduced(None)),
                EventKind::Introduced => steps.push(Step::Introduced(Some(parse(scheme, s)?))),
                EventKind::Fixed => steps.push(Step::Fixed(parse(scheme, s)?)),
                EventKind::LastAffected => steps.push(Step::LastAffected(parse(scheme, s)?)),
                EventKind::Limit if s == "*" => limits.push(None),
                EventKind::Limit => limits.push(Some(parse(scheme, s)?)),
            }
        }
        merge_sort_by(&mut steps, |a, b| match (a.version(), b.version()) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(y).then(a.rank().cmp(&b.rank())),
        });
        Ok(CompiledRange {
            scheme,
            steps,
            limits,
        })
    }

    /// The scheme the installed version must be parsed with.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether `v` (parsed with [`Self::scheme`]) is in the range.
    pub fn affects(&self, v: &Version) -> bool {
        let mut affected = false;
        for step in &self.steps {
            match step {
                Step::Introduced(None) => affected = true,
                Step::Introduced(Some(i)) => {
                    if v >= i {
                        affected = true;
                    }
                }
                Step::Fixed(f) => {
                    if v >= f {
                        affected = false;
                    }
                }
                Step::LastAffected(l) => {
                    if v > l {
                        affected = false;
                    }
                }
            }
        }
        affected && (self.limits.is_empty() || self.limits.iter().any(|l| l.as_ref().is_none_or(|l| v < l)))
    }

    /// The `fixed` versions above `v`, lowest first: where an affected `v`
    /// can upgrade to. Fixes at or below `v` closed earlier intervals and
    /// would mislead.
    pub fn fixes_above<'s>(&'s self, v: &'s Version) -> impl Iterator<Item = &'s str> + 's {
        self.steps.iter().filter_map(move |s| match s {
            Step::Fixed(f) if f > v => Some(f.as_str()),
            _ => None,
        })
    }
}

/// A stable merge sort that never panics, whatever `cmp` answers. The
/// standard library's sorts may panic when an ordering is not total, and
/// one scheme's is not: osv.dev's Maven order, which ours follows pair by
/// pair, is not transitive in corner cases (`versions::maven`).
fn merge_sort_by<T: Clone>(v: &mut [T], cmp: impl Fn(&T, &T) -> Ordering + Copy) {
    if v.len() < 2 {
        return;
    }
    let mid = v.len() / 2;
    merge_sort_by(&mut v[..mid], cmp);
    merge_sort_by(&mut v[mid..], cmp);
    let (left, right) = (v[..mid].to_vec(), v[mid..].to_vec());
    let (mut i, mut j) = (0, 0);
    for slot in v.iter_mut() {
        let take_left = j == right.len() || (i < left.len() && cmp(&right[j], &left[i]) != Ordering::Less);
        if take_left {
            *slot = left[i].clone();
            i += 1;
        } else {
            *slot = right[j].clone();
            j += 1;
        }
    }
}

/// Parses `s` as ranges of `scheme` need it, for event versions and
/// installed versions alike. Semver is lenient as osv.dev's own matcher is:
/// the parser strips a leading `v`, and a version with fewer than three
/// numeric components ("0.2", "1", real crates.io records have them) is
/// padded with `.0` ("0.2.0"). Every other scheme is its strict parser.
pub fn parse_version(scheme: Scheme, s: &str) -> Result<Version, VersionError> {
    match versions::parse(scheme, s) {
        Ok(v) => Ok(v),
        Err(e) if scheme == Scheme::Semver => pad_semver(s).ok_or(e),
        Err(e) => Err(e),
    }
}

fn pad_semver(s: &str) -> Option<Version> {
    let s = s.trim();
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(core_end);
    let core = core.strip_prefix('v').unwrap_or(core);
    let parts = core.split('.').count();
    if core.is_empty()
        || parts >= 3
        || !core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let padded = format!("{core}{}{rest}", ".0".repeat(3 - parts));
    versions::parse(Scheme::Semver, &padded).ok()
}

fn parse(scheme: Scheme, s: &str) -> Result<Version, VersionError> {
    parse_version(scheme, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    fn range(scheme: Scheme, events: &[(EventKind, &str)]) -> CompiledRange {
        CompiledRange::compile(scheme, events.iter().copied()).unwrap()
    }

    fn hit(r: &CompiledRange, v: &str) -> bool {
        r.affects(&parse_version(r.scheme(), v).unwrap())
    }

    #[test]
    fn introduced_zero_and_fixed_is_exclusive() {
        let r = range(Scheme::Semver, &[(Introduced, "0"), (Fixed, "1.2.3")]);
        assert!(hit(&r, "0.0.1"));
        assert!(hit(&r, "1.2.2"));
        assert!(hit(&r, "1.2.3-rc.1"));
        assert!(!hit(&r, "1.2.3"));
        assert!(!hit(&r, "2.0.0"));
    }

    #[test]
    fn introduced_is_inclusive() {
        let r = range(Scheme::Semver, &[(Introduced, "1.0.0"), (Fixed, "1.1.0")]);
        assert!(!hit(&r, "0.9.9"));
        assert!(hit(&r, "1.0.0"));
        assert!(hit(&r, "1.0.5"));
        assert!(!hit(&r, "1.1.0"));
    }

    #[test]
    fn last_affected_is_inclusive() {
        let r = range(Scheme::Pep440, &[(Introduced, "1.0"), (LastAffected, "1.4")]);
        assert!(hit(&r, "1.4"));
        assert!(hit(&r, "1.4.0"));
        assert!(!hit(&r, "1.4.1"));
        assert!(!hit(&r, "0.9"));
    }

    #[test]
    fn introduced_without_end_is_open() {
        let r = range(Scheme::Dpkg, &[(Introduced, "2.0-1")]);
        assert!(!hit(&r, "1.9-9"));
        assert!(hit(&r, "2.0-1"));
        assert!(hit(&r, "99:0"));
    }

    #[test]
    fn several_pairs_in_any_order() {
        // Given out of order on purpose: evaluation sorts by version.
        let r = range(
            Scheme::Semver,
            &[
                (Fixed, "4.0.0"),
                (Introduced, "3.0.0"),
                (Fixed, "2.0.0"),
                (Introduced, "1.0.0"),
            ],
        );
        assert!(!hit(&r, "0.5.0"));
        assert!(hit(&r, "1.5.0"));
        assert!(!hit(&r, "2.5.0"));
        assert!(hit(&r, "3.0.0"));
        assert!(!hit(&r, "4.0.0"));
        let v = versions::parse(Scheme::Semver, "3.1.0").unwrap();
        assert_eq!(r.fixes_above(&v).collect::<Vec<_>>(), ["4.0.0"]);
    }

    #[test]
    fn limit_bounds_the_range() {
        let r = range(Scheme::Semver, &[(Introduced, "0"), (Limit, "2.0.0")]);
        assert!(hit(&r, "1.9.9"));
        assert!(!hit(&r, "2.0.0"));
        assert!(!hit(&r, "3.0.0"));
        let star = range(Scheme::Semver, &[(Introduced, "0"), (Limit, "*")]);
        assert!(hit(&star, "3.0.0"));
    }

    #[test]
    fn semver_strips_leading_v() {
        let r = range(Scheme::Semver, &[(Introduced, "v1.0.0"), (Fixed, "v1.2.0")]);
        assert!(hit(&r, "v1.1.0"));
        assert!(hit(&r, "1.1.0"));
        assert!(!hit(&r, "v1.2.0"));
    }

    #[test]
    fn semver_pads_short_versions() {
        // As in GHSA-wcg3-cvx6-7396 (crates.io `time`): introduced 0.1, last_affected 0.2.
        let r = range(Scheme::Semver, &[(Introduced, "0.1"), (LastAffected, "0.2")]);
        assert!(hit(&r, "0.1.0"));
        assert!(hit(&r, "0.2"));
        assert!(hit(&r, "0.2.0"));
        assert!(!hit(&r, "0.2.1"));
        assert!(parse_version(Scheme::Semver, "1").is_ok());
        assert!(parse_version(Scheme::Semver, "1.2-beta").is_ok());
        assert!(parse_version(Scheme::Semver, "1..2").is_err());
        assert!(parse_version(Scheme::Semver, "x.y").is_err());
        assert!(parse_version(Scheme::Pep440, "not a version").is_err());
    }

    #[test]
    fn same_version_introduced_and_fixed_is_empty() {
        let r = range(Scheme::Semver, &[(Fixed, "1.0.0"), (Introduced, "1.0.0")]);
        assert!(!hit(&r, "1.0.0"));
        assert!(!hit(&r, "1.5.0"));
    }

    #[test]
    fn unparsable_event_is_an_error() {
        let e = CompiledRange::compile(Scheme::Semver, [(Introduced, "0"), (Fixed, "not a version")]);
        assert!(e.is_err());
    }

    #[test]
    fn ecosystem_scheme_orders_by_the_ecosystem() {
        // dpkg: `~` sorts before anything, epochs dominate.
        let r = range(Scheme::Dpkg, &[(Introduced, "0"), (Fixed, "1.0-1")]);
        assert!(hit(&r, "1.0~rc1-1"));
        assert!(!hit(&r, "1:0.1-1"));
        // PEP 440: 1.0 == 1.0.0, and a pre-release is below the release.
        let p = range(Scheme::Pep440, &[(Introduced, "0"), (Fixed, "1.0")]);
        assert!(hit(&p, "1.0rc1"));
        assert!(!hit(&p, "1.0.0"));
    }

    /// osv.dev's Maven order is not transitive (`1-alpha-1 < 1 < 1.foo <
    /// 1-alpha-1`): sorting many such events must not panic.
    #[test]
    fn intransitive_orders_sort_without_panic() {
        let cycle = ["1-alpha-1", "1", "1.foo", "2.9.0", "2.9.0-1", "2.9.0.RC1"];
        let events: Vec<(EventKind, &str)> = (0..3000)
            .map(|i| {
                let kind = if i % 2 == 0 { Introduced } else { Fixed };
                (kind, cycle[(i * 7) % cycle.len()])
            })
            .collect();
        let r = CompiledRange::compile(Scheme::Maven, events).unwrap();
        let _ = hit(&r, "1.foo");
        let mut v = vec![3, 1, 2, 5, 4, 1];
        merge_sort_by(&mut v, |a, b| a.cmp(b));
        assert_eq!(v, [1, 1, 2, 3, 4, 5]);
    }
}
