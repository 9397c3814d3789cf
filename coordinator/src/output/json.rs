//! Our own JSON schemas: `strata.inventory/v1` (an image's packages) and
//! `strata.report/v1` (a scan report). Both are documented in `SCHEMA.md`
//! beside this file; a change that breaks a reader bumps the version.
//!
//! The inventory lists packages in the same sorted order as every other SBOM
//! format; the report keeps the findings in the order the report holds them.

use std::io::Write;

use serde::{Deserialize, Serialize};
use strata_proto::domain::{Digest, OsRelease, Package, Report};

use super::{ImageSbom, OutputError, rfc3339, sorted_packages};

pub const INVENTORY_SCHEMA: &str = "strata.inventory/v1";
pub const REPORT_SCHEMA: &str = "strata.report/v1";

#[derive(Debug, Serialize, Deserialize)]
pub struct Generator {
    pub name: String,
    pub version: String,
}

impl Generator {
    fn strata() -> Self {
        Generator {
            name: "strata".into(),
            version: crate::VERSION.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub digest: Option<Digest>,
}

#[derive(Serialize)]
struct InventoryOut<'a> {
    schema: &'static str,
    generator: Generator,
    created: String,
    image: ImageRef,
    os_release: Option<&'a OsRelease>,
    packages: Vec<&'a Package>,
}

/// A `strata.inventory/v1` document as read back (see [`super::sbom_in`]).
#[derive(Debug, Deserialize)]
pub struct InventoryDoc {
    pub schema: String,
    #[serde(default)]
    pub image: Option<ImageRef>,
    #[serde(default)]
    pub os_release: Option<OsRelease>,
    pub packages: Vec<Package>,
}

/// Writes `sbom` as a pretty-printed `strata.inventory/v1` document.
pub fn write_inventory(w: &mut dyn Write, sbom: &ImageSbom) -> Result<(), OutputError> {
    let doc = InventoryOut {
        schema: INVENTORY_SCHEMA,
        generator: Generator::strata(),
        created: rfc3339(sbom.created_unix_ms),
        image: ImageRef {
            name: sbom.image_name.clone(),
            digest: sbom.image_digest.clone(),
        },
        os_release: sbom.os_release.as_ref(),
        packages: sorted_packages(&sbom.packages),
    };
    serde_json::to_writer_pretty(&mut *w, &doc).map_err(OutputError::json("json"))?;
    writeln!(w).map_err(OutputError::io("json"))
}

#[derive(Serialize)]
struct ReportOut<'a> {
    schema: &'static str,
    generator: Generator,
    created: String,
    #[serde(flatten)]
    report: &'a Report,
}

/// Writes `report` as a pretty-printed `strata.report/v1` document: the
/// report's own fields plus `schema`, `generator` and `created`.
pub fn write_report(w: &mut dyn Write, report: &Report) -> Result<(), OutputError> {
    let doc = ReportOut {
        schema: REPORT_SCHEMA,
        generator: Generator::strata(),
        created: rfc3339(report.created_unix_ms),
        report,
    };
    serde_json::to_writer_pretty(&mut *w, &doc).map_err(OutputError::json("json"))?;
    writeln!(w).map_err(OutputError::io("json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fixtures, golden};

    #[test]
    fn inventory_golden_and_schema() {
        let mut out = Vec::new();
        write_inventory(&mut out, &fixtures::sbom()).unwrap();
        let text = String::from_utf8(out).unwrap();
        golden::check("sbom.json", &text);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], INVENTORY_SCHEMA);
        assert_eq!(v["image"]["digest"], fixtures::IMAGE);
        assert_eq!(v["os_release"]["version_id"], "12");
        assert_eq!(v["packages"].as_array().unwrap().len(), 4);
        assert_eq!(v["created"], "2024-05-01T12:00:00Z");
    }

    #[test]
    fn report_golden_and_round_trip() {
        let report = fixtures::report();
        let mut out = Vec::new();
        write_report(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        golden::check("report.json", &text);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], REPORT_SCHEMA);
        assert_eq!(v["suppressed"], 2);
        assert_eq!(v["counts"]["critical"], 2);
        // The extra top-level fields do not stop the domain type reading it back.
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }
}
