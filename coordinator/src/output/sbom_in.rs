//! SBOM input for `strata scan --sbom FILE`: packages (and the OS release,
//! when the document says) from CycloneDX JSON (any 1.x), SPDX 2.x JSON, or
//! our `strata.inventory/v1` JSON, detected from the document itself.
//!
//! Contract:
//! - Input over [`MAX_SBOM_BYTES`] or with more than [`MAX_PACKAGES`]
//!   packages is an error, as is anything that is not one of the three
//!   formats (the error says what was expected).
//! - A component or package without a purl, or whose purl names an
//!   ecosystem Strata cannot match (see [`super::purl`]), is skipped and
//!   counted in [`SbomInput::skipped`], not an error: SBOMs from other tools
//!   list files, binaries and the like.
//! - Identity (ecosystem, name, version, source, arch) comes from the purl;
//!   path, layer and evidence from Strata's `strata:*` properties (or Syft's
//!   location properties) in CycloneDX, and from `sourceInfo` and the
//!   `strata:evidence=` comment in SPDX. The path is ""
//!   when the document does not say.
//! - The OS release comes from an `operating-system` component (CycloneDX)
//!   or package (SPDX), else from the first OS purl's `distro=` qualifier,
//!   else from its namespace alone (no version).

use serde::Deserialize;
use strata_proto::domain::{Digest, OsRelease, Package};

use super::cyclonedx::{
    PROP_ARCH, PROP_EVIDENCE, PROP_LAYER, PROP_OS_CODENAME, PROP_OS_ID_LIKE, PROP_OS_PATH, PROP_PATH,
    PROP_SOURCE_NAME, PROP_SOURCE_VERSION,
};
use super::json::{INVENTORY_SCHEMA, InventoryDoc};
use super::purl;
use super::spdx::{self, EVIDENCE_COMMENT_PREFIX, SOURCE_INFO_LAYER, SOURCE_INFO_PREFIX};

/// The largest SBOM accepted, in bytes.
pub const MAX_SBOM_BYTES: usize = 64 << 20;
/// The most packages (components) accepted in one SBOM.
pub const MAX_PACKAGES: usize = 500_000;
/// Skip reasons kept for the caller to show (the count is always exact).
const MAX_SKIP_REASONS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("sbom: {size} bytes is over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("sbom: {format}: {count} packages is over the limit of {max}")]
    TooMany {
        format: &'static str,
        count: usize,
        max: usize,
    },
    #[error("sbom: not a JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("sbom: {format}: {source}")]
    Invalid {
        format: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "sbom: unrecognised document: expected CycloneDX JSON (\"bomFormat\": \"CycloneDX\"), \
         SPDX 2.x JSON (\"spdxVersion\") or Strata inventory JSON (\"schema\": \"{INVENTORY_SCHEMA}\")"
    )]
    Unrecognised,
    #[error("sbom: {format}: unsupported version {version:?}")]
    UnsupportedVersion { format: &'static str, version: String },
}

/// Which format a document was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbomKind {
    CycloneDx,
    Spdx,
    Inventory,
}

/// Everything read from an SBOM.
#[derive(Debug, Default)]
pub struct SbomInput {
    pub kind: Option<SbomKind>,
    pub packages: Vec<Package>,
    pub os_release: Option<OsRelease>,
    /// How many components or packages were skipped.
    pub skipped: usize,
    /// Why, for the first few.
    pub skip_reasons: Vec<String>,
}

impl SbomInput {
    fn skip(&mut self, reason: String) {
        self.skipped += 1;
        if self.skip_reasons.len() < MAX_SKIP_REASONS {
            self.skip_reasons.push(reason);
        }
    }
}

/// Reads packages and the OS release from an SBOM; see the module docs.
pub fn read(bytes: &[u8]) -> Result<(Vec<Package>, Option<OsRelease>), SbomError> {
    let input = read_with_details(bytes)?;
    Ok((input.packages, input.os_release))
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "bomFormat", default)]
    bom_format: Option<String>,
    #[serde(rename = "spdxVersion", default)]
    spdx_version: Option<String>,
    #[serde(default)]
    schema: Option<String>,
}

/// As [`read`], also saying which format it was and what was skipped.
pub fn read_with_details(bytes: &[u8]) -> Result<SbomInput, SbomError> {
    if bytes.len() > MAX_SBOM_BYTES {
        return Err(SbomError::TooLarge {
            size: bytes.len(),
            max: MAX_SBOM_BYTES,
        });
    }
    // A first pass that keeps only three fields decides the format without
    // building the whole document twice.
    let probe: Probe = serde_json::from_slice(bytes).map_err(SbomError::NotJson)?;
    if probe.bom_format.as_deref() == Some("CycloneDX") {
        read_cyclonedx(bytes)
    } else if let Some(v) = probe.spdx_version {
        if !v.starts_with("SPDX-2.") {
            return Err(SbomError::UnsupportedVersion {
                format: "spdx",
                version: v.chars().take(50).collect(),
            });
        }
        read_spdx(bytes)
    } else if let Some(s) = probe.schema {
        if s != INVENTORY_SCHEMA {
            if s.starts_with("strata.inventory/") {
                return Err(SbomError::UnsupportedVersion {
                    format: "strata inventory",
                    version: s.chars().take(50).collect(),
                });
            }
            return Err(SbomError::Unrecognised);
        }
        read_inventory(bytes)
    } else {
        Err(SbomError::Unrecognised)
    }
}

fn check_count(format: &'static str, count: usize) -> Result<(), SbomError> {
    if count > MAX_PACKAGES {
        return Err(SbomError::TooMany {
            format,
            count,
            max: MAX_PACKAGES,
        });
    }
    Ok(())
}

// ---- ours -----------------------------------------------------------------

fn read_inventory(bytes: &[u8]) -> Result<SbomInput, SbomError> {
    const FORMAT: &str = "strata inventory";
    let doc: InventoryDoc = serde_json::from_slice(bytes).map_err(|source| SbomError::Invalid {
        format: FORMAT,
        source,
    })?;
    debug_assert_eq!(doc.schema, INVENTORY_SCHEMA);
    check_count(FORMAT, doc.packages.len())?;
    Ok(SbomInput {
        kind: Some(SbomKind::Inventory),
        packages: doc.packages,
        os_release: doc.os_release,
        ..SbomInput::default()
    })
}

// ---- identity from a purl, shared by CycloneDX and SPDX ---------------------

/// Keeps the first OS release seen, upgraded by the first one with a version.
fn note_os(slot: &mut Option<OsRelease>, os: Option<OsRelease>) {
    let Some(os) = os else { return };
    match slot {
        None => *slot = Some(os),
        Some(cur) if cur.version_id.is_empty() && !os.version_id.is_empty() && cur.id == os.id => {
            *slot = Some(os)
        }
        _ => {}
    }
}

/// The package's name: the purl's, or the document's own spelling of it
/// when the two differ only in ASCII case. The purl spec lowercases some
/// parts (golang namespaces, npm names), but Go module paths
/// (`github.com/BurntSushi/toml`) and old npm names (`JSONStream`) are
/// case-sensitive, and OSV spells them as their registries do.
fn name_as_written(from_purl: String, document: &str) -> String {
    if document != from_purl && document.eq_ignore_ascii_case(&from_purl) {
        document.to_owned()
    } else {
        from_purl
    }
}

fn package_from_purl(
    input: &mut SbomInput,
    purl_os: &mut Option<OsRelease>,
    what: &str,
    doc_name: &str,
    purl: Option<&str>,
) -> Option<Package> {
    let Some(purl) = purl.filter(|p| !p.is_empty()) else {
        input.skip(format!("{}: no purl", what.chars().take(200).collect::<String>()));
        return None;
    };
    match purl::parse(purl) {
        Ok(p) => {
            note_os(purl_os, p.os);
            Some(Package {
                ecosystem: p.ecosystem,
                name: name_as_written(p.name, doc_name),
                version: p.version,
                source_name: p.source_name,
                source_version: p.source_version,
                arch: p.arch,
                purl: purl.to_owned(),
                path: String::new(),
                layer: None,
                evidence: Default::default(),
            })
        }
        Err(e) => {
            input.skip(e.to_string());
            None
        }
    }
}

// ---- CycloneDX --------------------------------------------------------------

#[derive(Deserialize)]
struct CdxDoc {
    #[serde(rename = "specVersion", default)]
    spec_version: String,
    #[serde(default)]
    components: Vec<CdxComponent>,
}

#[derive(Deserialize)]
struct CdxComponent {
    #[serde(rename = "type", default)]
    ty: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    purl: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    properties: Vec<CdxProperty>,
    #[serde(default)]
    components: Vec<CdxComponent>,
}

#[derive(Deserialize)]
struct CdxProperty {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

impl CdxComponent {
    fn prop(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn read_cyclonedx(bytes: &[u8]) -> Result<SbomInput, SbomError> {
    const FORMAT: &str = "cyclonedx";
    let doc: CdxDoc = serde_json::from_slice(bytes).map_err(|source| SbomError::Invalid {
        format: FORMAT,
        source,
    })?;
    if !doc.spec_version.starts_with("1.") {
        return Err(SbomError::UnsupportedVersion {
            format: FORMAT,
            version: doc.spec_version.chars().take(50).collect(),
        });
    }
    let mut input = SbomInput {
        kind: Some(SbomKind::CycloneDx),
        ..SbomInput::default()
    };
    let mut os_component: Option<OsRelease> = None;
    let mut purl_os: Option<OsRelease> = None;
    // Components nest (an application's own dependencies); walk them all
    // with an explicit stack. serde_json's recursion limit already bounds the depth.
    let mut stack: Vec<&CdxComponent> = doc.components.iter().rev().collect();
    let mut seen = 0usize;
    while let Some(c) = stack.pop() {
        seen += 1;
        check_count(FORMAT, seen)?;
        stack.extend(c.components.iter().rev());
        if c.ty == "operating-system" {
            if os_component.is_none() && !c.name.is_empty() {
                os_component = Some(OsRelease {
                    id: c.name.to_ascii_lowercase(),
                    version_id: c.version.clone(),
                    version_codename: c
                        .prop(PROP_OS_CODENAME)
                        .or_else(|| c.prop("syft:distro:versionCodename"))
                        .unwrap_or_default()
                        .to_owned(),
                    pretty_name: c.description.clone().unwrap_or_default(),
                    id_like: c
                        .prop(PROP_OS_ID_LIKE)
                        .or_else(|| c.prop("syft:distro:idLike"))
                        .map(|s| s.split_whitespace().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    path: c.prop(PROP_OS_PATH).unwrap_or_default().to_owned(),
                });
            }
            continue;
        }
        let what = format!("component {:?}", c.name);
        let Some(mut p) = package_from_purl(&mut input, &mut purl_os, &what, &c.name, c.purl.as_deref())
        else {
            continue;
        };
        if let Some(path) = c.prop(PROP_PATH).or_else(|| c.prop("syft:location:0:path")) {
            p.path = path.to_owned();
        }
        p.layer = c
            .prop(PROP_LAYER)
            .or_else(|| c.prop("syft:location:0:layerID"))
            .and_then(|d| d.parse::<Digest>().ok());
        if let Some(s) = c.prop(PROP_SOURCE_NAME) {
            p.source_name = Some(s.to_owned());
        }
        if let Some(s) = c.prop(PROP_SOURCE_VERSION) {
            p.source_version = Some(s.to_owned());
        }
        if let Some(s) = c.prop(PROP_ARCH) {
            p.arch = Some(s.to_owned());
        }
        if let Some(e) = c.prop(PROP_EVIDENCE).and_then(|e| e.parse().ok()) {
            p.evidence = e;
        }
        input.packages.push(p);
    }
    input.os_release = os_component.or(purl_os);
    Ok(input)
}

// ---- SPDX ---------------------------------------------------------------------

/// `acquired package info from /var/lib/dpkg/status in layer sha256:…` →
/// (path, layer). Also takes Syft's `… from DPKG DB: /a, /b` (first path).
fn parse_source_info(info: &str) -> (Option<String>, Option<Digest>) {
    let Some(rest) = info.strip_prefix(SOURCE_INFO_PREFIX) else {
        return (None, None);
    };
    let (rest, layer) = match rest.rsplit_once(SOURCE_INFO_LAYER) {
        Some((r, l)) => (r, l.parse::<Digest>().ok()),
        None => (rest, None),
    };
    let rest = if rest.starts_with('/') {
        rest
    } else {
        rest.split_once(": ").map(|(_, r)| r).unwrap_or(rest)
    };
    let path = if layer.is_some() {
        rest
    } else {
        rest.split(", ").next().unwrap_or(rest)
    };
    (path.starts_with('/').then(|| path.to_owned()), layer)
}

fn read_spdx(bytes: &[u8]) -> Result<SbomInput, SbomError> {
    const FORMAT: &str = "spdx";
    let doc: spdx::Document = serde_json::from_slice(bytes).map_err(|source| SbomError::Invalid {
        format: FORMAT,
        source,
    })?;
    check_count(FORMAT, doc.packages.len())?;
    let mut input = SbomInput {
        kind: Some(SbomKind::Spdx),
        ..SbomInput::default()
    };
    let mut os_package: Option<OsRelease> = None;
    let mut purl_os: Option<OsRelease> = None;
    for sp in &doc.packages {
        let purpose = sp.primary_package_purpose.as_deref().unwrap_or_default();
        let purl = sp
            .external_refs
            .iter()
            .find(|r| r.reference_type == "purl")
            .map(|r| r.reference_locator.as_str());
        if purpose == "OPERATING-SYSTEM" {
            if os_package.is_none() && !sp.name.is_empty() {
                os_package = Some(OsRelease {
                    id: sp.name.to_ascii_lowercase(),
                    version_id: sp.version_info.clone().unwrap_or_default(),
                    pretty_name: sp.description.clone().unwrap_or_default(),
                    ..OsRelease::default()
                });
            }
            continue;
        }
        if purl.is_none() && matches!(purpose, "CONTAINER" | "FILE") {
            continue; // the document's subject, not a package
        }
        let what = format!("package {:?} ({})", sp.name, sp.spdx_id);
        let Some(mut p) = package_from_purl(&mut input, &mut purl_os, &what, &sp.name, purl) else {
            continue;
        };
        let (path, layer) = sp
            .source_info
            .as_deref()
            .map(parse_source_info)
            .unwrap_or_default();
        p.path = path.unwrap_or_default();
        p.layer = layer;
        if let Some(e) = sp
            .comment
            .as_deref()
            .and_then(|c| c.strip_prefix(EVIDENCE_COMMENT_PREFIX))
            .and_then(|c| c.split(':').next())
            .and_then(|e| e.parse().ok())
        {
            p.evidence = e;
        }
        input.packages.push(p);
    }
    input.os_release = os_package.or(purl_os);
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{ImageSbom, SbomFormat, fixtures, write_sbom};
    use strata_proto::domain::Ecosystem;

    fn fixture(name: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/src/output/testdata/");
        std::fs::read(format!("{p}{name}")).unwrap()
    }

    fn sorted(mut v: Vec<Package>) -> Vec<Package> {
        v.sort_by(|a, b| (&a.name, &a.path).cmp(&(&b.name, &b.path)));
        v
    }

    fn round_trip(format: SbomFormat) -> SbomInput {
        let sbom: ImageSbom = fixtures::sbom();
        let mut out = Vec::new();
        write_sbom(&mut out, format, &sbom).unwrap();
        let back = read_with_details(&out).unwrap();
        assert_eq!(back.skipped, 0, "{format}: {:?}", back.skip_reasons);
        assert_eq!(sorted(back.packages.clone()), sorted(sbom.packages), "{format}");
        back
    }

    #[test]
    fn round_trip_inventory() {
        let back = round_trip(SbomFormat::Json);
        assert_eq!(back.kind, Some(SbomKind::Inventory));
        assert_eq!(back.os_release, Some(fixtures::os()));
    }

    #[test]
    fn round_trip_cyclonedx() {
        let back = round_trip(SbomFormat::CycloneDx);
        assert_eq!(back.kind, Some(SbomKind::CycloneDx));
        assert_eq!(back.os_release, Some(fixtures::os()));
    }

    #[test]
    fn round_trip_spdx() {
        let back = round_trip(SbomFormat::Spdx);
        assert_eq!(back.kind, Some(SbomKind::Spdx));
        let os = back.os_release.unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("debian", "12"));
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn syft_cyclonedx_1_6() {
        // Real Syft 1.18 output for a Debian 12 root filesystem.
        let got = read_with_details(&fixture("syft-dpkg.cdx.json")).unwrap();
        assert_eq!(got.packages.len(), 1);
        let p = &got.packages[0];
        assert_eq!(
            (p.ecosystem, p.name.as_str(), p.version.as_str()),
            (Ecosystem::Debian, "libpam-runtime", "1.1.8-3.6")
        );
        assert_eq!(p.source_name.as_deref(), Some("pam"));
        assert!(p.path.starts_with('/'));
        let os = got.os_release.unwrap();
        assert_eq!(
            (
                os.id.as_str(),
                os.version_id.as_str(),
                os.version_codename.as_str()
            ),
            ("debian", "12", "bookworm")
        );
    }

    #[test]
    fn syft_spdx() {
        let got = read_with_details(&fixture("syft-dpkg.spdx.json")).unwrap();
        assert_eq!(got.packages.len(), 1);
        assert_eq!(got.packages[0].name, "libpam-runtime");
        assert_eq!(got.packages[0].path, "/usr/share/doc/libpam-runtime/copyright");
        let os = got.os_release.unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("debian", "12"));
    }

    #[test]
    fn syft_mixed_ecosystems() {
        for name in ["syft-mixed.cdx.json", "syft-mixed.spdx.json"] {
            let got = read_with_details(&fixture(name)).unwrap();
            let ecos: std::collections::BTreeSet<Ecosystem> =
                got.packages.iter().map(|p| p.ecosystem).collect();
            for e in [
                Ecosystem::Npm,
                Ecosystem::PyPI,
                Ecosystem::CratesIo,
                Ecosystem::RubyGems,
                Ecosystem::Packagist,
            ] {
                assert!(ecos.contains(&e), "{name}: {e} missing from {ecos:?}");
            }
            // Packages without purls and the namespace-less rpm are skipped, and say why.
            assert!(got.skipped >= 3, "{name}: {:?}", got.skip_reasons);
            assert!(got.skip_reasons.iter().any(|r| r.contains("no purl")), "{name}");
            assert!(
                got.skip_reasons.iter().any(|r| r.contains("pkg:rpm/dive")),
                "{name}"
            );
        }
    }

    /// Application packages as Syft 1.x writes them in CycloneDX: each
    /// becomes the name OSV uses. The Go module with a major version is the
    /// `/v2` module (Syft puts `v2` in the purl's subpath), not v1's.
    #[test]
    fn syft_application_purls_map_to_osv_names() {
        let doc = br#"{"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [
          {"type": "library", "name": "github.com/nats-io/nats-server/v2", "version": "v2.15.1",
           "purl": "pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2"},
          {"type": "library", "name": "github.com/BurntSushi/toml", "version": "v1.3.2",
           "purl": "pkg:golang/github.com/BurntSushi/toml@v1.3.2"},
          {"type": "library", "name": "stdlib", "version": "go1.19.8", "purl": "pkg:golang/stdlib@1.19.8"},
          {"type": "library", "name": "log4j-core", "version": "2.14.1",
           "purl": "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"},
          {"type": "library", "name": "@babel/traverse", "version": "7.22.5",
           "purl": "pkg:npm/%40babel/traverse@7.22.5"},
          {"type": "library", "name": "JSONStream", "version": "1.3.5", "purl": "pkg:npm/JSONStream@1.3.5"},
          {"type": "library", "name": "Flask_Cors", "version": "3.0.9", "purl": "pkg:pypi/flask-cors@3.0.9"},
          {"type": "library", "name": "rack", "version": "2.2.3", "purl": "pkg:gem/rack@2.2.3"},
          {"type": "library", "name": "Newtonsoft.Json", "version": "12.0.1",
           "purl": "pkg:nuget/Newtonsoft.Json@12.0.1"},
          {"type": "library", "name": "guzzlehttp/guzzle", "version": "7.4.4",
           "purl": "pkg:composer/guzzlehttp/guzzle@7.4.4"},
          {"type": "library", "name": "smallvec", "version": "1.6.0", "purl": "pkg:cargo/smallvec@1.6.0"}
        ]}"#;
        let got = read_with_details(doc).unwrap();
        assert_eq!(got.skipped, 0, "{:?}", got.skip_reasons);
        let names: Vec<(Ecosystem, &str, &str)> = got
            .packages
            .iter()
            .map(|p| (p.ecosystem, p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (Ecosystem::Go, "github.com/nats-io/nats-server/v2", "v2.15.1"),
                (Ecosystem::Go, "github.com/BurntSushi/toml", "v1.3.2"),
                (Ecosystem::Go, "stdlib", "1.19.8"),
                (Ecosystem::Maven, "org.apache.logging.log4j:log4j-core", "2.14.1"),
                (Ecosystem::Npm, "@babel/traverse", "7.22.5"),
                (Ecosystem::Npm, "JSONStream", "1.3.5"),
                (Ecosystem::PyPI, "flask-cors", "3.0.9"),
                (Ecosystem::RubyGems, "rack", "2.2.3"),
                (Ecosystem::NuGet, "Newtonsoft.Json", "12.0.1"),
                (Ecosystem::Packagist, "guzzlehttp/guzzle", "7.4.4"),
                (Ecosystem::CratesIo, "smallvec", "1.6.0"),
            ]
        );
        // The purl is kept as the document wrote it.
        assert_eq!(
            got.packages[0].purl,
            "pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2"
        );
    }

    #[test]
    fn rejects_unknown_and_oversized_input() {
        let e = read(b"{\"hello\": 1}").unwrap_err();
        assert!(matches!(e, SbomError::Unrecognised), "{e}");
        assert!(e.to_string().contains("CycloneDX"));
        assert!(matches!(read(b"[1,2]").unwrap_err(), SbomError::NotJson(_)));
        assert!(matches!(read(b"not json").unwrap_err(), SbomError::NotJson(_)));
        assert!(matches!(
            read(br#"{"spdxVersion": "SPDX-3.0"}"#).unwrap_err(),
            SbomError::UnsupportedVersion { .. }
        ));
        assert!(matches!(
            read(br#"{"schema": "strata.inventory/v9", "packages": []}"#).unwrap_err(),
            SbomError::UnsupportedVersion { .. }
        ));
        let big = vec![b' '; MAX_SBOM_BYTES + 1];
        assert!(matches!(read(&big).unwrap_err(), SbomError::TooLarge { .. }));
        // A broken package in our own format is an error naming the line.
        let bad = br#"{"schema": "strata.inventory/v1",
  "packages": [{"ecosystem": "Nope", "name": "x", "version": "1", "purl": "", "path": ""}]}"#;
        let e = read(bad).unwrap_err().to_string();
        assert!(e.contains("strata inventory") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn hostile_nesting_and_counts_are_errors_not_crashes() {
        let depth = 5_000;
        let mut deep = String::from(r#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": ["#);
        for _ in 0..depth {
            deep.push_str(r#"{"type": "library", "name": "x", "components": ["#);
        }
        for _ in 0..depth {
            deep.push_str("]}");
        }
        deep.push_str("]}");
        assert!(read(deep.as_bytes()).is_err());
        assert!(check_count("spdx", MAX_PACKAGES).is_ok());
        let e = check_count("spdx", MAX_PACKAGES + 1).unwrap_err().to_string();
        assert!(e.contains("spdx") && e.contains("over the limit"), "{e}");
        // Nested components within the limit are all read.
        let nested = br#"{"bomFormat": "CycloneDX", "specVersion": "1.4", "components": [
            {"type": "application", "name": "app", "purl": "pkg:npm/app@1.0.0", "components": [
                {"type": "library", "name": "lodash", "purl": "pkg:npm/lodash@4.17.20"}]}]}"#;
        let (pkgs, os) = read(nested).unwrap();
        assert_eq!(pkgs.len(), 2);
        assert!(os.is_none());
    }

    #[test]
    fn source_info_forms() {
        let d = fixtures::BASE;
        assert_eq!(
            parse_source_info(&format!(
                "acquired package info from /var/lib/dpkg/status in layer {d}"
            )),
            (Some("/var/lib/dpkg/status".into()), d.parse().ok())
        );
        assert_eq!(
            parse_source_info("acquired package info from DPKG DB: /a/b, /var/lib/dpkg/status"),
            (Some("/a/b".into()), None)
        );
        assert_eq!(parse_source_info("something else"), (None, None));
    }
}
