//! TEMPORARY stand-in for `crate::vulndb`'s normalised advisory model, until
//! the `osv` branch is merged.

use strata_proto::{Ecosystem, Severity};

pub struct Db {
    pub advisories: Vec<Advisory>,
    pub version: String,
}

impl Db {
    pub fn advisories(&self) -> &[Advisory] {
        &self.advisories
    }
    pub fn version(&self) -> &str {
        &self.version
    }
}

#[derive(Clone, Debug, Default)]
pub struct Advisory {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: String,
    pub severity: Severity,
    pub score: Option<f64>,
    pub score_source: String,
    pub affected: Vec<AffectedEntry>,
}

#[derive(Clone, Debug)]
pub struct AffectedEntry {
    pub ecosystem: Ecosystem,
    pub release: Option<String>,
    pub name: String,
    pub ranges: Vec<EvalRange>,
    pub versions: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct EvalRange {
    pub kind: RangeKind,
    pub events: Vec<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeKind {
    Semver,
    Ecosystem,
}

#[derive(Clone, Debug)]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}
