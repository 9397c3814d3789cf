//! SARIF 2.1.0 for a scan report, in the shape GitHub code scanning accepts:
//! one rule per vulnerability id (with `security-severity` from the score, or
//! from the severity when there is none), one result per finding with a
//! level, a message, one physical location and partial fingerprints.
//!
//! Hand-written serde structs: the few fields we fill are a page of code,
//! where the generated `serde-sarif` types bring a builder crate and the
//! whole schema for no gain.
//!
//! The location is the package's database or manifest path in the image,
//! without the leading slash (GitHub wants a relative URI and rejects a
//! result without a location); a package with no known path points at the
//! image reference instead, with `:` replaced by `-` so it stays a relative URI.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};
use strata_proto::domain::{Finding, Report, Severity};

use super::{OutputError, relative_path, short_digest, stable_hash};

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";
pub const FINGERPRINT_KEY: &str = "strataFinding/v1";

#[derive(Serialize)]
struct Log {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<Run>,
}

#[derive(Serialize)]
struct Run {
    tool: Tool,
    results: Vec<SarifResult>,
}

#[derive(Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Driver {
    name: &'static str,
    version: &'static str,
    information_uri: &'static str,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    id: String,
    name: String,
    short_description: Text,
    full_description: Text,
    help_uri: String,
    help: Help,
    default_configuration: Configuration,
    properties: Map<String, Value>,
}

#[derive(Serialize)]
struct Text {
    text: String,
}

#[derive(Serialize)]
struct Help {
    text: String,
    markdown: String,
}

#[derive(Serialize)]
struct Configuration {
    level: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: String,
    rule_index: usize,
    level: &'static str,
    message: Text,
    locations: Vec<Location>,
    partial_fingerprints: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    physical_location: PhysicalLocation,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    region: Region,
}

#[derive(Serialize)]
struct ArtifactLocation {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: u32,
}

/// SARIF level for a severity: GitHub shows `error` as high, `warning` as
/// medium, `note` as low.
pub fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Unknown => "note",
    }
}

/// The `security-severity` GitHub reads (0.1–10): the CVSS score when known,
/// else a value inside the severity's band; `None` for unknown severity.
pub fn security_severity(score: Option<f64>, s: Severity) -> Option<String> {
    let v = match score.filter(|v| v.is_finite() && *v > 0.0 && *v <= 10.0) {
        Some(v) => v,
        None => match s {
            Severity::Critical => 9.5,
            Severity::High => 8.0,
            Severity::Medium => 5.5,
            Severity::Low => 2.0,
            Severity::Unknown => return None,
        },
    };
    Some(format!("{v:.1}"))
}

fn rule(id: &str, findings: &[&Finding]) -> Rule {
    let top = findings
        .iter()
        .max_by(|a, b| {
            (a.severity, a.score.unwrap_or(0.0))
                .partial_cmp(&(b.severity, b.score.unwrap_or(0.0)))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .copied();
    let severity = top.map(|f| f.severity).unwrap_or_default();
    let summary = findings
        .iter()
        .map(|f| f.summary.as_str())
        .find(|s| !s.is_empty())
        .unwrap_or(id);
    let mut aliases: Vec<&str> = findings
        .iter()
        .flat_map(|f| f.aliases.iter().map(String::as_str))
        .collect();
    aliases.sort_unstable();
    aliases.dedup();
    let full = if aliases.is_empty() {
        summary.to_owned()
    } else {
        format!("{summary} (aliases: {})", aliases.join(", "))
    };
    let help_uri = format!("https://osv.dev/vulnerability/{id}");
    let mut properties = Map::new();
    properties.insert(
        "tags".into(),
        Value::from(vec!["security", "vulnerability", severity.as_str()]),
    );
    if let Some(ss) = security_severity(top.and_then(|f| f.score), severity) {
        properties.insert("security-severity".into(), Value::from(ss));
    }
    Rule {
        id: id.to_owned(),
        name: id.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
        short_description: Text {
            text: format!("{id}: {}", summary.chars().take(200).collect::<String>()),
        },
        full_description: Text { text: full.clone() },
        help: Help {
            text: format!("{full}\n{help_uri}"),
            markdown: format!("**{id}** ({severity})\n\n{full}\n\n[{help_uri}]({help_uri})"),
        },
        help_uri,
        default_configuration: Configuration {
            level: level(severity),
        },
        properties,
    }
}

fn message(f: &Finding) -> String {
    let fixed = if f.fixed_versions.is_empty() {
        "no fixed version".to_owned()
    } else {
        format!("fixed in {}", f.fixed_versions.join(", "))
    };
    let layer = short_digest(f.package.layer.as_ref());
    let mut m = format!(
        "{} {} {} is affected by {} (severity {}, {fixed})",
        f.package.ecosystem, f.package.name, f.installed_version, f.vulnerability_id, f.severity
    );
    if !f.package.path.is_empty() {
        m.push_str(&format!("; found in {}", f.package.path));
    }
    if !layer.is_empty() {
        m.push_str(&format!(" of layer {layer}"));
    }
    if let Some((evidence, meaning)) = super::evidence_note(f.package.evidence) {
        m.push_str(&format!("; evidence: {evidence} ({meaning})"));
    }
    m
}

/// Writes `report` as a SARIF 2.1.0 log with one run. Rules are ordered by
/// vulnerability id; results by id, then package name and path.
pub fn write_report(w: &mut dyn Write, report: &Report) -> Result<(), OutputError> {
    let mut by_id: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &report.findings {
        by_id.entry(f.vulnerability_id.as_str()).or_default().push(f);
    }
    let mut rules = Vec::with_capacity(by_id.len());
    let mut results = Vec::with_capacity(report.findings.len());
    for (index, (id, findings)) in by_id.iter_mut().enumerate() {
        rules.push(rule(id, findings));
        findings.sort_by(|a, b| {
            (&a.package.name, &a.package.path, &a.package.purl).cmp(&(
                &b.package.name,
                &b.package.path,
                &b.package.purl,
            ))
        });
        for f in findings.iter() {
            let uri = match relative_path(&f.package.path) {
                // `localhost:5000/app` would read as a URI scheme: no colons.
                "" => report.image_reference.replace(':', "-"),
                p => p.to_owned(),
            };
            let fingerprint = stable_hash(&[
                id,
                f.package.ecosystem.as_str(),
                &f.package.name,
                &f.installed_version,
                &f.package.path,
            ]);
            results.push(SarifResult {
                rule_id: id.to_string(),
                rule_index: index,
                level: level(f.severity),
                message: Text { text: message(f) },
                locations: vec![Location {
                    physical_location: PhysicalLocation {
                        artifact_location: ArtifactLocation { uri },
                        region: Region { start_line: 1 },
                    },
                }],
                partial_fingerprints: BTreeMap::from([(FINGERPRINT_KEY, fingerprint)]),
            });
        }
    }
    let log = Log {
        schema: SCHEMA,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "strata",
                    version: crate::VERSION,
                    information_uri: "https://osv.dev",
                    rules,
                },
            },
            results,
        }],
    };
    serde_json::to_writer_pretty(&mut *w, &log).map_err(OutputError::json("sarif"))?;
    writeln!(w).map_err(OutputError::io("sarif"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fixtures, golden};
    use std::collections::HashSet;

    fn sarif(r: &Report) -> Value {
        let mut out = Vec::new();
        write_report(&mut out, r).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn sarif_golden() {
        let mut out = Vec::new();
        write_report(&mut out, &fixtures::report()).unwrap();
        golden::check("report.sarif", &String::from_utf8(out).unwrap());
    }

    #[test]
    fn sarif_has_what_github_requires() {
        let report = fixtures::report();
        let v = sarif(&report);
        assert_eq!(v["version"], "2.1.0");
        assert_eq!(v["$schema"], SCHEMA);
        let run = &v["runs"][0];
        assert_eq!(run["tool"]["driver"]["name"], "strata");
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        let rule_ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(rule_ids.len(), rule_ids.iter().collect::<HashSet<_>>().len());
        for r in rules {
            assert!(r["shortDescription"]["text"].is_string());
            assert!(r["properties"]["tags"].is_array());
        }
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), report.findings.len());
        let mut fingerprints = HashSet::new();
        for res in results {
            let rule_id = res["ruleId"].as_str().unwrap();
            let idx = res["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rule_ids[idx], rule_id);
            assert!(["error", "warning", "note"].contains(&res["level"].as_str().unwrap()));
            assert!(!res["message"]["text"].as_str().unwrap().is_empty());
            let uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap();
            assert!(!uri.is_empty() && !uri.starts_with('/'), "{uri}");
            assert!(fingerprints.insert(res["partialFingerprints"][FINGERPRINT_KEY].to_string()));
        }
        // Every finding appears exactly once.
        for f in &report.findings {
            let n = results
                .iter()
                .filter(|r| {
                    r["ruleId"] == f.vulnerability_id.as_str()
                        && r["message"]["text"].as_str().unwrap().contains(&f.package.name)
                })
                .count();
            assert_eq!(n, 1, "{}", f.vulnerability_id);
        }
        let zlib = rules.iter().find(|r| r["id"] == "CVE-2023-45853").unwrap();
        assert_eq!(zlib["properties"]["security-severity"], "9.8");
        assert_eq!(zlib["defaultConfiguration"]["level"], "error");
        let unknown = rules.iter().find(|r| r["id"] == "CVE-2023-6129").unwrap();
        assert!(unknown["properties"].get("security-severity").is_none());
    }

    #[test]
    fn security_severity_bands() {
        assert_eq!(
            security_severity(Some(7.26), Severity::High).as_deref(),
            Some("7.3")
        );
        assert_eq!(
            security_severity(None, Severity::Critical).as_deref(),
            Some("9.5")
        );
        assert_eq!(
            security_severity(Some(f64::NAN), Severity::Low).as_deref(),
            Some("2.0")
        );
        assert_eq!(security_severity(None, Severity::Unknown), None);
    }

    #[test]
    fn package_without_path_points_at_the_image() {
        let mut r = fixtures::report();
        r.findings.truncate(1);
        r.findings[0].package.path.clear();
        let v = sarif(&r);
        assert_eq!(
            v["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "registry.example/app-1.0"
        );
    }
}
