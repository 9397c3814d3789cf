//! The ignore file: TOML (the `toml` crate; one format, chosen because
//! dates are native TOML values and comments are allowed), a list of
//! `[[ignore]]` tables:
//!
//! ```toml
//! [[ignore]]
//! id = "CVE-2023-5678"          # required; matches the finding's id or any alias
//! package = "libssl3"           # optional; the package or its source package name
//! expires = 2024-12-31          # optional; a TOML date or "YYYY-MM-DD"; last day it applies
//! reason = "not reachable"      # required, not empty
//! ```
//!
//! Unknown keys are errors (a typo such as `expire` must not silently make
//! a rule permanent). Errors name the file and line.

use serde::Deserialize;
use strata_proto::domain::Finding;
use toml::Spanned;

use super::{SuppressError, finding_has_id, line_of};

/// One rule of an ignore file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoreRule {
    pub id: String,
    pub package: Option<String>,
    /// The last day the rule applies.
    pub expires: Option<time::Date>,
    pub reason: String,
    /// `FILE line N`, for messages.
    pub origin: String,
}

impl IgnoreRule {
    pub fn is_expired(&self, today: time::Date) -> bool {
        self.expires.is_some_and(|e| today > e)
    }

    /// True when the rule is in force on `today` and names this finding.
    pub fn matches(&self, f: &Finding, today: time::Date) -> bool {
        if self.is_expired(today) || !finding_has_id(f, &self.id) {
            return false;
        }
        match &self.package {
            None => true,
            Some(p) => f.package.name == *p || f.package.source_name.as_deref() == Some(p.as_str()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    ignore: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    expires: Option<Spanned<RawDate>>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDate {
    Toml(toml::value::Datetime),
    Text(String),
}

fn to_date(d: &RawDate) -> Option<time::Date> {
    let (y, m, day) = match d {
        RawDate::Toml(dt) => {
            // A date and time would be ambiguous about the last day: refuse it.
            if dt.time.is_some() || dt.offset.is_some() {
                return None;
            }
            let d = dt.date?;
            (i32::from(d.year), d.month, d.day)
        }
        RawDate::Text(s) => {
            let mut it = s.trim().splitn(3, '-');
            let y = it.next()?.parse().ok()?;
            let m = it.next()?.parse().ok()?;
            let d = it.next()?.parse().ok()?;
            (y, m, d)
        }
    };
    time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, day).ok()
}

/// Parses an ignore file's text; `file` names it in errors and origins.
pub fn parse(file: &str, text: &str) -> Result<Vec<IgnoreRule>, SuppressError> {
    let parsed: File = toml::from_str(text).map_err(|e| {
        // toml's own Display draws a multi-line snippet; one line reads better in a CLI error.
        let at = e.span().map(|s| s.start).unwrap_or(0);
        let line = line_of(text, at);
        let line_start = text
            .get(..at)
            .and_then(|t| t.rfind('\n'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let column = text.get(line_start..at).map(|s| s.chars().count()).unwrap_or(0) + 1;
        SuppressError::Syntax {
            file: file.to_owned(),
            message: format!("line {line}, column {column}: {}", e.message().trim_end()),
        }
    })?;
    let invalid = |line: usize, message: String| SuppressError::Invalid {
        file: file.to_owned(),
        at: format!("line {line}"),
        message,
    };
    let mut rules = Vec::with_capacity(parsed.ignore.len());
    for spanned in parsed.ignore {
        let line = line_of(text, spanned.span().start);
        let raw = spanned.into_inner();
        let id = raw.id.trim().to_owned();
        if id.is_empty() {
            return Err(invalid(line, "`id` is empty".into()));
        }
        let reason = raw.reason.trim().to_owned();
        if reason.is_empty() {
            return Err(invalid(line, format!("the rule for {id} has an empty `reason`")));
        }
        let expires = match raw.expires {
            None => None,
            Some(e) => {
                let at = line_of(text, e.span().start);
                Some(to_date(e.get_ref()).ok_or_else(|| {
                    invalid(
                        at,
                        format!("`expires` of the rule for {id} is not a date (YYYY-MM-DD)"),
                    )
                })?)
            }
        };
        let package = raw.package.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
        rules.push(IgnoreRule {
            id,
            package,
            expires,
            reason,
            origin: format!("{file} line {line}"),
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures;
    use time::macros::date;

    fn finding(id: &str) -> Finding {
        fixtures::report()
            .findings
            .into_iter()
            .find(|f| f.vulnerability_id == id)
            .unwrap()
    }

    #[test]
    fn parses_rules_with_lines() {
        let rules = parse(
            "ig.toml",
            "# comment\n[[ignore]]\nid = \"CVE-1\"\nreason = \"r\"\n\n[[ignore]]\nid = \"CVE-2\"\npackage = \"openssl\"\nexpires = \"2024-02-29\"\nreason = \"r2\"\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].expires, Some(date!(2024 - 02 - 29)));
        assert_eq!(rules[1].package.as_deref(), Some("openssl"));
        assert!(
            rules[1].origin.starts_with("ig.toml line "),
            "{}",
            rules[1].origin
        );
        assert!(parse("e.toml", "").unwrap().is_empty());
    }

    #[test]
    fn id_matches_the_id_or_an_alias_and_package_or_source() {
        let today = date!(2024 - 06 - 01);
        let rule = |id: &str, package: Option<&str>| IgnoreRule {
            id: id.into(),
            package: package.map(String::from),
            expires: None,
            reason: "r".into(),
            origin: "t".into(),
        };
        let f = finding("CVE-2023-5678"); // libssl3, source openssl, alias DSA-5532-1
        assert!(rule("CVE-2023-5678", None).matches(&f, today));
        assert!(rule("dsa-5532-1", None).matches(&f, today));
        assert!(rule("CVE-2023-5678", Some("libssl3")).matches(&f, today));
        assert!(rule("CVE-2023-5678", Some("openssl")).matches(&f, today));
        assert!(!rule("CVE-2023-5678", Some("zlib1g")).matches(&f, today));
        assert!(!rule("CVE-2023-0001", None).matches(&f, today));
    }

    #[test]
    fn expiry_is_the_last_day_it_applies() {
        let rules = parse(
            "x",
            "[[ignore]]\nid = \"CVE-2023-5678\"\nexpires = 2024-06-01\nreason = \"r\"\n",
        )
        .unwrap();
        let f = finding("CVE-2023-5678");
        assert!(rules[0].matches(&f, date!(2024 - 06 - 01)));
        assert!(!rules[0].is_expired(date!(2024 - 06 - 01)));
        assert!(!rules[0].matches(&f, date!(2024 - 06 - 02)));
        assert!(rules[0].is_expired(date!(2024 - 06 - 02)));
    }

    #[test]
    fn malformed_files_name_the_file_and_line() {
        let cases = [
            // missing reason
            ("[[ignore]]\nid = \"CVE-1\"\n", "line 1"),
            // empty reason
            ("\n[[ignore]]\nid = \"CVE-1\"\nreason = \" \"\n", "line 2"),
            // a typo in a key
            (
                "[[ignore]]\nid = \"CVE-1\"\nreason = \"r\"\nexpire = 2024-01-01\n",
                "line 4",
            ),
            // not a date
            (
                "[[ignore]]\nid = \"CVE-1\"\nreason = \"r\"\nexpires = \"soon\"\n",
                "line 4",
            ),
            (
                "[[ignore]]\nid = \"CVE-1\"\nreason = \"r\"\nexpires = \"2024-02-30\"\n",
                "line 4",
            ),
            (
                "[[ignore]]\nid = \"CVE-1\"\nreason = \"r\"\nexpires = 2024-01-01T10:00:00Z\n",
                "line 4",
            ),
            // not TOML
            ("[[ignore]\nid = ", "line 1"),
        ];
        for (text, line) in cases {
            let err = parse("my-ignore.toml", text).unwrap_err().to_string();
            assert!(err.contains("my-ignore.toml"), "{err}");
            assert!(err.contains(line), "want {line} in: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }
}
