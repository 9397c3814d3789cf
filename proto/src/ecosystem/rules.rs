//! The ecosystem facts that are code: each a small enum named in a row of
//! the table and interpreted by one method here.

use std::borrow::Cow;

use crate::domain::Package;

/// How an image's os-release `VERSION_ID` becomes the release its
/// advisories name (`Debian:12`, `Alpine:v3.19`, `Ubuntu:22.04`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseRule {
    /// The major version: Debian `12.5` → `12`, RHEL `9.3` → `9`.
    Major,
    /// Major and minor: Alpine `3.19.1` → `3.19` (as is without a minor).
    MajorMinor,
    /// The `VERSION_ID` as it is (Ubuntu `22.04`).
    AsIs,
}

impl ReleaseRule {
    /// The release key of `version_id` (trimmed); `None` when it is empty.
    pub fn key(self, version_id: &str) -> Option<String> {
        let v = version_id.trim();
        if v.is_empty() {
            return None;
        }
        let mut parts = v.split('.');
        Some(match self {
            ReleaseRule::Major => parts.next().unwrap_or(v).to_owned(),
            ReleaseRule::MajorMinor => match (parts.next(), parts.next()) {
                (Some(a), Some(b)) => format!("{a}.{b}"),
                _ => v.to_owned(),
            },
            ReleaseRule::AsIs => v.to_owned(),
        })
    }
}

/// How the suffix of OSV's `Name:suffix` becomes a release. The suffix is
/// split on `:`, dropping empty parts and `LTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsvRelease {
    /// The first part: `Debian:12` → `12`, `Ubuntu:22.04:LTS` → `22.04`.
    First,
    /// The first part without a leading `v`: `Alpine:v3.19` → `3.19`.
    WithoutV,
    /// The first part, but `Pro:18.04` → `pro-18.04`, which no standard
    /// image's release matches, on purpose (Ubuntu Pro advisories).
    UbuntuPro,
    /// The first part that starts with a digit:
    /// `Red Hat:enterprise_linux:9::appstream` → `9`.
    FirstNumeric,
}

impl OsvRelease {
    /// The release named by `suffix` (what follows `Name:`); `None` when
    /// it names none.
    pub fn parse(self, suffix: &str) -> Option<String> {
        let parts: Vec<&str> = suffix
            .split(':')
            .filter(|p| !p.is_empty() && *p != "LTS")
            .collect();
        let first = || parts.first().copied().unwrap_or_default();
        let release = match self {
            OsvRelease::First => first().to_owned(),
            OsvRelease::WithoutV => first().trim_start_matches('v').to_owned(),
            OsvRelease::UbuntuPro if first() == "Pro" => {
                format!("pro-{}", parts.get(1).copied().unwrap_or_default())
            }
            OsvRelease::UbuntuPro => first().to_owned(),
            OsvRelease::FirstNumeric => parts
                .iter()
                .find(|p| p.starts_with(|c: char| c.is_ascii_digit()))
                .map(|p| p.to_string())
                .unwrap_or_default(),
        };
        (!release.is_empty()).then_some(release)
    }
}

/// What a package is matched by against its ecosystem's advisories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKey {
    /// The source package and source version (each the binary's when
    /// absent): Debian and Ubuntu advisories name source packages, Alpine's
    /// name origins.
    Source,
    /// The package's own name (normalised, see [`NameRule`]) and version.
    Binary,
    /// As [`MatchKey::Binary`], but the Go toolchain (`stdlib`, `toolchain`),
    /// recorded in binaries as `go1.21.3`, is matched as `1.21.3`, as OSV's
    /// ranges say.
    GoToolchain,
}

/// What a Go binary records as its main module's version when it was built
/// from a checkout, not a release: it names no version an advisory can.
pub const GO_DEVEL: &str = "(devel)";

impl MatchKey {
    /// Whether `p` is matched at all: not a Go main module built from a
    /// checkout (version `(devel)`; its name is the image's own code).
    pub fn matchable(self, p: &Package) -> bool {
        !(self == MatchKey::GoToolchain && p.version == GO_DEVEL)
    }

    /// The (name, version) that `p` is matched by.
    pub fn name_version(self, p: &Package) -> (Cow<'_, str>, &str) {
        match self {
            MatchKey::Source => (
                Cow::Borrowed(p.source_name.as_deref().unwrap_or(&p.name)),
                p.source_version.as_deref().unwrap_or(&p.version),
            ),
            MatchKey::GoToolchain if p.name == "stdlib" || p.name == "toolchain" => (
                Cow::Borrowed(p.name.as_str()),
                p.version.strip_prefix("go").unwrap_or(&p.version),
            ),
            MatchKey::Binary | MatchKey::GoToolchain => {
                (p.ecosystem.normalise_name(&p.name), p.version.as_str())
            }
        }
    }
}

/// How package names are normalised before matching, on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    AsIs,
    /// PEP 503: `re.sub(r"[-_.]+", "-", name).lower()`.
    Pep503,
    /// ASCII lower case: the registry treats names case-insensitively
    /// (NuGet ids: `Newtonsoft.Json` is `newtonsoft.json`; Composer names,
    /// lower case on Packagist, any case in older lock files).
    Lowercase,
}

impl NameRule {
    pub fn normalise(self, name: &str) -> Cow<'_, str> {
        match self {
            NameRule::AsIs => Cow::Borrowed(name),
            NameRule::Pep503 => pep503(name),
            NameRule::Lowercase if name.bytes().any(|b| b.is_ascii_uppercase()) => {
                Cow::Owned(name.to_ascii_lowercase())
            }
            NameRule::Lowercase => Cow::Borrowed(name),
        }
    }
}

fn pep503(name: &str) -> Cow<'_, str> {
    let already = !name
        .bytes()
        .any(|b| b.is_ascii_uppercase() || b == b'_' || b == b'.')
        && !name.contains("--");
    if already {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_sep = false;
        }
    }
    Cow::Owned(out)
}
