//! Aligned text tables for a terminal: an SBOM's packages, and a scan
//! report's findings grouped by severity (critical first) with a summary line.
//!
//! Columns are padded to the widest cell (counted in characters); the last
//! column is not padded. Control characters in outside strings are replaced
//! by `?` so that a package name cannot move the cursor or change colours.
//! A package not found installed (a lockfile entry, a guess from a file
//! name) is said in an `EVIDENCE` column, present only when there is one.

use std::io::Write;

use strata_proto::domain::{Evidence, Finding, Report, Severity};

use super::{ImageSbom, OutputError, evidence_note, short_digest, sorted_packages};

const FORMAT: &str = "table";

/// `s` with every control character and bidirectional override (which
/// would reorder what a reader sees) replaced by `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if strata_proto::text::hidden(c) { '?' } else { c })
        .collect()
}

/// Writes `rows` (the first one is the header) with aligned columns, each
/// line prefixed by `indent`.
fn write_rows(
    w: &mut dyn Write,
    indent: &str,
    rows: &[Vec<String>],
    widths: &[usize],
) -> std::io::Result<()> {
    for row in rows {
        let mut line = String::from(indent);
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(w, "{}", line.trim_end())?;
    }
    Ok(())
}

fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let n = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) if *w < n => *w = n,
                Some(_) => {}
                None => widths.push(n),
            }
        }
    }
    widths
}

/// The SBOM table: name, version, source, ecosystem, layer, path; sorted by
/// ecosystem, name, version, path.
pub fn write_sbom(w: &mut dyn Write, sbom: &ImageSbom) -> Result<(), OutputError> {
    // The evidence column only when some package was not found installed.
    let evidence = sbom.packages.iter().any(|p| !p.evidence.is_installed());
    let mut header = ["NAME", "VERSION", "SOURCE", "ECOSYSTEM", "LAYER", "PATH"]
        .map(String::from)
        .to_vec();
    if evidence {
        header.push("EVIDENCE".into());
    }
    let mut rows = vec![header];
    for p in sorted_packages(&sbom.packages) {
        let source = match (&p.source_name, &p.source_version) {
            (Some(n), Some(v)) => format!("{n} ({v})"),
            (Some(n), None) => n.clone(),
            _ => String::new(),
        };
        let mut row = vec![
            clean(&p.name),
            clean(&p.version),
            clean(&source),
            p.ecosystem.to_string(),
            short_digest(p.layer.as_ref()),
            clean(&p.path),
        ];
        if evidence {
            row.push(evidence_cell(p.evidence));
        }
        rows.push(row);
    }
    let widths = widths(&rows);
    write_rows(w, "", &rows, &widths).map_err(OutputError::io(FORMAT))
}

const GROUPS: [Severity; 5] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
    Severity::Unknown,
];

/// The evidence column's cell: empty for an installed package.
fn evidence_cell(e: Evidence) -> String {
    evidence_note(e)
        .map(|(name, _)| name.to_owned())
        .unwrap_or_default()
}

fn finding_row(f: &Finding, evidence: bool) -> Vec<String> {
    let fixed = if f.fixed_versions.is_empty() {
        "-".to_owned()
    } else {
        f.fixed_versions.join(", ")
    };
    let mut row = vec![
        clean(&f.vulnerability_id),
        clean(&f.package.name),
        clean(&f.installed_version),
        clean(&fixed),
        short_digest(f.package.layer.as_ref()),
    ];
    if evidence {
        row.push(evidence_cell(f.package.evidence));
    }
    row
}

/// The report table: a heading, then one block per severity that has
/// findings (critical first; within a block by id, then package), then the
/// summary line with counts and the suppressed count, then layer errors.
pub fn write_report(w: &mut dyn Write, report: &Report) -> Result<(), OutputError> {
    write_report_inner(w, report).map_err(OutputError::io(FORMAT))
}

fn write_report_inner(w: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    let mut heading = clean(&report.image_reference);
    if let Some(d) = &report.image_digest {
        heading.push_str(&format!(" ({d})"));
    }
    if let Some(os) = &report.os_release {
        heading.push_str(&format!(" {} {}", clean(&os.id), clean(&os.version_id)));
    }
    writeln!(
        w,
        "{heading}: {} packages, vulnerability data {}",
        report.packages.len(),
        clean(&report.vulndb_version)
    )?;

    // The evidence column only when some finding's package was not found
    // installed (a lockfile entry, a guess from a file name).
    let evidence = report.findings.iter().any(|f| !f.package.evidence.is_installed());
    let mut header = ["ID", "PACKAGE", "INSTALLED", "FIXED", "LAYER"]
        .map(String::from)
        .to_vec();
    if evidence {
        header.push("EVIDENCE".into());
    }
    let mut groups: Vec<(Severity, Vec<Vec<String>>)> = Vec::new();
    for sev in GROUPS {
        let mut fs: Vec<&Finding> = report.findings.iter().filter(|f| f.severity == sev).collect();
        if fs.is_empty() {
            continue;
        }
        fs.sort_by(|a, b| {
            (&a.vulnerability_id, &a.package.name, &a.package.path).cmp(&(
                &b.vulnerability_id,
                &b.package.name,
                &b.package.path,
            ))
        });
        groups.push((sev, fs.into_iter().map(|f| finding_row(f, evidence)).collect()));
    }
    // One set of widths for all blocks, so the columns line up down the page.
    let all: Vec<Vec<String>> = std::iter::once(header.clone())
        .chain(groups.iter().flat_map(|(_, rows)| rows.iter().cloned()))
        .collect();
    let widths = widths(&all);

    if groups.is_empty() {
        writeln!(w, "\nNo vulnerabilities found.")?;
    }
    for (sev, rows) in &groups {
        writeln!(w, "\n{} ({})", sev.as_str().to_uppercase(), rows.len())?;
        let mut block = vec![header.clone()];
        block.extend(rows.iter().cloned());
        write_rows(w, "  ", &block, &widths)?;
    }

    let c = &report.counts;
    writeln!(
        w,
        "\nTotal: {} findings (critical {}, high {}, medium {}, low {}, unknown {}), {} suppressed",
        c.total(),
        c.critical,
        c.high,
        c.medium,
        c.low,
        c.unknown,
        report.suppressed
    )?;
    if !report.layer_errors.is_empty() {
        writeln!(
            w,
            "Warning: {} layer(s) could not be analysed; findings may be incomplete:",
            report.layer_errors.len()
        )?;
        for e in &report.layer_errors {
            writeln!(w, "  {}: {}", e.digest, clean(&e.error))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fixtures, golden};

    fn sbom_text(sbom: &ImageSbom) -> String {
        let mut out = Vec::new();
        write_sbom(&mut out, sbom).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn report_text(r: &Report) -> String {
        let mut out = Vec::new();
        write_report(&mut out, r).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sbom_table_golden() {
        golden::check("sbom.table", &sbom_text(&fixtures::sbom()));
    }

    #[test]
    fn sbom_table_is_aligned_and_ordered() {
        let text = sbom_text(&fixtures::sbom());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        // Every row starts its VERSION column at the same character offset.
        let col = lines[0].find("VERSION").unwrap();
        for l in &lines[1..] {
            let first_gap = l.find("  ").unwrap();
            assert!(
                first_gap <= col && l[col..].starts_with(|c: char| !c.is_whitespace()),
                "{l}"
            );
        }
        assert!(lines[1].starts_with("libssl3"));
        assert!(lines[1].contains("111111111111"));
    }

    #[test]
    fn report_table_golden() {
        golden::check("report.table", &report_text(&fixtures::report()));
    }

    #[test]
    fn report_table_groups_by_severity_and_summarises() {
        let text = report_text(&fixtures::report());
        let crit = text.find("CRITICAL (2)").unwrap();
        let med = text.find("MEDIUM (2)").unwrap();
        let low = text.find("LOW (1)").unwrap();
        let unk = text.find("UNKNOWN (1)").unwrap();
        assert!(crit < med && med < low && low < unk);
        assert!(!text.contains("HIGH ("));
        assert!(
            text.contains("Total: 6 findings (critical 2, high 0, medium 2, low 1, unknown 1), 2 suppressed")
        );
        for f in fixtures::report().findings {
            assert_eq!(text.matches(&format!("  {} ", f.vulnerability_id)).count(), 1);
        }
    }

    #[test]
    fn control_characters_are_replaced() {
        let mut r = fixtures::report();
        r.findings.truncate(1);
        r.findings[0].package.name = "evil\x1b[2Jname".into();
        let text = report_text(&r);
        assert!(!text.contains('\x1b'));
        assert!(text.contains("evil?[2Jname"));
    }

    #[test]
    fn empty_report_says_so() {
        let mut r = fixtures::report();
        r.findings.clear();
        r.counts = Default::default();
        r.layer_errors.clear();
        let text = report_text(&r);
        assert!(text.contains("No vulnerabilities found."));
        assert!(text.contains("Total: 0 findings"));
    }
}
