//! The fleet view behind `FleetService`: registered images and
//! repositories, and an in-memory index over the latest scan of every image
//! so "which images does CVE-x hit, and in which layer?" is answered from
//! memory, not by reading 10,000 reports.
//!
//! # What is stored, what is derived
//! - The truth stays in the buckets and the object store: image records
//!   (`ref.<hash>`) and repository records (`repo.<hash>`) in
//!   `strata_images`, scans in `strata_scans`, reports at `reports/<scan>.json`.
//! - [`FleetIndex`] is derived from them: filled lazily on the first fleet
//!   query after a start (or by the warm-up `run()` starts), then kept
//!   current by hooks where the coordinator writes an image record, a scan
//!   record or a report. Hooks only ever carry newer data than the bucket
//!   reads of a concurrent load, so a load never overwrites what a hook set.
//! - Findings are matched against the vulnerability data in force: a report
//!   matched under an older data version is re-matched from its stored
//!   packages (rayon, each distinct package once) before a query answers,
//!   so a new advisory hits old scans without pulling anything.
//!
//! # Sizes
//! Every count a client controls is bounded here: references per request,
//! page sizes, page tokens, tags per repository, `top_n`, version ranges.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::StreamExt as _;
use object_store::{ObjectStoreExt as _, path::Path as StorePath};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use strata_proto::{Ecosystem, Finding, OsRelease, Package, Report, Severity, SeverityCounts, v1};
use strata_worker::source::{ImageRef, SourceError, TagListError};

use super::error::{from_json, to_json};
use super::rate_limit::RateLimitWait;
use super::records::{ImageRecord, ScanRecord, ScanStatus, image_key};
use super::{Coordinator, CoordinatorError, SubmitRequest, validate_reference};
use crate::util::{now_unix_ms, truncate_chars};
use crate::versions::constraint::Conjunction;
use crate::versions::{self, Scheme, Version};

/// References accepted in one register or unregister request.
pub const MAX_REFERENCES: usize = 1000;
/// Page size when the client gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page served, whatever the client asks.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Longest page token accepted (ours are at most about 1,000 bytes).
pub const MAX_PAGE_TOKEN: usize = 1024;
/// Tags read from one repository: beyond this the registry is refused, not truncated silently.
pub const MAX_TAGS: usize = 10_000;
/// Top vulnerabilities in `Summary` by default, and at most.
pub const DEFAULT_TOP_N: usize = 10;
pub const MAX_TOP_N: usize = 100;
/// Longest vulnerability id, package name, tag pattern or version range accepted.
/// (Version ranges are bounded by [`Conjunction::parse`].)
const MAX_QUERY_LEN: usize = 256;
/// Tags registered, or reports read, at once.
const CONCURRENCY: usize = 8;
/// One page of a tag list (JSON) read at most.
const MAX_TAG_PAGE_BYTES: u64 = 4 << 20;
/// Pages of a tag list followed at most (registries page by 100 to 1,000).
const MAX_TAG_PAGES: usize = 200;
/// References longer than this are paged by a prefix and their key (see [`PageToken`]).
const TOKEN_REFERENCE_BYTES: usize = 480;

const IMAGE_PREFIX: &str = "ref.";
const REPOSITORY_PREFIX: &str = "repo.";

/// A watched repository: every tag matching `tag_pattern` is registered.
/// Kept in `strata_images` so `UnregisterRepository` knows what it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    pub repository: String,
    #[serde(default)]
    pub tag_pattern: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub insecure_registry: bool,
    pub updated_unix_ms: i64,
}

/// The key of a registered repository.
pub fn repository_key(repository: &str) -> String {
    let h = sha2::Sha256::digest(repository.as_bytes());
    format!("{REPOSITORY_PREFIX}{}", &hex::encode(h)[..32])
}

/// The repository part of a reference (`registry/name`, without tag or
/// digest), normalised as the registry sees it (`nginx` → `docker.io/library/nginx`).
pub fn repository_of(reference: &str) -> String {
    match ImageRef::parse(reference) {
        Ok(ImageRef::Registry(r)) => format!("{}/{}", r.registry(), r.repository()),
        _ => {
            let no_digest = reference.split_once('@').map_or(reference, |(a, _)| a);
            match no_digest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => repo.to_owned(),
                _ => no_digest.to_owned(),
            }
        }
    }
}

// ---- the index ---------------------------------------------------------------

/// A vulnerability as findings name it: one shared value per (id,
/// aliases, severity) across the fleet.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Vuln {
    id: String,
    aliases: Vec<String>,
    severity: Severity,
}

/// One finding, compactly: the vulnerability, which of the scan's packages it
/// hits, and the versions that fix it.
#[derive(Debug)]
struct Hit {
    vuln: Arc<Vuln>,
    package: usize,
    fixed_versions: Vec<String>,
}

/// A scan's packages and findings against one vulnerability data version.
/// Packages (and vulnerabilities) are shared between scans through the
/// index's interner: images built on one base hold its packages once, which
/// is what keeps 10,000 images in memory affordable.
#[derive(Debug)]
struct Matched {
    os_release: Option<OsRelease>,
    packages: Vec<Arc<Package>>,
    hits: Vec<Hit>,
    counts: SeverityCounts,
    max_severity: Option<Severity>,
    vulndb_version: String,
}

/// Owned packages and findings, before interning (built outside the lock).
struct Unshared {
    os_release: Option<OsRelease>,
    packages: Vec<Package>,
    findings: Vec<Finding>,
    vulndb_version: String,
}

impl Unshared {
    fn of_report(r: &Report) -> Unshared {
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
struct Interner {
    packages: HashSet<Arc<Package>>,
    vulns: HashSet<Arc<Vuln>>,
    swept_at: usize,
}

impl Interner {
    fn package(&mut self, p: Package) -> Arc<Package> {
        if let Some(shared) = self.packages.get(&p) {
            return shared.clone();
        }
        let shared = Arc::new(p);
        self.packages.insert(shared.clone());
        shared
    }

    fn vuln(&mut self, v: Vuln) -> Arc<Vuln> {
        if let Some(shared) = self.vulns.get(&v) {
            return shared.clone();
        }
        let shared = Arc::new(v);
        self.vulns.insert(shared.clone());
        shared
    }

    fn intern(&mut self, u: Unshared) -> Matched {
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

    fn maybe_sweep(&mut self) {
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
struct ScanEntry {
    status: ScanStatus,
    error: Option<String>,
    counts: SeverityCounts,
    last_scanned_unix_ms: i64,
    report: Option<Arc<Matched>>,
    /// The stored report could not be read (corrupt): not tried again.
    report_broken: bool,
}

impl ScanEntry {
    fn of(scan: &ScanRecord) -> ScanEntry {
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

    fn update(&mut self, scan: &ScanRecord) {
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
    fn wants_report(&self) -> bool {
        self.status == ScanStatus::Complete && self.report.is_none() && !self.report_broken
    }
}

#[derive(Debug)]
struct ImageEntry {
    record: ImageRecord,
    repository: String,
}

/// The key of the package-name index: lower-case with runs of `-_.` as one
/// `-`, so PyPI's spellings of one name meet (candidates only:
/// [`PackageQuery::matches`] decides).
fn package_key(name: &str) -> String {
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
struct State {
    /// Reference → image, in the order pages are served.
    images: BTreeMap<String, ImageEntry>,
    /// Image digest → the references naming it (an image's tags).
    by_digest: HashMap<String, BTreeSet<String>>,
    /// Scan id → the references whose latest scan it is.
    by_scan: HashMap<String, BTreeSet<String>>,
    /// Latest scans of images (and scans just finalized).
    scans: HashMap<String, ScanEntry>,
    /// Vulnerability id or alias, upper-case → scans with a finding of it.
    by_vuln: HashMap<String, HashSet<String>>,
    /// Package or source package name, lower-case → scans holding it.
    by_package: HashMap<String, HashSet<String>>,
    repositories: BTreeMap<String, RepositoryRecord>,
    interner: Interner,
}

fn remove_from<K: std::hash::Hash + Eq + Clone, S: Ord>(
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
    fn put_image(&mut self, record: ImageRecord) {
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

    fn remove_image(&mut self, reference: &str) -> bool {
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

    fn drop_scan(&mut self, id: &str) {
        if let Some(entry) = self.scans.remove(id)
            && let Some(m) = entry.report
        {
            self.unindex(id, &m);
            drop(m);
            self.interner.maybe_sweep();
        }
    }

    fn put_scan(&mut self, scan: &ScanRecord) {
        match self.scans.get_mut(&scan.id) {
            Some(e) => e.update(scan),
            None => {
                self.scans.insert(scan.id.clone(), ScanEntry::of(scan));
            }
        }
    }

    fn put_report(&mut self, id: &str, unshared: Unshared) {
        let matched = Arc::new(self.interner.intern(unshared));
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

    fn unindex(&mut self, id: &str, m: &Matched) {
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
    fn missing_scans(&self) -> Vec<String> {
        self.by_scan
            .keys()
            .filter(|id| self.scans.get(*id).is_none_or(ScanEntry::wants_report))
            .cloned()
            .collect()
    }

    fn tags(&self, digest: &str) -> Vec<String> {
        self.by_digest
            .get(digest)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn status_of(&self, image: &ImageRecord) -> ScanStatus {
        self.scans
            .get(&image.scan_id)
            .map_or(ScanStatus::Pending, |s| s.status)
    }
}

/// The in-memory fleet index (see the module header). Lives in the coordinator.
#[derive(Default)]
pub struct FleetIndex {
    state: RwLock<State>,
    loaded: AtomicBool,
    /// One task loads (or re-matches) at a time; queries wait for it.
    loading: tokio::sync::Mutex<()>,
}

impl FleetIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        crate::util::read(&self.state)
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        crate::util::write(&self.state)
    }
}

// ---- page tokens ----------------------------------------------------------------

/// Where the previous page stopped: the last reference served. Opaque to
/// clients (hex). A reference longer than [`TOKEN_REFERENCE_BYTES`] is
/// carried as its prefix and its image key so tokens stay under 1 KB.
enum PageToken {
    Start,
    After(String),
    /// Resume after the reference with this prefix and key (if that image is
    /// gone, after every reference with the prefix).
    AfterLong {
        prefix: String,
        key: String,
    },
}

impl PageToken {
    fn parse(token: &str) -> Result<PageToken, CoordinatorError> {
        if token.is_empty() {
            return Ok(PageToken::Start);
        }
        let bad = |why: &str| {
            CoordinatorError::InvalidArgument(format!(
                "page_token {:?}: {why}; pass the next_page_token of the previous answer",
                truncate_chars(token, 40)
            ))
        };
        if token.len() > MAX_PAGE_TOKEN {
            return Err(bad(&format!("longer than {MAX_PAGE_TOKEN} bytes")));
        }
        let text = |h: &str| {
            hex::decode(h)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("not a page token"))
        };
        if let Some(h) = token.strip_prefix("r") {
            return Ok(PageToken::After(text(h)?));
        }
        if let Some(rest) = token.strip_prefix("k")
            && let Some((h, key)) = rest.split_once('.')
            && key.len() == 32
            && key.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(PageToken::AfterLong {
                prefix: text(h)?,
                key: format!("{IMAGE_PREFIX}{key}"),
            });
        }
        Err(bad("not a page token"))
    }

    fn after(reference: &str) -> String {
        if reference.len() <= TOKEN_REFERENCE_BYTES {
            return format!("r{}", hex::encode(reference));
        }
        let prefix = truncate_chars(reference, TOKEN_REFERENCE_BYTES / 4);
        let key = image_key(reference);
        format!(
            "k{}.{}",
            hex::encode(prefix),
            key.strip_prefix(IMAGE_PREFIX).unwrap_or(&key)
        )
    }
}

/// Serves one page of `items` (sorted references) from `token`, keeping
/// those `keep` accepts. Returns the page and the next token (empty at the end).
fn page<'a, T>(
    items: impl Fn(Bound<&str>) -> Box<dyn Iterator<Item = &'a str> + 'a>,
    token: &PageToken,
    page_size: usize,
    mut keep: impl FnMut(&'a str) -> Option<T>,
) -> (Vec<T>, String) {
    let (start, mut skip): (Bound<&str>, Option<(&str, &str)>) = match token {
        PageToken::Start => (Bound::Unbounded, None),
        PageToken::After(r) => (Bound::Excluded(r.as_str()), None),
        PageToken::AfterLong { prefix, key } => (Bound::Included(prefix.as_str()), Some((prefix, key))),
    };
    let mut out = Vec::new();
    let mut last = None;
    for reference in items(start) {
        if let Some((prefix, key)) = skip {
            if reference.starts_with(prefix) {
                if image_key(reference) == key {
                    skip = None;
                }
                continue;
            }
            skip = None;
        }
        if out.len() == page_size {
            return (out, last.map(PageToken::after).unwrap_or_default());
        }
        if let Some(item) = keep(reference) {
            out.push(item);
            last = Some(reference);
        }
    }
    (out, String::new())
}

/// The page size a client asked for, defaulted and capped.
fn page_size(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

// ---- version ranges ---------------------------------------------------------------

/// A version range as `ListAffected` takes it: the shape is
/// [`Conjunction::parse`]'s, the error the one clients have always seen.
fn parse_version_range(range: &str) -> Result<Conjunction<String>, CoordinatorError> {
    Conjunction::parse(range).map_err(|why| {
        CoordinatorError::InvalidArgument(format!(
            "version_range {:?}: {why} (expected comparisons joined by commas, e.g. \">=1.2.0, <1.4.1\")",
            truncate_chars(range, 200)
        ))
    })
}

/// A package query, validated and compiled.
pub struct PackageQuery {
    ecosystem: Option<Ecosystem>,
    name: String,
    /// Per scheme the range compiles under (none: any version).
    range: Option<HashMap<Scheme, Conjunction<Version>>>,
}

impl PackageQuery {
    pub fn new(ecosystem: &str, name: &str, version_range: &str) -> Result<PackageQuery, CoordinatorError> {
        let invalid = CoordinatorError::InvalidArgument;
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_QUERY_LEN {
            return Err(invalid(format!(
                "package.name: give a package name of 1 to {MAX_QUERY_LEN} bytes"
            )));
        }
        let ecosystem = match ecosystem.trim() {
            "" => None,
            e => Some(
                e.parse::<Ecosystem>()
                    .map_err(|err| invalid(format!("package.ecosystem: {err}")))?,
            ),
        };
        let range = match version_range.trim() {
            "" => None,
            r => {
                let parsed = parse_version_range(r)?;
                let schemes: Vec<Scheme> = match ecosystem {
                    Some(eco) => vec![versions::scheme(eco).map_err(|e| invalid(format!("package: {e}")))?],
                    None => Scheme::ALL.to_vec(),
                };
                let mut compiled = HashMap::new();
                let mut first_error = None;
                for s in schemes {
                    match parsed.try_map(|v| crate::matching::range::parse_version(s, v)) {
                        Ok(c) => {
                            compiled.insert(s, c);
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                if compiled.is_empty() {
                    let why = first_error.map(|e| e.to_string()).unwrap_or_default();
                    return Err(invalid(format!("package.version_range: {why}")));
                }
                Some(compiled)
            }
        };
        Ok(PackageQuery {
            ecosystem,
            name: name.to_owned(),
            range,
        })
    }

    fn matches(&self, p: &Package) -> bool {
        if self.ecosystem.is_some_and(|e| e != p.ecosystem) {
            return false;
        }
        let wanted = crate::matching::normalise_name(p.ecosystem, &self.name);
        let named = |n: &str| crate::matching::normalise_name(p.ecosystem, n).eq_ignore_ascii_case(&wanted);
        let by_source = p.source_name.as_deref().is_some_and(named);
        if !named(&p.name) && !by_source {
            return false;
        }
        let Some(range) = &self.range else {
            return true;
        };
        let Ok(scheme) = versions::scheme(p.ecosystem) else {
            return false;
        };
        let Some(compiled) = range.get(&scheme) else {
            return false;
        };
        // Asked by source name: the source version is what advisories name.
        let version = match (&p.source_version, by_source && !named(&p.name)) {
            (Some(v), true) => v.as_str(),
            _ => p.version.as_str(),
        };
        crate::matching::range::parse_version(scheme, version).is_ok_and(|v| compiled.satisfied_by(&v))
    }
}

/// What `ListAffected` asks.
pub enum AffectedQuery {
    Vulnerability(String),
    Package(PackageQuery),
}

impl AffectedQuery {
    pub fn vulnerability(id: &str) -> Result<AffectedQuery, CoordinatorError> {
        let id = id.trim();
        if id.is_empty() || id.len() > MAX_QUERY_LEN {
            return Err(CoordinatorError::InvalidArgument(format!(
                "vulnerability_id: give an id or alias of 1 to {MAX_QUERY_LEN} bytes"
            )));
        }
        Ok(AffectedQuery::Vulnerability(id.to_ascii_uppercase()))
    }
}

/// `ListImages` filters.
#[derive(Debug, Clone, Default)]
pub struct ImageFilter {
    pub repository: Option<String>,
    pub status: Option<ScanStatus>,
    pub min_severity: Option<Severity>,
}

/// `Summary`'s answer.
#[derive(Debug, Clone, Default)]
pub struct FleetSummary {
    pub images_by_status: Vec<(ScanStatus, u32)>,
    pub findings: SeverityCounts,
    pub top: Vec<v1::TopVulnerability>,
}

/// Normalises a repository as clients write it (`ghcr.io/acme/api`, maybe with a trailing `/`).
fn normalise_repository(repository: &str) -> Result<String, CoordinatorError> {
    let repository = repository.trim().trim_end_matches('/');
    validate_reference(repository)?;
    let bad = |why: &str| {
        CoordinatorError::InvalidArgument(format!("repository {:?}: {why}", truncate_chars(repository, 200)))
    };
    if repository.contains('@')
        || repository
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
    {
        return Err(bad("give the repository without a tag or digest"));
    }
    match ImageRef::parse(repository).map_err(CoordinatorError::from)? {
        ImageRef::Registry(r) => Ok(format!("{}/{}", r.registry(), r.repository())),
        _ => Err(bad("not a registry repository")),
    }
}

impl Coordinator {
    // ---- hooks: called where the coordinator writes state ---------------------

    /// An image record was written.
    pub(super) fn fleet_image_noted(&self, record: &ImageRecord) {
        self.inner.fleet.write().put_image(record.clone());
    }

    /// A scan record was written.
    pub(super) fn fleet_scan_changed(&self, scan: &ScanRecord) {
        let mut state = self.inner.fleet.write();
        if state.scans.contains_key(&scan.id) || state.by_scan.contains_key(&scan.id) {
            state.put_scan(scan);
        }
    }

    /// A report was stored (the scan record follows).
    pub(super) fn fleet_report_stored(&self, scan_id: &str, report: &Report) {
        let unshared = Unshared::of_report(report);
        self.inner.fleet.write().put_report(scan_id, unshared);
    }

    // ---- loading ------------------------------------------------------------------

    /// Fills the index at start, so the first query is fast (errors are
    /// retried by the first query).
    pub(super) async fn fleet_warm_up(self) {
        let started = Instant::now();
        match self.fleet_ready().await {
            Ok(()) => tracing::info!(
                images = self.inner.fleet.read().images.len(),
                secs = started.elapsed().as_secs_f64(),
                "fleet index loaded"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "loading the fleet index failed; the first fleet query retries")
            }
        }
    }

    /// Makes the index whole and current: loads images and repositories once,
    /// the scans and reports it lacks, and re-matches reports matched under
    /// older vulnerability data.
    async fn fleet_ready(&self) -> Result<(), CoordinatorError> {
        let _one = self.inner.fleet.loading.lock().await;
        let index = &self.inner.fleet;
        if !index.loaded.load(Ordering::Acquire) {
            let images = &self.inner.buckets.images;
            let keys = images.keys().await?;
            let mut loaded_images = Vec::new();
            let mut loaded_repos = Vec::new();
            let mut entries = futures::stream::iter(
                keys.into_iter()
                    .filter(|k| k.starts_with(IMAGE_PREFIX) || k.starts_with(REPOSITORY_PREFIX)),
            )
            .map(|k| async move { (images.get(&k).await, k) })
            .buffer_unordered(CONCURRENCY * 4);
            while let Some((entry, key)) = entries.next().await {
                let Some(entry) = entry? else { continue };
                if key.starts_with(IMAGE_PREFIX) {
                    match from_json::<ImageRecord>("image", &entry.value) {
                        Ok(r) => loaded_images.push(r),
                        Err(err) => {
                            tracing::warn!(key = %key, error = %err, "unreadable image record skipped")
                        }
                    }
                } else {
                    match from_json::<RepositoryRecord>("repository", &entry.value) {
                        Ok(r) => loaded_repos.push(r),
                        Err(err) => {
                            tracing::warn!(key = %key, error = %err, "unreadable repository record skipped")
                        }
                    }
                }
            }
            let mut state = index.write();
            for r in loaded_images {
                // A hook may have written a newer record meanwhile: keep it.
                if !state.images.contains_key(&r.reference) {
                    state.put_image(r);
                }
            }
            for r in loaded_repos {
                state.repositories.entry(r.repository.clone()).or_insert(r);
            }
            index.loaded.store(true, Ordering::Release);
        }
        self.fleet_load_scans().await?;
        self.fleet_rematch().await
    }

    /// Reads the scan records and reports the index lacks.
    async fn fleet_load_scans(&self) -> Result<(), CoordinatorError> {
        let missing = self.inner.fleet.read().missing_scans();
        if missing.is_empty() {
            return Ok(());
        }
        let mut loads = futures::stream::iter(missing)
            .map(|id| async move {
                let scan = self.scan(&id).await?;
                let report = match &scan {
                    Some(s) if s.status == ScanStatus::Complete => match &s.report_key {
                        Some(key) => Some(self.fleet_read_report(key).await?),
                        None => None,
                    },
                    _ => None,
                };
                Ok::<_, CoordinatorError>((id, scan, report))
            })
            .buffer_unordered(CONCURRENCY * 2);
        let mut first_error = None;
        while let Some(loaded) = loads.next().await {
            let (id, scan, report) = match loaded {
                Ok(l) => l,
                Err(err) => {
                    first_error.get_or_insert(err);
                    continue;
                }
            };
            let mut state = self.inner.fleet.write();
            if !state.by_scan.contains_key(&id) {
                continue; // no image points at it any more
            }
            let Some(scan) = scan else {
                // The image names a scan that is not stored: pending until a
                // submit writes it (the hook then fills it in).
                state.scans.entry(id).or_insert_with(|| ScanEntry {
                    status: ScanStatus::Pending,
                    error: None,
                    counts: SeverityCounts::default(),
                    last_scanned_unix_ms: 0,
                    report: None,
                    report_broken: false,
                });
                continue;
            };
            if !state.scans.contains_key(&id) {
                state.put_scan(&scan);
            }
            match report {
                Some(Ok(report)) if state.scans.get(&id).is_some_and(|e| e.report.is_none()) => {
                    state.put_report(&id, Unshared::of_report(&report));
                }
                Some(Err(err)) => {
                    tracing::warn!(scan = %id, error = %err, "stored report unreadable: left out of fleet queries");
                    if let Some(e) = state.scans.get_mut(&id) {
                        e.report_broken = true;
                    }
                }
                // Complete without a report key: nothing to read, do not retry.
                None if scan.status == ScanStatus::Complete => {
                    if let Some(e) = state.scans.get_mut(&id) {
                        e.report_broken = e.report.is_none();
                    }
                }
                Some(Ok(_)) | None => {}
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// A stored report: the outer error is the store being away (retried),
    /// the inner one a report that cannot be parsed (not retried).
    async fn fleet_read_report(
        &self,
        key: &str,
    ) -> Result<Result<Report, CoordinatorError>, CoordinatorError> {
        let bytes = self
            .inner
            .store
            .get(&StorePath::from(key))
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?
            .bytes()
            .await
            .map_err(|e| CoordinatorError::Unavailable(format!("report {key}: {e}")))?;
        Ok(from_json::<Report>("report", &bytes))
    }

    /// Re-matches, from their packages, the reports matched under other
    /// vulnerability data than the data in force (each distinct package once).
    async fn fleet_rematch(&self) -> Result<(), CoordinatorError> {
        let vulndb = self.vulndb();
        let version = vulndb.matcher.vulndb_version().to_owned();
        let stale: Vec<(String, Arc<Matched>)> = self
            .inner
            .fleet
            .read()
            .scans
            .iter()
            .filter_map(|(id, e)| e.report.as_ref().map(|m| (id, m)))
            .filter(|(_, m)| m.vulndb_version != version)
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let count = stale.len();
        let rematched = tokio::task::spawn_blocking(move || {
            let images: Vec<(Option<OsRelease>, Vec<Package>)> = stale
                .iter()
                .map(|(_, m)| {
                    let packages = m.packages.iter().map(|p| Package::clone(p)).collect();
                    (m.os_release.clone(), packages)
                })
                .collect();
            let findings = vulndb.matcher.match_fleet(&images);
            stale
                .into_iter()
                .zip(images.into_iter().zip(findings))
                .map(|((id, old), ((os_release, packages), findings))| {
                    let new = Unshared {
                        os_release,
                        packages,
                        findings,
                        vulndb_version: version.clone(),
                    };
                    (id, old, new)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("re-matching task: {e}")))?;
        let mut state = self.inner.fleet.write();
        for (id, old, new) in rematched {
            // Only where the report is still the one re-matched (a scan may
            // have been finalized again meanwhile).
            if state
                .scans
                .get(&id)
                .and_then(|e| e.report.as_ref())
                .is_some_and(|r| Arc::ptr_eq(r, &old))
            {
                state.put_report(&id, new);
            }
        }
        tracing::info!(
            scans = count,
            secs = started.elapsed().as_secs_f64(),
            "fleet re-matched against new vulnerability data"
        );
        Ok(())
    }

    // ---- registering ----------------------------------------------------------------

    /// Registers references for continuous scanning: each is validated and
    /// submitted as a background scan; one failing does not stop the others.
    /// Returns, per reference in order, its scan id or its error.
    pub async fn fleet_register(
        &self,
        references: Vec<String>,
        platform: &str,
        insecure_registry: bool,
    ) -> Result<Vec<(String, Result<String, CoordinatorError>)>, CoordinatorError> {
        check_reference_count(references.len())?;
        check_platform(platform)?;
        let results = futures::stream::iter(references)
            .map(|reference| async move {
                let result = async {
                    validate_reference(&reference)?;
                    let (scan, _) = self
                        .submit(SubmitRequest {
                            reference: reference.clone(),
                            platform: platform.to_owned(),
                            background: true,
                            insecure_registry,
                            register: true,
                        })
                        .await?;
                    Ok(scan.id)
                }
                .await;
                (reference, result)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        Ok(results)
    }

    /// Deletes image records (as given, and in their normalised spelling).
    /// Returns how many existed.
    pub async fn fleet_unregister(&self, references: &[String]) -> Result<u32, CoordinatorError> {
        check_reference_count(references.len())?;
        for r in references {
            validate_reference(r)?;
        }
        // Loaded first, so a load in flight cannot bring back what is deleted here.
        self.fleet_ready().await?;
        let mut removed = 0;
        for r in references {
            let mut spellings = vec![r.clone()];
            if let Ok(parsed) = ImageRef::parse(r) {
                let normal = parsed.to_string();
                if normal != *r {
                    spellings.push(normal);
                }
            }
            for reference in spellings {
                if self.fleet_delete_image(&reference).await? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn fleet_delete_image(&self, reference: &str) -> Result<bool, CoordinatorError> {
        let key = image_key(reference);
        let existed = self.inner.buckets.images.get(&key).await?.is_some();
        if existed {
            self.inner.buckets.images.delete(&key).await?;
        }
        let in_memory = self.inner.fleet.write().remove_image(reference);
        Ok(existed || in_memory)
    }

    /// Watches a repository: lists its tags (bounded), keeps those matching
    /// `tag_pattern` (a glob; empty: all) and registers each. Returns how many registered.
    pub async fn fleet_register_repository(
        &self,
        repository: &str,
        tag_pattern: &str,
        platform: &str,
        insecure_registry: bool,
    ) -> Result<u32, CoordinatorError> {
        let repository = normalise_repository(repository)?;
        check_platform(platform)?;
        if tag_pattern.len() > MAX_QUERY_LEN {
            return Err(CoordinatorError::InvalidArgument(format!(
                "tag_pattern is longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let matcher = match tag_pattern.trim() {
            "" => None,
            p => Some(
                globset::Glob::new(p)
                    .map_err(|e| CoordinatorError::InvalidArgument(format!("tag_pattern {p:?}: {e}")))?
                    .compile_matcher(),
            ),
        };
        let tags = self.list_tags(&repository, insecure_registry).await?;
        let wanted: Vec<String> = tags
            .into_iter()
            .filter(|t| matcher.as_ref().is_none_or(|m| m.is_match(t)))
            .map(|t| format!("{repository}:{t}"))
            .collect();
        let record = RepositoryRecord {
            repository: repository.clone(),
            tag_pattern: tag_pattern.trim().to_owned(),
            platform: platform.to_owned(),
            insecure_registry,
            updated_unix_ms: now_unix_ms(),
        };
        self.inner
            .buckets
            .images
            .put(&repository_key(&repository), to_json(&record)?)
            .await?;
        self.inner
            .fleet
            .write()
            .repositories
            .insert(repository.clone(), record);
        let mut registered = 0;
        let mut first_error = None;
        for chunk in wanted.chunks(MAX_REFERENCES) {
            for (reference, result) in self
                .fleet_register(chunk.to_vec(), platform, insecure_registry)
                .await?
            {
                match result {
                    Ok(_) => registered += 1,
                    Err(err) => {
                        tracing::warn!(reference = %reference, error = %err, "tag of a watched repository not registered");
                        first_error.get_or_insert((reference, err));
                    }
                }
            }
        }
        if registered == 0
            && let Some((reference, err)) = first_error
        {
            return Err(CoordinatorError::Unavailable(format!(
                "{repository}: no tag could be registered; {reference}: {err}"
            )));
        }
        tracing::info!(repository = %repository, tags = registered, "repository registered");
        Ok(registered)
    }

    /// Keeps the watched fleet current, every `interval` (from
    /// [`CoordinatorConfig::refresh_interval`](super::CoordinatorConfig)):
    /// watched repositories are listed again (new tags registered) and every
    /// registered image is resolved again as a background scan. A tag that
    /// moved gets a new scan, in which only the new layers are analysed; an
    /// unchanged one costs a manifest request and returns its existing scan.
    pub(super) async fn refresh_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(interval) = self.inner.config.refresh_interval else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.fleet_refresh().await {
                Ok((repositories, images)) => {
                    tracing::info!(repositories, images, "watched fleet refreshed")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "refreshing the watched fleet failed; trying again next round")
                }
            }
        }
    }

    /// One refresh round (see [`Self::refresh_loop`]): returns the
    /// repositories listed and the registered images resolved again.
    pub async fn fleet_refresh(&self) -> Result<(usize, usize), CoordinatorError> {
        self.fleet_ready().await?;
        let repositories: Vec<RepositoryRecord> =
            self.inner.fleet.read().repositories.values().cloned().collect();
        for r in &repositories {
            if let Err(err) = self
                .fleet_register_repository(&r.repository, &r.tag_pattern, &r.platform, r.insecure_registry)
                .await
            {
                tracing::warn!(repository = %r.repository, error = %err, "listing a watched repository failed");
            }
        }
        // Registered images, grouped by the options they were registered with.
        let groups = {
            let state = self.inner.fleet.read();
            let mut groups: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
            for entry in state.images.values() {
                // Tags of watched repositories were just registered again above.
                if entry.record.registered && !state.repositories.contains_key(&entry.repository) {
                    groups
                        .entry((entry.record.platform.clone(), entry.record.insecure_registry))
                        .or_default()
                        .push(entry.record.reference.clone());
                }
            }
            groups
        };
        let mut images = 0;
        for ((platform, insecure), references) in groups {
            for chunk in references.chunks(MAX_REFERENCES) {
                for (reference, result) in self.fleet_register(chunk.to_vec(), &platform, insecure).await? {
                    images += 1;
                    if let Err(err) = result {
                        tracing::warn!(reference = %reference, error = %err, "rescanning a registered image failed");
                    }
                }
            }
        }
        Ok((repositories.len(), images))
    }

    /// Stops watching a repository: its record and every image of it are
    /// removed. Returns how many images were removed.
    pub async fn fleet_unregister_repository(&self, repository: &str) -> Result<u32, CoordinatorError> {
        let repository = normalise_repository(repository)?;
        self.fleet_ready().await?;
        self.inner
            .buckets
            .images
            .delete(&repository_key(&repository))
            .await?;
        let references: Vec<String> = {
            let mut state = self.inner.fleet.write();
            state.repositories.remove(&repository);
            state
                .images
                .values()
                .filter(|i| i.repository == repository)
                .map(|i| i.record.reference.clone())
                .collect()
        };
        let mut removed = 0;
        for r in references {
            if self.fleet_delete_image(&r).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The tags of a repository, from the registry's `/v2/<name>/tags/list`
    /// through the coordinator's source pool, so with the same
    /// authentication as image pulls (anonymous, basic credentials from the
    /// Docker config, or a bearer token from the registry's challenge);
    /// following `Link` pages on the same registry, bounded in tags, pages,
    /// bytes and time.
    async fn list_tags(
        &self,
        repository: &str,
        insecure_registry: bool,
    ) -> Result<Vec<String>, CoordinatorError> {
        let ImageRef::Registry(r) = ImageRef::parse(repository)? else {
            return Err(CoordinatorError::InvalidArgument(format!(
                "{repository}: not a registry repository"
            )));
        };
        let mut source_config = self.inner.config.source.clone();
        if insecure_registry {
            source_config
                .insecure_registries
                .push(r.resolve_registry().to_owned());
        }
        let source = self.inner.sources.registry(r, &source_config)?;
        let timeout = self.inner.config.resolve_timeout;
        // A 429 is waited out (from the first page again), within the timeout.
        let listing = async {
            let mut limited = RateLimitWait::new("a tag listing");
            loop {
                match source
                    .list_tags(MAX_TAGS, MAX_TAG_PAGES, MAX_TAG_PAGE_BYTES)
                    .await
                {
                    Err(TagListError::Source(SourceError::RateLimited {
                        registry,
                        retry_after,
                    })) => limited.wait(&registry, retry_after).await,
                    other => break other,
                }
            }
        };
        tokio::time::timeout(timeout, listing)
            .await
            .map_err(|_| {
                CoordinatorError::Unavailable(format!(
                    "{repository}: listing tags took longer than {timeout:?}"
                ))
            })?
            // Unreachable or misbehaving registry: Unavailable, with what it
            // said; unknown repository: NotFound; refused credentials:
            // Unauthorized; past MAX_TAGS: Full.
            .map_err(|e| {
                if e.is_too_many_tags() {
                    return CoordinatorError::Full(format!(
                        "{e}: register a narrower set with RegisterImages"
                    ));
                }
                match SourceError::from(e) {
                    e @ SourceError::NotFound(_) => CoordinatorError::NotFound(e.to_string()),
                    e @ SourceError::Unauthorized(_) => CoordinatorError::Unauthorized(e.to_string()),
                    e @ SourceError::BadReference { .. } => CoordinatorError::InvalidArgument(e.to_string()),
                    e => CoordinatorError::Unavailable(e.to_string()),
                }
            })
    }

    // ---- queries ------------------------------------------------------------------------

    /// One page of images, by reference.
    pub async fn fleet_images(
        &self,
        filter: &ImageFilter,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<(Vec<v1::ImageSummary>, String), CoordinatorError> {
        let token = PageToken::parse(page_token)?;
        let repository = filter
            .repository
            .as_ref()
            .map(|r| normalise_repository(r).unwrap_or_else(|_| r.trim().trim_end_matches('/').to_owned()));
        self.fleet_ready().await?;
        let state = self.inner.fleet.read();
        let items = |start: Bound<&str>| -> Box<dyn Iterator<Item = &str> + '_> {
            Box::new(
                state
                    .images
                    .range::<str, _>((start, Bound::Unbounded))
                    .map(|(k, _)| k.as_str()),
            )
        };
        let (images, next) = page(items, &token, page_size(page_size_asked), |reference| {
            let image = state.images.get(reference)?;
            if repository.as_ref().is_some_and(|r| *r != image.repository) {
                return None;
            }
            let scan = state.scans.get(&image.record.scan_id);
            let status = state.status_of(&image.record);
            if filter.status.is_some_and(|s| s != status) {
                return None;
            }
            let report = scan.and_then(|s| s.report.as_ref());
            if let Some(min) = filter.min_severity
                && report.and_then(|r| r.max_severity).is_none_or(|s| s < min)
            {
                return None;
            }
            let counts = report
                .map(|r| r.counts)
                .or(scan.map(|s| s.counts))
                .unwrap_or_default();
            Some(v1::ImageSummary {
                reference: reference.to_owned(),
                tags: state.tags(&image.record.digest),
                digest: image.record.digest.clone(),
                status: status.to_proto().into(),
                counts: Some(counts.into()),
                scan_id: image.record.scan_id.clone(),
                last_scanned_unix_ms: scan.map_or(0, |s| s.last_scanned_unix_ms),
                error: scan.and_then(|s| s.error.clone()).unwrap_or_default(),
            })
        });
        Ok((images, next))
    }

    /// One page of the images a vulnerability (or package) hits, by
    /// reference, each with the affected packages and the layers that brought them.
    pub async fn fleet_affected(
        &self,
        query: &AffectedQuery,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<(Vec<v1::AffectedImage>, String), CoordinatorError> {
        let token = PageToken::parse(page_token)?;
        self.fleet_ready().await?;
        let state = self.inner.fleet.read();
        let candidates = match query {
            AffectedQuery::Vulnerability(id) => state.by_vuln.get(id),
            AffectedQuery::Package(q) => state.by_package.get(&package_key(&q.name)),
        };
        let references: BTreeSet<&str> = candidates
            .into_iter()
            .flatten()
            .filter_map(|scan| state.by_scan.get(scan))
            .flatten()
            .map(String::as_str)
            .collect();
        let items = |start: Bound<&str>| -> Box<dyn Iterator<Item = &str> + '_> {
            Box::new(references.range::<str, _>((start, Bound::Unbounded)).copied())
        };
        let (images, next) = page(items, &token, page_size(page_size_asked), |reference| {
            let image = state.images.get(reference)?;
            let report = state.scans.get(&image.record.scan_id)?.report.as_ref()?;
            let packages = affected_packages(report, query);
            if packages.is_empty() {
                return None;
            }
            Some(v1::AffectedImage {
                reference: reference.to_owned(),
                tags: state.tags(&image.record.digest),
                digest: image.record.digest.clone(),
                packages,
            })
        });
        Ok((images, next))
    }

    /// Images by status, findings by severity over the latest scans (a scan
    /// shared by several tags counted once), and the vulnerabilities hitting
    /// the most images.
    pub async fn fleet_summary(&self, top_n: u32) -> Result<FleetSummary, CoordinatorError> {
        let top_n = match top_n as usize {
            0 => DEFAULT_TOP_N,
            n => n.min(MAX_TOP_N),
        };
        self.fleet_ready().await?;
        let state = self.inner.fleet.read();
        let mut by_status: BTreeMap<i32, (ScanStatus, u32)> = BTreeMap::new();
        for image in state.images.values() {
            let s = state.status_of(&image.record);
            by_status.entry(s.to_proto() as i32).or_insert((s, 0)).1 += 1;
        }
        let mut findings = SeverityCounts::default();
        // Vulnerability id → (aliases, worst severity, images hit).
        let mut vulns: HashMap<&str, (BTreeSet<&str>, Severity, u32)> = HashMap::new();
        for (scan_id, references) in &state.by_scan {
            let Some(report) = state.scans.get(scan_id).and_then(|s| s.report.as_ref()) else {
                continue;
            };
            let c = report.counts;
            findings.critical += c.critical;
            findings.high += c.high;
            findings.medium += c.medium;
            findings.low += c.low;
            findings.unknown += c.unknown;
            let mut seen = HashSet::new();
            for h in &report.hits {
                let f = h.vuln.as_ref();
                let v = vulns
                    .entry(f.id.as_str())
                    .or_insert_with(|| (BTreeSet::new(), f.severity, 0));
                v.0.extend(f.aliases.iter().map(String::as_str));
                v.1 = v.1.max(f.severity);
                if seen.insert(f.id.as_str()) {
                    v.2 += references.len() as u32;
                }
            }
        }
        let mut top: Vec<_> = vulns.into_iter().collect();
        top.sort_by(|a, b| b.1.2.cmp(&a.1.2).then(b.1.1.cmp(&a.1.1)).then(a.0.cmp(b.0)));
        top.truncate(top_n);
        Ok(FleetSummary {
            images_by_status: by_status.into_values().collect(),
            findings,
            top: top
                .into_iter()
                .map(|(id, (aliases, severity, images))| v1::TopVulnerability {
                    id: id.to_owned(),
                    aliases: aliases.into_iter().map(str::to_owned).collect(),
                    severity: v1::Severity::from(severity).into(),
                    images_affected: images,
                })
                .collect(),
        })
    }
}

/// A bad platform is the whole request's error, not one per reference.
fn check_platform(platform: &str) -> Result<(), CoordinatorError> {
    let platform = platform.trim();
    if platform.is_empty() {
        return Ok(());
    }
    if platform.len() > MAX_QUERY_LEN {
        return Err(CoordinatorError::InvalidArgument(format!(
            "platform is longer than {MAX_QUERY_LEN} bytes"
        )));
    }
    strata_worker::source::Platform::parse(platform)
        .map(|_| ())
        .map_err(|e| CoordinatorError::InvalidArgument(format!("platform: {e}")))
}

pub(crate) fn check_reference_count(n: usize) -> Result<(), CoordinatorError> {
    if n == 0 {
        return Err(CoordinatorError::InvalidArgument(
            "references: give at least one".into(),
        ));
    }
    if n > MAX_REFERENCES {
        return Err(CoordinatorError::InvalidArgument(format!(
            "references: {n} given, at most {MAX_REFERENCES} per request"
        )));
    }
    Ok(())
}

/// The packages of one scan a query hits, each with its fixed versions and
/// vulnerability ids, grouped by package (and so by the layer that brought it).
fn affected_packages(report: &Matched, query: &AffectedQuery) -> Vec<v1::AffectedPackage> {
    // Package index → (fixed versions, vulnerability ids), in package order.
    let mut groups: BTreeMap<usize, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    match query {
        AffectedQuery::Vulnerability(id) => {
            for h in &report.hits {
                let v = h.vuln.as_ref();
                let hit =
                    v.id.eq_ignore_ascii_case(id) || v.aliases.iter().any(|a| a.eq_ignore_ascii_case(id));
                if hit {
                    let g = groups.entry(h.package).or_default();
                    g.0.extend(h.fixed_versions.iter().map(String::as_str));
                    g.1.insert(v.id.as_str());
                }
            }
        }
        AffectedQuery::Package(q) => {
            for (i, _) in report.packages.iter().enumerate().filter(|(_, p)| q.matches(p)) {
                groups.entry(i).or_default();
            }
            for h in &report.hits {
                if let Some(g) = groups.get_mut(&h.package) {
                    g.0.extend(h.fixed_versions.iter().map(String::as_str));
                    g.1.insert(h.vuln.id.as_str());
                }
            }
        }
    }
    groups
        .into_iter()
        .filter_map(|(i, (fixed, ids))| {
            Some(v1::AffectedPackage {
                package: Some(Package::clone(report.packages.get(i)?).into()),
                fixed_versions: fixed.into_iter().map(str::to_owned).collect(),
                vulnerability_ids: ids.into_iter().map(str::to_owned).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        assert!(matches!(PageToken::parse("").unwrap(), PageToken::Start));
        let t = PageToken::after("reg/app:v1");
        assert!(matches!(PageToken::parse(&t).unwrap(), PageToken::After(r) if r == "reg/app:v1"));
        let long = format!("reg/{}:v1", "a".repeat(3000));
        let t = PageToken::after(&long);
        assert!(t.len() <= MAX_PAGE_TOKEN);
        assert!(matches!(
            PageToken::parse(&t).unwrap(),
            PageToken::AfterLong { .. }
        ));
        for bad in ["zz", "rzz", "r", "k00.12", &"r".repeat(2000)] {
            assert!(PageToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_ranges() {
        // The shape and its evaluation are tested in `versions::constraint`;
        // here, the message a client reads.
        for bad in [">=", ">= 1, <", "~>1.0", "1.0 2.0", ">=1,<<2"] {
            assert!(parse_version_range(bad).is_err(), "{bad}");
        }
        let err = PackageQuery::new("Debian", "zlib", ">=1, <").err().unwrap();
        assert_eq!(
            err.to_string(),
            "invalid argument: version_range \">=1, <\": comparison \"<\" has no version \
             (expected comparisons joined by commas, e.g. \">=1.2.0, <1.4.1\")"
        );
        let long = format!(">={}", "1".repeat(2000));
        let err = PackageQuery::new("", "zlib", &long).err().unwrap().to_string();
        assert!(
            err.contains("longer than 1024 bytes (expected comparisons"),
            "{err}"
        );
        assert!(err.len() < 400, "the range is quoted cut: {err}");
        assert!(PackageQuery::new("Debian", "zlib", ">=x!").is_err());
        assert!(PackageQuery::new("Nope", "zlib", "").is_err());
        assert!(PackageQuery::new("Debian", "zlib", ">=1:1.2, <2").is_ok());
    }

    /// A registry on a local port answering tag lists by repository with
    /// canned HTTP/1.1 answers (one request per connection).
    /// `throttled/app` answers `429` with `Retry-After: 1` to its first two
    /// requests.
    async fn canned_registry() -> String {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let throttled = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let throttled = Arc::clone(&throttled);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let path = path.split('?').next().unwrap_or("");
                    let mut extra = "";
                    let (status, body) = match path {
                        "/v2/" => ("200 OK", "{}".to_owned()),
                        "/v2/throttled/app/tags/list" if throttled.fetch_add(1, Ordering::SeqCst) < 2 => {
                            extra = "Retry-After: 1\r\n";
                            ("429 Too Many Requests", "slow down".to_owned())
                        }
                        "/v2/throttled/app/tags/list" => {
                            ("200 OK", r#"{"name":"throttled/app","tags":["v1"]}"#.to_owned())
                        }
                        "/v2/ok/app/tags/list" => ("200 OK", r#"{"name":"ok/app","tags":["b","a"]}"#.to_owned()),
                        "/v2/empty/app/tags/list" => ("200 OK", r#"{"name":"empty/app","tags":null}"#.to_owned()),
                        "/v2/locked/app/tags/list" => ("403 Forbidden", "go away".to_owned()),
                        "/v2/flaky/app/tags/list" => ("500 Internal Server Error", "disk on fire".to_owned()),
                        "/v2/huge/app/tags/list" => {
                            let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
                            ("200 OK", serde_json::json!({"name": "huge/app", "tags": tags}).to_string())
                        }
                        _ => (
                            "404 Not Found",
                            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#
                                .to_owned(),
                        ),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        host
    }

    #[tokio::test]
    async fn tag_listing_maps_the_registry_answers() {
        use crate::cluster::{Buckets, CoordinatorConfig, VulnData};
        use crate::vulndb::Db;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let buckets = Buckets::local(&dir.path().join("state.redb")).unwrap();
        let mut config = CoordinatorConfig::new("memory:///");
        config.source.docker_config = Some(dir.path().join("no-docker-config.json"));
        config.resolve_timeout = std::time::Duration::from_secs(20);
        let c = Coordinator::new(
            config,
            strata_worker::queue::Queue::memory(Default::default()),
            buckets,
            store,
            VulnData::new(&Db::from_advisories(vec![], vec![])),
            strata_worker::telemetry::Metrics::new("test", None).unwrap(),
        );
        let host = canned_registry().await;
        let list = |repo: &str| {
            let repository = format!("{host}/{repo}");
            let c = &c;
            async move { c.list_tags(&repository, true).await }
        };
        assert_eq!(list("ok/app").await.unwrap(), ["a", "b"]);
        assert!(list("empty/app").await.unwrap().is_empty());
        let err = list("gone/app").await.unwrap_err();
        assert!(
            matches!(&err, CoordinatorError::NotFound(m) if m.contains("not known")),
            "{err:?}"
        );
        let err = list("locked/app").await.unwrap_err();
        assert!(matches!(err, CoordinatorError::Unauthorized(_)), "{err:?}");
        let err = list("flaky/app").await.unwrap_err();
        assert!(
            matches!(&err, CoordinatorError::Unavailable(m) if m.contains("disk on fire")),
            "{err:?}"
        );
        let err = list("huge/app").await.unwrap_err();
        assert!(matches!(err, CoordinatorError::Full(_)), "{err:?}");
        // Two 429s with Retry-After: 1 are waited out, then the list arrives.
        let started = Instant::now();
        assert_eq!(list("throttled/app").await.unwrap(), ["v1"]);
        assert!(started.elapsed() >= std::time::Duration::from_secs(2));
        let err = c.list_tags("127.0.0.1:1/nothing/here", true).await.unwrap_err();
        assert!(matches!(err, CoordinatorError::Unavailable(_)), "{err:?}");
    }

    /// A coordinator over a local state file and an in-memory store, with
    /// one image whose stored report was matched by an empty database.
    async fn coordinator_with_one_image(dir: &std::path::Path) -> (Coordinator, String) {
        use crate::cluster::{Buckets, CoordinatorConfig, VulnData};
        use crate::vulndb::Db;
        use object_store::PutPayload;
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let buckets = Buckets::local(&dir.join("state.redb")).unwrap();
        let empty = Db::from_advisories(vec![], vec![]);
        let layer = format!("sha256:{}", "1".repeat(64));
        let digest = format!("sha256:{}", "2".repeat(64));
        let reference = "registry.test/app:v1".to_owned();
        let scan_id = "s-0123456789abcdef01234567".to_owned();
        let report = Report {
            scan_id: scan_id.clone(),
            image_reference: reference.clone(),
            image_digest: digest.parse().ok(),
            platform: String::new(),
            os_release: Some(OsRelease {
                id: "debian".into(),
                version_id: "12".into(),
                ..Default::default()
            }),
            packages: vec![Package {
                ecosystem: Ecosystem::Debian,
                name: "libfoo".into(),
                version: "1.0-1".into(),
                source_name: None,
                source_version: None,
                arch: None,
                purl: String::new(),
                path: "/var/lib/dpkg/status".into(),
                layer: layer.parse().ok(),
            }],
            findings: vec![],
            counts: SeverityCounts::default(),
            suppressed: 0,
            vulndb_version: VulnData::new(&empty).matcher.vulndb_version().to_owned(),
            created_unix_ms: 1,
            layer_errors: vec![],
        };
        let key = crate::cluster::report_path(&scan_id);
        store
            .put(&key, PutPayload::from(serde_json::to_vec(&report).unwrap()))
            .await
            .unwrap();
        let scan = ScanRecord {
            id: scan_id.clone(),
            reference: reference.clone(),
            platform: String::new(),
            priority: "background".into(),
            insecure_registry: false,
            analyzer_set: "test".into(),
            status: ScanStatus::Complete,
            image_digest: digest.clone(),
            resolved_platform: String::new(),
            layers: vec![],
            location: None,
            error: None,
            created_unix_ms: 1,
            updated_unix_ms: 2,
            completed_unix_ms: 3,
            counts: Default::default(),
            packages: 1,
            findings: 0,
            vulndb_version: report.vulndb_version.clone(),
            report_key: Some(key.to_string()),
        };
        buckets
            .scans
            .put(&scan_id, to_json(&scan).unwrap())
            .await
            .unwrap();
        let image = ImageRecord {
            reference: reference.clone(),
            platform: String::new(),
            insecure_registry: false,
            registered: true,
            digest,
            scan_id,
            updated_unix_ms: 3,
        };
        buckets
            .images
            .put(&image_key(&reference), to_json(&image).unwrap())
            .await
            .unwrap();
        let queue = strata_worker::queue::Queue::memory(Default::default());
        let metrics = strata_worker::telemetry::Metrics::new("test", None).unwrap();
        let c = Coordinator::new(
            CoordinatorConfig::new("memory:///"),
            queue,
            buckets,
            store,
            VulnData::new(&empty),
            metrics,
        );
        (c, layer)
    }

    #[tokio::test]
    async fn a_new_advisory_hits_stored_scans_without_rescanning() {
        use crate::vulndb::{Advisory, AffectedEntry, Db, EvalRange, Event, RangeKind};
        let dir = tempfile::tempdir().unwrap();
        let (c, layer) = coordinator_with_one_image(dir.path()).await;
        let q = AffectedQuery::vulnerability("DSA-9999-1").unwrap();
        // Loaded lazily from the buckets and the store (as after a restart).
        assert!(c.fleet_affected(&q, 0, "").await.unwrap().0.is_empty());
        let (images, _) = c.fleet_images(&ImageFilter::default(), 0, "").await.unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].status, v1::ScanStatus::Complete as i32);

        let db = Db::from_advisories(
            vec![Advisory {
                id: "DSA-9999-1".into(),
                aliases: vec!["CVE-2099-0001".into()],
                summary: String::new(),
                severity: Severity::High,
                score: None,
                score_source: String::new(),
                affected: vec![AffectedEntry {
                    ecosystem: Ecosystem::Debian,
                    release: Some("12".into()),
                    name: "libfoo".into(),
                    ranges: vec![EvalRange {
                        kind: RangeKind::Ecosystem,
                        events: vec![Event::Introduced("0".into()), Event::Fixed("1.0-2".into())],
                    }],
                    versions: vec![],
                }],
            }],
            vec![],
        );
        c.set_vulndb(crate::cluster::VulnData::new(&db));
        for id in ["DSA-9999-1", "cve-2099-0001"] {
            let q = AffectedQuery::vulnerability(id).unwrap();
            let (hit, next) = c.fleet_affected(&q, 0, "").await.unwrap();
            assert!(next.is_empty());
            assert_eq!(hit.len(), 1, "{id}");
            let p = &hit[0].packages[0];
            assert_eq!(p.package.as_ref().unwrap().layer_digest, layer);
            assert_eq!(p.fixed_versions, ["1.0-2"]);
            assert_eq!(p.vulnerability_ids, ["DSA-9999-1"]);
        }
        let summary = c.fleet_summary(0).await.unwrap();
        assert_eq!(summary.findings.high, 1);
        assert_eq!(summary.top[0].id, "DSA-9999-1");
        assert_eq!(summary.top[0].images_affected, 1);
        let high = ImageFilter {
            min_severity: Some(Severity::High),
            ..Default::default()
        };
        assert_eq!(c.fleet_images(&high, 0, "").await.unwrap().0.len(), 1);
        let critical = ImageFilter {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        };
        assert!(c.fleet_images(&critical, 0, "").await.unwrap().0.is_empty());
        let pq = PackageQuery::new("Debian", "libfoo", ">=1.0-1, <1.0-2").unwrap();
        assert_eq!(
            c.fleet_affected(&AffectedQuery::Package(pq), 0, "")
                .await
                .unwrap()
                .0
                .len(),
            1
        );
        let pq = PackageQuery::new("Debian", "libfoo", ">1.0-1").unwrap();
        assert!(
            c.fleet_affected(&AffectedQuery::Package(pq), 0, "")
                .await
                .unwrap()
                .0
                .is_empty()
        );
    }

    #[test]
    fn repositories_normalise() {
        assert_eq!(
            repository_of("127.0.0.1:5000/fleet/app:v1"),
            "127.0.0.1:5000/fleet/app"
        );
        assert_eq!(
            repository_of(
                "127.0.0.1:5000/fleet/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            ),
            "127.0.0.1:5000/fleet/app"
        );
        assert_eq!(
            normalise_repository("127.0.0.1:5000/fleet/app/").unwrap(),
            "127.0.0.1:5000/fleet/app"
        );
        assert!(normalise_repository("127.0.0.1:5000/fleet/app:v1").is_err());
    }
}
