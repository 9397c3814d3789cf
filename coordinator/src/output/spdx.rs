//! SPDX 2.3 JSON for an SBOM. Hand-written serde structs: the `spdx` crate
//! only parses licence expressions, and no maintained crate writes SPDX 2.3
//! documents. The same structs read documents back (lenient: every field
//! the reader does not need has a default).
//!
//! Shape: the document `DESCRIBES` one package for the image
//! (`primaryPackagePurpose: CONTAINER`), which `CONTAINS` a package for the
//! OS (`OPERATING-SYSTEM`) and one per software package, each with a purl
//! in `externalRefs`. Where the package was found goes in `sourceInfo`:
//! `acquired package info from <path>[ in layer <digest>]`; how it was found,
//! where it was not installed, in its `comment`
//! (`strata:evidence=lockfile: …`).

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{ImageSbom, OutputError, rfc3339, sorted_packages, stable_uuid};

pub const NOASSERTION: &str = "NOASSERTION";
pub const SOURCE_INFO_PREFIX: &str = "acquired package info from ";
pub const SOURCE_INFO_LAYER: &str = " in layer ";
/// A package's comment saying how it was found, where it is not installed:
/// `strata:evidence=lockfile: named by a lockfile, not found installed`.
pub const EVIDENCE_COMMENT_PREFIX: &str = "strata:evidence=";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Document {
    #[serde(rename = "spdxVersion")]
    pub spdx_version: String,
    #[serde(rename = "dataLicense", default)]
    pub data_license: String,
    #[serde(rename = "SPDXID", default)]
    pub spdx_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "documentNamespace", default)]
    pub document_namespace: String,
    #[serde(rename = "creationInfo", default)]
    pub creation_info: CreationInfo,
    #[serde(default)]
    pub packages: Vec<SpdxPackage>,
    #[serde(default)]
    pub relationships: Vec<Relationship>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreationInfo {
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub creators: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SpdxPackage {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "SPDXID", default)]
    pub spdx_id: String,
    #[serde(rename = "versionInfo", default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    #[serde(rename = "downloadLocation", default)]
    pub download_location: String,
    #[serde(rename = "filesAnalyzed", default)]
    pub files_analyzed: bool,
    #[serde(rename = "sourceInfo", default, skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    #[serde(rename = "licenseConcluded", default, skip_serializing_if = "Option::is_none")]
    pub license_concluded: Option<String>,
    #[serde(rename = "licenseDeclared", default, skip_serializing_if = "Option::is_none")]
    pub license_declared: Option<String>,
    #[serde(rename = "copyrightText", default, skip_serializing_if = "Option::is_none")]
    pub copyright_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(rename = "externalRefs", default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(
        rename = "primaryPackagePurpose",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub primary_package_purpose: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ExternalRef {
    #[serde(rename = "referenceCategory", default)]
    pub reference_category: String,
    #[serde(rename = "referenceType", default)]
    pub reference_type: String,
    #[serde(rename = "referenceLocator", default)]
    pub reference_locator: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Relationship {
    #[serde(rename = "spdxElementId", default)]
    pub spdx_element_id: String,
    #[serde(rename = "relationshipType", default)]
    pub relationship_type: String,
    #[serde(rename = "relatedSpdxElement", default)]
    pub related_spdx_element: String,
}

fn rel(a: &str, kind: &str, b: &str) -> Relationship {
    Relationship {
        spdx_element_id: a.into(),
        relationship_type: kind.into(),
        related_spdx_element: b.into(),
    }
}

fn bare_package(name: &str, id: String) -> SpdxPackage {
    SpdxPackage {
        name: name.into(),
        spdx_id: id,
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        license_concluded: Some(NOASSERTION.into()),
        license_declared: Some(NOASSERTION.into()),
        copyright_text: Some(NOASSERTION.into()),
        ..SpdxPackage::default()
    }
}

/// Builds the document for `sbom`. SPDX ids are `SPDXRef-Package-<n>` in
/// the sorted package order, so the same inventory gives the same ids.
pub fn document(sbom: &ImageSbom) -> Document {
    const IMAGE_ID: &str = "SPDXRef-Image";
    const OS_ID: &str = "SPDXRef-OperatingSystem";
    let digest = sbom.image_digest.as_ref().map(|d| d.as_str()).unwrap_or_default();
    let created = sbom.created_unix_ms.to_string();

    let mut image = bare_package(&sbom.image_name, IMAGE_ID.into());
    image.version_info = (!digest.is_empty()).then(|| digest.to_owned());
    image.primary_package_purpose = Some("CONTAINER".into());
    let mut packages = vec![image];
    let mut relationships = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_ID)];

    if let Some(os) = &sbom.os_release {
        let mut p = bare_package(&os.id, OS_ID.into());
        p.version_info = Some(os.version_id.clone());
        p.description = (!os.pretty_name.is_empty()).then(|| os.pretty_name.clone());
        p.primary_package_purpose = Some("OPERATING-SYSTEM".into());
        packages.push(p);
        relationships.push(rel(IMAGE_ID, "CONTAINS", OS_ID));
    }

    for (i, pkg) in sorted_packages(&sbom.packages).into_iter().enumerate() {
        let id = format!("SPDXRef-Package-{}", i + 1);
        let mut p = bare_package(&pkg.name, id.clone());
        p.version_info = Some(pkg.version.clone());
        p.primary_package_purpose = Some("LIBRARY".into());
        if !pkg.path.is_empty() {
            let mut info = format!("{SOURCE_INFO_PREFIX}{}", pkg.path);
            if let Some(l) = &pkg.layer {
                info.push_str(SOURCE_INFO_LAYER);
                info.push_str(l.as_str());
            }
            p.source_info = Some(info);
        }
        if let Some((evidence, meaning)) = super::evidence_note(pkg.evidence) {
            p.comment = Some(format!("{EVIDENCE_COMMENT_PREFIX}{evidence}: {meaning}"));
        }
        if !pkg.purl.is_empty() {
            p.external_refs.push(ExternalRef {
                reference_category: "PACKAGE-MANAGER".into(),
                reference_type: "purl".into(),
                reference_locator: pkg.purl.clone(),
            });
        }
        packages.push(p);
        relationships.push(rel(IMAGE_ID, "CONTAINS", &id));
    }

    Document {
        spdx_version: "SPDX-2.3".into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: sbom.image_name.clone(),
        // A URI unique to this document, derived from what it describes.
        document_namespace: format!(
            "https://strata.invalid/spdx/{}",
            stable_uuid(&["spdx", &sbom.image_name, digest, &created])
        ),
        creation_info: CreationInfo {
            created: rfc3339(sbom.created_unix_ms),
            creators: vec![format!("Tool: strata-{}", crate::VERSION)],
        },
        packages,
        relationships,
    }
}

/// Writes `sbom` as a pretty-printed SPDX 2.3 JSON document.
pub fn write_sbom(w: &mut dyn Write, sbom: &ImageSbom) -> Result<(), OutputError> {
    serde_json::to_writer_pretty(&mut *w, &document(sbom)).map_err(OutputError::json("spdx"))?;
    writeln!(w).map_err(OutputError::io("spdx"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fixtures, golden};
    use std::collections::HashSet;

    #[test]
    fn spdx_golden_and_structure() {
        let mut out = Vec::new();
        write_sbom(&mut out, &fixtures::sbom()).unwrap();
        let text = String::from_utf8(out).unwrap();
        golden::check("sbom.spdx.json", &text);

        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["dataLicense"], "CC0-1.0");
        assert!(v["documentNamespace"].as_str().unwrap().starts_with("https://"));
        assert_eq!(v["creationInfo"]["created"], "2024-05-01T12:00:00Z");
        let pkgs = v["packages"].as_array().unwrap();
        assert_eq!(pkgs.len(), 6); // image, OS, 4 packages
        let ids: HashSet<&str> = pkgs.iter().map(|p| p["SPDXID"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), pkgs.len(), "SPDX ids are unique");
        for id in &ids {
            assert!(
                id.strip_prefix("SPDXRef-").is_some_and(|r| r
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')),
                "{id}"
            );
        }
        // Every relationship names real elements; the image contains every package.
        let rels = v["relationships"].as_array().unwrap();
        for r in rels {
            let a = r["spdxElementId"].as_str().unwrap();
            let b = r["relatedSpdxElement"].as_str().unwrap();
            assert!(a == "SPDXRef-DOCUMENT" || ids.contains(a));
            assert!(ids.contains(b));
        }
        assert_eq!(
            rels.iter()
                .filter(|r| r["relationshipType"] == "DESCRIBES")
                .count(),
            1
        );
        assert_eq!(
            rels.iter()
                .filter(|r| r["relationshipType"] == "CONTAINS")
                .count(),
            5
        );
        let purls = pkgs
            .iter()
            .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["referenceType"] == "purl")
            .count();
        assert_eq!(purls, 4);
    }
}
