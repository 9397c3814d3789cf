//! Report and SBOM output formats, and SBOM input.
//!
//! Every writer takes an `impl std::io::Write` and produces a complete
//! document; none of them reads the clock or the environment, so the same
//! input always gives the same bytes (the golden tests in `testdata/` rely on
//! it). Outside strings (package names, paths) are written as they are in the
//! JSON formats and with control characters replaced in the table formats, so
//! a hostile package name cannot drive the terminal.
//!
//! # Layout
//! - [`table`]: aligned text tables for an SBOM and for a scan report.
//! - [`json`]: our own versioned schemas, `strata.inventory/v1` and
//!   `strata.report/v1` (documented in `SCHEMA.md` beside this file).
//! - [`cyclonedx`]: CycloneDX 1.5 JSON, for an SBOM and for a report (with
//!   the `vulnerabilities` section).
//! - [`spdx`]: SPDX 2.3 JSON for an SBOM.
//! - [`sarif`]: SARIF 2.1.0 for a report, as GitHub code scanning accepts it.
//! - [`sbom_in`]: reading packages back from CycloneDX, SPDX or our inventory JSON.
//! - [`purl`]: package URL → ecosystem, name, version, source package, OS
//!   release (used by `sbom_in`; parsing is `strata_proto::purl`'s).

pub mod cyclonedx;
pub mod json;
pub mod purl;
pub mod sarif;
pub mod sbom_in;
pub mod spdx;
pub mod table;

#[cfg(test)]
mod golden;

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use strata_proto::domain::{Digest, Evidence, OsRelease, Package, Report};

/// What an SBOM document describes: one image's composed package inventory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageSbom {
    /// The image reference as the user gave it (or the SBOM's subject name).
    pub image_name: String,
    pub image_digest: Option<Digest>,
    pub os_release: Option<OsRelease>,
    pub packages: Vec<Package>,
    /// Creation time written into the document; passed in, never read from
    /// the clock here, so output is reproducible.
    pub created_unix_ms: i64,
}

impl ImageSbom {
    /// The SBOM part of a scan report.
    pub fn from_report(report: &Report) -> Self {
        ImageSbom {
            image_name: report.image_reference.clone(),
            image_digest: report.image_digest.clone(),
            os_release: report.os_release.clone(),
            packages: report.packages.clone(),
            created_unix_ms: report.created_unix_ms,
        }
    }
}

/// Errors while writing a document.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing {format} output: {source}")]
    Io {
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {format} output: {source}")]
    Json {
        format: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("building cyclonedx output: {0}")]
    CycloneDx(String),
    #[error("unknown output format {given:?}: expected one of {expected}")]
    UnknownFormat { given: String, expected: &'static str },
}

impl OutputError {
    fn io(format: &'static str) -> impl FnOnce(std::io::Error) -> OutputError {
        move |source| OutputError::Io { format, source }
    }
    fn json(format: &'static str) -> impl FnOnce(serde_json::Error) -> OutputError {
        move |source| OutputError::Json { format, source }
    }
}

/// The formats `strata sbom` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbomFormat {
    Table,
    Json,
    CycloneDx,
    Spdx,
}

impl FromStr for SbomFormat {
    type Err = OutputError;
    fn from_str(s: &str) -> Result<Self, OutputError> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(SbomFormat::Table),
            "json" => Ok(SbomFormat::Json),
            "cyclonedx" | "cyclonedx-json" => Ok(SbomFormat::CycloneDx),
            "spdx" | "spdx-json" => Ok(SbomFormat::Spdx),
            _ => Err(OutputError::UnknownFormat {
                given: s.chars().take(50).collect(),
                expected: "table, json, cyclonedx, spdx",
            }),
        }
    }
}

impl fmt::Display for SbomFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SbomFormat::Table => "table",
            SbomFormat::Json => "json",
            SbomFormat::CycloneDx => "cyclonedx",
            SbomFormat::Spdx => "spdx",
        })
    }
}

/// The formats `strata scan` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Table,
    Json,
    Sarif,
    CycloneDx,
}

impl FromStr for ReportFormat {
    type Err = OutputError;
    fn from_str(s: &str) -> Result<Self, OutputError> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(ReportFormat::Table),
            "json" => Ok(ReportFormat::Json),
            "sarif" => Ok(ReportFormat::Sarif),
            "cyclonedx" | "cyclonedx-json" => Ok(ReportFormat::CycloneDx),
            _ => Err(OutputError::UnknownFormat {
                given: s.chars().take(50).collect(),
                expected: "table, json, sarif, cyclonedx",
            }),
        }
    }
}

impl fmt::Display for ReportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportFormat::Table => "table",
            ReportFormat::Json => "json",
            ReportFormat::Sarif => "sarif",
            ReportFormat::CycloneDx => "cyclonedx",
        })
    }
}

/// Writes `sbom` to `w` in `format`.
pub fn write_sbom(w: &mut dyn Write, format: SbomFormat, sbom: &ImageSbom) -> Result<(), OutputError> {
    match format {
        SbomFormat::Table => table::write_sbom(w, sbom),
        SbomFormat::Json => json::write_inventory(w, sbom),
        SbomFormat::CycloneDx => cyclonedx::write_sbom(w, sbom),
        SbomFormat::Spdx => spdx::write_sbom(w, sbom),
    }
}

/// Writes `report` to `w` in `format`.
pub fn write_report(w: &mut dyn Write, format: ReportFormat, report: &Report) -> Result<(), OutputError> {
    match format {
        ReportFormat::Table => table::write_report(w, report),
        ReportFormat::Json => json::write_report(w, report),
        ReportFormat::Sarif => sarif::write_report(w, report),
        ReportFormat::CycloneDx => cyclonedx::write_report(w, report),
    }
}

// ---- helpers shared by the writers ----------------------------------------

/// Packages in the one order every format uses: ecosystem, name, version,
/// path, then purl, so output does not depend on analyser order.
pub(crate) fn sorted_packages(packages: &[Package]) -> Vec<&Package> {
    let mut v: Vec<&Package> = packages.iter().collect();
    v.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.path, &a.purl).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.path,
            &b.purl,
        ))
    });
    v
}

/// The first 12 hex digits of a digest, as `docker` shows image ids.
pub(crate) fn short_digest(d: Option<&Digest>) -> String {
    d.map(|d| d.hex().chars().take(12).collect()).unwrap_or_default()
}

/// RFC 3339 UTC time, second precision (`2024-05-01T12:00:00Z`). Out-of-range
/// input gives the Unix epoch rather than an error: it is only a label.
pub(crate) fn rfc3339(unix_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The lowercase sha256 hex of the parts, joined by NUL so that
/// `("ab","c")` and `("a","bc")` differ. Used for stable ids and fingerprints.
pub(crate) fn stable_hash(parts: &[&str]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// A UUID-shaped value (version 4 and variant bits set) derived from a hash,
/// so documents get a serial number without randomness.
pub(crate) fn stable_uuid(parts: &[&str]) -> String {
    let h = stable_hash(parts);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// How a package was found, said where it is not `Installed`: the
/// evidence's name (`lockfile`, `app`, `file-name`) and what it means.
pub(crate) fn evidence_note(e: Evidence) -> Option<(&'static str, &'static str)> {
    match e {
        Evidence::Installed => None,
        Evidence::Lockfile => Some((e.as_str(), "named by a lockfile, not found installed")),
        Evidence::App => Some((e.as_str(), "the image's own application, never matched")),
        Evidence::FileName => Some((e.as_str(), "guessed from a file name only")),
    }
}

/// Where the package sits in the image, without the leading slash (SARIF
/// wants a relative URI); "" when unknown.
pub(crate) fn relative_path(path: &str) -> &str {
    path.trim_start_matches('/')
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! One small image and report used by every format's golden test.
    use strata_proto::domain::{
        Digest, Ecosystem, Evidence, Finding, LayerError, OsRelease, Package, Report, Severity,
        SeverityCounts,
    };

    use super::ImageSbom;

    pub const BASE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    pub const APP: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    pub const IMAGE: &str = "sha256:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd";

    fn digest(s: &str) -> Option<Digest> {
        s.parse().ok()
    }

    pub fn os() -> OsRelease {
        OsRelease {
            id: "debian".into(),
            version_id: "12".into(),
            version_codename: "bookworm".into(),
            pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            id_like: vec![],
            path: "/etc/os-release".into(),
        }
    }

    pub fn packages() -> Vec<Package> {
        vec![
            Package {
                ecosystem: Ecosystem::PyPI,
                name: "requests".into(),
                version: "2.19.1".into(),
                source_name: None,
                source_version: None,
                arch: None,
                purl: "pkg:pypi/requests@2.19.1".into(),
                path: "/usr/lib/python3/dist-packages/requests-2.19.1.dist-info/METADATA".into(),
                layer: digest(APP),
                evidence: Default::default(),
            },
            Package {
                ecosystem: Ecosystem::Debian,
                name: "libssl3".into(),
                version: "3.0.11-1~deb12u2".into(),
                source_name: Some("openssl".into()),
                source_version: None,
                arch: Some("amd64".into()),
                purl: "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12&upstream=openssl"
                    .into(),
                path: "/var/lib/dpkg/status".into(),
                layer: digest(BASE),
                evidence: Default::default(),
            },
            Package {
                ecosystem: Ecosystem::Debian,
                name: "zlib1g".into(),
                version: "1:1.2.13.dfsg-1".into(),
                source_name: Some("zlib".into()),
                source_version: None,
                arch: Some("amd64".into()),
                purl: "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
                    .into(),
                path: "/var/lib/dpkg/status".into(),
                layer: digest(BASE),
                evidence: Default::default(),
            },
            Package {
                ecosystem: Ecosystem::Npm,
                name: "@babel/traverse".into(),
                version: "7.22.5".into(),
                source_name: None,
                source_version: None,
                arch: None,
                purl: "pkg:npm/%40babel/traverse@7.22.5".into(),
                path: "/app/node_modules/@babel/traverse/package.json".into(),
                layer: digest(APP),
                evidence: Evidence::Lockfile,
            },
        ]
    }

    pub fn sbom() -> ImageSbom {
        ImageSbom {
            image_name: "registry.example/app:1.0".into(),
            image_digest: digest(IMAGE),
            os_release: Some(os()),
            packages: packages(),
            created_unix_ms: 1_714_564_800_000,
        }
    }

    fn finding(
        pkg: &Package,
        id: &str,
        aliases: &[&str],
        sev: Severity,
        score: Option<f64>,
        fixed: &[&str],
    ) -> Finding {
        Finding {
            vulnerability_id: id.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            summary: format!("{id} in {}", pkg.name),
            package: pkg.clone(),
            installed_version: pkg.version.clone(),
            fixed_versions: fixed.iter().map(|s| s.to_string()).collect(),
            severity: sev,
            score,
            score_source: if score.is_some() {
                "CVSS_V3".into()
            } else {
                String::new()
            },
            vulndb_version: "osv-2024-05-01".into(),
        }
    }

    pub fn report() -> Report {
        let p = packages();
        let findings = vec![
            finding(
                &p[0],
                "GHSA-j8r2-6x86-q33q",
                &["CVE-2023-32681", "PYSEC-2023-74"],
                Severity::Medium,
                Some(6.1),
                &["2.31.0"],
            ),
            finding(
                &p[1],
                "CVE-2023-5678",
                &["DSA-5532-1"],
                Severity::Medium,
                Some(5.3),
                &["3.0.13-1~deb12u1"],
            ),
            finding(&p[1], "CVE-2024-0727", &[], Severity::Low, None, &[]),
            finding(&p[2], "CVE-2023-45853", &[], Severity::Critical, Some(9.8), &[]),
            finding(
                &p[3],
                "GHSA-67hx-6x53-jw92",
                &["CVE-2023-45133"],
                Severity::Critical,
                Some(9.3),
                &["7.23.2"],
            ),
            finding(
                &p[1],
                "CVE-2023-6129",
                &[],
                Severity::Unknown,
                None,
                &["3.0.13-1~deb12u1"],
            ),
        ];
        let mut counts = SeverityCounts::default();
        for f in &findings {
            counts.add(f.severity);
        }
        Report {
            scan_id: "scan-0001".into(),
            image_reference: "registry.example/app:1.0".into(),
            image_digest: digest(IMAGE),
            platform: "linux/amd64".into(),
            os_release: Some(os()),
            packages: p,
            findings,
            counts,
            suppressed: 2,
            vulndb_version: "osv-2024-05-01".into(),
            created_unix_ms: 1_714_564_800_000,
            layer_errors: vec![LayerError {
                digest: "sha256:3333333333333333333333333333333333333333333333333333333333333333"
                    .parse()
                    .expect("valid test digest"),
                error: "gzip: unexpected end of file".into(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_reject_unknown_names() {
        assert_eq!("CycloneDX".parse::<SbomFormat>().unwrap(), SbomFormat::CycloneDx);
        assert_eq!("spdx-json".parse::<SbomFormat>().unwrap(), SbomFormat::Spdx);
        assert!("sarif".parse::<SbomFormat>().is_err());
        assert_eq!("sarif".parse::<ReportFormat>().unwrap(), ReportFormat::Sarif);
        let err = "xml".parse::<ReportFormat>().unwrap_err().to_string();
        assert!(err.contains("xml") && err.contains("sarif"), "{err}");
    }

    #[test]
    fn helpers_are_stable() {
        assert_eq!(rfc3339(1_714_564_800_000), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00Z");
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        let u = stable_uuid(&["x"]);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(
            short_digest(fixtures::sbom().image_digest.as_ref()),
            "abcdefabcdef"
        );
        assert_eq!(relative_path("/var/lib/dpkg/status"), "var/lib/dpkg/status");
    }

    #[test]
    fn sorted_packages_ignores_input_order() {
        let mut p = fixtures::packages();
        let a: Vec<String> = sorted_packages(&p).iter().map(|p| p.name.clone()).collect();
        p.reverse();
        let b: Vec<String> = sorted_packages(&p).iter().map(|p| p.name.clone()).collect();
        assert_eq!(a, b);
        assert_eq!(a[0], "libssl3");
    }
}
