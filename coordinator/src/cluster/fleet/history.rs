//! Each registered image's findings over time, and the events their changes
//! make. A finding is (image reference, vulnerability, package); it has a
//! first-seen time while open and, once gone, a resolved time and why:
//! the advisory changed or was withdrawn, the tag moved to a digest without
//! it (the package was upgraded), or the image left the fleet.
//!
//! # Contract
//! - [`Coordinator::fleet_reconcile`] compares a reference's current
//!   findings (its latest scan's, in the fleet index) with its history and
//!   publishes one event per change — resolved first, then new, then the
//!   image's highest severity when it rose — and only then stores the new
//!   history. A crash in between finds the same changes again at the next
//!   reconcile, and the event log drops the repeats (same event id).
//! - Only registered images have a history; one-off submits (CI) do not.
//! - An image's first matched scan is its baseline: its findings are
//!   recorded (first seen then) without an event each — a newly registered
//!   fleet of 10,000 images would otherwise announce millions of findings
//!   nobody acts on one by one — and the image's highest severity is
//!   announced (`IMAGE_SEVERITY`), so a new image carrying a critical is
//!   still told. Every change after that is an event.
//!
//! # Memory and storage
//! 10,000 images of a few hundred findings each are millions of open
//! findings, so neither side copies them:
//! - in memory a finding is two shared values (the vulnerability and the
//!   package, from the fleet index's interner) and a time: 24 bytes;
//! - stored (`strata_findings`, one value per image) it is three numbers
//!   into the image's own tables of vulnerabilities and packages, as JSON,
//!   gzip-compressed: a few KiB per image, under the key-value store's
//!   value limit (the resolved list is dropped first when it would not be).
//! - Histories are read once, then kept in memory; only changed ones are
//!   written, several at a time. One whose write failed is written again
//!   with the next change.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strata_proto::{Package, Severity, v1};

use super::index::{Interner, Matched, State, Vuln};
use crate::cluster::records::image_key;
use crate::cluster::{Coordinator, CoordinatorError};
use strata_proto::text::now_unix_ms;

/// Resolved findings kept per image (the oldest go first); the event
/// stream has them all.
const MAX_RESOLVED: usize = 100;
/// Histories written to the state at once.
const WRITES: usize = 32;
/// Bound on one stored history, compressed: under the key-value store's
/// value limit, with room for its framing.
const MAX_STORED_BYTES: usize = crate::cluster::kv::MAX_VALUE_BYTES as usize - 4096;
/// Bound on one stored history decompressed (a damaged value must not
/// inflate without limit).
const MAX_INFLATED_BYTES: u64 = 64 << 20;

/// What a reconcile did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Findings new (not counting baselines) and resolved.
    pub new: u32,
    pub resolved: u32,
    /// From the start until its events were published (before the
    /// histories were stored).
    pub published: std::time::Duration,
}

/// One finding as [`Coordinator::fleet_history`] shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub vulnerability_id: String,
    pub aliases: Vec<String>,
    pub severity: Severity,
    pub package: Package,
    pub first_seen_unix_ms: i64,
}

/// A finding that is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    pub finding: Finding,
    pub resolved_unix_ms: i64,
    /// `advisory_changed`, `advisory_withdrawn`, `package_upgraded`, `image_unregistered`.
    pub reason: String,
    /// The digest the finding was in.
    pub digest: String,
}

/// One registered image's findings over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub reference: String,
    /// The digest the open findings are in.
    pub digest: String,
    pub max_severity: Option<Severity>,
    pub open: Vec<Finding>,
    /// Oldest first.
    pub resolved: Vec<Resolved>,
    pub updated_unix_ms: i64,
}

/// An open finding in memory.
#[derive(Debug, Clone)]
struct Open {
    vuln: Arc<Vuln>,
    package: Arc<Package>,
    first_seen: i64,
}

/// A resolved finding in memory.
#[derive(Debug, Clone)]
struct Gone {
    vuln: Arc<Vuln>,
    package: Arc<Package>,
    first_seen: i64,
    resolved_at: i64,
    reason: v1::ResolvedReason,
    digest: Arc<str>,
}

/// One registered image's findings, in memory.
#[derive(Debug, Clone, Default)]
pub(super) struct Tracked {
    digest: Arc<str>,
    max_severity: Option<Severity>,
    /// Sorted by [`key`].
    open: Vec<Open>,
    resolved: VecDeque<Gone>,
    updated: i64,
}

use super::index::finding_key as key;

/// The histories of every registered image, in memory.
#[derive(Default)]
pub struct Histories {
    loaded: bool,
    by_reference: HashMap<String, Tracked>,
    /// References whose stored history is behind memory (a write failed).
    dirty: BTreeSet<String>,
}

impl Histories {
    /// Read again from the bucket at the next use.
    pub(in crate::cluster) fn reset(&mut self) {
        self.loaded = false;
    }
}

fn reason_name(r: v1::ResolvedReason) -> &'static str {
    match r {
        v1::ResolvedReason::AdvisoryChanged => "advisory_changed",
        v1::ResolvedReason::AdvisoryWithdrawn => "advisory_withdrawn",
        v1::ResolvedReason::PackageUpgraded => "package_upgraded",
        v1::ResolvedReason::ImageUnregistered => "image_unregistered",
        v1::ResolvedReason::Unspecified => "unspecified",
    }
}

fn reason_of(name: &str) -> v1::ResolvedReason {
    [
        v1::ResolvedReason::AdvisoryChanged,
        v1::ResolvedReason::AdvisoryWithdrawn,
        v1::ResolvedReason::PackageUpgraded,
        v1::ResolvedReason::ImageUnregistered,
    ]
    .into_iter()
    .find(|r| reason_name(*r) == name)
    .unwrap_or(v1::ResolvedReason::Unspecified)
}

/// What one image's current findings are, from the fleet index: `None`
/// when it is not a registered image with a matched scan (nothing to say
/// yet).
fn current(state: &State, reference: &str) -> Option<(String, Arc<Matched>)> {
    let image = state.images.get(reference)?;
    if !image.record.registered {
        return None;
    }
    let matched = state.scans.get(&image.record.scan_id)?.report.clone()?;
    Some((image.record.digest.clone(), matched))
}

/// An event about one finding.
struct About<'a> {
    reference: &'a str,
    digest: &'a str,
    vuln: &'a Vuln,
    package: &'a Package,
    first_seen: i64,
    vulndb_version: &'a str,
}

fn event(kind: v1::EventKind, a: &About<'_>) -> v1::FleetEvent {
    v1::FleetEvent {
        kind: kind.into(),
        severity: v1::Severity::from(a.vuln.severity).into(),
        image_reference: a.reference.to_owned(),
        image_digest: a.digest.to_owned(),
        vulnerability_id: a.vuln.id.clone(),
        aliases: a.vuln.aliases.clone(),
        package: Some(a.package.clone().into()),
        first_seen_unix_ms: a.first_seen,
        vulndb_version: a.vulndb_version.to_owned(),
        ..Default::default()
    }
}

/// What [`diff`] found.
struct Changes {
    events: Vec<v1::FleetEvent>,
    after: Tracked,
    /// Whether the history differs from `before` (to be stored).
    changed: bool,
}

/// The changes from `before` to the image's current findings: events, and
/// the history after them. `withdrawn(id)` tells whether the data in force
/// lacks an advisory.
fn diff(
    reference: &str,
    before: Option<&Tracked>,
    digest: &str,
    matched: &Matched,
    vulndb_version: &str,
    withdrawn: &dyn Fn(&str) -> bool,
    now: i64,
) -> Changes {
    let baseline = before.is_none();
    let empty = Tracked::default();
    let before = before.unwrap_or(&empty);
    let moved = !baseline && &*before.digest != digest;
    // The current findings, sorted as the history keeps them.
    let mut now_open: Vec<(&Arc<Vuln>, &Arc<Package>, &[String])> = matched
        .hits
        .iter()
        .filter_map(|h| Some((&h.vuln, matched.packages.get(h.package)?, &h.fixed_versions[..])))
        .collect();
    // Findings lists are kept sorted (see `Matched`): checking is linear.
    if !now_open.is_sorted_by(|a, b| key(a.0, a.1) <= key(b.0, b.1)) {
        now_open.sort_by(|a, b| key(a.0, a.1).cmp(&key(b.0, b.1)));
    }
    now_open.dedup_by(|a, b| key(a.0, a.1) == key(b.0, b.1));

    let digest_arc: Arc<str> = if &*before.digest == digest {
        before.digest.clone()
    } else {
        Arc::from(digest)
    };
    let mut resolved_events = Vec::new();
    let mut new_events = Vec::new();
    let mut open = Vec::with_capacity(now_open.len());
    let mut resolved = before.resolved.clone();
    let mut changed = baseline || moved;
    let (mut i, mut j) = (0, 0);
    while i < before.open.len() || j < now_open.len() {
        let old = before.open.get(i);
        let cur = now_open.get(j);
        let order = match (old, cur) {
            (Some(o), Some(c)) => key(&o.vuln, &o.package).cmp(&key(c.0, c.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                // Gone: resolved, and why.
                let o = &before.open[i];
                let reason = if moved {
                    v1::ResolvedReason::PackageUpgraded
                } else if withdrawn(&o.vuln.id) {
                    v1::ResolvedReason::AdvisoryWithdrawn
                } else {
                    v1::ResolvedReason::AdvisoryChanged
                };
                let mut e = event(
                    v1::EventKind::FindingResolved,
                    &About {
                        reference,
                        digest: &before.digest,
                        vuln: &o.vuln,
                        package: &o.package,
                        first_seen: o.first_seen,
                        vulndb_version,
                    },
                );
                e.reason = reason.into();
                resolved_events.push(e);
                resolved.push_back(Gone {
                    vuln: o.vuln.clone(),
                    package: o.package.clone(),
                    first_seen: o.first_seen,
                    resolved_at: now,
                    reason,
                    digest: before.digest.clone(),
                });
                changed = true;
                i += 1;
            }
            std::cmp::Ordering::Equal => {
                // Still open; the advisory may have changed (its severity).
                let (o, c) = (&before.open[i], now_open[j]);
                changed |= !Arc::ptr_eq(&o.vuln, c.0) && *o.vuln != **c.0;
                open.push(Open {
                    vuln: c.0.clone(),
                    package: c.1.clone(),
                    first_seen: o.first_seen,
                });
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Greater => {
                // New: first seen now.
                let (vuln, package, fixed) = now_open[j];
                if !baseline {
                    let mut e = event(
                        v1::EventKind::FindingNew,
                        &About {
                            reference,
                            digest,
                            vuln,
                            package,
                            first_seen: now,
                            vulndb_version,
                        },
                    );
                    e.fixed_versions = fixed.to_vec();
                    new_events.push(e);
                }
                open.push(Open {
                    vuln: vuln.clone(),
                    package: package.clone(),
                    first_seen: now,
                });
                changed = true;
                j += 1;
            }
        }
    }
    while resolved.len() > MAX_RESOLVED {
        resolved.pop_front();
    }
    let max_severity = open.iter().map(|f| f.vuln.severity).max();
    let mut events = resolved_events;
    events.append(&mut new_events);
    if let Some(max) = max_severity
        && before.max_severity.is_none_or(|b| max > b)
    {
        events.push(v1::FleetEvent {
            kind: v1::EventKind::ImageSeverity.into(),
            severity: v1::Severity::from(max).into(),
            image_reference: reference.to_owned(),
            image_digest: digest.to_owned(),
            vulndb_version: vulndb_version.to_owned(),
            ..Default::default()
        });
    }
    changed |= max_severity != before.max_severity;
    Changes {
        events,
        after: Tracked {
            digest: digest_arc,
            max_severity,
            open,
            resolved,
            updated: if changed { now } else { before.updated },
        },
        changed,
    }
}

// ---- the stored form --------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct StoredVuln {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    severity: Severity,
}

/// A history as stored: findings as numbers into the image's own tables.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    reference: String,
    digest: String,
    max_severity: Option<Severity>,
    updated_unix_ms: i64,
    vulns: Vec<StoredVuln>,
    packages: Vec<Package>,
    /// (vulnerability, package, first seen).
    open: Vec<(u32, u32, i64)>,
    /// (vulnerability, package, first seen, resolved, reason, digest).
    #[serde(default)]
    resolved: Vec<(u32, u32, i64, i64, String, String)>,
}

/// Numbers shared values in first-seen order (by address: in memory every
/// value is the interner's one, so equal values are one).
struct Table<T> {
    numbers: rustc_hash::FxHashMap<*const T, u32>,
    values: Vec<Arc<T>>,
}

impl<T> Table<T> {
    fn new() -> Self {
        Table {
            numbers: rustc_hash::FxHashMap::default(),
            values: Vec::new(),
        }
    }

    fn number(&mut self, v: &Arc<T>) -> u32 {
        *self.numbers.entry(Arc::as_ptr(v)).or_insert_with(|| {
            self.values.push(v.clone());
            (self.values.len() - 1) as u32
        })
    }
}

fn encode(reference: &str, t: &Tracked, with_resolved: bool) -> Result<Vec<u8>, String> {
    let mut vulns = Table::new();
    let mut packages = Table::new();
    let open = t
        .open
        .iter()
        .map(|o| (vulns.number(&o.vuln), packages.number(&o.package), o.first_seen))
        .collect();
    let resolved = if with_resolved {
        t.resolved
            .iter()
            .map(|g| {
                (
                    vulns.number(&g.vuln),
                    packages.number(&g.package),
                    g.first_seen,
                    g.resolved_at,
                    reason_name(g.reason).to_owned(),
                    g.digest.to_string(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let stored = Stored {
        reference: reference.to_owned(),
        digest: t.digest.to_string(),
        max_severity: t.max_severity,
        updated_unix_ms: t.updated,
        vulns: vulns
            .values
            .iter()
            .map(|v| StoredVuln {
                id: v.id.clone(),
                aliases: v.aliases.clone(),
                severity: v.severity,
            })
            .collect(),
        packages: packages.values.iter().map(|p| Package::clone(p)).collect(),
        open,
        resolved,
    };
    let json = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&json).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

/// The stored value of a history: `None` when even without its resolved
/// findings it is over the value limit (logged; kept in memory only).
fn stored_value(reference: &str, t: &Tracked) -> Option<Bytes> {
    let attempt = |with_resolved| match encode(reference, t, with_resolved) {
        Ok(v) if v.len() <= MAX_STORED_BYTES => Some(Bytes::from(v)),
        Ok(_) => None,
        Err(err) => {
            tracing::error!(reference, error = %err, "encoding a findings history failed");
            None
        }
    };
    let value = attempt(true).or_else(|| attempt(false));
    if value.is_none() {
        tracing::warn!(
            reference,
            open = t.open.len(),
            "findings history over the stored size limit: kept in memory only (a restart takes a new baseline)"
        );
    }
    value
}

fn decode(value: &[u8]) -> Result<Stored, String> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(value)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("decompressing: {e}"))?;
    if json.len() as u64 > MAX_INFLATED_BYTES {
        return Err(format!("over {MAX_INFLATED_BYTES} bytes decompressed"));
    }
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// A stored history in memory, its values shared through `interner`.
fn restore(s: Stored, interner: &mut Interner) -> Result<(String, Tracked), String> {
    let vulns: Vec<Arc<Vuln>> = s
        .vulns
        .into_iter()
        .map(|v| {
            interner.vuln(Vuln {
                id: v.id,
                aliases: v.aliases,
                severity: v.severity,
            })
        })
        .collect();
    let packages: Vec<Arc<Package>> = s.packages.into_iter().map(|p| interner.package(p)).collect();
    let pick = |v: u32, p: u32| -> Result<(Arc<Vuln>, Arc<Package>), String> {
        Ok((
            vulns
                .get(v as usize)
                .ok_or("vulnerability number out of range")?
                .clone(),
            packages
                .get(p as usize)
                .ok_or("package number out of range")?
                .clone(),
        ))
    };
    let mut open = Vec::with_capacity(s.open.len());
    for (v, p, first_seen) in s.open {
        let (vuln, package) = pick(v, p)?;
        open.push(Open {
            vuln,
            package,
            first_seen,
        });
    }
    open.sort_by(|a, b| key(&a.vuln, &a.package).cmp(&key(&b.vuln, &b.package)));
    let digest: Arc<str> = Arc::from(s.digest);
    let mut resolved = VecDeque::with_capacity(s.resolved.len());
    for (v, p, first_seen, resolved_at, reason, was_in) in s.resolved {
        let (vuln, package) = pick(v, p)?;
        resolved.push_back(Gone {
            vuln,
            package,
            first_seen,
            resolved_at,
            reason: reason_of(&reason),
            digest: if *was_in == *digest {
                digest.clone()
            } else {
                Arc::from(was_in)
            },
        });
    }
    Ok((
        s.reference,
        Tracked {
            digest,
            max_severity: s.max_severity,
            open,
            resolved,
            updated: s.updated_unix_ms,
        },
    ))
}

fn shown(vuln: &Vuln, package: &Package, first_seen: i64) -> Finding {
    Finding {
        vulnerability_id: vuln.id.clone(),
        aliases: vuln.aliases.clone(),
        severity: vuln.severity,
        package: package.clone(),
        first_seen_unix_ms: first_seen,
    }
}

impl Tracked {
    fn shown(&self, reference: &str) -> History {
        History {
            reference: reference.to_owned(),
            digest: self.digest.to_string(),
            max_severity: self.max_severity,
            open: self
                .open
                .iter()
                .map(|o| shown(&o.vuln, &o.package, o.first_seen))
                .collect(),
            resolved: self
                .resolved
                .iter()
                .map(|g| Resolved {
                    finding: shown(&g.vuln, &g.package, g.first_seen),
                    resolved_unix_ms: g.resolved_at,
                    reason: reason_name(g.reason).to_owned(),
                    digest: g.digest.to_string(),
                })
                .collect(),
            updated_unix_ms: self.updated,
        }
    }
}

impl Coordinator {
    /// Reads every stored history, once.
    async fn fleet_histories_load(&self, h: &mut Histories) -> Result<(), CoordinatorError> {
        if h.loaded {
            return Ok(());
        }
        // The bucket is the truth (another coordinator may have written it
        // since this one last read it).
        h.by_reference.clear();
        h.dirty.clear();
        let kv = &self.inner.buckets.findings;
        let keys = kv.keys().await?;
        let mut reads = futures::stream::iter(keys)
            .map(|key| async move { (kv.get(&key).await, key) })
            .buffer_unordered(WRITES * 2);
        let mut values = Vec::new();
        while let Some((entry, key)) = reads.next().await {
            if let Some(entry) = entry? {
                values.push((key, entry.value));
            }
        }
        let decoded = tokio::task::spawn_blocking(move || {
            values
                .into_par_iter()
                .map(|(key, value)| (decode(&value), key))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("reading findings histories: {e}")))?;
        let mut state = self.inner.fleet.write();
        for (stored, key) in decoded {
            match stored.and_then(|s| restore(s, &mut state.interner)) {
                Ok((reference, tracked)) => {
                    h.by_reference.insert(reference, tracked);
                }
                Err(err) => {
                    tracing::warn!(key = %key, error = %err, "unreadable findings history skipped (a new baseline is taken)")
                }
            }
        }
        h.loaded = true;
        Ok(())
    }

    /// Compares each of `references`' current findings with its history,
    /// publishes the changes as events, and stores the new histories (see
    /// the module header).
    pub(in crate::cluster) async fn fleet_reconcile(
        &self,
        references: BTreeSet<String>,
    ) -> Result<Reconciled, CoordinatorError> {
        let started = std::time::Instant::now();
        // One coordinator tells the fleet's findings changes: the holder of
        // the history lease (the others' changes reach it through the
        // change stream).
        if references.is_empty() || !self.holds_lease(crate::cluster::peers::LEASE_HISTORY) {
            return Ok(Reconciled::default());
        }
        let mut histories = self.inner.histories.lock().await;
        self.fleet_histories_load(&mut histories).await?;
        let inputs: Vec<(String, String, Arc<Matched>)> = {
            let state = self.inner.fleet.read();
            references
                .iter()
                .filter_map(|r| current(&state, r).map(|(digest, matched)| (r.clone(), digest, matched)))
                .collect()
        };
        // Compared in parallel, off the runtime: the histories map goes to
        // the task and comes back (the histories lock is held meanwhile).
        let map = std::mem::take(&mut histories.by_reference);
        let vulndb = self.vulndb();
        let now = now_unix_ms();
        let compared = tokio::task::spawn_blocking(move || {
            let version = vulndb.matcher.vulndb_version().to_owned();
            let withdrawn = |id: &str| !vulndb.matcher.has_advisory(id);
            let changes: Vec<(String, Changes)> = inputs
                .par_iter()
                .filter_map(|(reference, digest, matched)| {
                    let before = map.get(reference);
                    let c = diff(reference, before, digest, matched, &version, &withdrawn, now);
                    c.changed.then(|| (reference.clone(), c))
                })
                .collect();
            (map, changes)
        })
        .await;
        let (map, changes) = match compared {
            Ok(done) => done,
            Err(err) => {
                // The map went with the task: read the stored ones again.
                histories.loaded = false;
                return Err(CoordinatorError::Internal(format!("comparing findings: {err}")));
            }
        };
        histories.by_reference = map;
        let mut events = Vec::new();
        let mut changed = Vec::with_capacity(changes.len());
        for (reference, mut c) in changes {
            events.append(&mut c.events);
            changed.push((reference, c.after));
        }
        let (new, resolved) = count(&events);
        let diffed = started.elapsed();
        self.publish_fleet_events(events).await?;
        let published = started.elapsed();
        let written: Vec<String> = changed.iter().map(|(r, _)| r.clone()).collect();
        for (reference, after) in changed {
            histories.by_reference.insert(reference, after);
        }
        let dirty = std::mem::take(&mut histories.dirty);
        let to_write: BTreeSet<String> = written.into_iter().chain(dirty).collect();
        let writes = to_write.len();
        histories.dirty = self.fleet_histories_store(&histories, to_write).await;
        tracing::debug!(
            images = references.len(),
            new,
            resolved,
            written = writes,
            diff_secs = diffed.as_secs_f64(),
            publish_secs = (published - diffed).as_secs_f64(),
            store_secs = (started.elapsed() - published).as_secs_f64(),
            "findings histories reconciled"
        );
        Ok(Reconciled {
            new,
            resolved,
            published,
        })
    }

    /// Writes the histories of `references` (several at a time); returns
    /// those whose write failed, to be written again with the next change.
    async fn fleet_histories_store(&self, h: &Histories, references: BTreeSet<String>) -> BTreeSet<String> {
        let batch: Vec<(String, Tracked)> = references
            .into_iter()
            .filter_map(|r| Some((r.clone(), h.by_reference.get(&r)?.clone())))
            .collect();
        let encoded = match tokio::task::spawn_blocking(move || {
            batch
                .into_par_iter()
                .map(|(r, t)| {
                    let value = stored_value(&r, &t);
                    (r, value)
                })
                .collect::<Vec<_>>()
        })
        .await
        {
            Ok(e) => e,
            Err(err) => {
                tracing::error!(error = %err, "encoding findings histories failed");
                return BTreeSet::new();
            }
        };
        let kv = &self.inner.buckets.findings;
        let mut writes = futures::stream::iter(encoded.into_iter().filter_map(|(r, v)| Some((r, v?))))
            .map(|(reference, value)| async move {
                let outcome = kv.put(&image_key(&reference), value).await;
                (reference, outcome)
            })
            .buffer_unordered(WRITES);
        let mut failed = BTreeSet::new();
        while let Some((reference, outcome)) = writes.next().await {
            if let Err(err) = outcome {
                tracing::warn!(reference = %reference, error = %err, "storing a findings history failed; retried with the next change");
                failed.insert(reference);
            }
        }
        failed
    }

    /// Every open finding of `references` resolved: the images left the fleet.
    pub(in crate::cluster) async fn fleet_history_unregistered(
        &self,
        references: &[String],
    ) -> Result<(), CoordinatorError> {
        let mut histories = self.inner.histories.lock().await;
        if !self.holds_lease(crate::cluster::peers::LEASE_HISTORY) {
            // Answering for the cluster without the history lease: what is
            // in memory here may be behind the holder's; read it afresh.
            histories.loaded = false;
        }
        self.fleet_histories_load(&mut histories).await?;
        let version = self.vulndb().matcher.vulndb_version().to_owned();
        let mut events = Vec::new();
        for reference in references {
            let Some(h) = histories.by_reference.get(reference) else {
                continue;
            };
            for o in &h.open {
                let mut e = event(
                    v1::EventKind::FindingResolved,
                    &About {
                        reference,
                        digest: &h.digest,
                        vuln: &o.vuln,
                        package: &o.package,
                        first_seen: o.first_seen,
                        vulndb_version: &version,
                    },
                );
                e.reason = v1::ResolvedReason::ImageUnregistered.into();
                events.push(e);
            }
        }
        self.publish_fleet_events(events).await?;
        for reference in references {
            histories.dirty.remove(reference);
            if histories.by_reference.remove(reference).is_some() {
                self.inner.buckets.findings.delete(&image_key(reference)).await?;
            }
        }
        Ok(())
    }

    /// A registered image's findings history (`None`: none kept).
    pub async fn fleet_history(&self, reference: &str) -> Result<Option<History>, CoordinatorError> {
        let mut histories = self.inner.histories.lock().await;
        self.fleet_histories_load(&mut histories).await?;
        Ok(histories.by_reference.get(reference).map(|t| t.shown(reference)))
    }

    /// Reconciles every registered image (at start: changes made while the
    /// coordinator was away become events now).
    pub async fn fleet_reconcile_all(&self) -> Result<Reconciled, CoordinatorError> {
        self.fleet_ready().await?;
        let references: BTreeSet<String> = self
            .inner
            .fleet
            .read()
            .images
            .iter()
            .filter(|(_, e)| e.record.registered)
            .map(|(r, _)| r.clone())
            .collect();
        self.fleet_reconcile(references).await
    }

    /// Reconciles `references` in the background (from the hooks, which
    /// run where state is written and must not wait).
    /// Records the findings changes of `references` soon, off the caller's
    /// path. Calls made while a recording runs are batched into the next
    /// one: a fleet's first pass finalizes hundreds of scans a second, and
    /// one reconcile per scan queued on the histories lock (at 50,000
    /// images an advisory update's events waited 16 s behind them).
    pub(in crate::cluster) fn fleet_reconcile_later(&self, references: BTreeSet<String>) {
        if references.is_empty() {
            return;
        }
        {
            let mut pending = crate::util::lock(&self.inner.reconcile_pending);
            pending.0.extend(references);
            if pending.1 {
                return; // the running task takes them
            }
            pending.1 = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // A panic must not leave the flag set (nothing would record again).
            struct Running(Coordinator);
            impl Drop for Running {
                fn drop(&mut self) {
                    if std::thread::panicking() {
                        crate::util::lock(&self.0.inner.reconcile_pending).1 = false;
                    }
                }
            }
            let running = Running(this);
            let this = &running.0;
            loop {
                let batch = {
                    let mut pending = crate::util::lock(&this.inner.reconcile_pending);
                    if pending.0.is_empty() {
                        pending.1 = false;
                        return;
                    }
                    std::mem::take(&mut pending.0)
                };
                if let Err(err) = this.fleet_reconcile(batch).await {
                    tracing::warn!(error = %err, "recording findings changes failed; the next change retries");
                }
            }
        });
    }

    async fn publish_fleet_events(&self, events: Vec<v1::FleetEvent>) -> Result<(), CoordinatorError> {
        if events.is_empty() {
            return Ok(());
        }
        let total = events.len();
        let kept = self
            .event_log()
            .publish(events)
            .await
            .map_err(|e| CoordinatorError::Unavailable(e.to_string()))?;
        tracing::info!(
            events = kept.len(),
            repeats = total - kept.len(),
            "fleet events published"
        );
        Ok(())
    }
}

fn count(events: &[v1::FleetEvent]) -> (u32, u32) {
    let of = |k: v1::EventKind| events.iter().filter(|e| e.kind == k as i32).count() as u32;
    (of(v1::EventKind::FindingNew), of(v1::EventKind::FindingResolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fleet::index::{Interner, Unshared};
    use strata_proto::Ecosystem;

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            ecosystem: Ecosystem::PyPI,
            name: name.into(),
            version: version.into(),
            source_name: None,
            source_version: None,
            arch: None,
            purl: format!("pkg:pypi/{name}@{version}"),
            path: "/site/METADATA".into(),
            layer: None,
            evidence: Default::default(),
        }
    }

    fn finding(vuln: &str, severity: Severity, p: &Package) -> strata_proto::Finding {
        strata_proto::Finding {
            vulnerability_id: vuln.into(),
            aliases: vec![format!("CVE-{vuln}")],
            summary: String::new(),
            package: p.clone(),
            installed_version: p.version.clone(),
            fixed_versions: vec!["9".into()],
            severity,
            score: None,
            score_source: String::new(),
            vulndb_version: "v1".into(),
        }
    }

    fn matched(findings: Vec<strata_proto::Finding>, packages: Vec<Package>) -> Matched {
        // One interner for every test value, as the fleet index has.
        static INTERNER: std::sync::LazyLock<std::sync::Mutex<Interner>> =
            std::sync::LazyLock::new(Default::default);
        INTERNER.lock().unwrap().intern(Unshared {
            os_release: None,
            packages,
            findings,
            vulndb_version: "v1".into(),
        })
    }

    fn kinds(events: &[v1::FleetEvent]) -> Vec<(i32, String, i32)> {
        events
            .iter()
            .map(|e| (e.kind, e.vulnerability_id.clone(), e.reason))
            .collect()
    }

    #[test]
    fn new_resolved_and_severity_events() {
        let (a, b) = (pkg("requests", "2.19.1"), pkg("jinja2", "2.10"));
        let none = |_: &str| false;
        // First look is the baseline: findings recorded, only the image's
        // severity (HIGH) told.
        let m1 = matched(
            vec![
                finding("A", Severity::Medium, &a),
                finding("B", Severity::High, &b),
            ],
            vec![a.clone(), b.clone()],
        );
        let c1 = diff("r:1", None, "sha256:1", &m1, "v1", &none, 10);
        let (e1, h1) = (c1.events, c1.after);
        assert!(c1.changed);
        let new = v1::EventKind::FindingNew as i32;
        assert_eq!(
            kinds(&e1),
            [(v1::EventKind::ImageSeverity as i32, String::new(), 0)]
        );
        assert_eq!(e1[0].severity, v1::Severity::High as i32);
        assert_eq!(h1.max_severity, Some(Severity::High));
        assert_eq!(h1.open.len(), 2);
        assert!(h1.open.iter().all(|f| f.first_seen == 10));
        // The same findings again: nothing.
        let c = diff("r:1", Some(&h1), "sha256:1", &m1, "v1", &none, 20);
        assert!(c.events.is_empty() && !c.changed);
        assert_eq!(c.after.open[0].first_seen, 10);
        assert_eq!(c.after.updated, 10);
        // B's advisory changed (no longer covers it), C is new and CRITICAL.
        let m2 = matched(
            vec![
                finding("A", Severity::Medium, &a),
                finding("C", Severity::Critical, &a),
            ],
            vec![a.clone(), b.clone()],
        );
        let c2 = diff("r:1", Some(&h1), "sha256:1", &m2, "v2", &none, 30);
        let (e2, h2) = (c2.events, c2.after);
        let resolved = v1::EventKind::FindingResolved as i32;
        assert_eq!(
            kinds(&e2),
            [
                (resolved, "B".into(), v1::ResolvedReason::AdvisoryChanged as i32),
                (new, "C".into(), 0),
                (v1::EventKind::ImageSeverity as i32, String::new(), 0)
            ]
        );
        assert_eq!(
            e2[0].first_seen_unix_ms, 10,
            "resolved events say when it was first seen"
        );
        assert_eq!(h2.resolved[0].reason, v1::ResolvedReason::AdvisoryChanged);
        assert_eq!(h2.resolved[0].first_seen, 10);
        assert_eq!(h2.resolved[0].resolved_at, 30);
        // C withdrawn from the data.
        let m3 = matched(vec![finding("A", Severity::Medium, &a)], vec![a.clone()]);
        let withdrawn = |id: &str| id == "C";
        let e3 = diff("r:1", Some(&h2), "sha256:1", &m3, "v3", &withdrawn, 40).events;
        assert_eq!(
            kinds(&e3),
            [(resolved, "C".into(), v1::ResolvedReason::AdvisoryWithdrawn as i32)]
        );
        // The tag moved to a digest without A: upgraded, in the old digest.
        let m4 = matched(Vec::new(), vec![pkg("requests", "2.31.0")]);
        let c4 = diff("r:1", Some(&h2), "sha256:2", &m4, "v3", &none, 50);
        let (e4, h4) = (c4.events, c4.after);
        assert_eq!(e4.len(), 2);
        assert!(
            e4.iter()
                .all(|e| e.reason == v1::ResolvedReason::PackageUpgraded as i32)
        );
        assert!(e4.iter().all(|e| e.image_digest == "sha256:1"));
        assert_eq!(&*h4.digest, "sha256:2");
        assert!(h4.open.is_empty() && h4.max_severity.is_none());
    }

    #[test]
    fn a_changed_severity_is_stored_without_an_event() {
        let a = pkg("requests", "2.19.1");
        let m1 = matched(vec![finding("A", Severity::Medium, &a)], vec![a.clone()]);
        let h1 = diff("r:1", None, "sha256:1", &m1, "v1", &|_| false, 10).after;
        // The advisory now says LOW: no finding changed, the history did.
        let m2 = matched(vec![finding("A", Severity::Low, &a)], vec![a.clone()]);
        let c = diff("r:1", Some(&h1), "sha256:1", &m2, "v2", &|_| false, 20);
        assert!(c.events.is_empty());
        assert!(c.changed);
        assert_eq!(c.after.max_severity, Some(Severity::Low));
        assert_eq!(c.after.open[0].vuln.severity, Severity::Low);
        assert_eq!(c.after.open[0].first_seen, 10);
    }

    #[test]
    fn the_stored_form_round_trips_and_shares_values() {
        let (a, b) = (pkg("requests", "2.19.1"), pkg("jinja2", "2.10"));
        let m1 = matched(
            vec![
                finding("A", Severity::Medium, &a),
                finding("B", Severity::High, &a),
                finding("C", Severity::High, &b),
            ],
            vec![a.clone(), b.clone()],
        );
        let h1 = diff("r:1", None, "sha256:1", &m1, "v1", &|_| false, 10).after;
        let m2 = matched(vec![finding("A", Severity::Medium, &a)], vec![a.clone()]);
        let h2 = diff("r:1", Some(&h1), "sha256:2", &m2, "v2", &|_| false, 20).after;
        let value = stored_value("r:1", &h2).unwrap();
        let stored = decode(&value).unwrap();
        // One package row for the two findings on requests.
        assert_eq!(stored.packages.len(), 2);
        let mut interner = Interner::default();
        let (reference, back) = restore(stored, &mut interner).unwrap();
        assert_eq!(reference, "r:1");
        assert_eq!(back.shown("r:1"), h2.shown("r:1"));
        assert!(Arc::ptr_eq(&back.open[0].package, &back.resolved[0].package));
        // Garbage is an error, not a panic.
        assert!(decode(b"not gzip").is_err());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(br#"{"reference":"r","digest":"d","max_severity":null,"updated_unix_ms":1,"vulns":[],"packages":[],"open":[[0,0,1]]}"#).unwrap();
        let bad = decode(&gz.finish().unwrap()).unwrap();
        assert!(restore(bad, &mut interner).is_err());
    }

    #[test]
    fn a_history_too_big_to_store_drops_its_resolved_list_first() {
        let packages: Vec<Package> = (0..3000).map(|i| pkg(&format!("p{i}"), "1.0")).collect();
        let findings = packages
            .iter()
            .flat_map(|p| (0..5).map(move |k| finding(&format!("GHSA-{k}-{}", p.name), Severity::High, p)))
            .collect();
        let t = diff(
            "r:1",
            None,
            "sha256:1",
            &matched(findings, packages),
            "v1",
            &|_| false,
            10,
        )
        .after;
        assert_eq!(t.open.len(), 15_000);
        let value = stored_value("r:1", &t).expect("15,000 findings fit compressed");
        assert!(value.len() <= MAX_STORED_BYTES);
        assert_eq!(decode(&value).unwrap().open.len(), 15_000);
    }
}
