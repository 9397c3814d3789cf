//! Vulnerability data: OSV records imported from directories, `all.zip`
//! exports, HTTP and object stores into one local database file that loads
//! fast, in the normalised form matching consumes.
//!
//! # Layout
//! - `osv`: the OSV schema (serde, tolerant).
//! - `normalize`: one OSV record → [`Advisory`] parts, with a reason for
//!   everything skipped; CVSS scoring.
//! - `source`: where records come from ([`Source`]), each read with bounds.
//! - `store`: the database file format.
//! - `feed`: one feed's records kept between polls ([`FeedRecords`]) and
//!   the database built from every feed's ([`combine`]).
//! - [`diff`]: what changed between two databases ([`ChangeSet`]).
//!
//! # Contract
//! - A malformed record, an unknown ecosystem, or a range whose versions do
//!   not parse under the ecosystem's scheme is skipped and counted in
//!   [`ImportSummary`] with its id and reason; it never aborts the import.
//!   Only the bad part is dropped: a record with one bad affected entry keeps
//!   its good ones.
//! - A record that cannot be read at all (malformed JSON, no id, an
//!   unreadable or oversized zip entry) is counted as `unreadable` too: an
//!   import goes on, a feed poll fails on it ([`FeedRecords`]).
//! - Withdrawn records are ignored (counted). GIT ranges are skipped (counted).
//! - Records linked by `aliases` / `upstream` (CVE ↔ GHSA ↔ PYSEC ↔ DSA …)
//!   become ONE [`Advisory`]. Its id is the smallest record id that is not a
//!   `CVE-` id (the ecosystem's own advisory, which users look up), else the
//!   smallest CVE id; every other id is in `aliases`.
//! - The same records give the same [`Db::version`], whatever their order or
//!   source paths: the version is a hash of the normalised advisories.

pub mod diff;
mod feed;
pub(crate) mod normalize;
mod osv;
pub(crate) mod source;
mod store;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_proto::{Ecosystem, Severity};

pub use diff::ChangeSet;
pub use feed::{FeedRecords, combine};
pub use source::Source;

/// The feeds `strata db update` fetches by default: every ecosystem Strata
/// can match, as osv.dev names its export folders.
pub const DEFAULT_FEEDS: &[&str] = &[
    "Debian",
    "Ubuntu",
    "Alpine",
    "Wolfi",
    "Chainguard",
    "Red Hat",
    "AlmaLinux",
    "Rocky Linux",
    "SUSE",
    "openSUSE",
    "PyPI",
    "npm",
    "Go",
    "crates.io",
    "Maven",
    "RubyGems",
];

/// Where `strata db update` fetches `<feed>/all.zip` from.
pub const OSV_EXPORT_BASE: &str = "https://osv-vulnerabilities.storage.googleapis.com";

/// One vulnerability, merged across its aliases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    /// The newest OSV `modified` (RFC 3339, as written) of the records merged
    /// into this advisory; empty when none had one. With the id, what a feed
    /// update is compared by: a new `modified` is a change.
    pub modified: String,
    /// Every other id of the same vulnerability, sorted.
    pub aliases: Vec<String>,
    pub summary: String,
    pub severity: Severity,
    pub score: Option<f64>,
    /// "CVSS_V4", "CVSS_V3", "database_specific", … or empty when unknown.
    pub score_source: String,
    pub affected: Vec<AffectedEntry>,
}

/// One affected package of an advisory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AffectedEntry {
    pub ecosystem: Ecosystem,
    /// The OS release the entry is for: "12" (`Debian:12`), "3.19"
    /// (`Alpine:v3.19`), "22.04" (`Ubuntu:22.04:LTS`); `None` for language
    /// ecosystems and OS entries without a release.
    pub release: Option<String>,
    pub name: String,
    pub ranges: Vec<EvalRange>,
    pub versions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EvalRange {
    pub kind: RangeKind,
    pub events: Vec<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RangeKind {
    Semver,
    Ecosystem,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

/// Something the import skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skip {
    pub id: String,
    pub source: String,
    pub reason: String,
}

/// What an import did. Skips are kept in full up to [`MAX_SKIPS_KEPT`] and
/// counted beyond.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportSummary {
    pub records_read: u64,
    pub advisories: u64,
    pub withdrawn: u64,
    pub git_ranges_skipped: u64,
    pub skipped_total: u64,
    /// Of `skipped_total`: records that could not be read at all (malformed
    /// JSON, no id, an unreadable or oversized file or zip entry).
    pub unreadable: u64,
    pub skipped: Vec<Skip>,
    pub per_ecosystem: BTreeMap<String, u64>,
    pub version: String,
}

pub const MAX_SKIPS_KEPT: usize = 10_000;

impl ImportSummary {
    /// A record that could not be read at all: skipped, and counted as unreadable.
    pub(crate) fn unreadable(&mut self, source: &str, reason: impl Into<String>) {
        self.unreadable += 1;
        self.skip("?", source, reason);
    }

    pub(crate) fn skip(&mut self, id: &str, source: &str, reason: impl Into<String>) {
        self.skipped_total += 1;
        if self.skipped.len() < MAX_SKIPS_KEPT {
            self.skipped.push(Skip {
                id: id.to_owned(),
                source: source.to_owned(),
                reason: reason.into(),
            });
        }
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "imported {} advisories from {} records (version {})",
            self.advisories, self.records_read, self.version
        )?;
        // Ids, ecosystems and reasons come from the records: escaped.
        use strata_proto::text::escape_controls as esc;
        for (eco, n) in &self.per_ecosystem {
            writeln!(f, "  {:<14} {n}", esc(&eco.to_string()))?;
        }
        writeln!(
            f,
            "withdrawn {} · git ranges skipped {} · skipped {}",
            self.withdrawn, self.git_ranges_skipped, self.skipped_total
        )?;
        for s in self.skipped.iter().take(20) {
            writeln!(
                f,
                "  skipped {} ({}): {}",
                esc(&s.id),
                esc(&s.source),
                esc(&s.reason)
            )?;
        }
        if self.skipped_total > 20 {
            writeln!(f, "  … and {} more", self.skipped_total - 20)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    #[error("vulnerability source {source_name}: {reason}")]
    Source { source_name: String, reason: String },
    #[error("vulnerability database {path}: {reason}")]
    File { path: String, reason: String },
    #[error("vulnerability database {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The header of a database: what `strata db status` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DbStatus {
    pub version: String,
    pub format_version: u32,
    pub built_unix_ms: i64,
    pub advisories: u64,
    /// Affected-package entries per ecosystem.
    pub records_per_ecosystem: BTreeMap<String, u64>,
    pub sources: Vec<String>,
}

impl fmt::Display for DbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let built = time::OffsetDateTime::from_unix_timestamp(self.built_unix_ms / 1000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| self.built_unix_ms.to_string());
        writeln!(f, "version     {}", self.version)?;
        writeln!(f, "format      {}", self.format_version)?;
        writeln!(f, "built       {built}")?;
        writeln!(f, "advisories  {}", self.advisories)?;
        writeln!(f, "affected packages per ecosystem:")?;
        for (eco, n) in &self.records_per_ecosystem {
            writeln!(f, "  {eco:<14} {n}")?;
        }
        writeln!(f, "sources:")?;
        for s in &self.sources {
            writeln!(f, "  {s}")?;
        }
        Ok(())
    }
}

/// A loaded database.
#[derive(Debug)]
pub struct Db {
    status: DbStatus,
    advisories: Vec<Advisory>,
}

impl Db {
    /// Load a database file written by [`import`].
    pub fn open(path: &Path) -> Result<Db, VulnDbError> {
        store::read(path)
    }

    /// Build an in-memory database (tests, benchmarks): normalises like an import.
    pub fn from_advisories(mut advisories: Vec<Advisory>, sources: Vec<String>) -> Db {
        store::canonicalise(&mut advisories);
        let status = store::status_for(&advisories, sources, 0);
        Db { status, advisories }
    }

    /// Write this database to `path` (atomically), as [`import`] does.
    pub fn write(&self, path: &Path) -> Result<(), VulnDbError> {
        store::write(path, &self.status, &self.advisories)
    }

    /// This database as the bytes of its file (for an object store).
    pub fn to_bytes(&self) -> Result<Vec<u8>, VulnDbError> {
        store::encode("(in memory)", &self.status, &self.advisories)
    }

    /// A database from the bytes of its file; `name` says where they came from.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Db, VulnDbError> {
        store::decode(bytes, name)
    }

    pub fn version(&self) -> &str {
        &self.status.version
    }
    pub fn advisories(&self) -> &[Advisory] {
        &self.advisories
    }
    pub fn status(&self) -> DbStatus {
        self.status.clone()
    }
}

/// Import `sources` into a database file at `out` (written to a temporary
/// file beside it, then renamed: a failed import leaves the old one whole).
/// Refuses, as [`import_with`] without `force`, an import that read no
/// record or would replace a database with one of fewer than half its
/// advisories.
pub async fn import(sources: &[Source], out: &Path) -> Result<ImportSummary, VulnDbError> {
    import_with(sources, out, false).await
}

/// [`import`]; `force` replaces the database whatever the import found.
pub async fn import_with(sources: &[Source], out: &Path, force: bool) -> Result<ImportSummary, VulnDbError> {
    let mut summary = ImportSummary::default();
    let mut records = Vec::new();
    for source in sources {
        source.read_into(&mut records, &mut summary).await?;
    }
    let names = sources.iter().map(ToString::to_string).collect();
    let db = build(&records, names);
    summary.advisories = db.status.advisories;
    summary.per_ecosystem = db.status.records_per_ecosystem.clone();
    summary.version = db.status.version.clone();
    if !force {
        check_replacement(&summary, out)?;
    }
    db.write(out)?;
    Ok(summary)
}

/// A source that silently yields nothing (a wrong path, links not
/// followed, a feed gone empty) must not wipe a good database.
fn check_replacement(summary: &ImportSummary, out: &Path) -> Result<(), VulnDbError> {
    let refuse = |reason: String| VulnDbError::File {
        path: out.display().to_string(),
        reason: format!("{reason}; nothing was written (check the sources, or pass --force)"),
    };
    if summary.records_read == 0 {
        return Err(refuse("the sources hold no OSV record".into()));
    }
    // A file that does not open (absent, or broken) is replaced.
    if let Ok(old) = Db::open(out) {
        let (before, after) = (old.status.advisories, summary.advisories);
        if after < before / 2 {
            return Err(refuse(format!(
                "the import has {after} advisories and would replace a database of {before}: more than half would be lost"
            )));
        }
    }
    Ok(())
}

/// Records (of one import or of every feed) → a database: aliases merged,
/// canonical order, built now.
fn build<'a>(records: impl IntoIterator<Item = &'a normalize::Record>, sources: Vec<String>) -> Db {
    let mut advisories = normalize::merge(records);
    store::canonicalise(&mut advisories);
    let status = store::status_for(&advisories, sources, strata_proto::text::now_unix_ms());
    Db { status, advisories }
}

/// Fetch osv.dev's `<feed>/all.zip` for each feed and import them.
pub async fn update(feeds: &[String], out: &Path, force: bool) -> Result<ImportSummary, VulnDbError> {
    update_from(OSV_EXPORT_BASE, feeds, out, force).await
}

/// [`update`] from another base URL (a mirror, or a test server).
pub async fn update_from(
    base: &str,
    feeds: &[String],
    out: &Path,
    force: bool,
) -> Result<ImportSummary, VulnDbError> {
    let sources: Vec<Source> = osv_export_urls(base, feeds)
        .iter()
        .map(|url| Source::parse(url))
        .collect::<Result<_, _>>()?;
    import_with(&sources, out, force).await
}

/// `<base>/<feed>/all.zip` for each feed (osv.dev's export layout).
pub fn osv_export_urls(base: &str, feeds: &[impl AsRef<str>]) -> Vec<String> {
    feeds
        .iter()
        .map(|feed| {
            format!(
                "{}/{}/all.zip",
                base.trim_end_matches('/'),
                url_path_segment(feed.as_ref())
            )
        })
        .collect()
}

/// Percent-encodes what a feed name may hold that a URL path may not (`Red Hat`).
fn url_path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
