//! The OSV schema (<https://ossf.github.io/osv-schema/>), as much of it as
//! matching needs. Tolerant: unknown fields are ignored and every field has a
//! default, so a record from a newer schema version still parses; what a
//! record must have to be useful (an id, affected packages) is checked when
//! it is normalised, with a reason.

use serde::{Deserialize, Deserializer};

/// Real feeds write `"aliases": null` where the schema says a list: null is empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Vulnerability {
    pub id: String,
    pub modified: Option<String>,
    pub published: Option<String>,
    pub withdrawn: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub upstream: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub related: Vec<String>,
    pub summary: Option<String>,
    pub details: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub severity: Vec<SeverityEntry>,
    #[serde(deserialize_with = "null_as_default")]
    pub affected: Vec<Affected>,
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SeverityEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Affected {
    pub package: Option<AffectedPackage>,
    #[serde(deserialize_with = "null_as_default")]
    pub severity: Vec<SeverityEntry>,
    #[serde(deserialize_with = "null_as_default")]
    pub ranges: Vec<Range>,
    #[serde(deserialize_with = "null_as_default")]
    pub versions: Vec<String>,
    pub ecosystem_specific: Option<serde_json::Value>,
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AffectedPackage {
    pub ecosystem: String,
    pub name: String,
    pub purl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    pub repo: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub events: Vec<RawEvent>,
}

/// One event object: exactly one of its fields is set in a valid record.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawEvent {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
    pub limit: Option<String>,
}
