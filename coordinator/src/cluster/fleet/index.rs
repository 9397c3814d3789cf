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
/// hits, and the versions that fix it.
#[derive(Debug, Clone)]
pub(super) struct Hit {
    pub(super) vuln: Arc<Vuln>,
    pub(super) package: usize,
    pub(super) fixed_versions: Vec<String>,
}

/// A scan's packages and findings against one vulnerability data version.
/// Packages (and vulnerabilities) are shared between scans through the
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
                fixed_versions: f.fixed_versions,
            });
        }
        drop(position);
        let mut packages = packages;
        packages.extend(extra);
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
        let size = self.packages.len() + self.vulns.len();
        if size > 2 * self.swept_at + 4096 {
            self.packages.retain(|p| Arc::strong_count(p) > 1);
            self.vulns.retain(|v| Arc::strong_count(v) > 1);
            self.swept_at = self.packages.len() + self.vulns.len();
        }
    }
}

/// A scan as the fleet view needs it.
#[derive(Debug)]
pub(super) struct ScanEntry {
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
    /// Vulnerability id or alias, upper-case → scans with a finding of it.
    pub(super) by_vuln: HashMap<String, HashSet<String>>,
    /// Package or source package name, lower-case → scans holding it.
    pub(super) by_package: HashMap<String, HashSet<String>>,
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
        if let Some(entry) = self.scans.remove(id)
            && let Some(m) = entry.report
        {
            self.unindex(id, &m);
            drop(m);
            self.interner.maybe_sweep();
        }
    }

    pub(super) fn put_scan(&mut self, scan: &ScanRecord) {
        match self.scans.get_mut(&scan.id) {
            Some(e) => e.update(scan),
            None => {
                self.scans.insert(scan.id.clone(), ScanEntry::of(scan));
            }
        }
    }

    pub(super) fn put_report(&mut self, id: &str, unshared: Unshared) {
        let matched = Arc::new(self.interner.intern(unshared));
        self.put_matched(id, matched);
    }

    /// Puts a scan's (already interned) packages and findings in the index.
    pub(super) fn put_matched(&mut self, id: &str, matched: Arc<Matched>) {
        let entry = self.scans.entry(id.to_owned()).or_insert_with(|| ScanEntry {
            status: ScanStatus::Complete,
            error: None,
            counts: matched.counts,
            last_scanned_unix_ms: now_unix_ms(),
            report: None,
            report_broken: false,
        });
        let old = entry.report.replace(matched.clone());
        entry.counts = matched.counts;
        if let Some(old) = old {
            self.unindex(id, &old);
            drop(old);
            self.interner.maybe_sweep();
        }
        for h in &matched.hits {
            for v in std::iter::once(&h.vuln.id).chain(&h.vuln.aliases) {
                self.by_vuln
                    .entry(v.to_ascii_uppercase())
                    .or_default()
                    .insert(id.to_owned());
            }
        }
        for p in &matched.packages {
            for n in std::iter::once(&p.name).chain(p.source_name.as_ref()) {
                self.by_package
                    .entry(package_key(n))
                    .or_default()
                    .insert(id.to_owned());
            }
        }
    }

    pub(super) fn unindex(&mut self, id: &str, m: &Matched) {
        let drop = |map: &mut HashMap<String, HashSet<String>>, key: String| {
            if let Some(set) = map.get_mut(&key) {
                set.remove(id);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        };
        for h in &m.hits {
            for v in std::iter::once(&h.vuln.id).chain(&h.vuln.aliases) {
                drop(&mut self.by_vuln, v.to_ascii_uppercase());
            }
        }
        for p in &m.packages {
            for n in std::iter::once(&p.name).chain(p.source_name.as_ref()) {
                drop(&mut self.by_package, package_key(n));
            }
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
    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        crate::util::read(&self.state)
    }
    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        crate::util::write(&self.state)
    }
}
