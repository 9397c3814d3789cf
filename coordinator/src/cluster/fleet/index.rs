//! The in-memory fleet index: images by reference and digest, the latest
//! scan of each with its packages and findings (interned, so a base shared
//! by many images holds its packages once), and lookups by vulnerability id
//! or alias and by package name. Pure data: the coordinator fills it in
//! `load.rs` and reads it in `query.rs` and `watch.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use strata_proto::{Finding, OsRelease, Package, Report, Severity, SeverityCounts};

use super::{RepositoryRecord, repository_of};
use crate::cluster::records::{ImageRecord, ScanRecord, ScanStatus};
use strata_proto::text::now_unix_ms;

/// A vulnerability as findings name it: one shared value per (id,
/// aliases, severity) across the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Vuln {
    pub(super) id: String,
    pub(super) aliases: Vec<String>,
    pub(super) severity: Severity,
}

/// One finding, compactly: the vulnerability, which of the scan's packages it
/// hits, and the versions that fix it (shared: one advisory on one version
/// has the same list in every image). 32 bytes.
#[derive(Debug, Clone)]
pub(super) struct Hit {
    pub(super) vuln: Arc<Vuln>,
    pub(super) package: usize,
    pub(super) fixed_versions: Arc<[String]>,
}

/// A finding's identity within one scan, borrowed: findings lists
/// ([`Matched::hits`]) and histories are kept sorted by it, so comparing
/// two of them is a merge, not a sort.
pub(super) type FindingKey<'a> = (&'a str, strata_proto::Ecosystem, &'a str, &'a str, &'a str);

pub(super) fn finding_key<'a>(v: &'a Vuln, p: &'a Package) -> FindingKey<'a> {
    (&v.id, p.ecosystem, &p.name, &p.version, &p.path)
}

impl Hit {
    /// This hit's [`FindingKey`] among `packages` (its scan's).
    pub(super) fn key<'a>(&'a self, packages: &'a [Arc<Package>]) -> Option<FindingKey<'a>> {
        Some(finding_key(&self.vuln, packages.get(self.package)?))
    }
}

/// A scan's packages and findings against one vulnerability data version.
/// Its hits are sorted by [`FindingKey`]. Packages (and vulnerabilities) are shared between scans through the
/// index's interner: images built on one base hold its packages once, which
/// is what keeps 10,000 images in memory affordable.
#[derive(Debug, Clone)]
pub(super) struct Matched {
    pub(super) os_release: Option<OsRelease>,
    pub(super) packages: Vec<Arc<Package>>,
    pub(super) hits: Vec<Hit>,
    pub(super) counts: SeverityCounts,
    pub(super) max_severity: Option<Severity>,
    pub(super) vulndb_version: String,
}

/// Owned packages and findings, before interning (built outside the lock).
pub(super) struct Unshared {
    pub(super) os_release: Option<OsRelease>,
    pub(super) packages: Vec<Package>,
    pub(super) findings: Vec<Finding>,
    pub(super) vulndb_version: String,
}

impl Unshared {
    /// A report's packages and findings, taken (no copy).
    pub(super) fn from_report(r: Report) -> Unshared {
        Unshared {
            os_release: r.os_release,
            packages: r.packages,
            findings: r.findings,
            vulndb_version: r.vulndb_version,
        }
    }

    pub(super) fn of_report(r: &Report) -> Unshared {
        Unshared {
            os_release: r.os_release.clone(),
            packages: r.packages.clone(),
            findings: r.findings.clone(),
            vulndb_version: r.vulndb_version.clone(),
        }
    }
}

/// Shared copies of packages and vulnerabilities; entries no scan holds any
/// more are dropped when the set has grown enough since the last sweep.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) packages: HashSet<Arc<Package>>,
    pub(super) vulns: HashSet<Arc<Vuln>>,
    pub(super) fixed: HashSet<Arc<[String]>>,
    pub(super) swept_at: usize,
}

impl Interner {
    pub(super) fn package(&mut self, p: Package) -> Arc<Package> {
        if let Some(shared) = self.packages.get(&p) {
            return shared.clone();
        }
        let shared = Arc::new(p);
        self.packages.insert(shared.clone());
        shared
    }

    pub(super) fn vuln(&mut self, v: Vuln) -> Arc<Vuln> {
        if let Some(shared) = self.vulns.get(&v) {
            return shared.clone();
        }
        let shared = Arc::new(v);
        self.vulns.insert(shared.clone());
        shared
    }

    pub(super) fn fixed(&mut self, v: &[String]) -> Arc<[String]> {
        if let Some(shared) = self.fixed.get(v) {
            return shared.clone();
        }
        let shared: Arc<[String]> = Arc::from(v);
        self.fixed.insert(shared.clone());
        shared
    }

    pub(super) fn intern(&mut self, u: Unshared) -> Matched {
        let packages: Vec<Arc<Package>> = u.packages.into_iter().map(|p| self.package(p)).collect();
        let position: HashMap<&Package, usize> = packages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_ref(), i))
            .collect();
        let mut extra = Vec::new();
        let mut hits = Vec::with_capacity(u.findings.len());
        let mut counts = SeverityCounts::default();
        for f in u.findings {
            counts.add(f.severity);
            let package = match position.get(&f.package) {
                Some(i) => *i,
                None => {
                    // A finding on a package the list lacks (not from our matcher): keep it.
                    extra.push(self.package(f.package));
                    packages.len() + extra.len() - 1
                }
            };
            let vuln = self.vuln(Vuln {
                id: f.vulnerability_id,
                aliases: f.aliases,
                severity: f.severity,
            });
            hits.push(Hit {
                vuln,
                package,
                fixed_versions: self.fixed(&f.fixed_versions),
            });
        }
        drop(position);
        let mut packages = packages;
        packages.extend(extra);
        hits.sort_by(|a, b| a.key(&packages).cmp(&b.key(&packages)));
        Matched {
            max_severity: hits.iter().map(|h| h.vuln.severity).max(),
            os_release: u.os_release,
            packages,
            hits,
            counts,
            vulndb_version: u.vulndb_version,
        }
    }

    pub(super) fn maybe_sweep(&mut self) {
        let size = self.packages.len() + self.vulns.len() + self.fixed.len();
        if size > 2 * self.swept_at + 4096 {
            self.packages.retain(|p| Arc::strong_count(p) > 1);
            self.vulns.retain(|v| Arc::strong_count(v) > 1);
            self.fixed.retain(|f| Arc::strong_count(f) > 1);
            self.swept_at = self.packages.len() + self.vulns.len() + self.fixed.len();
        }
    }
}

/// A scan as the fleet view needs it.
#[derive(Debug)]
pub(super) struct ScanEntry {
    /// The scan's number in the package and vulnerability indexes (set by
    /// [`State::insert_scan`]).
    pub(super) no: u32,
    pub(super) status: ScanStatus,
    pub(super) error: Option<String>,
    pub(super) counts: SeverityCounts,
    pub(super) last_scanned_unix_ms: i64,
    pub(super) report: Option<Arc<Matched>>,
    /// The stored report could not be read (corrupt): not tried again.
    pub(super) report_broken: bool,
}

impl ScanEntry {
    pub(super) fn of(scan: &ScanRecord) -> ScanEntry {
        let mut entry = ScanEntry {
            no: 0,
            status: scan.status,
            error: None,
            counts: SeverityCounts::default(),
            last_scanned_unix_ms: 0,
            report: None,
            report_broken: false,
        };
        entry.update(scan);
        entry
    }

    pub(super) fn update(&mut self, scan: &ScanRecord) {
        self.status = scan.status;
        self.error = scan.error.clone();
        self.counts = SeverityCounts {
            critical: scan.counts.critical,
            high: scan.counts.high,
            medium: scan.counts.medium,
            low: scan.counts.low,
            unknown: scan.counts.unknown,
        };
        self.last_scanned_unix_ms = if scan.completed_unix_ms > 0 {
            scan.completed_unix_ms
        } else {
            scan.updated_unix_ms
        };
    }

    /// A pending scan (its record not read or not written yet).
    pub(super) fn pending() -> ScanEntry {
        ScanEntry {
            no: 0,
            status: ScanStatus::Pending,
            error: None,
            counts: SeverityCounts::default(),
            last_scanned_unix_ms: 0,
            report: None,
            report_broken: false,
        }
    }

    /// A complete scan whose report is not in memory yet.
    pub(super) fn wants_report(&self) -> bool {
        self.status == ScanStatus::Complete && self.report.is_none() && !self.report_broken
    }
}

#[derive(Debug)]
pub(super) struct ImageEntry {
    pub(super) record: ImageRecord,
    pub(super) repository: String,
}

/// The key of the package-name index: lower-case with runs of `-_.` as one
/// `-`, so PyPI's spellings of one name meet (candidates only:
/// [`PackageQuery::matches`](super::query::PackageQuery::matches) decides).
pub(super) fn package_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Scans by number, sorted: 4 bytes an entry. The package and
/// vulnerability indexes hold about 1,200 entries per image (12 M for
/// 10,000 images), where a set of id strings cost 15 times as much.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ScanSet(Vec<u32>);

impl ScanSet {
    pub(super) fn insert(&mut self, no: u32) {
        // Loading numbers scans in order: appending is the common case.
        match self.0.last() {
            Some(&last) if last < no => self.0.push(no),
            None => self.0.push(no),
            _ => {
                if let Err(at) = self.0.binary_search(&no) {
                    self.0.insert(at, no);
                }
            }
        }
    }

    pub(super) fn remove(&mut self, no: u32) {
        if let Ok(at) = self.0.binary_search(&no) {
            self.0.remove(at);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
}

/// A vulnerability id compared and hashed as upper case, without making
/// the upper-case copy (the vulnerability index's keys are upper case).
#[derive(Clone, Copy)]
struct AnyCase<'a>(&'a str);

impl PartialEq for AnyCase<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(other.0)
    }
}

impl Eq for AnyCase<'_> {}

impl std::hash::Hash for AnyCase<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_uppercase());
        }
        state.write_u8(0xff);
    }
}

/// The distinct vulnerabilities of `m`'s findings (shared values: by address).
fn vulns_of(m: Option<&Matched>) -> rustc_hash::FxHashMap<*const Vuln, &Vuln> {
    m.map_or(&[][..], |m| m.hits.as_slice())
        .iter()
        .map(|h| (Arc::as_ptr(&h.vuln), &*h.vuln))
        .collect()
}

/// The vulnerability names (ids and aliases, upper case: the index's keys)
/// a scan loses and gains when some of its findings are replaced.
#[derive(Debug, Default)]
pub(super) struct VulnDelta {
    pub(super) gone: Vec<String>,
    pub(super) came: Vec<String>,
}

impl VulnDelta {
    /// `before` replaced by `after`, `kept` staying: a name goes when only
    /// `before` had it, comes when only `after` has it.
    pub(super) fn of<'a>(
        before: impl Iterator<Item = &'a Vuln>,
        after: impl Iterator<Item = &'a Vuln>,
        kept: impl Iterator<Item = &'a Vuln>,
    ) -> VulnDelta {
        let was = names_of(before);
        let is = names_of(after);
        let mut gone: rustc_hash::FxHashSet<AnyCase<'_>> = was.difference(&is).copied().collect();
        let mut came: rustc_hash::FxHashSet<AnyCase<'_>> = is.difference(&was).copied().collect();
        if !gone.is_empty() || !came.is_empty() {
            for n in kept.flat_map(|v| std::iter::once(&v.id).chain(&v.aliases)) {
                gone.remove(&AnyCase(n));
                came.remove(&AnyCase(n));
            }
        }
        VulnDelta {
            gone: gone.iter().map(|n| n.0.to_ascii_uppercase()).collect(),
            came: came.iter().map(|n| n.0.to_ascii_uppercase()).collect(),
        }
    }
}

/// Every id and alias of `vulns`.
fn names_of<'a>(vulns: impl Iterator<Item = &'a Vuln>) -> rustc_hash::FxHashSet<AnyCase<'a>> {
    vulns
        .flat_map(|v| std::iter::once(&v.id).chain(&v.aliases))
        .map(|n| AnyCase(n))
        .collect()
}

/// The package-index keys of `m`'s packages (names and source names).
fn package_names(m: Option<&Matched>) -> HashSet<String> {
    m.map_or(&[][..], |m| m.packages.as_slice())
        .iter()
        .flat_map(|p| std::iter::once(&p.name).chain(p.source_name.as_ref()))
        .map(|n| package_key(n))
        .collect()
}

/// Whether two findings lists are of the same packages (a re-match keeps
/// the list: the same shared values).
fn same_packages(a: &Matched, b: &Matched) -> bool {
    a.packages.len() == b.packages.len() && a.packages.iter().zip(&b.packages).all(|(x, y)| Arc::ptr_eq(x, y))
}

#[derive(Default)]
pub(super) struct State {
    /// Reference → image, in the order pages are served.
    pub(super) images: BTreeMap<String, ImageEntry>,
    /// Image digest → the references naming it (an image's tags).
    pub(super) by_digest: HashMap<String, BTreeSet<String>>,
    /// Scan id → the references whose latest scan it is.
    pub(super) by_scan: HashMap<String, BTreeSet<String>>,
    /// Latest scans of images (and scans just finalized).
    pub(super) scans: HashMap<String, ScanEntry>,
    /// Scan number → id (`None`: free, in `free_numbers`).
    pub(super) scan_ids: Vec<Option<String>>,
    pub(super) free_numbers: Vec<u32>,
    /// Vulnerability id or alias, upper-case → scans with a finding of it.
    pub(super) by_vuln: HashMap<String, ScanSet>,
    /// Package or source package name, lower-case → scans holding it.
    pub(super) by_package: HashMap<String, ScanSet>,
    pub(super) repositories: BTreeMap<String, RepositoryRecord>,
    pub(super) interner: Interner,
}

pub(super) fn remove_from<K: std::hash::Hash + Eq + Clone, S: Ord>(
    map: &mut HashMap<K, BTreeSet<S>>,
    key: &K,
    item: &S,
) -> bool {
    let mut emptied = false;
    if let Some(set) = map.get_mut(key) {
        set.remove(item);
        emptied = set.is_empty();
        if emptied {
            map.remove(key);
        }
    }
    emptied
}

impl State {
    pub(super) fn put_image(&mut self, record: ImageRecord) {
        let reference = record.reference.clone();
        self.remove_image(&reference);
        self.by_digest
            .entry(record.digest.clone())
            .or_default()
            .insert(reference.clone());
        self.by_scan
            .entry(record.scan_id.clone())
            .or_default()
            .insert(reference.clone());
        let repository = repository_of(&reference);
        self.images.insert(reference, ImageEntry { record, repository });
    }

    pub(super) fn remove_image(&mut self, reference: &str) -> bool {
        let Some(old) = self.images.remove(reference) else {
            return false;
        };
        let reference = reference.to_owned();
        remove_from(&mut self.by_digest, &old.record.digest, &reference);
        if remove_from(&mut self.by_scan, &old.record.scan_id, &reference) {
            // No image's latest scan any more: out of the fleet view.
            self.drop_scan(&old.record.scan_id);
        }
        true
    }

    pub(super) fn drop_scan(&mut self, id: &str) {
        let Some(entry) = self.scans.remove(id) else {
            return;
        };
        if let Some(m) = entry.report {
            self.reindex(entry.no, Some(&m), None);
            drop(m);
            self.interner.maybe_sweep();
        }
        if let Some(slot) = self.scan_ids.get_mut(entry.no as usize) {
            *slot = None;
            self.free_numbers.push(entry.no);
        }
    }

    /// Adds a scan not in the index yet, numbering it; returns its entry
    /// (the one there if it was).
    pub(super) fn insert_scan(&mut self, id: &str, mut entry: ScanEntry) -> &mut ScanEntry {
        if !self.scans.contains_key(id) {
            entry.no = match self.free_numbers.pop() {
                Some(no) => {
                    self.scan_ids[no as usize] = Some(id.to_owned());
                    no
                }
                None => {
                    self.scan_ids.push(Some(id.to_owned()));
                    (self.scan_ids.len() - 1) as u32
                }
            };
            self.scans.insert(id.to_owned(), entry);
        }
        self.scans
            .get_mut(id)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// The id of scan number `no`.
    pub(super) fn scan_id(&self, no: u32) -> Option<&str> {
        self.scan_ids.get(no as usize)?.as_deref()
    }

    pub(super) fn put_scan(&mut self, scan: &ScanRecord) {
        match self.scans.get_mut(&scan.id) {
            Some(e) => e.update(scan),
            None => {
                self.insert_scan(&scan.id, ScanEntry::of(scan));
            }
        }
    }

    pub(super) fn put_report(&mut self, id: &str, unshared: Unshared) {
        let matched = Arc::new(self.interner.intern(unshared));
        self.put_matched(id, matched);
    }

    /// Puts a scan's (already interned) packages and findings in the index.
    pub(super) fn put_matched(&mut self, id: &str, matched: Arc<Matched>) {
        let entry = self.insert_scan(
            id,
            ScanEntry {
                status: ScanStatus::Complete,
                counts: matched.counts,
                last_scanned_unix_ms: now_unix_ms(),
                ..ScanEntry::pending()
            },
        );
        let no = entry.no;
        let old = entry.report.replace(matched.clone());
        entry.counts = matched.counts;
        self.reindex(no, old.as_deref(), Some(&matched));
        if let Some(old) = old {
            drop(old);
            self.interner.maybe_sweep();
        }
    }

    /// Puts a re-matched scan (the same packages as its report in the
    /// index; `delta` the names it gains and loses, worked out off the lock).
    pub(super) fn put_rematched_one(&mut self, id: &str, matched: Arc<Matched>, delta: &VulnDelta) {
        let Some(entry) = self.scans.get_mut(id) else {
            return self.put_matched(id, matched);
        };
        let no = entry.no;
        entry.counts = matched.counts;
        entry.last_scanned_unix_ms = now_unix_ms();
        let old = entry.report.replace(matched);
        for gone in &delta.gone {
            if let Some(set) = self.by_vuln.get_mut(gone) {
                set.remove(no);
                if set.is_empty() {
                    self.by_vuln.remove(gone);
                }
            }
        }
        for came in &delta.came {
            self.by_vuln.entry(came.clone()).or_default().insert(no);
        }
        if old.is_some() {
            drop(old);
            self.interner.maybe_sweep();
        }
    }

    /// Moves scan `no` in the package and vulnerability indexes from what
    /// `old` holds to what `new` does, touching only the difference (a
    /// re-match changes a few findings of a scan and none of its packages).
    pub(super) fn reindex(&mut self, no: u32, old: Option<&Matched>, new: Option<&Matched>) {
        // Only the vulnerabilities one side has are looked at: a re-match
        // keeps most of a scan's findings, the same shared values.
        let (before, after) = (vulns_of(old), vulns_of(new));
        let left: Vec<&Vuln> = before
            .iter()
            .filter(|(k, _)| !after.contains_key(*k))
            .map(|(_, v)| *v)
            .collect();
        let came: Vec<&Vuln> = after
            .iter()
            .filter(|(k, _)| !before.contains_key(*k))
            .map(|(_, v)| *v)
            .collect();
        // A name goes when no vulnerability after has it, comes when none before had it.
        let mut was = names_of(left.into_iter());
        let mut is = names_of(came.into_iter());
        if !was.is_empty() {
            for n in after
                .values()
                .flat_map(|v| std::iter::once(&v.id).chain(&v.aliases))
            {
                was.remove(&AnyCase(n));
            }
        }
        if !is.is_empty() {
            for n in before
                .values()
                .flat_map(|v| std::iter::once(&v.id).chain(&v.aliases))
            {
                is.remove(&AnyCase(n));
            }
        }
        // Upper-cased copies made only for what changed.
        for gone in &was {
            let key = gone.0.to_ascii_uppercase();
            if let Some(set) = self.by_vuln.get_mut(&key) {
                set.remove(no);
                if set.is_empty() {
                    self.by_vuln.remove(&key);
                }
            }
        }
        for came in &is {
            self.by_vuln
                .entry(came.0.to_ascii_uppercase())
                .or_default()
                .insert(no);
        }
        if let (Some(a), Some(b)) = (old, new)
            && same_packages(a, b)
        {
            return;
        }
        let (was, is) = (package_names(old), package_names(new));
        for gone in was.difference(&is) {
            if let Some(set) = self.by_package.get_mut(gone) {
                set.remove(no);
                if set.is_empty() {
                    self.by_package.remove(gone);
                }
            }
        }
        for came in is.difference(&was) {
            self.by_package.entry(came.clone()).or_default().insert(no);
        }
    }

    /// Scan ids some image points at whose record or report is not in memory.
    pub(super) fn missing_scans(&self) -> Vec<String> {
        self.by_scan
            .keys()
            .filter(|id| self.scans.get(*id).is_none_or(ScanEntry::wants_report))
            .cloned()
            .collect()
    }

    pub(super) fn tags(&self, digest: &str) -> Vec<String> {
        self.by_digest
            .get(digest)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn status_of(&self, image: &ImageRecord) -> ScanStatus {
        self.scans
            .get(&image.scan_id)
            .map_or(ScanStatus::Pending, |s| s.status)
    }
}

/// The in-memory fleet index (see the module header). Lives in the coordinator.
#[derive(Default)]
pub struct FleetIndex {
    pub(super) state: RwLock<State>,
    pub(super) loaded: AtomicBool,
    /// One task loads (or re-matches) at a time; queries wait for it.
    pub(super) loading: tokio::sync::Mutex<()>,
}

impl FleetIndex {
    /// References the index knows (registered ones and scanned ones): what
    /// caches keyed by image are sized by.
    pub(in crate::cluster) fn image_count(&self) -> usize {
        self.read().images.len()
    }

    /// Whether `reference` was submitted or registered before: `None`
    /// until the index is loaded.
    pub(in crate::cluster) fn knows(&self, reference: &str) -> Option<bool> {
        if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        Some(self.read().images.contains_key(reference))
    }

    /// The image record of `reference` as the index holds it (`Some(None)`:
    /// there is none); `None` until the index is loaded.
    pub(in crate::cluster) fn image_record(&self, reference: &str) -> Option<Option<ImageRecord>> {
        if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        Some(self.read().images.get(reference).map(|e| e.record.clone()))
    }

    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        crate::util::read(&self.state)
    }
    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        crate::util::write(&self.state)
    }
}
