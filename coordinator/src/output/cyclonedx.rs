//! CycloneDX 1.5 JSON through the `cyclonedx-bom` crate (0.8 writes up to
//! 1.5): an SBOM (image as `metadata.component`, the OS as an
//! `operating-system` component, one `library` component per package), and a
//! report (the same, plus the `vulnerabilities` section).
//!
//! Strata's own facts that CycloneDX has no field for travel as component
//! properties named `strata:*` (ecosystem, path, layer, source package, arch)
//! so that [`super::sbom_in`] reads back exactly what was written.
//!
//! Contract: every `affects[].ref` names a component `bom-ref` in the same
//! document; a finding whose package is not in the report's package list
//! gets a component of its own. One vulnerability entry per vulnerability id,
//! affecting every package it was found in.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use cyclonedx_bom::models::component::Classification;
use cyclonedx_bom::models::property::{Properties, Property};
use cyclonedx_bom::models::tool::Tools;
use cyclonedx_bom::models::vulnerability::{Vulnerabilities, Vulnerability};
use cyclonedx_bom::models::vulnerability_rating::{
    Score, ScoreMethod, Severity as CdxSeverity, VulnerabilityRating, VulnerabilityRatings,
};
use cyclonedx_bom::models::vulnerability_reference::{VulnerabilityReference, VulnerabilityReferences};
use cyclonedx_bom::models::vulnerability_source::VulnerabilitySource;
use cyclonedx_bom::models::vulnerability_target::{
    Version, Versions, VulnerabilityTarget, VulnerabilityTargets,
};
use cyclonedx_bom::prelude::*;
use strata_proto::domain::{Finding, OsRelease, Package, Report};

use super::{ImageSbom, OutputError, rfc3339, sorted_packages, stable_uuid};

const FORMAT: &str = "cyclonedx";

/// Property names, shared with the reader.
pub const PROP_ECOSYSTEM: &str = "strata:ecosystem";
pub const PROP_PATH: &str = "strata:path";
pub const PROP_LAYER: &str = "strata:layer";
pub const PROP_SOURCE_NAME: &str = "strata:source-name";
pub const PROP_SOURCE_VERSION: &str = "strata:source-version";
pub const PROP_ARCH: &str = "strata:arch";
/// How the package was found, where it is not `installed` (`lockfile`,
/// `app`, `file-name`).
pub const PROP_EVIDENCE: &str = "strata:evidence";
pub const PROP_OS_CODENAME: &str = "strata:os:version-codename";
pub const PROP_OS_ID_LIKE: &str = "strata:os:id-like";
pub const PROP_OS_PATH: &str = "strata:os:path";

fn prop(name: &str, value: &str) -> Property {
    Property::new(name, value)
}

fn package_component(p: &Package, bom_ref: String) -> Component {
    let mut c = Component::new(Classification::Library, &p.name, &p.version, Some(bom_ref));
    if !p.purl.is_empty() {
        c.purl = p.purl.parse::<Purl>().ok();
    }
    let mut props = vec![prop(PROP_ECOSYSTEM, p.ecosystem.as_str())];
    if !p.path.is_empty() {
        props.push(prop(PROP_PATH, &p.path));
    }
    if let Some(l) = &p.layer {
        props.push(prop(PROP_LAYER, l.as_str()));
    }
    if let Some(s) = &p.source_name {
        props.push(prop(PROP_SOURCE_NAME, s));
    }
    if let Some(s) = &p.source_version {
        props.push(prop(PROP_SOURCE_VERSION, s));
    }
    if let Some(a) = &p.arch {
        props.push(prop(PROP_ARCH, a));
    }
    if let Some((evidence, _)) = super::evidence_note(p.evidence) {
        props.push(prop(PROP_EVIDENCE, evidence));
    }
    c.properties = Some(Properties(props));
    c
}

fn os_component(os: &OsRelease) -> Component {
    let bom_ref = format!("os:{}@{}", os.id, os.version_id);
    let mut c = Component::new(
        Classification::OperatingSystem,
        &os.id,
        &os.version_id,
        Some(bom_ref),
    );
    if !os.pretty_name.is_empty() {
        c.description = Some(NormalizedString::new(&os.pretty_name));
    }
    let mut props = Vec::new();
    if !os.version_codename.is_empty() {
        props.push(prop(PROP_OS_CODENAME, &os.version_codename));
    }
    if !os.id_like.is_empty() {
        props.push(prop(PROP_OS_ID_LIKE, &os.id_like.join(" ")));
    }
    if !os.path.is_empty() {
        props.push(prop(PROP_OS_PATH, &os.path));
    }
    if !props.is_empty() {
        c.properties = Some(Properties(props));
    }
    c
}

/// The components for `packages` (sorted) and each package's bom-ref. The
/// bom-ref is the purl when it is unique in the document, else the purl with
/// `#<n>` (the same library vendored twice has one purl and two paths).
fn components(packages: &[Package]) -> (Vec<Component>, HashMap<&Package, String>) {
    let mut refs: HashMap<&Package, String> = HashMap::new();
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for p in sorted_packages(packages) {
        if refs.contains_key(p) {
            continue; // an exact duplicate: one component is enough
        }
        let base = if p.purl.is_empty() {
            format!("{}:{}@{}", p.ecosystem, p.name, p.version)
        } else {
            p.purl.clone()
        };
        let n = used.entry(base.clone()).or_insert(0);
        *n += 1;
        let bom_ref = if *n == 1 { base } else { format!("{base}#{n}") };
        out.push(package_component(p, bom_ref.clone()));
        refs.insert(p, bom_ref);
    }
    (out, refs)
}

fn base_bom(sbom: &ImageSbom, kind: &str) -> Bom {
    let digest = sbom.image_digest.as_ref().map(|d| d.as_str()).unwrap_or_default();
    let created = sbom.created_unix_ms.to_string();
    let serial = UrnUuid::new(format!(
        "urn:uuid:{}",
        stable_uuid(&[kind, &sbom.image_name, digest, &created])
    ))
    .ok();
    let mut image = Component::new(
        Classification::Container,
        &sbom.image_name,
        digest,
        Some("image".into()),
    );
    if digest.is_empty() {
        image.version = None;
    }
    let tool = Component::new(Classification::Application, "strata", crate::VERSION, None);
    let metadata = Metadata {
        timestamp: DateTime::try_from(rfc3339(sbom.created_unix_ms)).ok(),
        tools: Some(Tools::Object {
            services: None,
            components: Some(Components(vec![tool])),
        }),
        component: Some(image),
        ..Default::default()
    };
    Bom {
        version: 1,
        serial_number: serial,
        metadata: Some(metadata),
        spec_version: SpecVersion::V1_5,
        ..Bom::default()
    }
}

fn write_bom(w: &mut dyn Write, bom: Bom) -> Result<(), OutputError> {
    bom.output_as_json_v1_5(&mut &mut *w)
        .map_err(|e| OutputError::CycloneDx(e.to_string()))?;
    writeln!(w).map_err(OutputError::io(FORMAT))
}

fn build_sbom(sbom: &ImageSbom, kind: &str) -> (Bom, Vec<Component>) {
    let bom = base_bom(sbom, kind);
    let mut comps = Vec::new();
    if let Some(os) = &sbom.os_release {
        comps.push(os_component(os));
    }
    (bom, comps)
}

/// Writes `sbom` as a CycloneDX 1.5 JSON document.
pub fn write_sbom(w: &mut dyn Write, sbom: &ImageSbom) -> Result<(), OutputError> {
    write_bom(w, sbom_bom(sbom))
}

fn sbom_bom(sbom: &ImageSbom) -> Bom {
    let (mut bom, mut comps) = build_sbom(sbom, "sbom");
    comps.extend(components(&sbom.packages).0);
    bom.components = Some(Components(comps));
    bom
}

/// The CVSS version named by a finding's score source; `None` when it is not
/// CVSS (CycloneDX 1.5's `other` is not modelled by the crate).
fn score_method(source: &str) -> Option<ScoreMethod> {
    let s = source.to_ascii_uppercase().replace(['_', ' ', '.', ':'], "");
    if !s.contains("CVSS") {
        None
    } else if s.contains("V4") || s.contains("CVSS4") {
        Some(ScoreMethod::CVSSv4)
    } else if s.contains("V31") || s.contains("CVSS31") {
        Some(ScoreMethod::CVSSv31)
    } else if s.contains("V3") || s.contains("CVSS3") {
        Some(ScoreMethod::CVSSv3)
    } else if s.contains("V2") || s.contains("CVSS2") {
        Some(ScoreMethod::CVSSv2)
    } else {
        None
    }
}

fn osv_source() -> VulnerabilitySource {
    VulnerabilitySource::new(Some("OSV".into()), None)
}

fn vulnerability(id: &str, findings: &[&Finding], refs: &HashMap<&Package, String>) -> Vulnerability {
    let mut v = Vulnerability::new(Some(format!("vuln:{id}")));
    v.id = Some(NormalizedString::new(id));
    v.vulnerability_source = Some(VulnerabilitySource::new(
        Some("OSV".into()),
        Some(Uri::new(&format!("https://osv.dev/vulnerability/{id}"))),
    ));
    let first = findings.first();
    let mut aliases: Vec<&str> = findings
        .iter()
        .flat_map(|f| f.aliases.iter().map(String::as_str))
        .filter(|a| *a != id)
        .collect();
    aliases.sort_unstable();
    aliases.dedup();
    if !aliases.is_empty() {
        v.vulnerability_references = Some(VulnerabilityReferences(
            aliases
                .iter()
                .map(|a| VulnerabilityReference::new(a, osv_source()))
                .collect(),
        ));
    }
    // The highest-rated finding speaks for the vulnerability.
    if let Some(top) = findings.iter().max_by(|a, b| {
        (a.severity, a.score.unwrap_or(0.0))
            .partial_cmp(&(b.severity, b.score.unwrap_or(0.0)))
            .unwrap_or(std::cmp::Ordering::Equal)
    }) {
        let mut r = VulnerabilityRating::new(
            top.score.and_then(|s| Score::from_f32(s as f32)),
            Some(CdxSeverity::new_unchecked(top.severity.as_str())),
            top.score.and_then(|_| score_method(&top.score_source)),
        );
        r.vulnerability_source = Some(osv_source());
        v.vulnerability_ratings = Some(VulnerabilityRatings(vec![r]));
    }
    if let Some(f) = first
        && !f.summary.is_empty()
    {
        v.description = Some(f.summary.clone());
    }
    let mut fixes: Vec<String> = findings
        .iter()
        .filter(|f| !f.fixed_versions.is_empty())
        .map(|f| format!("Upgrade {} to {}", f.package.name, f.fixed_versions.join(" or ")))
        .collect();
    fixes.sort();
    fixes.dedup();
    if !fixes.is_empty() {
        v.recommendation = Some(fixes.join("; "));
    }
    let mut targets: Vec<VulnerabilityTarget> = Vec::new();
    for f in findings {
        let Some(bom_ref) = refs.get(&f.package) else {
            continue;
        };
        let mut t = VulnerabilityTarget::new(bom_ref.clone());
        let mut versions = vec![Version::new(&f.installed_version, "affected")];
        versions.extend(f.fixed_versions.iter().map(|fx| Version::new(fx, "unaffected")));
        t.versions = Some(Versions(versions));
        targets.push(t);
    }
    v.vulnerability_targets = Some(VulnerabilityTargets(targets));
    if let Some(f) = first {
        v.properties = Some(Properties(vec![prop("strata:vulndb-version", &f.vulndb_version)]));
    }
    v
}

/// Writes `report` as a CycloneDX 1.5 JSON document with a `vulnerabilities`
/// section (ordered by vulnerability id).
pub fn write_report(w: &mut dyn Write, report: &Report) -> Result<(), OutputError> {
    write_bom(w, report_bom(report))
}

fn report_bom(report: &Report) -> Bom {
    let sbom = ImageSbom::from_report(report);
    // Packages of findings that the package list lacks still need a component.
    let mut all = report.packages.clone();
    for f in &report.findings {
        if !all.contains(&f.package) {
            all.push(f.package.clone());
        }
    }
    let (mut bom, mut comps) = build_sbom(&sbom, "report");
    let (pkg_comps, refs) = components(&all);
    comps.extend(pkg_comps);
    bom.components = Some(Components(comps));

    let mut by_id: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &report.findings {
        by_id.entry(f.vulnerability_id.as_str()).or_default().push(f);
    }
    let vulns = by_id
        .iter()
        .map(|(id, fs)| vulnerability(id, fs, &refs))
        .collect();
    bom.vulnerabilities = Some(Vulnerabilities(vulns));
    bom
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fixtures, golden};
    use std::collections::HashSet;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sbom_golden_and_valid_1_5() {
        let sbom = fixtures::sbom();
        assert!(sbom_bom(&sbom).validate_version(SpecVersion::V1_5).passed());
        let t = text(|o| write_sbom(o, &sbom).unwrap());
        golden::check("sbom.cdx.json", &t);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["bomFormat"], "CycloneDX");
        assert_eq!(v["specVersion"], "1.5");
        assert_eq!(v["metadata"]["component"]["type"], "container");
        let comps = v["components"].as_array().unwrap();
        assert_eq!(comps.len(), 5); // 4 packages and the OS
        assert_eq!(comps[0]["type"], "operating-system");
        // The same input gives the same serial number: no randomness.
        assert_eq!(t, text(|o| write_sbom(o, &sbom).unwrap()));
    }

    #[test]
    fn report_golden_valid_and_refs_resolve() {
        let report = fixtures::report();
        let bom = report_bom(&report);
        let res = bom.validate_version(SpecVersion::V1_5);
        assert!(res.passed(), "{res:?}");
        let t = text(|o| write_report(o, &report).unwrap());
        golden::check("report.cdx.json", &t);

        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        let refs: HashSet<&str> = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["bom-ref"].as_str().unwrap())
            .collect();
        let vulns = v["vulnerabilities"].as_array().unwrap();
        let mut seen = 0;
        for vuln in vulns {
            for a in vuln["affects"].as_array().unwrap() {
                assert!(refs.contains(a["ref"].as_str().unwrap()), "dangling ref {a}");
                seen += 1;
            }
        }
        // Every finding is one `affects` entry.
        assert_eq!(seen, report.findings.len());
        assert_eq!(vulns.len(), 6);
        let ghsa = vulns.iter().find(|x| x["id"] == "GHSA-j8r2-6x86-q33q").unwrap();
        assert_eq!(ghsa["ratings"][0]["severity"], "medium");
        assert_eq!(ghsa["ratings"][0]["method"], "CVSSv3");
        assert_eq!(ghsa["references"].as_array().unwrap().len(), 2);
        let versions = ghsa["affects"][0]["versions"].as_array().unwrap();
        assert!(
            versions
                .iter()
                .any(|x| x["version"] == "2.31.0" && x["status"] == "unaffected")
        );
    }

    #[test]
    fn finding_outside_package_list_still_resolves() {
        let mut report = fixtures::report();
        report.packages.clear();
        report.findings[0].package.path = "/elsewhere".into();
        let t = text(|o| write_report(o, &report).unwrap());
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        let refs: HashSet<&str> = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["bom-ref"].as_str().unwrap())
            .collect();
        for vuln in v["vulnerabilities"].as_array().unwrap() {
            for a in vuln["affects"].as_array().unwrap() {
                assert!(refs.contains(a["ref"].as_str().unwrap()));
            }
        }
    }

    #[test]
    fn duplicate_purls_get_distinct_refs() {
        let mut p = fixtures::packages();
        let mut dup = p[3].clone();
        dup.path = "/other/node_modules/@babel/traverse/package.json".into();
        p.push(dup);
        let (comps, refs) = components(&p);
        assert_eq!(comps.len(), 5);
        let distinct: HashSet<&String> = refs.values().collect();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn score_methods() {
        assert_eq!(score_method("CVSS_V3"), Some(ScoreMethod::CVSSv3));
        assert_eq!(score_method("CVSS:3.1"), Some(ScoreMethod::CVSSv31));
        assert_eq!(score_method("CVSS_V4"), Some(ScoreMethod::CVSSv4));
        assert_eq!(score_method("debian"), None);
    }
}
