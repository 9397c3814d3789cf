//! Matching packages against the vulnerability database.
//!
//! [`Matcher::new`] builds, once, an index by (ecosystem, package name) from
//! the [`Db`], with every range's versions parsed once
//! ([`range::CompiledRange`]). [`Matcher::match_packages`] matches one image,
//! [`Matcher::match_fleet`] many: each distinct (ecosystem, release, name,
//! version) is matched once (in parallel with rayon) and the result fanned out
//! to every image that has it.
//!
//! Contract:
//! - One finding per (advisory, package): the db has merged aliases, and
//!   several affected entries or ranges of one advisory hitting one package
//!   give one finding whose fixed versions are the union.
//! - A package matches an affected entry when its installed version is in
//!   one of the entry's ranges or string-equal to one of its `versions`.
//!   A range whose versions do not parse is dropped at build time (only the
//!   list is used for that entry; counted in [`IndexStats`]); an installed
//!   version that does not parse matches no range, never panics. Semver
//!   ranges pad short versions ("0.2" is "0.2.0"; [`range::parse_version`]).
//! - OS awareness: an entry with a `release` (`Debian:12` → "12") applies
//!   only to packages of an image whose [`OsRelease`] gives that release for
//!   the package's ecosystem ([`release_key`]). An OS package in an image
//!   with no os-release matches no release-specific entry (only entries
//!   without a release, e.g. Wolfi).
//! - What a package is matched by is its ecosystem's row of the ecosystem
//!   table (`strata_proto::ecosystem`): Debian and Ubuntu match by source
//!   package and source version; Alpine by origin (the `source_name`); RPM
//!   ecosystems and language ecosystems by the package's own name and
//!   version. PyPI names are PEP 503-normalised on both sides. Go's `stdlib`
//!   version "go1.21.3" is matched as "1.21.3".
//! - What is never matched: a package with `App` evidence (the image's own
//!   application, listed only: its name may be any registry package's), and
//!   a Go main module whose version is `(devel)` (built from a checkout).
//!   Neither is an error. `FileName` evidence (a guess from a file name)
//!   is matched; its findings carry the package, so reports say it.
//! - Names as OSV spells them: Maven `groupId:artifactId`, npm `@scope/name`,
//!   Go module paths (the toolchain is `stdlib`); PyPI names PEP 503-
//!   normalised, NuGet and Packagist names lower-cased, on both sides.
//! - Findings are ordered by severity (highest first), then id, package
//!   name, version and path: the same input gives the same output.

pub mod range;

use std::borrow::{Borrow, Cow};
use std::collections::HashMap;

use rayon::prelude::*;
use rustc_hash::{FxBuildHasher, FxHashMap};
use strata_proto::domain::Evidence;
use strata_proto::{Ecosystem, Finding, OsRelease, Package, Severity};

use crate::versions::{self, Scheme, Version};
use crate::vulndb::{Advisory, Db, Event, RangeKind};
use range::{CompiledRange, EventKind};

/// What one advisory contributes to a finding.
#[derive(Clone, Debug)]
struct AdvisoryInfo {
    id: String,
    aliases: Vec<String>,
    summary: String,
    severity: Severity,
    score: Option<f64>,
    score_source: String,
}

/// One affected entry of one advisory, ready to evaluate.
#[derive(Clone, Debug)]
struct Entry {
    advisory: u32,
    release: Option<Box<str>>,
    ranges: Vec<CompiledRange>,
    /// The explicit `versions` list, sorted for binary search.
    versions: Vec<Box<str>>,
}

/// Counts from building the index, for logs and `db status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub advisories: usize,
    pub entries: usize,
    pub ranges: usize,
    /// Ranges dropped because an event version did not parse (or the
    /// ecosystem has no version ordering); their entry keeps its list.
    pub unevaluable_ranges: usize,
}

/// One advisory hitting one (ecosystem, release, name, version).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hit {
    advisory: u32,
    fixed: Vec<String>,
}

/// One finding of a [`FleetMatches`], borrowed ([`Matcher::hits_of`]).
#[derive(Clone, Copy, Debug)]
pub struct MatchedHit<'a> {
    /// The package's index in the image's list.
    pub package: usize,
    /// The advisory's index in the matcher: equal for the same advisory.
    pub advisory: u32,
    pub id: &'a str,
    pub aliases: &'a [String],
    pub severity: Severity,
    pub fixed_versions: &'a [String],
}

/// A fleet matched by [`Matcher::match_fleet_compact`]: the hits of each
/// distinct key and, per image, the key of each package.
#[derive(Clone, Debug)]
pub struct FleetMatches {
    hits: Vec<Vec<Hit>>,
    per_image: Vec<Vec<u32>>,
}

impl FleetMatches {
    /// How many distinct (ecosystem, release, name, version) were matched.
    pub fn distinct_keys(&self) -> usize {
        self.hits.len()
    }

    /// How many findings image `image` has (0 for an unknown image).
    pub fn finding_count(&self, image: usize) -> usize {
        self.per_image
            .get(image)
            .map_or(0, |k| k.iter().map(|&k| self.hits[k as usize].len()).sum())
    }
}

/// The matcher's behaviour revision. Bump it whenever a change here can
/// give different findings for the same packages and advisories (version
/// comparison, name normalisation, which ranges apply): a coordinator that
/// finds another revision stored re-matches the whole fleet at start.
pub const MATCHER_REVISION: u32 = 1;

/// The in-memory index; cheap to share across threads (`&self` only).
pub struct Matcher {
    vulndb_version: String,
    advisories: Vec<AdvisoryInfo>,
    /// Every advisory's id, to tell a withdrawn advisory from a changed one.
    ids: rustc_hash::FxHashSet<Box<str>>,
    index: FxHashMap<Ecosystem, FxHashMap<Box<str>, Vec<Entry>>>,
    stats: IndexStats,
}

impl Matcher {
    /// Builds the index from every advisory of `db`.
    pub fn new(db: &Db) -> Matcher {
        Matcher::from_advisories(db.version(), db.advisories())
    }

    /// Builds the index from `advisories`, stamping findings with `vulndb_version`.
    pub fn from_advisories<'a>(
        vulndb_version: &str,
        advisories: impl IntoIterator<Item = &'a Advisory>,
    ) -> Matcher {
        let mut m = Matcher {
            vulndb_version: vulndb_version.to_owned(),
            advisories: Vec::new(),
            ids: rustc_hash::FxHashSet::default(),
            index: FxHashMap::default(),
            stats: IndexStats::default(),
        };
        for adv in advisories {
            let Ok(idx) = u32::try_from(m.advisories.len()) else {
                break; // More than 4 billion advisories: not a real database.
            };
            m.ids.insert(adv.id.as_str().into());
            m.advisories.push(AdvisoryInfo {
                id: adv.id.clone(),
                aliases: adv.aliases.clone(),
                summary: adv.summary.clone(),
                severity: adv.severity,
                score: adv.score,
                score_source: adv.score_source.clone(),
            });
            m.stats.advisories += 1;
            for aff in &adv.affected {
                let eco_scheme = versions::scheme(aff.ecosystem).ok();
                let mut ranges = Vec::with_capacity(aff.ranges.len());
                for r in &aff.ranges {
                    m.stats.ranges += 1;
                    let scheme = match r.kind {
                        RangeKind::Semver => Some(Scheme::Semver),
                        RangeKind::Ecosystem => eco_scheme,
                    };
                    let compiled =
                        scheme.and_then(|s| CompiledRange::compile(s, r.events.iter().map(event)).ok());
                    match compiled {
                        Some(c) => ranges.push(c),
                        None => m.stats.unevaluable_ranges += 1,
                    }
                }
                let mut list: Vec<Box<str>> = aff.versions.iter().map(|v| v.as_str().into()).collect();
                list.sort_unstable();
                list.dedup();
                if ranges.is_empty() && list.is_empty() {
                    continue;
                }
                m.stats.entries += 1;
                let name = normalise_name(aff.ecosystem, &aff.name)
                    .into_owned()
                    .into_boxed_str();
                m.index
                    .entry(aff.ecosystem)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .push(Entry {
                        advisory: idx,
                        release: aff.release.as_deref().map(Into::into),
                        ranges,
                        versions: list,
                    });
            }
        }
        m
    }

    pub fn stats(&self) -> IndexStats {
        self.stats
    }

    /// Whether the data has an advisory with this id.
    pub fn has_advisory(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    pub fn vulndb_version(&self) -> &str {
        &self.vulndb_version
    }

    /// Matches the packages of one image whose os-release is `os`.
    pub fn match_packages(&self, os: Option<&OsRelease>, packages: &[Package]) -> Vec<Finding> {
        if os.is_none() && packages.iter().any(|p| p.ecosystem.is_os()) {
            tracing::warn!(
                "image has OS packages but no os-release: they are matched only against advisories \
                 without a release (no Debian:12, Alpine:v3.19, ... entries)"
            );
        }
        let mut findings = Vec::new();
        for p in packages {
            let release = release_key(p.ecosystem, os);
            let key = Key::of(p, release.as_deref());
            for hit in self.match_key(&key) {
                findings.push(self.finding(&hit, p));
            }
        }
        sort_findings(&mut findings);
        findings
    }

    /// Matches many images; the result has one `Vec<Finding>` per image, in
    /// order, each equal to what [`Self::match_packages`] gives for it.
    /// [`Self::match_fleet_compact`] then [`Self::findings_of`] for each image.
    pub fn match_fleet(&self, images: &[(Option<OsRelease>, Vec<Package>)]) -> Vec<Vec<Finding>> {
        let fm = self.match_fleet_compact(images);
        images
            .par_iter()
            .enumerate()
            .map(|(i, (_, pkgs))| self.findings_of(&fm, i, pkgs))
            .collect()
    }

    /// Matches many images without materialising findings: each distinct
    /// (ecosystem, release, name, version) is matched once (rayon over the
    /// distinct keys), and each image keeps, per package, which key it has.
    /// Owned [`Finding`]s (a dozen allocations each) cost more than the
    /// matching itself; callers that only need some images' findings, counts,
    /// or a delta build them with [`Self::findings_of`].
    ///
    /// Packages may be owned or shared (`Arc<Package>`, as the fleet index
    /// holds them): anything that borrows as a [`Package`].
    pub fn match_fleet_compact<P: Borrow<Package> + Sync>(
        &self,
        images: &[(Option<OsRelease>, Vec<P>)],
    ) -> FleetMatches {
        let no_os = images
            .iter()
            .filter(|(os, pkgs)| os.is_none() && pkgs.iter().any(|p| p.borrow().ecosystem.is_os()))
            .count();
        if no_os > 0 {
            tracing::warn!(
                images = no_os,
                "images with OS packages but no os-release: their OS packages are matched only \
                 against advisories without a release"
            );
        }
        // Release keys per image and OS ecosystem, computed once and borrowed
        // by the keys below.
        let releases: Vec<Vec<(Ecosystem, Option<String>)>> = images
            .iter()
            .map(|(os, pkgs)| {
                let mut r: Vec<(Ecosystem, Option<String>)> = Vec::new();
                for p in pkgs {
                    let p: &Package = p.borrow();
                    if p.ecosystem.is_os() && !r.iter().any(|(e, _)| *e == p.ecosystem) {
                        r.push((p.ecosystem, release_key(p.ecosystem, os.as_ref())));
                    }
                }
                r
            })
            .collect();

        // Intern every distinct key; each image keeps the key id of each
        // package. Chunks of images intern in parallel into local tables,
        // which are then merged and their ids remapped (cheap: few distinct
        // keys, many packages).
        let chunk = images.len().div_ceil(rayon::current_num_threads() * 4).max(1);
        let locals: Vec<(Vec<Key<'_>>, Vec<Vec<u32>>)> = images
            .par_chunks(chunk)
            .zip(releases.par_chunks(chunk))
            .map(|(imgs, rels)| {
                let mut ids: FxHashMap<Key<'_>, u32> = HashMap::with_hasher(FxBuildHasher);
                let mut keys: Vec<Key<'_>> = Vec::new();
                let per_image = imgs
                    .iter()
                    .zip(rels)
                    .map(|((_, pkgs), rel)| {
                        pkgs.iter()
                            .map(|p| {
                                let p: &Package = p.borrow();
                                let release = rel
                                    .iter()
                                    .find(|(e, _)| *e == p.ecosystem)
                                    .and_then(|(_, r)| r.as_deref());
                                let next = keys.len() as u32;
                                *ids.entry(Key::of(p, release)).or_insert_with_key(|k| {
                                    keys.push(k.clone());
                                    next
                                })
                            })
                            .collect()
                    })
                    .collect();
                (keys, per_image)
            })
            .collect();
        let mut ids: FxHashMap<Key<'_>, u32> = HashMap::with_hasher(FxBuildHasher);
        let mut keys: Vec<Key<'_>> = Vec::new();
        let mut per_image: Vec<Vec<u32>> = Vec::with_capacity(images.len());
        for (local_keys, local_ids) in locals {
            let remap: Vec<u32> = local_keys
                .into_iter()
                .map(|k| {
                    let next = keys.len() as u32;
                    *ids.entry(k).or_insert_with_key(|k| {
                        keys.push(k.clone());
                        next
                    })
                })
                .collect();
            for mut v in local_ids {
                for id in &mut v {
                    *id = remap[*id as usize];
                }
                per_image.push(v);
            }
        }
        drop(ids);

        let hits: Vec<Vec<Hit>> = keys.par_iter().map(|k| self.match_key(k)).collect();
        FleetMatches { hits, per_image }
    }

    /// The findings of image `image` of a [`FleetMatches`]; `packages` must be
    /// that image's packages as given to [`Self::match_fleet_compact`] (extra
    /// or missing packages are ignored). Empty for an unknown image.
    pub fn findings_of(&self, fm: &FleetMatches, image: usize, packages: &[Package]) -> Vec<Finding> {
        let Some(kids) = fm.per_image.get(image) else {
            return Vec::new();
        };
        let mut findings = Vec::with_capacity(fm.finding_count(image));
        for (p, &k) in packages.iter().zip(kids) {
            for hit in &fm.hits[k as usize] {
                findings.push(self.finding(hit, p));
            }
        }
        sort_findings(&mut findings);
        findings
    }

    /// The findings of image `image` of a [`FleetMatches`] without building
    /// them: per hit, the index of its package in the image's list as given
    /// to [`Self::match_fleet_compact`], and borrowed advisory facts. In
    /// package order; empty for an unknown image.
    pub fn hits_of<'a>(
        &'a self,
        fm: &'a FleetMatches,
        image: usize,
    ) -> impl Iterator<Item = MatchedHit<'a>> + 'a {
        let kids = fm.per_image.get(image).map_or(&[][..], Vec::as_slice);
        kids.iter().enumerate().flat_map(move |(package, &k)| {
            fm.hits[k as usize].iter().map(move |h| {
                let a = &self.advisories[h.advisory as usize];
                MatchedHit {
                    package,
                    advisory: h.advisory,
                    id: &a.id,
                    aliases: &a.aliases,
                    severity: a.severity,
                    fixed_versions: &h.fixed,
                }
            })
        })
    }

    /// Every advisory hitting one key, one hit per advisory.
    fn match_key(&self, key: &Key<'_>) -> Vec<Hit> {
        if !key.matchable {
            return Vec::new();
        }
        let Some(entries) = self
            .index
            .get(&key.ecosystem)
            .and_then(|m| m.get(key.name.as_ref()))
        else {
            return Vec::new();
        };
        // The installed version parsed at most once per scheme (an entry's
        // ranges use the ecosystem's scheme or semver).
        let mut parsed: Vec<(Scheme, Option<Version>)> = Vec::with_capacity(2);
        let mut hits: Vec<Hit> = Vec::new();
        for e in entries {
            if e.release.as_deref().is_some_and(|r| Some(r) != key.release) {
                continue;
            }
            let mut matched = e
                .versions
                .binary_search_by(|v| v.as_ref().cmp(key.version))
                .is_ok();
            let mut fixed: Vec<String> = Vec::new();
            for r in &e.ranges {
                let v = match parsed.iter().find(|(s, _)| *s == r.scheme()) {
                    Some((_, v)) => v,
                    None => {
                        parsed.push((r.scheme(), range::parse_version(r.scheme(), key.version).ok()));
                        &parsed[parsed.len() - 1].1
                    }
                };
                if let Some(v) = v
                    && r.affects(v)
                {
                    matched = true;
                    fixed.extend(r.fixes_above(v).map(str::to_owned));
                }
            }
            if !matched {
                continue;
            }
            match hits.iter_mut().find(|h| h.advisory == e.advisory) {
                Some(h) => h.fixed.extend(fixed),
                None => hits.push(Hit {
                    advisory: e.advisory,
                    fixed,
                }),
            }
        }
        for h in &mut hits {
            dedup_keep_order(&mut h.fixed);
        }
        hits
    }

    fn finding(&self, hit: &Hit, p: &Package) -> Finding {
        let a = &self.advisories[hit.advisory as usize];
        Finding {
            vulnerability_id: a.id.clone(),
            aliases: a.aliases.clone(),
            summary: a.summary.clone(),
            package: p.clone(),
            installed_version: p.version.clone(),
            fixed_versions: hit.fixed.clone(),
            severity: a.severity,
            score: a.score,
            score_source: a.score_source.clone(),
            vulndb_version: self.vulndb_version.clone(),
        }
    }
}

/// What a package is matched by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key<'a> {
    ecosystem: Ecosystem,
    /// Only for OS ecosystems, so language packages dedupe across OS releases.
    release: Option<&'a str>,
    name: Cow<'a, str>,
    version: &'a str,
    /// False for what is never matched (see the module docs).
    matchable: bool,
}

impl<'a> Key<'a> {
    /// The ecosystem's match key says by what: source package or own name
    /// (see [`strata_proto::ecosystem::MatchKey`]).
    fn of(p: &'a Package, release: Option<&'a str>) -> Key<'a> {
        let release = if p.ecosystem.is_os() { release } else { None };
        let rule = p.ecosystem.row().match_key;
        let (name, version) = rule.name_version(p);
        Key {
            ecosystem: p.ecosystem,
            release,
            name,
            version,
            matchable: p.evidence != Evidence::App && rule.matchable(p),
        }
    }
}

/// The release an advisory's `Eco:release` must name to apply to an image
/// with this os-release, or `None` when there is none (no os-release, or a
/// language ecosystem). The ecosystem's release rule says how
/// ([`strata_proto::ecosystem::ReleaseRule`]): Debian "12" (major of
/// `VERSION_ID`), Alpine "3.19" (major.minor of "3.19.1"), Ubuntu "22.04"
/// (as is); the RPM family by major ("9" of "9.3"), SUSE as is.
pub fn release_key(eco: Ecosystem, os: Option<&OsRelease>) -> Option<String> {
    if !eco.is_os() {
        return None;
    }
    eco.release_key(&os?.version_id)
}

/// The name as the index keys it: the ecosystem's name rule (PyPI names
/// PEP 503-normalised, others as they are).
pub fn normalise_name(eco: Ecosystem, name: &str) -> Cow<'_, str> {
    eco.normalise_name(name)
}

fn event(e: &Event) -> (EventKind, &str) {
    match e {
        Event::Introduced(v) => (EventKind::Introduced, v),
        Event::Fixed(v) => (EventKind::Fixed, v),
        Event::LastAffected(v) => (EventKind::LastAffected, v),
        Event::Limit(v) => (EventKind::Limit, v),
    }
}

fn dedup_keep_order(v: &mut Vec<String>) {
    let mut seen = Vec::with_capacity(v.len());
    v.retain(|s| {
        if seen.contains(s) {
            false
        } else {
            seen.push(s.clone());
            true
        }
    });
}

fn sort_findings(f: &mut [Finding]) {
    f.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.vulnerability_id.cmp(&b.vulnerability_id))
            .then_with(|| a.package.name.cmp(&b.package.name))
            .then_with(|| a.package.version.cmp(&b.package.version))
            .then_with(|| a.package.path.cmp(&b.package.path))
    });
}

#[cfg(test)]
mod real_data_tests;
#[cfg(test)]
mod tests;
