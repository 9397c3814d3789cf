//! `strata scan`: an image's (or an SBOM's) packages matched against the
//! local vulnerability database, with suppressions, in the format CI wants,
//! and an exit code to gate on.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use strata_coordinator::matching::Matcher;
use strata_coordinator::output::{self, ReportFormat};
use strata_coordinator::suppress::{self, Suppressions};
use strata_proto::{OsRelease, Package, Report, Severity, SeverityCounts};

use super::db::DbPath;
use super::image::ImageArgs;

/// Bound on an SBOM file read from disk.
const MAX_SBOM_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The image (as for `strata sbom`). Omit it with `--sbom`.
    #[arg(required_unless_present = "sbom", conflicts_with = "sbom")]
    pub image: Option<String>,
    /// Scan the packages of an SBOM (CycloneDX JSON, SPDX 2.3 JSON, or Strata's inventory JSON).
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbPath,
    #[command(flatten)]
    pub options: ImageArgs,
    /// Output format: table, json (strata.report/v1), sarif (2.1.0), cyclonedx (1.5 with vulnerabilities).
    #[arg(long, short = 'f', default_value = "table")]
    pub format: ReportFormat,
    /// Exit 1 when a finding (after suppressions) is at or above this severity.
    #[arg(long, value_name = "SEVERITY")]
    pub fail_on: Option<Severity>,
    /// An ignore file (TOML: id, optional package, optional expiry, reason). Repeatable.
    #[arg(long = "ignore-file", value_name = "FILE")]
    pub ignore_files: Vec<PathBuf>,
    /// An OpenVEX document whose not_affected / fixed statements remove findings. Repeatable.
    #[arg(long = "vex", value_name = "FILE")]
    pub vex: Vec<PathBuf>,
}

pub async fn run(args: ScanArgs) -> anyhow::Result<u8> {
    // Load everything that can fail on the user's input before the long work.
    let mut suppressions = Suppressions::default();
    for file in &args.ignore_files {
        suppressions.load_ignore_file(file)?;
    }
    for file in &args.vex {
        suppressions.load_openvex_file(file)?;
    }
    let db = args.db.open()?;

    let (reference, digest, platform, os_release, packages) = match (&args.image, &args.sbom) {
        (Some(image), _) => {
            let analysis = args.options.analyze(image).await?;
            (
                analysis.reference,
                analysis.digest,
                analysis.platform.unwrap_or_default(),
                analysis.inventory.os_release,
                analysis.inventory.packages,
            )
        }
        (None, Some(file)) => {
            let (packages, os) = read_sbom(file)?;
            (
                format!("sbom:{}", file.display()),
                None,
                String::new(),
                os,
                packages,
            )
        }
        (None, None) => anyhow::bail!("give an image or --sbom FILE"),
    };

    let matcher = Matcher::new(&db);
    let findings = tokio::task::spawn_blocking(move || {
        let findings = matcher.match_packages(os_release.as_ref(), &packages);
        (findings, os_release, packages)
    });
    let (findings, os_release, packages) = findings.await.context("matching task failed")?;

    let mut counts = SeverityCounts::default();
    for f in &findings {
        counts.add(f.severity);
    }
    let mut report = Report {
        scan_id: String::new(),
        image_reference: reference,
        image_digest: digest,
        platform,
        os_release,
        packages,
        findings,
        counts,
        suppressed: 0,
        vulndb_version: db.version().to_owned(),
        created_unix_ms: super::now_unix_ms(),
        layer_errors: Vec::new(),
    };
    let today = time::OffsetDateTime::now_utc().date();
    let summary = suppress::apply(&mut report, &suppressions, today);
    for warning in &summary.warnings {
        eprintln!(
            "strata: warning: {}",
            strata_proto::text::escape_controls(&warning.to_string())
        );
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    output::write_report(&mut out, args.format, &report)?;
    out.flush().context("writing to stdout")?;

    let gated = args
        .fail_on
        .is_some_and(|threshold| report.findings.iter().any(|f| f.severity >= threshold));
    Ok(if gated {
        super::EXIT_FINDINGS
    } else {
        super::EXIT_OK
    })
}

fn read_sbom(path: &std::path::Path) -> anyhow::Result<(Vec<Package>, Option<OsRelease>)> {
    let bytes = super::client::read_bounded(path, MAX_SBOM_BYTES, "sbom")?;
    output::sbom_in::read(&bytes).with_context(|| format!("sbom {}", path.display()))
}
