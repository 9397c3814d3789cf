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
//! - Histories are read from the `strata_findings` bucket once, then kept
//!   in memory; every change is written through.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_proto::{Package, Severity, v1};

use super::index::{Matched, State, Vuln};
use crate::cluster::error::{from_json, to_json};
use crate::cluster::records::image_key;
use crate::cluster::{Coordinator, CoordinatorError};
use strata_proto::text::now_unix_ms;

/// Resolved findings kept per image (the oldest go first); the event
/// stream has them all.
const MAX_RESOLVED: usize = 500;

/// One finding as a history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub vulnerability_id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub severity: Severity,
    pub package: Package,
    #[serde(default)]
    pub fixed_versions: Vec<String>,
    pub first_seen_unix_ms: i64,
}

/// A finding that is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    #[serde(flatten)]
    pub finding: Finding,
    pub resolved_unix_ms: i64,
    /// `advisory_changed`, `advisory_withdrawn`, `package_upgraded`, `image_unregistered`.
    pub reason: String,
    /// The digest the finding was in.
    pub digest: String,
}

/// One registered image's findings over time, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub reference: String,
    /// The digest the open findings are in.
    pub digest: String,
    pub max_severity: Option<Severity>,
    pub open: Vec<Finding>,
    #[serde(default)]
    pub resolved: Vec<Resolved>,
    pub updated_unix_ms: i64,
}

/// A finding's identity within one image.
type Key = (String, String);

fn key_of(vuln: &str, p: &Package) -> Key {
    (
        vuln.to_owned(),
        format!("{}\u{0}{}\u{0}{}\u{0}{}", p.ecosystem, p.name, p.version, p.path),
    )
}

/// The histories of every registered image, in memory.
#[derive(Default)]
pub struct Histories {
    loaded: bool,
    by_reference: BTreeMap<String, History>,
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

fn event(
    kind: v1::EventKind,
    reference: &str,
    digest: &str,
    f: &Finding,
    vulndb_version: &str,
) -> v1::FleetEvent {
    v1::FleetEvent {
        kind: kind.into(),
        severity: v1::Severity::from(f.severity).into(),
        image_reference: reference.to_owned(),
        image_digest: digest.to_owned(),
        vulnerability_id: f.vulnerability_id.clone(),
        aliases: f.aliases.clone(),
        package: Some(f.package.clone().into()),
        first_seen_unix_ms: f.first_seen_unix_ms,
        vulndb_version: vulndb_version.to_owned(),
        fixed_versions: f.fixed_versions.clone(),
        ..Default::default()
    }
}

/// The changes from `before` to the image's current findings: events, and
/// the history after them. `withdrawn(id)` tells whether the data in force
/// lacks an advisory.
fn diff(
    reference: &str,
    before: Option<&History>,
    digest: &str,
    matched: &Matched,
    vulndb_version: &str,
    withdrawn: &dyn Fn(&str) -> bool,
    now: i64,
) -> (Vec<v1::FleetEvent>, History) {
    let mut open: BTreeMap<Key, Finding> = before
        .map(|h| {
            h.open
                .iter()
                .map(|f| (key_of(&f.vulnerability_id, &f.package), f.clone()))
                .collect()
        })
        .unwrap_or_default();
    let old_digest = before.map_or(digest, |h| h.digest.as_str()).to_owned();
    let mut resolved = before.map(|h| h.resolved.clone()).unwrap_or_default();
    let mut now_open: BTreeMap<Key, (Arc<Vuln>, &Package, &Vec<String>)> = BTreeMap::new();
    for hit in &matched.hits {
        let Some(p) = matched.packages.get(hit.package) else {
            continue;
        };
        now_open.insert(
            key_of(&hit.vuln.id, p),
            (hit.vuln.clone(), p, &hit.fixed_versions),
        );
    }
    let mut events = Vec::new();
    let baseline = before.is_none();
    // Gone: resolved, and why.
    let gone: Vec<Key> = open
        .keys()
        .filter(|k| !now_open.contains_key(*k))
        .cloned()
        .collect();
    for k in gone {
        let Some(f) = open.remove(&k) else { continue };
        let reason = if old_digest != digest {
            v1::ResolvedReason::PackageUpgraded
        } else if withdrawn(&f.vulnerability_id) {
            v1::ResolvedReason::AdvisoryWithdrawn
        } else {
            v1::ResolvedReason::AdvisoryChanged
        };
        let mut e = event(
            v1::EventKind::FindingResolved,
            reference,
            &old_digest,
            &f,
            vulndb_version,
        );
        e.reason = reason.into();
        events.push(e);
        resolved.push(Resolved {
            finding: f,
            resolved_unix_ms: now,
            reason: reason_name(reason).to_owned(),
            digest: old_digest.clone(),
        });
    }
    // New: first seen now.
    for (k, (vuln, p, fixed)) in &now_open {
        if open.contains_key(k) {
            continue;
        }
        let f = Finding {
            vulnerability_id: vuln.id.clone(),
            aliases: vuln.aliases.clone(),
            severity: vuln.severity,
            package: Package::clone(p),
            fixed_versions: (*fixed).clone(),
            first_seen_unix_ms: now,
        };
        if !baseline {
            events.push(event(
                v1::EventKind::FindingNew,
                reference,
                digest,
                &f,
                vulndb_version,
            ));
        }
        open.insert(k.clone(), f);
    }
    let max_severity = open.values().map(|f| f.severity).max();
    let before_max = before.and_then(|h| h.max_severity);
    if let Some(max) = max_severity
        && before_max.is_none_or(|b| max > b)
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
    if resolved.len() > MAX_RESOLVED {
        resolved.drain(..resolved.len() - MAX_RESOLVED);
    }
    let history = History {
        reference: reference.to_owned(),
        digest: digest.to_owned(),
        max_severity,
        open: open.into_values().collect(),
        resolved,
        updated_unix_ms: now,
    };
    (events, history)
}

impl Coordinator {
    /// Reads every stored history, once.
    async fn fleet_histories_load(&self, h: &mut Histories) -> Result<(), CoordinatorError> {
        if h.loaded {
            return Ok(());
        }
        let kv = &self.inner.buckets.findings;
        for key in kv.keys().await? {
            if let Some(entry) = kv.get(&key).await? {
                match from_json::<History>("findings history", &entry.value) {
                    Ok(history) => {
                        h.by_reference.insert(history.reference.clone(), history);
                    }
                    Err(err) => {
                        tracing::warn!(key = %key, error = %err, "unreadable findings history skipped")
                    }
                }
            }
        }
        h.loaded = true;
        Ok(())
    }

    /// Compares each of `references`' current findings with its history,
    /// publishes the changes as events, and stores the new histories (see
    /// the module header). Returns (new, resolved) findings counted.
    pub(in crate::cluster) async fn fleet_reconcile(
        &self,
        references: BTreeSet<String>,
    ) -> Result<(u32, u32), CoordinatorError> {
        if references.is_empty() {
            return Ok((0, 0));
        }
        let mut histories = self.inner.histories.lock().await;
        self.fleet_histories_load(&mut histories).await?;
        let vulndb = self.vulndb();
        let version = vulndb.matcher.vulndb_version().to_owned();
        let withdrawn = |id: &str| !vulndb.matcher.has_advisory(id);
        let now = now_unix_ms();
        let mut events = Vec::new();
        let mut changed = Vec::new();
        {
            let state = self.inner.fleet.read();
            for reference in &references {
                let Some((digest, matched)) = current(&state, reference) else {
                    continue;
                };
                let before = histories.by_reference.get(reference);
                let (mut e, after) = diff(reference, before, &digest, &matched, &version, &withdrawn, now);
                if e.is_empty() && before.is_some_and(|b| b.digest == after.digest) {
                    continue;
                }
                events.append(&mut e);
                changed.push(after);
            }
        }
        let (new, resolved) = count(&events);
        self.publish_fleet_events(events).await?;
        for history in changed {
            self.inner
                .buckets
                .findings
                .put(&image_key(&history.reference), to_json(&history)?)
                .await?;
            histories.by_reference.insert(history.reference.clone(), history);
        }
        Ok((new, resolved))
    }

    /// Every open finding of `references` resolved: the images left the fleet.
    pub(in crate::cluster) async fn fleet_history_unregistered(
        &self,
        references: &[String],
    ) -> Result<(), CoordinatorError> {
        let mut histories = self.inner.histories.lock().await;
        self.fleet_histories_load(&mut histories).await?;
        let version = self.vulndb().matcher.vulndb_version().to_owned();
        let mut events = Vec::new();
        for reference in references {
            let Some(h) = histories.by_reference.get(reference) else {
                continue;
            };
            for f in &h.open {
                let mut e = event(v1::EventKind::FindingResolved, reference, &h.digest, f, &version);
                e.reason = v1::ResolvedReason::ImageUnregistered.into();
                events.push(e);
            }
        }
        self.publish_fleet_events(events).await?;
        for reference in references {
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
        Ok(histories.by_reference.get(reference).cloned())
    }

    /// Reconciles every registered image (at start: changes made while the
    /// coordinator was away become events now).
    pub async fn fleet_reconcile_all(&self) -> Result<(u32, u32), CoordinatorError> {
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
    pub(in crate::cluster) fn fleet_reconcile_later(&self, references: BTreeSet<String>) {
        if references.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.fleet_reconcile(references).await {
                tracing::warn!(error = %err, "recording findings changes failed; the next change retries");
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
        Interner::default().intern(Unshared {
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
        let (e1, h1) = diff("r:1", None, "sha256:1", &m1, "v1", &none, 10);
        let new = v1::EventKind::FindingNew as i32;
        assert_eq!(
            kinds(&e1),
            [(v1::EventKind::ImageSeverity as i32, String::new(), 0)]
        );
        assert_eq!(e1[0].severity, v1::Severity::High as i32);
        assert_eq!(h1.max_severity, Some(Severity::High));
        assert_eq!(h1.open.len(), 2);
        assert!(h1.open.iter().all(|f| f.first_seen_unix_ms == 10));
        // The same findings again: nothing.
        let (e, h) = diff("r:1", Some(&h1), "sha256:1", &m1, "v1", &none, 20);
        assert!(e.is_empty());
        assert_eq!(h.open[0].first_seen_unix_ms, 10);
        // B's advisory changed (no longer covers it), C is new and CRITICAL.
        let m2 = matched(
            vec![
                finding("A", Severity::Medium, &a),
                finding("C", Severity::Critical, &a),
            ],
            vec![a.clone(), b.clone()],
        );
        let (e2, h2) = diff("r:1", Some(&h1), "sha256:1", &m2, "v2", &none, 30);
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
        assert_eq!(h2.resolved[0].reason, "advisory_changed");
        // C withdrawn from the data.
        let m3 = matched(vec![finding("A", Severity::Medium, &a)], vec![a.clone()]);
        let withdrawn = |id: &str| id == "C";
        let (e3, _) = diff("r:1", Some(&h2), "sha256:1", &m3, "v3", &withdrawn, 40);
        assert_eq!(
            kinds(&e3),
            [(resolved, "C".into(), v1::ResolvedReason::AdvisoryWithdrawn as i32)]
        );
        // The tag moved to a digest without A: upgraded, in the old digest.
        let m4 = matched(Vec::new(), vec![pkg("requests", "2.31.0")]);
        let (e4, h4) = diff("r:1", Some(&h2), "sha256:2", &m4, "v3", &none, 50);
        assert!(
            e4.iter()
                .all(|e| e.reason == v1::ResolvedReason::PackageUpgraded as i32)
        );
        assert!(e4.iter().all(|e| e.image_digest == "sha256:1"));
        assert_eq!(h4.digest, "sha256:2");
        assert!(h4.open.is_empty() && h4.max_severity.is_none());
    }
}
