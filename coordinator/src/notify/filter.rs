//! Which events a reader wants ([`EventFilter`]: a lowest severity, kinds,
//! repository globs), and the JSON form of an event that `strata fleet
//! watch -f json` prints and webhooks POST ([`event_json`]).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use strata_proto::{Severity, v1};

/// Bound on one repository glob (a repository name is at most a few
/// hundred characters).
pub const MAX_GLOB_LEN: usize = 512;
/// Bound on globs in one filter.
pub const MAX_GLOBS: usize = 64;

/// Which events to keep. The default keeps every event.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    min_severity: Option<Severity>,
    /// Empty: every kind.
    kinds: Vec<v1::EventKind>,
    /// `None`: every repository.
    repositories: Option<GlobSet>,
}

impl EventFilter {
    /// `globs` are over the repository part of an event's image reference
    /// (`ghcr.io/acme/api` of `ghcr.io/acme/api:1.2`): `*` stays within one
    /// path segment, `**` crosses them; any one matching keeps the event.
    pub fn new(
        min_severity: Option<Severity>,
        kinds: Vec<v1::EventKind>,
        globs: &[String],
    ) -> Result<EventFilter, String> {
        if kinds.contains(&v1::EventKind::Unspecified) {
            return Err("kinds: EVENT_KIND_UNSPECIFIED is not a kind".to_owned());
        }
        let globs: Vec<&str> = globs.iter().map(|g| g.trim()).filter(|g| !g.is_empty()).collect();
        if globs.len() > MAX_GLOBS {
            return Err(format!("{} repository globs: at most {MAX_GLOBS}", globs.len()));
        }
        let repositories = if globs.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for glob in globs {
                if glob.len() > MAX_GLOB_LEN {
                    return Err(format!("repository glob: over {MAX_GLOB_LEN} characters"));
                }
                let compiled = GlobBuilder::new(glob)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("repository glob {glob:?}: {e}"))?;
                set.add(compiled);
            }
            Some(set.build().map_err(|e| format!("repository globs: {e}"))?)
        };
        Ok(EventFilter {
            min_severity: min_severity.filter(|s| *s > Severity::Unknown),
            kinds,
            repositories,
        })
    }

    pub fn matches(&self, e: &v1::FleetEvent) -> bool {
        if let Some(min) = self.min_severity
            && severity_of(e.severity) < min
        {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| i32::from(*k) == e.kind) {
            return false;
        }
        match &self.repositories {
            Some(set) => set.is_match(repository_of(&e.image_reference)),
            None => true,
        }
    }
}

fn severity_of(value: i32) -> Severity {
    v1::Severity::try_from(value)
        .unwrap_or(v1::Severity::Unspecified)
        .into()
}

/// The repository part of an image reference: without `@digest` and
/// without `:tag` (a `:` before the last `/` is a registry's port).
pub fn repository_of(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(name, _)| name);
    match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    }
}

/// `finding_new`, `finding_resolved`, `image_severity` (`unspecified` else):
/// the kind in subjects, JSON and the command line.
pub fn kind_name(kind: i32) -> &'static str {
    match v1::EventKind::try_from(kind) {
        Ok(v1::EventKind::FindingNew) => "finding_new",
        Ok(v1::EventKind::FindingResolved) => "finding_resolved",
        Ok(v1::EventKind::ImageSeverity) => "image_severity",
        _ => "unspecified",
    }
}

/// The kind [`kind_name`] names (also with `-` for `_`, any case).
pub fn parse_kind(name: &str) -> Option<v1::EventKind> {
    match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "finding_new" => Some(v1::EventKind::FindingNew),
        "finding_resolved" => Some(v1::EventKind::FindingResolved),
        "image_severity" => Some(v1::EventKind::ImageSeverity),
        _ => None,
    }
}

/// Why a finding was resolved, lowercase (empty when not set).
pub fn reason_name(reason: i32) -> &'static str {
    match v1::ResolvedReason::try_from(reason) {
        Ok(v1::ResolvedReason::AdvisoryChanged) => "advisory_changed",
        Ok(v1::ResolvedReason::AdvisoryWithdrawn) => "advisory_withdrawn",
        Ok(v1::ResolvedReason::PackageUpgraded) => "package_upgraded",
        Ok(v1::ResolvedReason::ImageUnregistered) => "image_unregistered",
        _ => "",
    }
}

/// The event as one JSON object: its `sequence` and `event_id` (either
/// identifies it, for a receiver that drops what it already has), kind,
/// severity and reason as lowercase words.
pub fn event_json(e: &v1::FleetEvent) -> serde_json::Value {
    let package = e.package.as_ref().map(|p| {
        serde_json::json!({
            "ecosystem": p.ecosystem,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "path": p.path,
            "layer_digest": p.layer_digest,
        })
    });
    serde_json::json!({
        "sequence": e.sequence,
        "event_id": super::event_id(e),
        "at_unix_ms": e.at_unix_ms,
        "kind": kind_name(e.kind),
        "severity": severity_of(e.severity).as_str(),
        "image_reference": e.image_reference,
        "repository": repository_of(&e.image_reference),
        "image_digest": e.image_digest,
        "vulnerability_id": e.vulnerability_id,
        "aliases": e.aliases,
        "package": package,
        "reason": reason_name(e.reason),
        "first_seen_unix_ms": e.first_seen_unix_ms,
        "vulndb_version": e.vulndb_version,
        "fixed_versions": e.fixed_versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: v1::EventKind, severity: v1::Severity, reference: &str) -> v1::FleetEvent {
        v1::FleetEvent {
            kind: kind.into(),
            severity: severity.into(),
            image_reference: reference.into(),
            ..Default::default()
        }
    }

    #[test]
    fn repositories_of_references() {
        for (reference, repository) in [
            ("ghcr.io/acme/api:1.2", "ghcr.io/acme/api"),
            ("localhost:5000/app:1", "localhost:5000/app"),
            ("localhost:5000/app", "localhost:5000/app"),
            ("r/a@sha256:abcd", "r/a"),
            ("r/a:1@sha256:abcd", "r/a"),
            ("debian", "debian"),
        ] {
            assert_eq!(repository_of(reference), repository, "{reference}");
        }
    }

    #[test]
    fn filters_by_severity_kind_and_repository() {
        let high = event(
            v1::EventKind::FindingNew,
            v1::Severity::High,
            "ghcr.io/acme/api:1",
        );
        let low = event(
            v1::EventKind::FindingResolved,
            v1::Severity::Low,
            "ghcr.io/other/db:2",
        );
        let deep = event(
            v1::EventKind::FindingNew,
            v1::Severity::Critical,
            "ghcr.io/acme/team/x:1",
        );
        let all = EventFilter::default();
        assert!(all.matches(&high) && all.matches(&low) && all.matches(&deep));

        let f = EventFilter::new(Some(Severity::Medium), vec![], &[]).unwrap();
        assert!(f.matches(&high) && !f.matches(&low));
        let f = EventFilter::new(None, vec![v1::EventKind::FindingResolved], &[]).unwrap();
        assert!(!f.matches(&high) && f.matches(&low));
        let f = EventFilter::new(None, vec![], &["ghcr.io/acme/*".into()]).unwrap();
        assert!(f.matches(&high) && !f.matches(&low) && !f.matches(&deep));
        let f = EventFilter::new(None, vec![], &["ghcr.io/acme/**".into()]).unwrap();
        assert!(f.matches(&high) && f.matches(&deep));
        // Unknown as the lowest severity keeps everything.
        let f = EventFilter::new(Some(Severity::Unknown), vec![], &[]).unwrap();
        assert!(f.matches(&low));

        assert!(EventFilter::new(None, vec![], &["a/[".into()]).is_err());
        assert!(EventFilter::new(None, vec![v1::EventKind::Unspecified], &[]).is_err());
    }

    #[test]
    fn kinds_round_trip_and_json_has_the_sequence() {
        for kind in [
            v1::EventKind::FindingNew,
            v1::EventKind::FindingResolved,
            v1::EventKind::ImageSeverity,
        ] {
            assert_eq!(parse_kind(kind_name(kind.into())), Some(kind));
        }
        assert_eq!(parse_kind("Finding-New"), Some(v1::EventKind::FindingNew));
        assert_eq!(parse_kind("bogus"), None);
        let mut e = event(v1::EventKind::FindingResolved, v1::Severity::High, "r/a:1");
        e.sequence = 7;
        e.reason = v1::ResolvedReason::PackageUpgraded.into();
        let json = event_json(&e);
        assert_eq!(json["sequence"], 7);
        assert_eq!(json["kind"], "finding_resolved");
        assert_eq!(json["severity"], "high");
        assert_eq!(json["reason"], "package_upgraded");
        assert_eq!(json["repository"], "r/a");
        assert_eq!(json["event_id"], crate::notify::event_id(&e));
    }
}
