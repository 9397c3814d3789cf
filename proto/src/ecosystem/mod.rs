//! Every fact Strata holds about a package ecosystem, in one table:
//! [`TABLE`], one [`Row`] per [`Ecosystem`].
//!
//! **Adding an ecosystem means its row here, its analyser folder
//! (`worker/src/analyzers/<name>/`), and its version scheme if new (a
//! [`VersionScheme`] tag and `coordinator/src/versions/<scheme>/`).**
//! OSV names, purl type and namespace, os-release ids, package family,
//! version scheme, release keys, source-package matching and name
//! normalisation are read from the row through the methods on [`Ecosystem`];
//! no other file matches on ecosystems for them. `tests.rs` walks every row
//! and checks that the table is self-consistent.
//!
//! # Layout
//! - this file: [`Ecosystem`] and the table (one macro invocation, so a
//!   variant cannot exist without its row), [`Row`] and its parts, lookups.
//! - `rules.rs`: the facts that are code, each a small enum interpreted by
//!   one method: [`ReleaseRule`], [`OsvRelease`], [`MatchKey`], [`NameRule`].

mod rules;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::ParseError;
pub use rules::{GO_DEVEL, MatchKey, NameRule, OsvRelease, ReleaseRule};

/// What Strata knows about one ecosystem.
#[derive(Debug)]
pub struct Row {
    /// The OSV ecosystem name (`affected[].package.ecosystem` before any
    /// `:release`).
    pub osv_name: &'static str,
    /// How the suffix of OSV's `Name:suffix` becomes a release.
    pub osv_release: OsvRelease,
    /// How the ecosystem's packages are written as purls.
    pub purl: PurlForm,
    /// For OS package ecosystems, whose advisories are per release; `None`
    /// for language ecosystems.
    pub os: Option<Os>,
    /// The version ordering; `None` where none is implemented (such
    /// advisories are skipped at import).
    pub version_scheme: Option<VersionScheme>,
    /// What a package is matched by: its source package or its own name.
    pub match_key: MatchKey,
    /// How names are normalised before matching (advisories and packages).
    pub name_rule: NameRule,
}

/// How an ecosystem's packages are written as purls.
#[derive(Debug)]
pub struct PurlForm {
    /// The purl type (`deb`, `pypi`).
    pub ty: &'static str,
    /// OS ecosystems: the namespace naming the distribution (`debian`),
    /// written when building. Language ecosystems: `None` (a namespace is
    /// part of the package name, see [`PurlForm::name`]).
    pub namespace: Option<&'static str>,
    /// More namespaces that name this ecosystem when parsing (`rhel`).
    pub also: &'static [&'static str],
    /// How the package name lies over the purl's namespace and name.
    pub name: PurlName,
    /// Whether the purl spec has the name written normalised by the row's
    /// [`NameRule`] (`pypi`: PEP 503; `composer`: lowercase), or as the
    /// package declares it (`nuget`: case kept, as the spec's examples and
    /// Syft write it, though NuGet compares names case-insensitively).
    pub normalised: bool,
}

/// How a package name lies over a purl's namespace and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurlName {
    /// The purl's name alone (`pkg:pypi/requests` → `requests`).
    Name,
    /// Namespace and name joined by this separator (`pkg:maven/g/a` →
    /// `g:a`, `pkg:npm/%40scope/x` → `@scope/x`); the name alone when there
    /// is no namespace.
    Joined(char),
    /// A path: namespace, name and subpath joined by `/` (Go module paths).
    /// Built as the purl spec's golang type says, the module path over
    /// namespace and name (`github.com/nats-io/nats-server/v2` →
    /// `pkg:golang/github.com/nats-io/nats-server/v2`); read also as Syft
    /// writes it, the path after its third segment in the subpath
    /// (`pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2`).
    Path,
}

/// What only OS package ecosystems have.
#[derive(Debug)]
pub struct Os {
    pub family: Family,
    /// The os-release `ID`s that name this distribution (lowercase).
    pub os_release_ids: &'static [OsId],
    /// How the image's `VERSION_ID` becomes the release its advisories name.
    pub release: ReleaseRule,
}

/// One os-release `ID` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsId {
    Is(&'static str),
    /// Every id with this prefix (`opensuse-leap`, `opensuse-tumbleweed`).
    Prefix(&'static str),
}

impl OsId {
    /// Whether `id` (lowercase) is named by this rule.
    pub fn matches(self, id: &str) -> bool {
        match self {
            OsId::Is(s) => id == s,
            OsId::Prefix(p) => id.starts_with(p),
        }
    }
}

/// Packages of one format share a family: an analyser names the format's
/// default distribution, and the image's os-release names the real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Deb,
    Apk,
    Rpm,
}

/// A version ordering, named: the implementations are the coordinator's
/// (`coordinator/src/versions/`, where this type is `versions::Scheme`).
/// The variant order is the order versions of different schemes compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionScheme {
    Dpkg,
    Apk,
    Rpm,
    Pep440,
    Semver,
    Go,
    Maven,
    RubyGems,
    NuGet,
    Composer,
}

impl VersionScheme {
    /// Every scheme, in order.
    pub const ALL: [VersionScheme; 10] = [
        VersionScheme::Dpkg,
        VersionScheme::Apk,
        VersionScheme::Rpm,
        VersionScheme::Pep440,
        VersionScheme::Semver,
        VersionScheme::Go,
        VersionScheme::Maven,
        VersionScheme::RubyGems,
        VersionScheme::NuGet,
        VersionScheme::Composer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VersionScheme::Dpkg => "dpkg",
            VersionScheme::Apk => "apk",
            VersionScheme::Rpm => "rpm",
            VersionScheme::Pep440 => "pep440",
            VersionScheme::Semver => "semver",
            VersionScheme::Go => "go",
            VersionScheme::Maven => "maven",
            VersionScheme::RubyGems => "rubygems",
            VersionScheme::NuGet => "nuget",
            VersionScheme::Composer => "composer",
        }
    }
}

impl std::fmt::Display for VersionScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares [`Ecosystem`] and [`TABLE`] from one list, in the same order, so
/// `TABLE[e as usize]` is always `e`'s row.
macro_rules! table {
    ($($variant:ident => $row:expr),+ $(,)?) => {
        /// A package ecosystem, named as OSV names it (without the release
        /// suffix: `Debian`, not `Debian:12`; the release comes from the
        /// image's [`OsRelease`](crate::domain::OsRelease)). The variant
        /// order is the order reports sort by.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum Ecosystem {
            $($variant),+
        }

        impl Ecosystem {
            pub const ALL: &'static [Ecosystem] = &[$(Ecosystem::$variant),+];
        }

        /// One row per [`Ecosystem`], in the enum's order.
        pub static TABLE: &[Row] = &[$($row),+];
    };
}

/// What most rows share.
const DEFAULTS: Row = Row {
    osv_name: "",
    osv_release: OsvRelease::First,
    purl: purl("", None),
    os: None,
    version_scheme: None,
    match_key: MatchKey::Binary,
    name_rule: NameRule::AsIs,
};

const fn purl(ty: &'static str, namespace: Option<&'static str>) -> PurlForm {
    PurlForm {
        ty,
        namespace,
        also: &[],
        name: PurlName::Name,
        normalised: true,
    }
}

const fn os(family: Family, os_release_ids: &'static [OsId], release: ReleaseRule) -> Option<Os> {
    Some(Os {
        family,
        os_release_ids,
        release,
    })
}

use Family::{Apk, Deb, Rpm};
use MatchKey::{GoToolchain, Source};
use OsId::{Is, Prefix};
use ReleaseRule::{AsIs, Major, MajorMinor};

#[rustfmt::skip]
table! {
    Debian => Row {
        osv_name: "Debian",
        purl: purl("deb", Some("debian")),
        os: os(Deb, &[Is("debian")], Major),
        version_scheme: Some(VersionScheme::Dpkg),
        match_key: Source,
        ..DEFAULTS
    },
    Ubuntu => Row {
        osv_name: "Ubuntu",
        osv_release: OsvRelease::UbuntuPro,
        purl: purl("deb", Some("ubuntu")),
        os: os(Deb, &[Is("ubuntu")], AsIs),
        version_scheme: Some(VersionScheme::Dpkg),
        match_key: Source,
        ..DEFAULTS
    },
    Alpine => Row {
        osv_name: "Alpine",
        osv_release: OsvRelease::WithoutV,
        purl: purl("apk", Some("alpine")),
        os: os(Apk, &[Is("alpine")], MajorMinor),
        version_scheme: Some(VersionScheme::Apk),
        match_key: Source,
        ..DEFAULTS
    },
    Wolfi => Row {
        osv_name: "Wolfi",
        purl: purl("apk", Some("wolfi")),
        os: os(Apk, &[Is("wolfi")], AsIs),
        version_scheme: Some(VersionScheme::Apk),
        ..DEFAULTS
    },
    Chainguard => Row {
        osv_name: "Chainguard",
        purl: purl("apk", Some("chainguard")),
        os: os(Apk, &[Is("chainguard")], AsIs),
        version_scheme: Some(VersionScheme::Apk),
        ..DEFAULTS
    },
    RedHat => Row {
        osv_name: "Red Hat",
        osv_release: OsvRelease::FirstNumeric,
        purl: PurlForm { also: &["rhel"], ..purl("rpm", Some("redhat")) },
        os: os(Rpm, &[Is("rhel")], Major),
        version_scheme: Some(VersionScheme::Rpm),
        ..DEFAULTS
    },
    AlmaLinux => Row {
        osv_name: "AlmaLinux",
        purl: purl("rpm", Some("almalinux")),
        os: os(Rpm, &[Is("almalinux")], Major),
        version_scheme: Some(VersionScheme::Rpm),
        ..DEFAULTS
    },
    RockyLinux => Row {
        osv_name: "Rocky Linux",
        purl: purl("rpm", Some("rocky")),
        os: os(Rpm, &[Is("rocky")], Major),
        version_scheme: Some(VersionScheme::Rpm),
        ..DEFAULTS
    },
    Suse => Row {
        osv_name: "SUSE",
        purl: PurlForm { also: &["sles", "sle"], ..purl("rpm", Some("suse")) },
        os: os(Rpm, &[Is("sles"), Is("sled"), Is("sle-micro")], AsIs),
        version_scheme: Some(VersionScheme::Rpm),
        ..DEFAULTS
    },
    OpenSuse => Row {
        osv_name: "openSUSE",
        purl: PurlForm { also: &["opensuse-leap", "opensuse-tumbleweed"], ..purl("rpm", Some("opensuse")) },
        os: os(Rpm, &[Prefix("opensuse")], AsIs),
        version_scheme: Some(VersionScheme::Rpm),
        ..DEFAULTS
    },
    PyPI => Row {
        osv_name: "PyPI",
        purl: purl("pypi", None),
        version_scheme: Some(VersionScheme::Pep440),
        name_rule: NameRule::Pep503,
        ..DEFAULTS
    },
    Npm => Row {
        osv_name: "npm",
        purl: PurlForm { name: PurlName::Joined('/'), ..purl("npm", None) },
        version_scheme: Some(VersionScheme::Semver),
        ..DEFAULTS
    },
    Go => Row {
        osv_name: "Go",
        purl: PurlForm { name: PurlName::Path, ..purl("golang", None) },
        version_scheme: Some(VersionScheme::Go),
        match_key: GoToolchain,
        ..DEFAULTS
    },
    CratesIo => Row {
        osv_name: "crates.io",
        purl: purl("cargo", None),
        version_scheme: Some(VersionScheme::Semver),
        ..DEFAULTS
    },
    Maven => Row {
        osv_name: "Maven",
        purl: PurlForm { name: PurlName::Joined(':'), ..purl("maven", None) },
        version_scheme: Some(VersionScheme::Maven),
        ..DEFAULTS
    },
    RubyGems => Row {
        osv_name: "RubyGems",
        purl: purl("gem", None),
        version_scheme: Some(VersionScheme::RubyGems),
        ..DEFAULTS
    },
    NuGet => Row {
        osv_name: "NuGet",
        purl: PurlForm { normalised: false, ..purl("nuget", None) },
        version_scheme: Some(VersionScheme::NuGet),
        name_rule: NameRule::Lowercase,
        ..DEFAULTS
    },
    Packagist => Row {
        osv_name: "Packagist",
        purl: PurlForm { name: PurlName::Joined('/'), ..purl("composer", None) },
        version_scheme: Some(VersionScheme::Composer),
        name_rule: NameRule::Lowercase,
        ..DEFAULTS
    },
}

impl Ecosystem {
    /// This ecosystem's row of [`TABLE`].
    pub fn row(self) -> &'static Row {
        &TABLE[self as usize]
    }

    /// The OSV ecosystem name.
    pub fn as_str(self) -> &'static str {
        self.row().osv_name
    }

    /// OS package ecosystems take their release from the image (`Debian:12`).
    pub fn is_os(self) -> bool {
        self.row().os.is_some()
    }

    /// The package family of an OS ecosystem; `None` for language ones.
    pub fn family(self) -> Option<Family> {
        self.row().os.as_ref().map(|o| o.family)
    }

    /// The version ordering, `None` where none is implemented.
    pub fn version_scheme(self) -> Option<VersionScheme> {
        self.row().version_scheme
    }

    /// The OS ecosystem an os-release `ID` names (any case), for the
    /// distributions OSV covers.
    pub fn from_os_release_id(id: &str) -> Option<Ecosystem> {
        let id = id.to_ascii_lowercase();
        Ecosystem::ALL.iter().copied().find(|e| {
            e.row()
                .os
                .as_ref()
                .is_some_and(|o| o.os_release_ids.iter().any(|r| r.matches(&id)))
        })
    }

    /// The ecosystem of a purl type (lowercase) and, for OS types, namespace
    /// (lowercase): `("deb", "ubuntu")` → Ubuntu, `("pypi", _)` → PyPI.
    pub fn from_purl(ty: &str, namespace: &str) -> Option<Ecosystem> {
        Ecosystem::ALL.iter().copied().find(|e| {
            let p = &e.row().purl;
            p.ty == ty
                && p.namespace
                    .is_none_or(|ns| ns == namespace || p.also.contains(&namespace))
        })
    }

    /// Whether some ecosystem is written with purl type `ty` (lowercase).
    pub fn is_purl_type(ty: &str) -> bool {
        TABLE.iter().any(|r| r.purl.ty == ty)
    }

    /// The os-release `ID` that a purl namespace of this OS ecosystem stands
    /// for: the namespace itself when it is one of the ecosystem's ids
    /// (`opensuse-leap`), else the first id (`redhat` → `rhel`).
    pub fn os_release_id(self, namespace: &str) -> &str {
        let Some(os) = &self.row().os else {
            return namespace;
        };
        if os.os_release_ids.iter().any(|r| r.matches(namespace)) {
            return namespace;
        }
        os.os_release_ids
            .iter()
            .find_map(|r| match r {
                OsId::Is(id) => Some(*id),
                OsId::Prefix(_) => None,
            })
            .unwrap_or(namespace)
    }

    /// The release an advisory must name to apply to an image whose
    /// os-release says `version_id`: `None` for language ecosystems and an
    /// empty `VERSION_ID`. See [`ReleaseRule`].
    pub fn release_key(self, version_id: &str) -> Option<String> {
        self.row().os.as_ref()?.release.key(version_id)
    }

    /// The release in OSV's `Name:suffix` (given the suffix), `None` when it
    /// names none. See [`OsvRelease`].
    pub fn osv_release(self, suffix: &str) -> Option<String> {
        self.row().osv_release.parse(suffix)
    }

    /// The name as matching keys it. See [`NameRule`].
    pub fn normalise_name(self, name: &str) -> Cow<'_, str> {
        self.row().name_rule.normalise(name)
    }
}

impl FromStr for Ecosystem {
    type Err = ParseError;
    /// The OSV name, exactly (`Debian`, not `debian` or `Debian:12`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ecosystem::ALL
            .iter()
            .copied()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| ParseError::Ecosystem(s.chars().take(100).collect()))
    }
}

impl TryFrom<String> for Ecosystem {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl From<Ecosystem> for String {
    fn from(e: Ecosystem) -> String {
        e.as_str().to_owned()
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
