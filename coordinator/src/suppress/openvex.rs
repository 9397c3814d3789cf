//! OpenVEX documents (JSON, v0.2.0; the v0.0.x forms with a plain string
//! for `vulnerability` or a product are read too).
//!
//! A statement applies to a finding when:
//! - its `vulnerability.name` or one of its `aliases` equals the finding's
//!   id or one of the finding's aliases (ASCII case ignored), and
//! - one of its `products` names the finding's package: the product's
//!   `@id` (or `identifiers.purl`) is a purl that matches the package's purl,
//!   or one of its `subcomponents` does; or the product is the scanned image
//!   (a `pkg:oci/` purl with the image's digest or repository name, or the
//!   image reference itself) and it lists no subcomponents.
//!
//! A statement purl matches a package purl when type, namespace and name
//! are equal and, if the statement gives them, the version and every
//! qualifier are equal too: `pkg:deb/debian/openssl` matches every version
//! and architecture of that package.
//!
//! When several statements apply to one finding, the last one (in load
//! order) decides. `not_affected` and `fixed` remove the finding;
//! `affected` and `under_investigation` keep it.

use std::str::FromStr;

use packageurl::PackageUrl;
use serde::Deserialize;
use strata_proto::domain::{Finding, Report};

use super::{SuppressError, finding_has_id};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VexStatus {
    NotAffected,
    Affected,
    Fixed,
    UnderInvestigation,
}

impl VexStatus {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "not_affected" => VexStatus::NotAffected,
            "affected" => VexStatus::Affected,
            "fixed" => VexStatus::Fixed,
            "under_investigation" => VexStatus::UnderInvestigation,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            VexStatus::NotAffected => "not_affected",
            VexStatus::Affected => "affected",
            VexStatus::Fixed => "fixed",
            VexStatus::UnderInvestigation => "under_investigation",
        }
    }
    /// Whether a finding this status applies to is removed.
    pub fn suppresses(self) -> bool {
        matches!(self, VexStatus::NotAffected | VexStatus::Fixed)
    }
}

/// A product named by a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VexProduct {
    /// The `@id` (or `identifiers.purl`): usually a purl.
    pub id: String,
    pub subcomponents: Vec<String>,
}

/// One statement, flattened for matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VexStatement {
    /// The vulnerability name and its aliases.
    pub vulnerability_ids: Vec<String>,
    pub products: Vec<VexProduct>,
    pub status: VexStatus,
    pub justification: Option<String>,
    /// `FILE statements[i]`, for messages.
    pub origin: String,
}

impl VexStatement {
    /// Why a finding was suppressed, for the summary.
    pub fn describe(&self) -> String {
        match &self.justification {
            Some(j) => format!("{}: {} ({j})", self.origin, self.status.as_str()),
            None => format!("{}: {}", self.origin, self.status.as_str()),
        }
    }

    fn names(&self, f: &Finding) -> bool {
        self.vulnerability_ids.iter().any(|id| finding_has_id(f, id))
    }

    fn covers(&self, f: &Finding, report: &Report) -> bool {
        self.products.iter().any(|p| {
            if p.subcomponents.iter().any(|s| purl_matches(s, &f.package.purl)) {
                return true;
            }
            if is_image(&p.id, report) {
                return p.subcomponents.is_empty();
            }
            purl_matches(&p.id, &f.package.purl)
        })
    }
}

/// The statement that decides for `f`: the last one that applies to it.
pub fn decisive<'a>(
    statements: &'a [VexStatement],
    f: &Finding,
    report: &Report,
) -> Option<&'a VexStatement> {
    statements
        .iter()
        .rev()
        .find(|s| s.names(f) && s.covers(f, report))
}

/// `pattern` (from a statement) matches `purl` (a package's): see the module docs.
pub fn purl_matches(pattern: &str, purl: &str) -> bool {
    if pattern.is_empty() || purl.is_empty() {
        return false;
    }
    if pattern == purl {
        return true;
    }
    let (Ok(p), Ok(q)) = (PackageUrl::from_str(pattern), PackageUrl::from_str(purl)) else {
        return false;
    };
    p.ty().eq_ignore_ascii_case(q.ty())
        && p.namespace() == q.namespace()
        && p.name() == q.name()
        && p.version().is_none_or(|v| Some(v) == q.version())
        && p.subpath().is_none_or(|s| Some(s) == q.subpath())
        && p.qualifiers()
            .iter()
            .all(|(k, v)| q.qualifiers().get(k) == Some(v))
}

/// Whether a product id names the scanned image.
fn is_image(id: &str, report: &Report) -> bool {
    if id == report.image_reference || report.image_digest.as_ref().is_some_and(|d| d.as_str() == id) {
        return true;
    }
    let Ok(p) = PackageUrl::from_str(id) else {
        return false;
    };
    if !p.ty().eq_ignore_ascii_case("oci") {
        return false;
    }
    if let Some(v) = p.version() {
        return report.image_digest.as_ref().is_some_and(|d| d.as_str() == v);
    }
    // `registry/path/name:tag` or `…@sha256:…` → `name`.
    let reference = report.image_reference.split('@').next().unwrap_or_default();
    let last = reference.rsplit('/').next().unwrap_or_default();
    let repo_name = last.split(':').next().unwrap_or_default();
    !repo_name.is_empty() && p.name() == repo_name
}

// ---- parsing ------------------------------------------------------------------

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "@context")]
    context: String,
    #[serde(default)]
    statements: Vec<RawStatement>,
}

#[derive(Deserialize)]
struct RawStatement {
    vulnerability: RawVulnerability,
    #[serde(default)]
    products: Vec<RawProduct>,
    status: String,
    #[serde(default)]
    justification: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawVulnerability {
    Object {
        #[serde(default)]
        name: Option<String>,
        #[serde(rename = "@id", default)]
        id: Option<String>,
        #[serde(default)]
        aliases: Vec<String>,
    },
    Name(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawProduct {
    Object {
        #[serde(rename = "@id", default)]
        id: Option<String>,
        #[serde(default)]
        identifiers: Option<Identifiers>,
        #[serde(default)]
        subcomponents: Vec<RawProduct>,
    },
    Id(String),
}

#[derive(Deserialize)]
struct Identifiers {
    #[serde(default)]
    purl: Option<String>,
}

impl RawProduct {
    /// The product's purl-ish id: `identifiers.purl` first, then `@id`.
    fn id(&self) -> Option<String> {
        match self {
            RawProduct::Id(s) => Some(s.clone()),
            RawProduct::Object { id, identifiers, .. } => identifiers
                .as_ref()
                .and_then(|i| i.purl.clone())
                .or_else(|| id.clone())
                .filter(|s| !s.is_empty()),
        }
    }
}

/// Parses an OpenVEX document; `file` names it in errors and origins.
pub fn parse(file: &str, text: &str) -> Result<Vec<VexStatement>, SuppressError> {
    let doc: Doc = serde_json::from_str(text).map_err(|e| SuppressError::Syntax {
        file: file.to_owned(),
        // serde_json's message ends with "at line N column M".
        message: format!("invalid OpenVEX JSON: {e}"),
    })?;
    let invalid = |at: String, message: String| SuppressError::Invalid {
        file: file.to_owned(),
        at,
        message,
    };
    if !doc.context.starts_with("https://openvex.dev/ns") {
        return Err(invalid(
            "@context".into(),
            format!(
                "{:?} is not an OpenVEX context (https://openvex.dev/ns/v0.2.0)",
                doc.context.chars().take(100).collect::<String>()
            ),
        ));
    }
    let mut out = Vec::with_capacity(doc.statements.len());
    for (i, s) in doc.statements.into_iter().enumerate() {
        let at = |field: &str| format!("statements[{i}].{field}");
        let status = VexStatus::parse(&s.status).ok_or_else(|| {
            invalid(
                at("status"),
                format!(
                    "unknown status {:?}: expected not_affected, affected, fixed or under_investigation",
                    s.status.chars().take(50).collect::<String>()
                ),
            )
        })?;
        let mut vulnerability_ids = match s.vulnerability {
            RawVulnerability::Name(n) => vec![n],
            RawVulnerability::Object { name, id, aliases } => {
                name.into_iter().chain(id).chain(aliases).collect::<Vec<_>>()
            }
        };
        vulnerability_ids.retain(|v| !v.trim().is_empty());
        if vulnerability_ids.is_empty() {
            return Err(invalid(at("vulnerability"), "no vulnerability name".into()));
        }
        if s.products.is_empty() {
            return Err(invalid(at("products"), "no products".into()));
        }
        let mut products = Vec::with_capacity(s.products.len());
        for (j, p) in s.products.iter().enumerate() {
            let id = p
                .id()
                .ok_or_else(|| invalid(format!("statements[{i}].products[{j}]"), "no @id".into()))?;
            let subcomponents = match p {
                RawProduct::Object { subcomponents, .. } => {
                    subcomponents.iter().filter_map(RawProduct::id).collect()
                }
                RawProduct::Id(_) => Vec::new(),
            };
            products.push(VexProduct { id, subcomponents });
        }
        out.push(VexStatement {
            vulnerability_ids,
            products,
            status,
            justification: s.justification.filter(|j| !j.is_empty()),
            origin: format!("{file} statements[{i}]"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures;

    fn doc(statements: &str) -> String {
        format!(
            r#"{{"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.com/vex",
  "author": "t", "timestamp": "2024-05-01T00:00:00Z", "version": 1,
  "statements": [{statements}]}}"#
        )
    }

    /// Which finding ids the statements remove from the fixture report.
    fn removed(statements: &str) -> Vec<String> {
        let parsed = parse("t.json", &doc(statements)).unwrap();
        let report = fixtures::report();
        let mut ids: Vec<String> = report
            .findings
            .iter()
            .filter(|f| decisive(&parsed, f, &report).is_some_and(|s| s.status.suppresses()))
            .map(|f| format!("{}:{}", f.vulnerability_id, f.package.name))
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn purl_matching_with_and_without_version_and_qualifiers() {
        let pkg = "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12";
        assert!(purl_matches("pkg:deb/debian/libssl3", pkg));
        assert!(purl_matches("pkg:deb/debian/libssl3@3.0.11-1~deb12u2", pkg));
        assert!(purl_matches("pkg:deb/debian/libssl3?arch=amd64", pkg));
        assert!(purl_matches(pkg, pkg));
        assert!(!purl_matches("pkg:deb/debian/libssl3@3.0.13-1~deb12u1", pkg));
        assert!(!purl_matches("pkg:deb/debian/libssl3?arch=arm64", pkg));
        assert!(!purl_matches("pkg:deb/ubuntu/libssl3", pkg));
        assert!(!purl_matches("pkg:deb/debian/libssl", pkg));
        assert!(!purl_matches("not a purl", pkg));
        assert!(purl_matches(
            "pkg:npm/%40babel/traverse",
            "pkg:npm/%40babel/traverse@7.22.5"
        ));
    }

    #[test]
    fn statuses_decide() {
        let st = |status: &str| {
            format!(
                r#"{{"vulnerability": {{"name": "CVE-2023-45853"}}, "products": [{{"@id": "pkg:deb/debian/zlib1g"}}], "status": "{status}"}}"#
            )
        };
        assert_eq!(removed(&st("not_affected")), ["CVE-2023-45853:zlib1g"]);
        assert_eq!(removed(&st("fixed")), ["CVE-2023-45853:zlib1g"]);
        assert!(removed(&st("affected")).is_empty());
        assert!(removed(&st("under_investigation")).is_empty());
        // The last applicable statement wins.
        assert!(removed(&format!("{},{}", st("not_affected"), st("affected"))).is_empty());
        assert_eq!(
            removed(&format!("{},{}", st("affected"), st("fixed"))),
            ["CVE-2023-45853:zlib1g"]
        );
    }

    #[test]
    fn aliases_match_either_way() {
        // The statement names an alias of the finding.
        let a = r#"{"vulnerability": {"name": "CVE-2023-45133"}, "products": [{"@id": "pkg:npm/%40babel/traverse"}], "status": "not_affected"}"#;
        assert_eq!(removed(a), ["GHSA-67hx-6x53-jw92:@babel/traverse"]);
        // The statement's alias is the finding's id.
        let b = r#"{"vulnerability": {"name": "CVE-9999-0001", "aliases": ["GHSA-j8r2-6x86-q33q"]}, "products": [{"@id": "pkg:pypi/requests@2.19.1"}], "status": "fixed"}"#;
        assert_eq!(removed(b), ["GHSA-j8r2-6x86-q33q:requests"]);
        // The right id with the wrong package does nothing.
        let c = r#"{"vulnerability": {"name": "CVE-2023-45133"}, "products": [{"@id": "pkg:npm/lodash"}], "status": "not_affected"}"#;
        assert!(removed(c).is_empty());
    }

    #[test]
    fn image_products_and_subcomponents() {
        // The image with no subcomponents: every package in it.
        let image = r#"{"vulnerability": {"name": "CVE-2023-5678"}, "products": [{"@id": "pkg:oci/app@sha256%3Aabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd"}], "status": "not_affected"}"#;
        assert_eq!(removed(image), ["CVE-2023-5678:libssl3"]);
        let other_image = r#"{"vulnerability": {"name": "CVE-2023-5678"}, "products": [{"@id": "pkg:oci/app@sha256%3A0000000000000000000000000000000000000000000000000000000000000000"}], "status": "not_affected"}"#;
        assert!(removed(other_image).is_empty());
        let by_name = r#"{"vulnerability": {"name": "CVE-2023-5678"}, "products": [{"@id": "pkg:oci/app?repository_url=registry.example/app"}], "status": "not_affected"}"#;
        assert_eq!(removed(by_name), ["CVE-2023-5678:libssl3"]);
        // The image with subcomponents: only those.
        let sub = r#"{"vulnerability": {"name": "CVE-2023-45853"}, "products": [{"@id": "pkg:oci/app", "subcomponents": [{"@id": "pkg:deb/debian/libssl3"}]}], "status": "not_affected"}"#;
        assert!(removed(sub).is_empty());
        let sub2 = r#"{"vulnerability": {"name": "CVE-2023-45853"}, "products": [{"@id": "pkg:oci/app", "subcomponents": [{"identifiers": {"purl": "pkg:deb/debian/zlib1g"}}]}], "status": "not_affected"}"#;
        assert_eq!(removed(sub2), ["CVE-2023-45853:zlib1g"]);
    }

    #[test]
    fn old_string_forms_are_read() {
        let s = r#"{"vulnerability": "CVE-2023-45853", "products": ["pkg:deb/debian/zlib1g"], "status": "not_affected"}"#;
        assert_eq!(removed(s), ["CVE-2023-45853:zlib1g"]);
    }

    #[test]
    fn malformed_documents_name_the_file_and_field_or_line() {
        let cases = [
            (
                "{\n  \"@context\": \"https://openvex.dev/ns/v0.2.0\",\n  \"statements\": [\n",
                "line 4",
            ),
            ("[]", "line 1"),
            (
                r#"{"@context": "https://example.com", "statements": []}"#,
                "@context",
            ),
            (
                &doc(
                    r#"{"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:npm/x"}], "status": "maybe"}"#,
                ),
                "statements[0].status",
            ),
            (
                &doc(r#"{"vulnerability": {"name": "CVE-1"}, "products": [], "status": "fixed"}"#),
                "statements[0].products",
            ),
            (
                &doc(
                    r#"{"vulnerability": {"name": ""}, "products": [{"@id": "pkg:npm/x"}], "status": "fixed"}"#,
                ),
                "statements[0].vulnerability",
            ),
            (
                &doc(r#"{"products": [{"@id": "pkg:npm/x"}], "status": "fixed"}"#),
                "vulnerability",
            ),
        ];
        for (text, want) in cases {
            let err = parse("team.vex.json", text).unwrap_err().to_string();
            assert!(
                err.contains("team.vex.json") && err.contains(want),
                "want {want:?} in: {err}"
            );
        }
    }
}
