//! One OSV record → its normalised parts, skipping (with a reason) what
//! cannot be matched; and the merge of records linked by aliases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use strata_proto::{Ecosystem, Severity};

use super::osv::{self, Vulnerability};
use super::{Advisory, AffectedEntry, EvalRange, Event, ImportSummary, RangeKind};
use crate::versions::{self, Scheme};
use strata_proto::text::cut_marked;

/// Bound on what one record may carry (hostile feeds).
const MAX_AFFECTED: usize = 10_000;
/// Events of one range, of one affected package (all its ranges), and of
/// a whole record: a cap per range alone let many ranges of many packages
/// carry millions (the largest real records hold tens).
const MAX_EVENTS: usize = 10_000;
const MAX_PACKAGE_EVENTS: usize = 10_000;
const MAX_RECORD_EVENTS: usize = 50_000;
const MAX_VERSIONS: usize = 100_000;
const MAX_ALIASES: usize = 1_000;

/// A record as read, before merging. Serialisable: the feed poller keeps
/// each feed's records (see [`super::FeedRecords`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: String,
    /// The record's `modified` as written (RFC 3339), empty when absent.
    pub modified: String,
    /// `aliases` and `upstream`: ids of the same vulnerability.
    pub linked: Vec<String>,
    pub summary: String,
    pub severity: Rated,
    pub affected: Vec<AffectedEntry>,
}

/// A severity with the score and where it came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Rated {
    pub severity: Severity,
    pub score: Option<f64>,
    pub source: String,
}

/// Parse and normalise one record. `None` when it is malformed or
/// withdrawn (counted in `summary`).
pub(crate) fn record(bytes: &[u8], origin: &str, summary: &mut ImportSummary) -> Option<Record> {
    summary.records_read += 1;
    let vuln: Vulnerability = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(err) => {
            summary.unreadable(origin, format!("malformed JSON: {err}"));
            return None;
        }
    };
    if vuln.id.is_empty() || vuln.id.len() > 200 {
        summary.unreadable(origin, "record has no valid id");
        return None;
    }
    if vuln.withdrawn.is_some() {
        summary.withdrawn += 1;
        return None;
    }
    if vuln.affected.len() > MAX_AFFECTED || vuln.aliases.len() + vuln.upstream.len() > MAX_ALIASES {
        summary.skip(
            &vuln.id,
            origin,
            "record is over the size bounds (affected or aliases)",
        );
        return None;
    }
    let events: usize = vuln
        .affected
        .iter()
        .flat_map(|a| &a.ranges)
        .map(|r| r.events.len())
        .sum();
    if events > MAX_RECORD_EVENTS {
        summary.skip(
            &vuln.id,
            origin,
            format!("record has {events} range events, over the bound of {MAX_RECORD_EVENTS}"),
        );
        return None;
    }
    let severity = rate(&vuln);
    let mut affected = Vec::new();
    for (i, a) in vuln.affected.iter().enumerate() {
        if let Some(entry) = affected_entry(&vuln.id, i, a, origin, summary) {
            affected.push(entry);
        }
    }
    let summary_text = vuln
        .summary
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            vuln.details
                .as_ref()
                .map(|d| d.lines().next().unwrap_or_default().to_owned())
        })
        .unwrap_or_default();
    let mut linked: Vec<String> = vuln.aliases.iter().chain(&vuln.upstream).cloned().collect();
    linked.retain(|l| !l.is_empty() && l.len() <= 200 && *l != vuln.id);
    // Bounded like the ids: a timestamp, not a payload.
    let modified = vuln.modified.filter(|m| m.len() <= 64).unwrap_or_default();
    Some(Record {
        id: vuln.id,
        modified,
        linked,
        summary: cut_marked(&summary_text, 500),
        severity,
        affected,
    })
}

/// `Debian:12` → (Debian, "12"); `Alpine:v3.19` → (Alpine, "3.19");
/// `Ubuntu:22.04:LTS` → (Ubuntu, "22.04"); `Ubuntu:Pro:18.04:LTS` →
/// (Ubuntu, "pro-18.04"), which no standard image matches, on purpose. The
/// suffix rule is the ecosystem's ([`strata_proto::ecosystem::OsvRelease`]).
pub(crate) fn split_ecosystem(s: &str) -> Result<(Ecosystem, Option<String>), String> {
    let (name, rest) = match s.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (s, None),
    };
    let eco = Ecosystem::from_str(name).map_err(|_| format!("unknown ecosystem {:?}", cut_marked(s, 60)))?;
    Ok((eco, rest.and_then(|r| eco.osv_release(r))))
}

fn affected_entry(
    id: &str,
    index: usize,
    a: &osv::Affected,
    origin: &str,
    summary: &mut ImportSummary,
) -> Option<AffectedEntry> {
    let Some(package) = &a.package else {
        summary.skip(id, origin, format!("affected[{index}] names no package"));
        return None;
    };
    if package.name.is_empty() || package.name.len() > 1000 {
        summary.skip(id, origin, format!("affected[{index}] has no valid package name"));
        return None;
    }
    let (ecosystem, release) = match split_ecosystem(&package.ecosystem) {
        Ok(e) => e,
        Err(reason) => {
            summary.skip(
                id,
                origin,
                format!("affected[{index}] ({}): {reason}", package.name),
            );
            return None;
        }
    };
    let scheme = match versions::scheme(ecosystem) {
        Ok(s) => s,
        Err(err) => {
            summary.skip(id, origin, format!("affected[{index}] ({}): {err}", package.name));
            return None;
        }
    };
    let package_events: usize = a.ranges.iter().map(|r| r.events.len()).sum();
    if package_events > MAX_PACKAGE_EVENTS {
        summary.skip(
            id,
            origin,
            format!(
                "affected[{index}] ({}): {package_events} events across its ranges, over the bound of {MAX_PACKAGE_EVENTS}",
                package.name
            ),
        );
        return None;
    }
    let mut ranges = Vec::new();
    for range in &a.ranges {
        let kind = match range.kind.as_str() {
            "SEMVER" => RangeKind::Semver,
            "ECOSYSTEM" => RangeKind::Ecosystem,
            "GIT" => {
                summary.git_ranges_skipped += 1;
                continue;
            }
            other => {
                summary.skip(
                    id,
                    origin,
                    format!(
                        "affected[{index}] ({}): range type {other:?} cannot be evaluated",
                        package.name
                    ),
                );
                continue;
            }
        };
        if range.events.len() > MAX_EVENTS {
            summary.skip(
                id,
                origin,
                format!("affected[{index}] ({}): too many events", package.name),
            );
            continue;
        }
        match events(&range.events, kind, scheme) {
            Ok(events) if !events.is_empty() => ranges.push(EvalRange { kind, events }),
            Ok(_) => summary.skip(
                id,
                origin,
                format!("affected[{index}] ({}): range has no events", package.name),
            ),
            Err(reason) => summary.skip(
                id,
                origin,
                format!("affected[{index}] ({}): {reason}", package.name),
            ),
        }
    }
    let versions: Vec<String> = a.versions.iter().take(MAX_VERSIONS).cloned().collect();
    if ranges.is_empty() && versions.is_empty() {
        // Only GIT ranges (counted above), or every range was skipped.
        return None;
    }
    Some(AffectedEntry {
        ecosystem,
        release,
        name: package.name.clone(),
        ranges,
        versions,
    })
}

/// The events of one range, each version checked to parse under the range's
/// scheme so that matching never meets an unevaluable range.
fn events(raw: &[osv::RawEvent], kind: RangeKind, scheme: Scheme) -> Result<Vec<Event>, String> {
    let mut out = Vec::with_capacity(raw.len());
    for e in raw {
        let (event, version) = match (&e.introduced, &e.fixed, &e.last_affected, &e.limit) {
            (Some(v), None, None, None) => (Event::Introduced(v.clone()), v),
            (None, Some(v), None, None) => (Event::Fixed(v.clone()), v),
            (None, None, Some(v), None) => (Event::LastAffected(v.clone()), v),
            (None, None, None, Some(v)) => (Event::Limit(v.clone()), v),
            _ => {
                return Err(
                    "an event must have exactly one of introduced, fixed, last_affected, limit".into(),
                );
            }
        };
        let exempt = matches!(&event, Event::Introduced(v) if v == "0")
            || matches!(&event, Event::Limit(v) if v == "*");
        if !exempt {
            check_version(kind, scheme, version)?;
        }
        out.push(event);
    }
    Ok(out)
}

fn check_version(kind: RangeKind, scheme: Scheme, version: &str) -> Result<(), String> {
    let result = match kind {
        RangeKind::Ecosystem => versions::parse(scheme, version).map(|_| ()),
        RangeKind::Semver => {
            // OSV SEMVER ranges are written without the `v` Go puts in front,
            // and sometimes with missing minor/patch (`1.2`), which osv.dev pads.
            let v = version.strip_prefix('v').unwrap_or(version);
            versions::parse(Scheme::Semver, v)
                .or_else(|_| versions::parse(Scheme::Semver, &pad_semver(v)))
                .map(|_| ())
        }
    };
    result.map_err(|err| {
        format!(
            "range version {:?} does not parse: {err}",
            cut_marked(version, 60)
        )
    })
}

fn pad_semver(v: &str) -> String {
    let (core, rest) = match v.find(['-', '+']) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let dots = core.matches('.').count();
    let pad = match dots {
        0 => ".0.0",
        1 => ".0",
        _ => "",
    };
    format!("{core}{pad}{rest}")
}

// ---- severity ---------------------------------------------------------------

fn rate(vuln: &Vulnerability) -> Rated {
    let all_entries = vuln
        .severity
        .iter()
        .chain(vuln.affected.iter().flat_map(|a| &a.severity));
    let mut best: Option<(u8, Rated)> = None;
    for entry in all_entries {
        let Some((rank, rated)) = rate_entry(entry) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(r, b)| rank > *r || (rank == *r && rated.score > b.score))
        {
            best = Some((rank, rated));
        }
    }
    if let Some((_, rated)) = best {
        return rated;
    }
    // The record's own words: GHSA's `database_specific.severity`, or an
    // affected entry's ecosystem/database-specific severity.
    let specific = std::iter::once(&vuln.database_specific)
        .chain(
            vuln.affected
                .iter()
                .flat_map(|a| [&a.ecosystem_specific, &a.database_specific]),
        )
        .flatten()
        .find_map(|v| {
            v.get("severity")
                .and_then(|s| s.as_str())
                .and_then(|s| Severity::from_str(s).ok())
        });
    match specific {
        Some(severity) => Rated {
            severity,
            score: None,
            source: "database_specific".into(),
        },
        None => Rated::default(),
    }
}

/// A CVSS vector → (preference rank, rating). v4 is preferred over v3.
fn rate_entry(entry: &osv::SeverityEntry) -> Option<(u8, Rated)> {
    let vector = entry.score.trim();
    match entry.kind.as_str() {
        "CVSS_V4" => {
            let v: cvss::v4::Vector = vector.parse().ok()?;
            let score = v.score().value();
            Some((
                2,
                Rated {
                    severity: from_score(score),
                    score: Some(score),
                    source: "CVSS_V4".into(),
                },
            ))
        }
        "CVSS_V3" => {
            let base: cvss::v3::Vector = vector.parse().ok()?;
            let score = base.score().value();
            Some((
                1,
                Rated {
                    severity: from_score(score),
                    score: Some(score),
                    source: "CVSS_V3".into(),
                },
            ))
        }
        // Ubuntu's own priority words.
        "Ubuntu" => Severity::from_str(vector).ok().map(|s| {
            (
                0,
                Rated {
                    severity: s,
                    score: None,
                    source: "Ubuntu".into(),
                },
            )
        }),
        _ => None,
    }
}

/// The CVSS qualitative rating scale (same for v3.x and v4.0).
fn from_score(score: f64) -> Severity {
    match score {
        s if s >= 9.0 => Severity::Critical,
        s if s >= 7.0 => Severity::High,
        s if s >= 4.0 => Severity::Medium,
        s if s > 0.0 => Severity::Low,
        _ => Severity::Unknown,
    }
}

// ---- merging aliases --------------------------------------------------------

/// Records linked by aliases become one advisory each (union-find over ids).
/// Takes references: the feed poller merges the records it keeps per feed
/// without copying them.
pub(crate) fn merge<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<Advisory> {
    let records: Vec<&Record> = records.into_iter().collect();
    let mut uf = UnionFind::default();
    for r in &records {
        let a = uf.id(&r.id);
        for l in &r.linked {
            let b = uf.id(l);
            uf.union(a, b);
        }
    }
    let mut groups: BTreeMap<usize, Vec<&Record>> = BTreeMap::new();
    for r in records {
        let root = uf.find_name(&r.id);
        groups.entry(root).or_default().push(r);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (_, mut group) in groups {
        // The same id may come from two sources with different contents (a
        // trimmed test fixture and the full export): keep both, in an order
        // that does not depend on the order of the sources, so the merged
        // advisory (and the database version) does not either.
        group.sort_by(|a, b| {
            a.id.cmp(&b.id)
                .then_with(|| a.summary.cmp(&b.summary))
                .then_with(|| a.severity.source.cmp(&b.severity.source))
                .then_with(|| {
                    a.severity
                        .score
                        .partial_cmp(&b.severity.score)
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .then_with(|| a.affected.cmp(&b.affected))
                .then_with(|| a.linked.cmp(&b.linked))
                .then_with(|| a.modified.cmp(&b.modified))
        });
        let affected: BTreeSet<AffectedEntry> =
            group.iter().flat_map(|r| r.affected.iter().cloned()).collect();
        if affected.is_empty() {
            continue;
        }
        let ids: BTreeSet<String> = group
            .iter()
            .flat_map(|r| std::iter::once(r.id.clone()).chain(r.linked.iter().cloned()))
            .collect();
        let primary = group
            .iter()
            .map(|r| r.id.as_str())
            .min_by_key(|id| (id.starts_with("CVE-"), *id))
            .unwrap_or_default()
            .to_owned();
        let summary = group
            .iter()
            .find(|r| r.id == primary && !r.summary.is_empty())
            .or_else(|| group.iter().find(|r| !r.summary.is_empty()))
            .map(|r| r.summary.clone())
            .unwrap_or_default();
        // The worst rating, ties broken by the first in the canonical order.
        let rank = |r: &Rated| (r.score.is_some(), r.severity, r.score.map(|s| (s * 10.0) as i64));
        let rated = group
            .iter()
            .map(|r| &r.severity)
            .fold(None::<&Rated>, |best, r| match best {
                Some(b) if rank(b) >= rank(r) => Some(b),
                _ => Some(r),
            })
            .cloned()
            .unwrap_or_default();
        let modified = newest(group.iter().map(|r| r.modified.as_str()));
        out.push(Advisory {
            aliases: ids.into_iter().filter(|i| *i != primary).collect(),
            id: primary,
            modified,
            summary,
            severity: rated.severity,
            score: rated.score,
            score_source: rated.source,
            affected: affected.into_iter().collect(),
        });
    }
    out
}

/// The newest of RFC 3339 timestamps (`2021-07-05T00:01:17.388273Z`), as
/// written; compared as instants, since text order puts `…17Z` after
/// `…17.388Z`. One that does not parse counts as older than any that do.
fn newest<'a>(stamps: impl Iterator<Item = &'a str>) -> String {
    let instant =
        |s: &str| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok();
    stamps
        .filter(|s| !s.is_empty())
        .max_by(|a, b| instant(a).cmp(&instant(b)).then_with(|| a.cmp(b)))
        .unwrap_or_default()
        .to_owned()
}

#[derive(Default)]
struct UnionFind {
    index: HashMap<String, usize>,
    parent: Vec<usize>,
}

impl UnionFind {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.index.insert(name.to_owned(), i);
        i
    }
    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }
    fn find_name(&mut self, name: &str) -> usize {
        let i = self.id(name);
        self.find(i)
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecosystem_releases() {
        let e = |s| split_ecosystem(s).unwrap();
        assert_eq!(e("Debian:12"), (Ecosystem::Debian, Some("12".into())));
        assert_eq!(e("Alpine:v3.19"), (Ecosystem::Alpine, Some("3.19".into())));
        assert_eq!(e("Ubuntu:22.04:LTS"), (Ecosystem::Ubuntu, Some("22.04".into())));
        assert_eq!(
            e("Ubuntu:Pro:18.04:LTS"),
            (Ecosystem::Ubuntu, Some("pro-18.04".into()))
        );
        assert_eq!(
            e("Red Hat:enterprise_linux:9::appstream"),
            (Ecosystem::RedHat, Some("9".into()))
        );
        assert_eq!(e("PyPI"), (Ecosystem::PyPI, None));
        assert!(split_ecosystem("Android").is_err());
    }

    #[test]
    fn cvss_vectors_are_scored() {
        // CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H is the textbook 9.8.
        let entry = osv::SeverityEntry {
            kind: "CVSS_V3".into(),
            score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H".into(),
        };
        let (_, rated) = rate_entry(&entry).unwrap();
        assert_eq!(rated.score, Some(9.8));
        assert_eq!(rated.severity, Severity::Critical);
        // AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:N/A:N = 4.3 (medium).
        let entry = osv::SeverityEntry {
            kind: "CVSS_V3".into(),
            score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:N/A:N".into(),
        };
        assert_eq!(rate_entry(&entry).unwrap().1.score, Some(4.3));
        let v4 = osv::SeverityEntry {
            kind: "CVSS_V4".into(),
            score: "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H".into(),
        };
        let (rank, rated) = rate_entry(&v4).unwrap();
        assert_eq!(
            (rank, rated.score, rated.severity),
            (2, Some(10.0), Severity::Critical)
        );
        let junk = osv::SeverityEntry {
            kind: "CVSS_V3".into(),
            score: "not a vector".into(),
        };
        assert!(rate_entry(&junk).is_none());
    }

    #[test]
    fn the_newest_modified_is_compared_as_an_instant() {
        let stamps = ["2021-07-05T00:01:17.388Z", "2021-07-05T00:01:17Z", "", "junk"];
        assert_eq!(newest(stamps.into_iter()), "2021-07-05T00:01:17.388Z");
        assert_eq!(newest(["", "junk"].into_iter()), "junk");
        assert_eq!(newest(std::iter::empty()), "");
    }

    #[test]
    fn semver_padding() {
        assert_eq!(pad_semver("1"), "1.0.0");
        assert_eq!(pad_semver("1.2-rc1"), "1.2.0-rc1");
        assert_eq!(pad_semver("1.2.3"), "1.2.3");
    }
}
