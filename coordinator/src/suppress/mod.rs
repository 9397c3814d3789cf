//! Suppression: findings a user has judged, removed from a report but
//! counted in it (`Report.suppressed`), never silently dropped.
//!
//! Two sources, loaded into one [`Suppressions`]:
//! - an ignore file ([`ignore`], TOML): vulnerability id (matching a
//!   finding's id or any alias), optional package, optional expiry date,
//!   required reason;
//! - OpenVEX documents ([`openvex`], JSON, v0.2.0): `not_affected` and
//!   `fixed` statements remove findings; `affected` and
//!   `under_investigation` do not.
//!
//! [`apply`] removes what matches, adds the number removed to
//! `Report.suppressed`, recomputes `Report.counts` from what is left, and
//! says what it did (and which ignore rules have expired) in a
//! [`SuppressionSummary`]. Loading errors name the file and the line or field.

pub mod ignore;
pub mod openvex;

use std::path::Path;

use strata_proto::domain::{Finding, Report, SeverityCounts};

pub use ignore::IgnoreRule;
pub use openvex::{VexStatement, VexStatus};

/// The largest ignore file or VEX document read, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most ignore rules, and the most VEX statements, held at once.
pub const MAX_RULES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {size} bytes is over the limit of {max} bytes")]
    TooLarge { file: String, size: u64, max: u64 },
    /// The file does not parse; `message` names the line (and column).
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// It parses, but an entry is wrong; `at` names the line or field.
    #[error("{file}: {at}: {message}")]
    Invalid {
        file: String,
        at: String,
        message: String,
    },
    #[error("{file}: more than {max} rules or statements")]
    TooMany { file: String, max: usize },
}

/// Every ignore rule and VEX statement in force for a scan.
#[derive(Clone, Debug, Default)]
pub struct Suppressions {
    pub ignore_rules: Vec<IgnoreRule>,
    pub vex_statements: Vec<VexStatement>,
}

fn read_bounded(path: &Path) -> Result<String, SuppressError> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| SuppressError::Read {
        file: file.clone(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(SuppressError::TooLarge {
            file,
            size: meta.len(),
            max: MAX_FILE_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(|source| SuppressError::Read { file, source })
}

impl Suppressions {
    /// Adds the rules of the ignore file at `path`.
    pub fn load_ignore_file(&mut self, path: &Path) -> Result<(), SuppressError> {
        let text = read_bounded(path)?;
        self.add_ignore_toml(&path.display().to_string(), &text)
    }

    /// Adds the rules of an ignore file's text; `file` names it in errors
    /// and in the summary.
    pub fn add_ignore_toml(&mut self, file: &str, text: &str) -> Result<(), SuppressError> {
        let rules = ignore::parse(file, text)?;
        if self.ignore_rules.len() + rules.len() > MAX_RULES {
            return Err(SuppressError::TooMany {
                file: file.to_owned(),
                max: MAX_RULES,
            });
        }
        self.ignore_rules.extend(rules);
        Ok(())
    }

    /// Adds the statements of the OpenVEX document at `path`.
    pub fn load_openvex_file(&mut self, path: &Path) -> Result<(), SuppressError> {
        let text = read_bounded(path)?;
        self.add_openvex_json(&path.display().to_string(), &text)
    }

    /// Adds the statements of an OpenVEX document's text. Statements loaded
    /// later take precedence over earlier ones for the same finding.
    pub fn add_openvex_json(&mut self, file: &str, text: &str) -> Result<(), SuppressError> {
        let statements = openvex::parse(file, text)?;
        if self.vex_statements.len() + statements.len() > MAX_RULES {
            return Err(SuppressError::TooMany {
                file: file.to_owned(),
                max: MAX_RULES,
            });
        }
        self.vex_statements.extend(statements);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.ignore_rules.is_empty() && self.vex_statements.is_empty()
    }
}

/// One finding that was removed, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct SuppressedFinding {
    pub vulnerability_id: String,
    pub package: String,
    pub installed_version: String,
    /// `ignore file F line N: <reason>` or `VEX F statements[i]: not_affected (<justification>)`.
    pub because: String,
}

/// What [`apply`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SuppressionSummary {
    /// Findings removed by this call (also added to `Report.suppressed`).
    pub suppressed: u32,
    pub by_ignore_file: u32,
    pub by_vex: u32,
    pub findings: Vec<SuppressedFinding>,
    /// One line per expired ignore rule: it no longer applies.
    pub warnings: Vec<String>,
}

/// Removes the findings `s` suppresses as of `today`; see the module docs.
/// An ignore rule whose expiry date is before `today` does not apply, and a
/// warning says so. Ignore rules are tried before VEX statements.
pub fn apply(report: &mut Report, s: &Suppressions, today: time::Date) -> SuppressionSummary {
    let mut summary = SuppressionSummary::default();
    for r in &s.ignore_rules {
        if r.is_expired(today) {
            summary.warnings.push(format!(
                "{}: the ignore rule for {} expired on {}; it no longer applies",
                r.origin,
                r.id,
                r.expires.map(|d| d.to_string()).unwrap_or_default()
            ));
        }
    }

    let findings = std::mem::take(&mut report.findings);
    let mut kept = Vec::with_capacity(findings.len());
    for f in findings {
        let because = if let Some(r) = s.ignore_rules.iter().find(|r| r.matches(&f, today)) {
            summary.by_ignore_file += 1;
            format!("{}: {}", r.origin, r.reason)
        } else if let Some(st) = openvex::decisive(&s.vex_statements, &f, report) {
            if !st.status.suppresses() {
                kept.push(f);
                continue;
            }
            summary.by_vex += 1;
            st.describe()
        } else {
            kept.push(f);
            continue;
        };
        summary.findings.push(SuppressedFinding {
            vulnerability_id: f.vulnerability_id.clone(),
            package: f.package.name.clone(),
            installed_version: f.installed_version.clone(),
            because,
        });
    }
    summary.suppressed = summary.by_ignore_file + summary.by_vex;
    report.findings = kept;
    report.suppressed = report.suppressed.saturating_add(summary.suppressed);
    report.counts = counts(&report.findings);
    summary
}

fn counts(findings: &[Finding]) -> SeverityCounts {
    let mut c = SeverityCounts::default();
    for f in findings {
        c.add(f.severity);
    }
    c
}

/// True when `id` is the finding's id or one of its aliases (ASCII case
/// ignored: `cve-2024-1` is `CVE-2024-1`).
pub(crate) fn finding_has_id(f: &Finding, id: &str) -> bool {
    f.vulnerability_id.eq_ignore_ascii_case(id) || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(id))
}

/// The 1-based line of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures;
    use time::macros::date;

    const TODAY: time::Date = date!(2024 - 06 - 01);

    #[test]
    fn ignore_and_vex_together_recount_the_report() {
        let mut report = fixtures::report();
        let before = report.findings.len() as u32;
        let mut s = Suppressions::default();
        s.add_ignore_toml(
            ".strataignore.toml",
            r#"
[[ignore]]
id = "CVE-2023-32681"       # an alias of GHSA-j8r2-6x86-q33q
reason = "requests is only used against our own API"

[[ignore]]
id = "CVE-2024-0727"
package = "libssl3"
expires = 2024-01-31
reason = "waiting for the point release"
"#,
        )
        .unwrap();
        s.add_openvex_json(
            "app.vex.json",
            r#"{
  "@context": "https://openvex.dev/ns/v0.2.0",
  "@id": "https://example.com/vex/1",
  "author": "Security Team",
  "timestamp": "2024-05-01T00:00:00Z",
  "version": 1,
  "statements": [
    {"vulnerability": {"name": "CVE-2023-45853"},
     "products": [{"@id": "pkg:deb/debian/zlib1g"}],
     "status": "not_affected",
     "justification": "vulnerable_code_not_in_execute_path"},
    {"vulnerability": {"name": "CVE-2023-5678"},
     "products": [{"@id": "pkg:deb/debian/libssl3"}],
     "status": "under_investigation"}
  ]
}"#,
        )
        .unwrap();
        let summary = apply(&mut report, &s, TODAY);
        assert_eq!(summary.suppressed, 2);
        assert_eq!((summary.by_ignore_file, summary.by_vex), (1, 1));
        assert_eq!(report.findings.len() as u32, before - 2);
        assert_eq!(
            report.suppressed,
            2 + 2,
            "adds to what the report already counted"
        );
        assert_eq!(report.counts.total() as usize, report.findings.len());
        assert_eq!(report.counts.critical, 1);
        assert_eq!(report.counts.medium, 1);
        // The expired rule did not apply, and a warning says so.
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.vulnerability_id == "CVE-2024-0727")
        );
        assert_eq!(summary.warnings.len(), 1);
        assert!(summary.warnings[0].contains("CVE-2024-0727") && summary.warnings[0].contains("2024-01-31"));
        let ghsa = summary
            .findings
            .iter()
            .find(|f| f.vulnerability_id == "GHSA-j8r2-6x86-q33q")
            .unwrap();
        assert!(ghsa.because.contains("only used against our own API"));
        assert!(ghsa.because.contains(".strataignore.toml"));
    }

    #[test]
    fn nothing_to_apply_changes_nothing() {
        let mut report = fixtures::report();
        let want = report.clone();
        let summary = apply(&mut report, &Suppressions::default(), TODAY);
        assert_eq!(summary, SuppressionSummary::default());
        assert_eq!(report, want);
    }

    #[test]
    fn example_files_load_and_apply() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/suppress/testdata"));
        let mut s = Suppressions::default();
        s.load_ignore_file(&dir.join("strata-ignore.toml")).unwrap();
        s.load_openvex_file(&dir.join("example.openvex.json")).unwrap();
        assert_eq!((s.ignore_rules.len(), s.vex_statements.len()), (2, 2));
        let mut report = fixtures::report();
        let summary = apply(&mut report, &s, TODAY);
        let mut gone: Vec<&str> = summary
            .findings
            .iter()
            .map(|f| f.vulnerability_id.as_str())
            .collect();
        gone.sort_unstable();
        // CVE-2023-45133 is only under investigation: it stays.
        assert_eq!(gone, ["CVE-2023-45853", "CVE-2023-6129", "GHSA-j8r2-6x86-q33q"]);
        assert_eq!(report.findings.len(), 3);
        assert!(summary.warnings.is_empty());
        // Past the expiry date the rule stops applying, with a warning.
        let mut report = fixtures::report();
        let summary = apply(&mut report, &s, time::macros::date!(2100 - 01 - 01));
        assert_eq!(summary.suppressed, 2);
        assert_eq!(summary.warnings.len(), 1);
    }

    #[test]
    fn files_are_read_with_their_names_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ignore.toml");
        std::fs::write(&p, "[[ignore]]\nid = \"CVE-1\"\n").unwrap();
        let err = Suppressions::default()
            .load_ignore_file(&p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ignore.toml") && err.contains("reason"), "{err}");
        let missing = dir.path().join("nope.json");
        let err = Suppressions::default()
            .load_openvex_file(&missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.json"), "{err}");
    }
}
