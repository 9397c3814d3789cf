//! Domain types: what every process stores (serde JSON in object storage)
//! and converts to the wire types in [`crate::v1`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub use crate::ecosystem::Ecosystem;
use crate::v1;

/// Errors from parsing a domain value out of outside input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>")]
    Digest(String),
    #[error("unknown ecosystem {0:?}")]
    Ecosystem(String),
    #[error("unknown severity {0:?}: expected critical, high, medium, low or unknown")]
    Severity(String),
    #[error("unknown evidence {0:?}: expected installed, lockfile, app or file-name")]
    Evidence(String),
}

/// A content digest, `algorithm:hex`. Only sha256 and sha512 are accepted,
/// lowercase, with the exact hex length, so a digest is always a safe path
/// and key component.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or_default()
    }
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or_default()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The form used as a NATS key-value key, which may not contain `:`.
    pub fn kv_key(&self) -> String {
        format!("{}.{}", self.algorithm(), self.hex())
    }
    /// The sha256 digest of `bytes`, given its lowercase hex.
    pub fn sha256_from_hex(hex: &str) -> Result<Self, ParseError> {
        format!("sha256:{hex}").parse()
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Digest(s.chars().take(200).collect());
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        let lower_hex = hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex.len() != want || !lower_hex {
            return Err(bad());
        }
        Ok(Digest(s.to_owned()))
    }
}

impl TryFrom<String> for Digest {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One package found in an image.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Source package (dpkg `Source:`, apk origin, rpm source rpm name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    /// Source version when it differs from `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    pub purl: String,
    /// The database or manifest it was read from, absolute in the image.
    pub path: String,
    /// The layer that introduced it; set by the layer reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Digest>,
    /// How it was found, when that changes what it means.
    #[serde(default, skip_serializing_if = "Evidence::is_installed")]
    pub evidence: Evidence,
}

/// How a package was found. Anything but `Installed` is said in reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// Installed: a package manager's database or an installed package's
    /// own metadata (`METADATA`, `node_modules/*/package.json`, a jar's
    /// `pom.properties`, a binary's build information).
    #[default]
    Installed,
    /// Named by a lockfile with no installed copy beside it.
    Lockfile,
    /// The image's own application (a private root project): listed, never
    /// matched (its name may be any registry package's).
    App,
    /// Guessed from a file name only (a jar without Maven metadata): low
    /// confidence.
    FileName,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Installed => "installed",
            Evidence::Lockfile => "lockfile",
            Evidence::App => "app",
            Evidence::FileName => "file-name",
        }
    }

    pub fn is_installed(&self) -> bool {
        *self == Evidence::Installed
    }
}

impl FromStr for Evidence {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ok(match s {
            "" | "installed" => Evidence::Installed,
            "lockfile" => Evidence::Lockfile,
            "app" => Evidence::App,
            "file-name" => Evidence::FileName,
            _ => return Err(ParseError::Evidence(s.chars().take(50).collect())),
        })
    }
}

/// What `/etc/os-release` (or a distro fallback file) says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    pub id: String,
    #[serde(default)]
    pub version_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version_codename: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pretty_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_like: Vec<String>,
    pub path: String,
}

/// What one layer holds, as found by one analyser set. Stored at
/// `inventories/<analyzer_set_version>/<algorithm>/<hex>` and immutable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInventory {
    pub digest: Option<Digest>,
    pub analyzer_set_version: String,
    pub packages: Vec<Package>,
    /// Paths deleted by this layer (from `.wh.NAME` entries), absolute.
    #[serde(default)]
    pub whiteouts: Vec<String>,
    /// Directories whose lower-layer contents this layer hides (`.wh..wh..opq`).
    #[serde(default)]
    pub opaque_dirs: Vec<String>,
    /// Every file an analyser read, even when it yielded no package: a later
    /// layer's file at the same path replaces what an earlier one said.
    #[serde(default)]
    pub analyzed_files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_release: Option<OsRelease>,
}

/// How bad a finding is. Ordered: `Critical > High > … > Unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl FromStr for Severity {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_lowercase().as_str() {
            "unknown" | "none" => Ok(Severity::Unknown),
            "low" => Ok(Severity::Low),
            "medium" | "moderate" => Ok(Severity::Medium),
            "high" | "important" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(ParseError::Severity(s.chars().take(50).collect())),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One vulnerability hitting one package in one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub vulnerability_id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub summary: String,
    pub package: Package,
    pub installed_version: String,
    #[serde(default)]
    pub fixed_versions: Vec<String>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub score_source: String,
    pub vulndb_version: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub critical: u32,
    pub high: u32,
    pub medium: u32,
    pub low: u32,
    pub unknown: u32,
}

impl SeverityCounts {
    pub fn add(&mut self, s: Severity) {
        match s {
            Severity::Critical => self.critical += 1,
            Severity::High => self.high += 1,
            Severity::Medium => self.medium += 1,
            Severity::Low => self.low += 1,
            Severity::Unknown => self.unknown += 1,
        }
    }
    pub fn total(&self) -> u32 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerError {
    pub digest: Digest,
    pub error: String,
}

/// The result of scanning one image against one vulnerability data version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scan_id: String,
    pub image_reference: String,
    pub image_digest: Option<Digest>,
    #[serde(default)]
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_release: Option<OsRelease>,
    pub packages: Vec<Package>,
    pub findings: Vec<Finding>,
    pub counts: SeverityCounts,
    /// Findings removed by an ignore file or VEX statement: counted, not hidden.
    #[serde(default)]
    pub suppressed: u32,
    pub vulndb_version: String,
    pub created_unix_ms: i64,
    #[serde(default)]
    pub layer_errors: Vec<LayerError>,
}

// ---- conversions to and from the wire -------------------------------------

/// A wire value that does not hold a valid domain value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {source}")]
pub struct WireError {
    pub field: &'static str,
    #[source]
    pub source: ParseError,
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<Severity> for v1::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Unknown => v1::Severity::Unknown,
            Severity::Low => v1::Severity::Low,
            Severity::Medium => v1::Severity::Medium,
            Severity::High => v1::Severity::High,
            Severity::Critical => v1::Severity::Critical,
        }
    }
}

impl From<v1::Severity> for Severity {
    fn from(s: v1::Severity) -> Self {
        match s {
            v1::Severity::Unspecified | v1::Severity::Unknown => Severity::Unknown,
            v1::Severity::Low => Severity::Low,
            v1::Severity::Medium => Severity::Medium,
            v1::Severity::High => Severity::High,
            v1::Severity::Critical => Severity::Critical,
        }
    }
}

impl From<Package> for v1::Package {
    fn from(p: Package) -> Self {
        v1::Package {
            ecosystem: p.ecosystem.to_string(),
            name: p.name,
            version: p.version,
            source_name: p.source_name.unwrap_or_default(),
            source_version: p.source_version.unwrap_or_default(),
            arch: p.arch.unwrap_or_default(),
            purl: p.purl,
            path: p.path,
            layer_digest: p.layer.map(String::from).unwrap_or_default(),
            evidence: if p.evidence.is_installed() {
                String::new()
            } else {
                p.evidence.as_str().to_owned()
            },
        }
    }
}

impl TryFrom<v1::Package> for Package {
    type Error = WireError;
    fn try_from(p: v1::Package) -> Result<Self, WireError> {
        let layer = match opt(p.layer_digest) {
            Some(d) => Some(d.parse().map_err(|source| WireError {
                field: "package.layer_digest",
                source,
            })?),
            None => None,
        };
        Ok(Package {
            ecosystem: p.ecosystem.parse().map_err(|source| WireError {
                field: "package.ecosystem",
                source,
            })?,
            name: p.name,
            version: p.version,
            source_name: opt(p.source_name),
            source_version: opt(p.source_version),
            arch: opt(p.arch),
            purl: p.purl,
            path: p.path,
            layer,
            evidence: Default::default(),
        })
    }
}

impl From<OsRelease> for v1::OsRelease {
    fn from(o: OsRelease) -> Self {
        v1::OsRelease {
            id: o.id,
            version_id: o.version_id,
            version_codename: o.version_codename,
            pretty_name: o.pretty_name,
            id_like: o.id_like,
            path: o.path,
        }
    }
}

impl From<v1::OsRelease> for OsRelease {
    fn from(o: v1::OsRelease) -> Self {
        OsRelease {
            id: o.id,
            version_id: o.version_id,
            version_codename: o.version_codename,
            pretty_name: o.pretty_name,
            id_like: o.id_like,
            path: o.path,
        }
    }
}

impl From<SeverityCounts> for v1::SeverityCounts {
    fn from(c: SeverityCounts) -> Self {
        v1::SeverityCounts {
            critical: c.critical,
            high: c.high,
            medium: c.medium,
            low: c.low,
            unknown: c.unknown,
        }
    }
}

impl From<Finding> for v1::Finding {
    fn from(f: Finding) -> Self {
        let layer_digest = f
            .package
            .layer
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        let path = f.package.path.clone();
        v1::Finding {
            vulnerability_id: f.vulnerability_id,
            aliases: f.aliases,
            summary: f.summary,
            package: Some(f.package.into()),
            installed_version: f.installed_version,
            fixed_versions: f.fixed_versions,
            severity: v1::Severity::from(f.severity).into(),
            score: f.score.unwrap_or(0.0),
            score_source: f.score_source,
            layer_digest,
            path,
            vulndb_version: f.vulndb_version,
        }
    }
}

impl From<Report> for v1::Report {
    fn from(r: Report) -> Self {
        v1::Report {
            scan_id: r.scan_id,
            image_reference: r.image_reference,
            image_digest: r.image_digest.map(String::from).unwrap_or_default(),
            platform: r.platform,
            os_release: r.os_release.map(Into::into),
            packages: r.packages.into_iter().map(Into::into).collect(),
            findings: r.findings.into_iter().map(Into::into).collect(),
            counts: Some(r.counts.into()),
            suppressed: r.suppressed,
            vulndb_version: r.vulndb_version,
            created_unix_ms: r.created_unix_ms,
            layer_errors: r
                .layer_errors
                .into_iter()
                .map(|e| v1::LayerError {
                    digest: e.digest.into(),
                    error: e.error,
                })
                .collect(),
        }
    }
}

impl From<v1::SeverityCounts> for SeverityCounts {
    fn from(c: v1::SeverityCounts) -> Self {
        SeverityCounts {
            critical: c.critical,
            high: c.high,
            medium: c.medium,
            low: c.low,
            unknown: c.unknown,
        }
    }
}

impl From<LayerError> for v1::LayerError {
    fn from(e: LayerError) -> Self {
        v1::LayerError {
            digest: e.digest.into(),
            error: e.error,
        }
    }
}

impl TryFrom<v1::LayerError> for LayerError {
    type Error = WireError;
    fn try_from(e: v1::LayerError) -> Result<Self, WireError> {
        Ok(LayerError {
            digest: e.digest.parse().map_err(|source| WireError {
                field: "layer_error.digest",
                source,
            })?,
            error: e.error,
        })
    }
}

impl TryFrom<v1::Finding> for Finding {
    type Error = WireError;
    /// The finding's `layer_digest` and `path` fill the package's when the
    /// package does not carry them (they are the same values on the wire).
    fn try_from(f: v1::Finding) -> Result<Self, WireError> {
        let severity = v1::Severity::try_from(f.severity)
            .unwrap_or(v1::Severity::Unspecified)
            .into();
        let mut wire_package = f.package.unwrap_or_default();
        if wire_package.layer_digest.is_empty() {
            wire_package.layer_digest = f.layer_digest;
        }
        if wire_package.path.is_empty() {
            wire_package.path = f.path;
        }
        let package = Package::try_from(wire_package)?;
        Ok(Finding {
            vulnerability_id: f.vulnerability_id,
            aliases: f.aliases,
            summary: f.summary,
            package,
            installed_version: f.installed_version,
            fixed_versions: f.fixed_versions,
            severity,
            score: (f.score > 0.0 && f.score.is_finite()).then_some(f.score),
            score_source: f.score_source,
            vulndb_version: f.vulndb_version,
        })
    }
}

impl TryFrom<v1::Report> for Report {
    type Error = WireError;
    fn try_from(r: v1::Report) -> Result<Self, WireError> {
        let image_digest = match opt(r.image_digest) {
            Some(d) => Some(d.parse().map_err(|source| WireError {
                field: "report.image_digest",
                source,
            })?),
            None => None,
        };
        Ok(Report {
            scan_id: r.scan_id,
            image_reference: r.image_reference,
            image_digest,
            platform: r.platform,
            os_release: r.os_release.map(Into::into),
            packages: r
                .packages
                .into_iter()
                .map(Package::try_from)
                .collect::<Result<_, _>>()?,
            findings: r
                .findings
                .into_iter()
                .map(Finding::try_from)
                .collect::<Result<_, _>>()?,
            counts: r.counts.map(Into::into).unwrap_or_default(),
            suppressed: r.suppressed,
            vulndb_version: r.vulndb_version,
            created_unix_ms: r.created_unix_ms,
            layer_errors: r
                .layer_errors
                .into_iter()
                .map(LayerError::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_parses_only_well_formed_values() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.kv_key(), format!("sha256.{HEX}"));
        for bad in [
            "",
            "sha256:",
            HEX,
            "md5:abc",
            &format!("sha256:{}", HEX.to_uppercase()),
            &format!("sha256:{HEX}0"),
            &format!("sha256:../{}", &HEX[3..]),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn digest_serde_rejects_invalid() {
        let ok: Digest = serde_json::from_str(&format!("\"sha256:{HEX}\"")).unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), format!("\"sha256:{HEX}\""));
        assert!(serde_json::from_str::<Digest>("\"sha256:xyz\"").is_err());
    }

    #[test]
    fn ecosystem_names_round_trip() {
        for e in Ecosystem::ALL {
            assert_eq!(e.as_str().parse::<Ecosystem>().unwrap(), *e);
        }
        assert!("Debian:12".parse::<Ecosystem>().is_err());
        assert_eq!("crates.io".parse::<Ecosystem>().unwrap(), Ecosystem::CratesIo);
    }

    #[test]
    fn severity_is_ordered_and_parses_synonyms() {
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Unknown);
        assert_eq!("MODERATE".parse::<Severity>().unwrap(), Severity::Medium);
        assert!("urgent".parse::<Severity>().is_err());
    }

    #[test]
    fn package_round_trips_through_the_wire() {
        let p = Package {
            ecosystem: Ecosystem::Debian,
            name: "libssl3".into(),
            version: "3.0.11-1~deb12u2".into(),
            source_name: Some("openssl".into()),
            source_version: None,
            arch: Some("amd64".into()),
            purl: "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64".into(),
            path: "/var/lib/dpkg/status".into(),
            layer: Some(format!("sha256:{HEX}").parse().unwrap()),
            evidence: Default::default(),
        };
        let wire: v1::Package = p.clone().into();
        assert_eq!(Package::try_from(wire).unwrap(), p);
        let bad = v1::Package {
            ecosystem: "Nope".into(),
            ..Default::default()
        };
        assert!(Package::try_from(bad).is_err());
    }

    #[test]
    fn report_round_trips_through_the_wire() {
        let layer: Digest = format!("sha256:{HEX}").parse().unwrap();
        let package = Package {
            ecosystem: Ecosystem::Debian,
            name: "zlib1g".into(),
            version: "1:1.2.13.dfsg-1".into(),
            source_name: Some("zlib".into()),
            source_version: None,
            arch: Some("amd64".into()),
            purl: "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64".into(),
            path: "/var/lib/dpkg/status".into(),
            layer: Some(layer.clone()),
            evidence: Default::default(),
        };
        let finding = |id: &str, severity, score| Finding {
            vulnerability_id: id.into(),
            aliases: vec!["CVE-2023-45853".into()],
            summary: "integer overflow".into(),
            package: package.clone(),
            installed_version: package.version.clone(),
            fixed_versions: vec!["1:1.3.dfsg-1".into()],
            severity,
            score,
            score_source: if score.is_some() {
                "CVSS_V3".into()
            } else {
                String::new()
            },
            vulndb_version: "db1".into(),
        };
        let mut counts = SeverityCounts::default();
        counts.add(Severity::Critical);
        counts.add(Severity::Unknown);
        let report = Report {
            scan_id: "scan-1".into(),
            image_reference: "localhost:5000/app:1".into(),
            image_digest: Some(layer.clone()),
            platform: "linux/amd64".into(),
            os_release: Some(OsRelease {
                id: "debian".into(),
                version_id: "12".into(),
                version_codename: "bookworm".into(),
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                id_like: vec![],
                path: "/etc/os-release".into(),
            }),
            packages: vec![package.clone()],
            findings: vec![
                finding("DSA-1", Severity::Critical, Some(9.8)),
                finding("DSA-2", Severity::Unknown, None),
            ],
            counts,
            suppressed: 2,
            vulndb_version: "db1".into(),
            created_unix_ms: 1_700_000_000_000,
            layer_errors: vec![LayerError {
                digest: layer,
                error: "layer over the size cap".into(),
            }],
        };
        let wire: v1::Report = report.clone().into();
        assert_eq!(Report::try_from(wire.clone()).unwrap(), report);

        // A finding whose package lacks the layer still gets it from the finding.
        let mut stripped = wire.clone();
        if let Some(p) = stripped.findings[0].package.as_mut() {
            p.layer_digest.clear();
        }
        assert_eq!(Report::try_from(stripped).unwrap(), report);

        let mut bad = wire;
        bad.layer_errors[0].digest = "sha256:nope".into();
        assert!(Report::try_from(bad).is_err());
    }
}
