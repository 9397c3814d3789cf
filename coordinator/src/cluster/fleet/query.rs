//! What `ListImages`, `ListAffected` and `Summary` ask, validated (a
//! package query's version range compiled once per scheme it may meet),
//! and the answers, served from the index a page at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use strata_proto::{Ecosystem, Package, Severity, SeverityCounts, v1};

use super::index::{Matched, package_key};
use super::page::{PageToken, page, page_size};
use super::{DEFAULT_TOP_N, MAX_QUERY_LEN, MAX_TOP_N, normalise_repository};
use crate::cluster::records::ScanStatus;
use crate::cluster::{Coordinator, CoordinatorError};
use crate::versions::constraint::Conjunction;
use crate::versions::{self, Scheme, Version};
use strata_proto::text::cut;

/// A version range as `ListAffected` takes it: the shape is
/// [`Conjunction::parse`]'s, the error the one clients have always seen.
fn parse_version_range(range: &str) -> Result<Conjunction<String>, CoordinatorError> {
    Conjunction::parse(range).map_err(|why| {
        CoordinatorError::InvalidArgument(format!(
            "version_range {:?}: {why} (expected comparisons joined by commas, e.g. \">=1.2.0, <1.4.1\")",
            cut(range, 200)
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

impl Coordinator {
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
            .flat_map(|set| set.iter())
            .filter_map(|no| state.scan_id(no))
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
}
