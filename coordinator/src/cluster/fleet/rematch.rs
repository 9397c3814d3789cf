//! New vulnerability data put in force, and what it changes in the fleet:
//! only the packages an update touches are matched again, each distinct
//! (ecosystem, release, name, version) once (rayon), from the inventories
//! the index holds — no registry request, no worker job — and every finding
//! that appears or goes becomes an event (`history.rs`).
//!
//! # Contract
//! - [`Coordinator::apply_vulndb`] swaps the data in force and the fleet
//!   index's findings together, under the index's loading lock: a fleet
//!   query sees the old data and findings or the new ones, never a mix.
//! - A package is matched again when its name, or its source package's
//!   name, is one the [`ChangeSet`] touches (in its ecosystem); every other
//!   finding is kept as it was, stamped with the new data version.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use strata_proto::{Ecosystem, OsRelease, Package, SeverityCounts};

use super::index::{Hit, Matched, State, Vuln, VulnDelta};
use crate::cluster::{Coordinator, CoordinatorError, VulnData};
use crate::vulndb::ChangeSet;

/// What putting new data in force changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RematchSummary {
    /// Images (scans) whose findings changed.
    pub images: u32,
    /// Distinct (ecosystem, release, name, version) matched.
    pub distinct_packages: u32,
    pub findings_new: u32,
    pub findings_resolved: u32,
    pub vulndb_version: String,
    /// From the start until the new data and findings were in force.
    pub matched_in: std::time::Duration,
    /// From the start until the events of what changed were published.
    pub published_in: std::time::Duration,
}

/// The (ecosystem, name) pairs an update touches, looked up without
/// allocating (every package of every candidate image is asked).
struct Touched(HashMap<Ecosystem, HashSet<String>>);

impl Touched {
    fn of(changes: &ChangeSet) -> Touched {
        let mut by_eco: HashMap<Ecosystem, HashSet<String>> = HashMap::new();
        for (eco, name) in &changes.touched {
            by_eco.entry(*eco).or_default().insert(name.clone());
        }
        Touched(by_eco)
    }

    fn names(&self) -> impl Iterator<Item = &String> {
        self.0.values().flatten()
    }

    /// Whether `p`'s name or source package name is touched.
    fn has(&self, p: &Package) -> bool {
        let Some(names) = self.0.get(&p.ecosystem) else {
            return false;
        };
        std::iter::once(&p.name)
            .chain(p.source_name.as_ref())
            .any(|n| names.contains(p.ecosystem.normalise_name(n).as_ref()))
    }
}

impl Coordinator {
    /// Puts `data` in force and matches again what `changes` touches across
    /// the fleet (see the module header); then records and publishes the
    /// findings that changed.
    pub async fn apply_vulndb(
        &self,
        data: VulnData,
        changes: &ChangeSet,
    ) -> Result<RematchSummary, CoordinatorError> {
        self.apply_vulndb_arc(Arc::new(data), changes).await
    }

    async fn apply_vulndb_arc(
        &self,
        new: Arc<VulnData>,
        changes: &ChangeSet,
    ) -> Result<RematchSummary, CoordinatorError> {
        let started = Instant::now();
        // The index whole and matched under the old data first.
        self.fleet_ready().await?;
        let version = new.matcher.vulndb_version().to_owned();
        let (scans, distinct) = {
            let _one = self.inner.fleet.loading.lock().await;
            let touched = Touched::of(changes);
            // Candidate scans from the package-name index, then the touched
            // packages of each.
            let (candidates, picked): (Vec<(String, Arc<Matched>)>, rustc_hash::FxHashSet<usize>) = {
                let state = self.inner.fleet.read();
                // The touched packages, by address: each distinct package
                // is asked once, not once per image that has it.
                let picked: rustc_hash::FxHashSet<usize> = state
                    .interner
                    .packages
                    .iter()
                    .filter(|p| touched.has(p))
                    .map(|p| Arc::as_ptr(p) as usize)
                    .collect();
                let mut numbers: BTreeSet<u32> = BTreeSet::new();
                for name in touched.names() {
                    if let Some(set) = state.by_package.get(&super::index::package_key(name)) {
                        numbers.extend(set.iter());
                    }
                }
                let candidates = numbers
                    .into_iter()
                    .filter_map(|no| {
                        let id = state.scan_id(no)?;
                        let m = state.scans.get(id)?.report.clone()?;
                        m.packages
                            .iter()
                            .any(|p| picked.contains(&(Arc::as_ptr(p) as usize)))
                            .then(|| (id.to_owned(), m))
                    })
                    .collect();
                (candidates, picked)
            };
            let matcher_data = new.clone();
            // The candidates hold their packages: the addresses stay theirs.
            let (rematched, distinct) = tokio::task::spawn_blocking(move || {
                rematch(&matcher_data, candidates, &|p: &Package| {
                    picked.contains(&(p as *const Package as usize))
                })
            })
            .await
            .map_err(|e| CoordinatorError::Internal(format!("re-matching task: {e}")))?;
            // Swap the data and the findings together.
            let (scans, old_data) = {
                let mut state = self.inner.fleet.write();
                let old_data = self.swap_vulndb(new.clone());
                let scans = put_rematched(&mut state, rematched);
                // Every other report is current under the new data as it is.
                for entry in state.scans.values_mut() {
                    if let Some(m) = entry.report.as_mut()
                        && m.vulndb_version != version
                    {
                        Arc::make_mut(m).vulndb_version = version.clone();
                    }
                }
                (scans, old_data)
            };
            // Freeing a large index takes a while: not under the locks, not
            // on the runtime.
            tokio::task::spawn_blocking(move || drop(old_data));
            (scans, distinct)
        };
        let references: BTreeSet<String> = {
            let state = self.inner.fleet.read();
            scans
                .iter()
                .filter_map(|id| state.by_scan.get(id))
                .flatten()
                .cloned()
                .collect()
        };
        let matched_in = started.elapsed();
        let reconciled = self.fleet_reconcile(references).await?;
        let summary = RematchSummary {
            images: scans.len() as u32,
            distinct_packages: distinct as u32,
            findings_new: reconciled.new,
            findings_resolved: reconciled.resolved,
            vulndb_version: version,
            matched_in,
            published_in: matched_in + reconciled.published,
        };
        tracing::info!(
            added = changes.added.len(),
            changed = changes.changed.len(),
            removed = changes.removed.len(),
            names = changes.touched.len(),
            images = summary.images,
            distinct = summary.distinct_packages,
            new = summary.findings_new,
            resolved = summary.findings_resolved,
            match_secs = matched_in.as_secs_f64(),
            published_secs = summary.published_in.as_secs_f64(),
            secs = started.elapsed().as_secs_f64(),
            "vulnerability data in force: {}",
            summary.vulndb_version
        );
        Ok(summary)
    }

    /// Matches every image again against the data in force (the matcher or
    /// the analysers changed), and records what changed.
    pub async fn rematch_all(&self) -> Result<RematchSummary, CoordinatorError> {
        let data = self.vulndb();
        // Everything the index holds is touched.
        let touched: BTreeSet<(Ecosystem, String)> = {
            self.fleet_ready().await?;
            let state = self.inner.fleet.read();
            state
                .interner
                .packages
                .iter()
                .flat_map(|p| {
                    std::iter::once(&p.name)
                        .chain(p.source_name.as_ref())
                        .map(|n| (p.ecosystem, p.ecosystem.normalise_name(n).into_owned()))
                })
                .collect()
        };
        let changes = ChangeSet {
            touched,
            ..ChangeSet::default()
        };
        self.apply_vulndb_arc(data, &changes).await
    }
}

/// A scan matched again.
pub(super) struct Rematched {
    pub(super) id: String,
    /// The report it was matched from.
    pub(super) old: Arc<Matched>,
    /// The new one: the same packages, findings not yet interned.
    pub(super) new: Matched,
    /// Where in `new.hits` the findings matched now are (the others were
    /// kept from `old`, already interned).
    pub(super) new_at: Vec<usize>,
    /// The vulnerability names the scan gains and loses.
    pub(super) delta: VulnDelta,
}

/// The packages of each candidate scan that `pick` chooses, matched against
/// `data` (each distinct key once, shared packages borrowed, findings not
/// materialised), merged with the scan's findings on the other packages.
/// Only scans whose findings changed are returned, with the distinct keys
/// count.
pub(super) fn rematch(
    data: &VulnData,
    candidates: Vec<(String, Arc<Matched>)>,
    pick: &(dyn Fn(&Package) -> bool + Sync),
) -> (Vec<Rematched>, usize) {
    // Per scan: the indexes of its picked packages, and those packages.
    let picked: Vec<Vec<usize>> = candidates
        .par_iter()
        .map(|(_, m)| (0..m.packages.len()).filter(|&i| pick(&m.packages[i])).collect())
        .collect();
    let images: Vec<(Option<OsRelease>, Vec<Arc<Package>>)> = candidates
        .iter()
        .zip(&picked)
        .map(|((_, m), idx)| {
            let packages = idx.iter().map(|&i| m.packages[i].clone()).collect();
            (m.os_release.clone(), packages)
        })
        .collect();
    let fm = data.matcher.match_fleet_compact(&images);
    drop(images);
    let distinct = fm.distinct_keys();
    let version = data.matcher.vulndb_version().to_owned();
    // One value per advisory hit and per fixed-versions list (each distinct
    // key's list is one slice, whichever image has the key); interned into
    // the index when put.
    let mut vulns: FxHashMap<u32, Arc<Vuln>> = FxHashMap::default();
    // (Addresses as numbers: the map is read from rayon's threads.)
    let mut fixed: FxHashMap<usize, Arc<[String]>> = FxHashMap::default();
    let none: Arc<[String]> = Arc::from(Vec::new());
    for i in 0..candidates.len() {
        for h in data.matcher.hits_of(&fm, i) {
            vulns.entry(h.advisory).or_insert_with(|| {
                Arc::new(Vuln {
                    id: h.id.to_owned(),
                    aliases: h.aliases.to_vec(),
                    severity: h.severity,
                })
            });
            if !h.fixed_versions.is_empty() {
                fixed
                    .entry(h.fixed_versions.as_ptr() as usize)
                    .or_insert_with(|| Arc::from(h.fixed_versions));
            }
        }
    }
    let fixed_of = |v: &[String]| -> Arc<[String]> {
        if v.is_empty() {
            none.clone()
        } else {
            fixed
                .get(&(v.as_ptr() as usize))
                .cloned()
                .unwrap_or_else(|| Arc::from(v))
        }
    };
    let out = candidates
        .into_par_iter()
        .zip(picked)
        .enumerate()
        .filter_map(|(i, ((id, old), idx))| {
            let mut is_picked = vec![false; old.packages.len()];
            for &k in &idx {
                is_picked[k] = true;
            }
            let on_picked = |h: &&Hit| is_picked.get(h.package).copied().unwrap_or(false);
            let mut fresh: Vec<Hit> = data
                .matcher
                .hits_of(&fm, i)
                .map(|h| Hit {
                    vuln: vulns[&h.advisory].clone(),
                    package: idx[h.package],
                    fixed_versions: fixed_of(h.fixed_versions),
                })
                .collect();
            let before: Vec<&Hit> = old.hits.iter().filter(on_picked).collect();
            if same_hits(&before, &fresh) {
                return None;
            }
            let packages = &old.packages;
            fresh.sort_by(|a, b| a.key(packages).cmp(&b.key(packages)));
            let delta = VulnDelta::of(
                before.iter().map(|h| &*h.vuln),
                fresh.iter().map(|h| &*h.vuln),
                old.hits.iter().filter(|h| !on_picked(h)).map(|h| &*h.vuln),
            );
            // The kept findings (in order) and the new ones merged, so the
            // list stays sorted; exactly sized: 10,000 scans' are held.
            let kept = old.hits.len() - before.len();
            let mut hits: Vec<Hit> = Vec::with_capacity(kept + fresh.len());
            let mut new_at = Vec::with_capacity(fresh.len());
            let mut kept_hits = old.hits.iter().filter(|h| !on_picked(h)).peekable();
            let mut fresh = fresh.into_iter().peekable();
            loop {
                let take_kept = match (kept_hits.peek(), fresh.peek()) {
                    (Some(k), Some(f)) => k.key(packages) <= f.key(packages),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                if take_kept {
                    hits.extend(kept_hits.next().cloned());
                } else {
                    new_at.push(hits.len());
                    hits.extend(fresh.next());
                }
            }
            let mut counts = SeverityCounts::default();
            for h in &hits {
                counts.add(h.vuln.severity);
            }
            let m = Matched {
                os_release: old.os_release.clone(),
                packages: old.packages.clone(),
                max_severity: hits.iter().map(|h| h.vuln.severity).max(),
                hits,
                counts,
                vulndb_version: version.clone(),
            };
            Some(Rematched {
                id,
                old,
                new: m,
                new_at,
                delta,
            })
        })
        .collect();
    (out, distinct)
}

/// Whether two lists of findings on the same packages say the same.
fn same_hits(a: &[&Hit], b: &[Hit]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    type Said<'a> = (usize, &'a Vuln, &'a [String]);
    let mut x: Vec<Said<'_>> = a
        .iter()
        .map(|h| (h.package, &*h.vuln, &h.fixed_versions[..]))
        .collect();
    let mut y: Vec<Said<'_>> = b
        .iter()
        .map(|h| (h.package, &*h.vuln, &h.fixed_versions[..]))
        .collect();
    let order = |p: &Said<'_>, q: &Said<'_>| (p.0, &p.1.id, p.2).cmp(&(q.0, &q.1.id, q.2));
    x.sort_by(order);
    y.sort_by(order);
    x == y
}

/// Puts re-matched scans in the index where the report is still the one
/// re-matched (a scan may have been finalized again meanwhile), sharing
/// their vulnerabilities through the interner. Returns the scans put.
pub(super) fn put_rematched(state: &mut State, rematched: Vec<Rematched>) -> BTreeSet<String> {
    // By the re-matched value's address; the value is kept (first of the
    // pair) so no address is reused while the map lives.
    type Both<T> = (Arc<T>, Arc<T>);
    let mut shared: FxHashMap<*const Vuln, Both<Vuln>> = FxHashMap::default();
    let mut lists: FxHashMap<*const String, Both<[String]>> = FxHashMap::default();
    let mut scans = BTreeSet::new();
    for r in rematched {
        let Rematched {
            id,
            old,
            new: mut m,
            new_at,
            delta,
        } = r;
        let current = state.scans.get(&id).and_then(|e| e.report.as_ref());
        if !current.is_some_and(|r| Arc::ptr_eq(r, &old)) {
            continue;
        }
        // Only the findings matched now: the kept ones are interned.
        for &at in &new_at {
            let h = &mut m.hits[at];
            let ptr = Arc::as_ptr(&h.vuln);
            let interned = match shared.get(&ptr) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = state.interner.vuln(Vuln::clone(&h.vuln));
                    shared.insert(ptr, (h.vuln.clone(), v.clone()));
                    v
                }
            };
            h.vuln = interned;
            let ptr = h.fixed_versions.as_ptr();
            let list = match lists.get(&ptr) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = state.interner.fixed(&h.fixed_versions);
                    lists.insert(ptr, (h.fixed_versions.clone(), v.clone()));
                    v
                }
            };
            h.fixed_versions = list;
        }
        drop(old);
        state.put_rematched_one(&id, Arc::new(m), &delta);
        scans.insert(id);
    }
    scans
}
