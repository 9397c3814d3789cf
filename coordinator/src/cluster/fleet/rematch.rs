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

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use strata_proto::{Ecosystem, OsRelease, Package, SeverityCounts};

use super::index::{Hit, Matched, Vuln, package_key};
use crate::cluster::{Coordinator, CoordinatorError, VulnData};
use crate::vulndb::ChangeSet;

/// What putting new data in force changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RematchSummary {
    /// Images (scans) whose findings were matched again.
    pub images: u32,
    /// Distinct (ecosystem, release, name, version) matched.
    pub distinct_packages: u32,
    pub findings_new: u32,
    pub findings_resolved: u32,
    pub vulndb_version: String,
}

/// Whether `p` is one of the packages `touched` names.
fn touched_by(p: &Package, touched: &HashSet<(Ecosystem, String)>) -> bool {
    let names = std::iter::once(&p.name).chain(p.source_name.as_ref());
    names
        .into_iter()
        .any(|n| touched.contains(&(p.ecosystem, p.ecosystem.normalise_name(n).into_owned())))
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
            let touched: HashSet<(Ecosystem, String)> = changes.touched.iter().cloned().collect();
            // Candidate scans from the package-name index, then the touched
            // packages of each.
            let candidates: Vec<(String, Arc<Matched>)> = {
                let state = self.inner.fleet.read();
                let mut ids: BTreeSet<&String> = BTreeSet::new();
                for (_, name) in &touched {
                    if let Some(set) = state.by_package.get(&package_key(name)) {
                        ids.extend(set);
                    }
                }
                ids.into_iter()
                    .filter_map(|id| {
                        let m = state.scans.get(id)?.report.clone()?;
                        m.packages
                            .iter()
                            .any(|p| touched_by(p, &touched))
                            .then(|| (id.clone(), m))
                    })
                    .collect()
            };
            let matcher_data = new.clone();
            let touched_for_task = touched.clone();
            let (rematched, distinct) =
                tokio::task::spawn_blocking(move || rematch(&matcher_data, candidates, &touched_for_task))
                    .await
                    .map_err(|e| CoordinatorError::Internal(format!("re-matching task: {e}")))?;
            // Swap the data and the findings together.
            let mut state = self.inner.fleet.write();
            self.set_vulndb_arc(new.clone());
            let mut scans = BTreeSet::new();
            for (id, old, mut m) in rematched {
                let Some(entry) = state.scans.get(&id) else {
                    continue;
                };
                // Only where the report is still the one re-matched.
                if !entry.report.as_ref().is_some_and(|r| Arc::ptr_eq(r, &old)) {
                    continue;
                }
                // One shared value per vulnerability across the fleet.
                for h in &mut m.hits {
                    h.vuln = state.interner.vuln(Vuln::clone(&h.vuln));
                }
                state.put_matched(&id, Arc::new(m));
                scans.insert(id);
            }
            // Every other report is current under the new data as it is.
            for entry in state.scans.values_mut() {
                if let Some(m) = entry.report.as_mut()
                    && m.vulndb_version != version
                {
                    Arc::make_mut(m).vulndb_version = version.clone();
                }
            }
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
        let (findings_new, findings_resolved) = self.fleet_reconcile(references).await?;
        let summary = RematchSummary {
            images: scans.len() as u32,
            distinct_packages: distinct as u32,
            findings_new,
            findings_resolved,
            vulndb_version: version,
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
                .scans
                .values()
                .filter_map(|e| e.report.as_ref())
                .flat_map(|m| m.packages.iter())
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

/// The touched packages of each candidate scan matched against `data`
/// (each distinct key once), merged with the scan's other findings: (scan
/// id, the report matched, the new findings), and the distinct keys count.
fn rematch(
    data: &VulnData,
    candidates: Vec<(String, Arc<Matched>)>,
    touched: &HashSet<(Ecosystem, String)>,
) -> (Vec<(String, Arc<Matched>, Matched)>, usize) {
    // Per scan: the indexes of its touched packages, and owned copies of
    // them for the matcher.
    let picked: Vec<Vec<usize>> = candidates
        .iter()
        .map(|(_, m)| {
            (0..m.packages.len())
                .filter(|&i| touched_by(&m.packages[i], touched))
                .collect()
        })
        .collect();
    let images: Vec<(Option<OsRelease>, Vec<Package>)> = candidates
        .iter()
        .zip(&picked)
        .map(|((_, m), idx)| {
            let packages = idx.iter().map(|&i| Package::clone(&m.packages[i])).collect();
            (m.os_release.clone(), packages)
        })
        .collect();
    let fm = data.matcher.match_fleet_compact(&images);
    let distinct = fm.distinct_keys();
    let version = data.matcher.vulndb_version().to_owned();
    let out = candidates
        .into_iter()
        .zip(picked)
        .enumerate()
        .map(|(i, ((id, old), idx))| {
            let findings = data.matcher.findings_of(&fm, i, &images[i].1);
            let mut hits: Vec<Hit> = old
                .hits
                .iter()
                .filter(|h| !idx.contains(&h.package))
                .cloned()
                .collect();
            for f in findings {
                // The finding's package is the `n`th picked one: its index in the scan.
                let Some(n) = images[i].1.iter().position(|p| *p == f.package) else {
                    continue;
                };
                hits.push(Hit {
                    vuln: Arc::new(Vuln {
                        id: f.vulnerability_id,
                        aliases: f.aliases,
                        severity: f.severity,
                    }),
                    package: idx[n],
                    fixed_versions: f.fixed_versions,
                });
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
            (id, old, m)
        })
        .collect();
    (out, distinct)
}
