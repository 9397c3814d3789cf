//! Package URLs: the one place Strata builds and parses them.
//!
//! The syntax and the percent-encoding are the `packageurl` crate's; which
//! ecosystem a purl names, and how its namespace and name make the package's
//! name, come from the ecosystem table ([`crate::ecosystem`]):
//! - OS types (`deb`, `apk`, `rpm`): the namespace names the distribution
//!   (`pkg:deb/ubuntu/...`, or one of the row's extra namespaces such as
//!   `rhel`); without a known one, the `distro` qualifier's id may
//!   (`pkg:rpm/curl@1-1?distro=rocky-9.3`).
//! - Language types: the type alone names the ecosystem; the namespace is
//!   part of the package name where the row says so (`pkg:maven/g/a` is
//!   `g:a`).
//!
//! Contract: a [`Purl`]'s text ([`Purl::as_str`], `Display`) is the
//! canonical form `packageurl` writes; built purls are byte-identical to what
//! the analysers have always emitted (pinned by their tests). Parsing a
//! canonical purl and writing it again gives the same bytes, so a purl can be
//! rebuilt (as composition does for another distribution) without changing
//! anything else in it. Never panics on any input.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use packageurl::PackageUrl;

use crate::ecosystem::{Ecosystem, PurlName};

/// Why a string is not a purl Strata can use, or parts are not a purl.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PurlError {
    #[error("purl {purl:?}: {reason}")]
    Parse { purl: String, reason: String },
    #[error("purl {purl:?}: unsupported type {ty:?}")]
    UnsupportedType { purl: String, ty: String },
    #[error("purl {purl:?}: unknown distribution {namespace:?} for type {ty:?}")]
    UnknownDistro {
        purl: String,
        ty: String,
        namespace: String,
    },
    #[error("purl {purl:?}: no version")]
    NoVersion { purl: String },
    /// Building from parts the purl spec refuses (an empty name, a bad
    /// qualifier key) or for an ecosystem the purl cannot move to.
    #[error("purl: {0}")]
    Build(String),
}

/// A package URL whose type (and, for OS packages, namespace) names an
/// [`Ecosystem`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purl {
    ecosystem: Ecosystem,
    namespace: Option<String>,
    /// The purl's name component.
    purl_name: String,
    /// The package's name in its ecosystem (the namespace joined in where
    /// the row says).
    name: String,
    version: Option<String>,
    qualifiers: BTreeMap<String, String>,
    subpath: Option<String>,
    /// The canonical text.
    text: String,
}

/// A value shortened for an error message (input may be hostile).
fn short(s: &str) -> String {
    crate::text::cut(s, 300).to_owned()
}

/// `debian-12` → (`debian`, `12`); `opensuse-leap-15.5` → (`opensuse-leap`,
/// `15.5`); a value without a numeric tail is all id. The form of the
/// `distro` qualifier.
pub fn split_distro(d: &str) -> (&str, &str) {
    match d.rsplit_once('-') {
        Some((id, v)) if v.starts_with(|c: char| c.is_ascii_digit()) && !id.is_empty() => (id, v),
        _ => (d, ""),
    }
}

impl Purl {
    /// Parses `s`; the version is optional.
    pub fn parse(s: &str) -> Result<Purl, PurlError> {
        Purl::parse_with(s, false)
    }

    /// Parses `s` as the purl of one installed package: without a version
    /// it is [`PurlError::NoVersion`], whatever its type.
    pub fn parse_installed(s: &str) -> Result<Purl, PurlError> {
        Purl::parse_with(s, true)
    }

    fn parse_with(s: &str, need_version: bool) -> Result<Purl, PurlError> {
        let p = PackageUrl::from_str(s).map_err(|e| PurlError::Parse {
            purl: short(s),
            reason: e.to_string(),
        })?;
        if need_version && p.version().is_none_or(str::is_empty) {
            return Err(PurlError::NoVersion { purl: short(s) });
        }
        let ty = p.ty().to_ascii_lowercase();
        if !Ecosystem::is_purl_type(&ty) {
            return Err(PurlError::UnsupportedType {
                purl: short(s),
                ty: short(&ty),
            });
        }
        let ns = p.namespace().unwrap_or_default();
        let distro_id = p
            .qualifiers()
            .get("distro")
            .map(|d| split_distro(d).0)
            .unwrap_or_default();
        let ecosystem = Ecosystem::from_purl(&ty, &ns.to_ascii_lowercase())
            .or_else(|| Ecosystem::from_purl(&ty, distro_id))
            .ok_or_else(|| PurlError::UnknownDistro {
                purl: short(s),
                ty: ty.clone(),
                namespace: short(ns),
            })?;
        let purl = Purl::from_package_url(ecosystem, &p);
        // `packageurl` drops `.`/`..` and empty namespace segments when it
        // parses but writes what is left as it is: `pkg:composer/../x@1` is
        // written `pkg:composer//x@1`, which does not parse. Only a purl
        // whose canonical text reads back as itself is one (the contract).
        match PackageUrl::from_str(&purl.text) {
            Ok(back) if back.to_string() == purl.text => Ok(purl),
            _ => Err(PurlError::Parse {
                purl: short(s),
                reason: format!(
                    "its canonical form {:?} does not read back as itself",
                    short(&purl.text)
                ),
            }),
        }
    }

    /// The purl of an installed package, checked to read back as the same
    /// package. OS packages get the row's type and
    /// namespace (`pkg:deb/debian/NAME@VERSION?arch=ARCH`); a language
    /// package's name is split over namespace and name as its row says
    /// (`@babel/traverse` → `pkg:npm/%40babel/traverse`). `arch` becomes the
    /// `arch` qualifier when it is not empty.
    pub fn package(
        ecosystem: Ecosystem,
        name: &str,
        version: &str,
        arch: Option<&str>,
    ) -> Result<Purl, PurlError> {
        let form = &ecosystem.row().purl;
        let (namespace, purl_name) = match (form.namespace, form.name) {
            (Some(ns), _) => (Some(ns), name),
            (None, PurlName::Joined(sep)) => match name.rsplit_once(sep) {
                Some((ns, n)) if !ns.is_empty() => (Some(ns), n),
                _ => (None, name),
            },
            (None, PurlName::Path) => match name.rsplit_once('/') {
                Some((ns, n)) if !ns.is_empty() => (Some(ns), n),
                _ => (None, name),
            },
            (None, PurlName::Name) => (None, name),
        };
        let arch = arch.filter(|a| !a.is_empty());
        let built = Purl::build(
            ecosystem,
            namespace,
            purl_name,
            Some(version),
            arch.map(|a| ("arch", a)),
            None,
        )?;
        // A name or version with a `/` or `@` in the wrong place would read
        // back as another package: refuse it rather than write a purl that
        // lies (package managers never write such values; broken or hostile
        // metadata may).
        match Purl::parse(built.as_str()) {
            Ok(back) if back == built && back.version() == Some(version) => Ok(built),
            _ => Err(PurlError::Build(format!(
                "{} {:?} at {:?} does not make a purl that reads back as itself",
                ecosystem,
                short(name),
                short(version)
            ))),
        }
    }

    /// The same package in a sibling distribution (same purl type): only the
    /// namespace changes, to `target`'s (`pkg:deb/debian/x@1` →
    /// `pkg:deb/ubuntu/x@1`).
    pub fn for_distro(&self, target: Ecosystem) -> Result<Purl, PurlError> {
        let to = &target.row().purl;
        let (Some(ns), true) = (to.namespace, to.ty == self.ecosystem.row().purl.ty) else {
            return Err(PurlError::Build(format!(
                "{} packages cannot become {target} packages",
                self.ecosystem
            )));
        };
        Purl::build(
            target,
            Some(ns),
            &self.purl_name,
            self.version.as_deref(),
            self.qualifiers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            self.subpath.as_deref(),
        )
    }

    fn build<'a>(
        ecosystem: Ecosystem,
        namespace: Option<&str>,
        purl_name: &str,
        version: Option<&str>,
        qualifiers: impl IntoIterator<Item = (&'a str, &'a str)>,
        subpath: Option<&str>,
    ) -> Result<Purl, PurlError> {
        let err = |e: packageurl::Error| PurlError::Build(e.to_string());
        let mut p = PackageUrl::new(ecosystem.row().purl.ty, purl_name).map_err(err)?;
        if let Some(ns) = namespace {
            p.with_namespace(ns).map_err(err)?;
        }
        if let Some(v) = version {
            p.with_version(v).map_err(err)?;
        }
        for (k, v) in qualifiers {
            p.add_qualifier(k, v).map_err(err)?;
        }
        if let Some(s) = subpath {
            p.with_subpath(s).map_err(err)?;
        }
        Ok(Purl::from_package_url(ecosystem, &p))
    }

    /// The parts as `packageurl` normalised them (it lowercases `deb` names,
    /// for one), and its canonical text.
    fn from_package_url(ecosystem: Ecosystem, p: &PackageUrl<'_>) -> Purl {
        let namespace = p.namespace().filter(|n| !n.is_empty());
        let subpath = p.subpath().filter(|s| !s.is_empty());
        let mut name = match (ecosystem.row().purl.name, namespace) {
            (PurlName::Joined(sep), Some(ns)) => format!("{ns}{sep}{}", p.name()),
            (PurlName::Path, Some(ns)) => format!("{ns}/{}", p.name()),
            _ => p.name().to_owned(),
        };
        if let (PurlName::Path, Some(sub)) = (ecosystem.row().purl.name, subpath) {
            name.push('/');
            name.push_str(sub);
        }
        Purl {
            ecosystem,
            namespace: namespace.map(str::to_owned),
            purl_name: p.name().to_owned(),
            name,
            version: p.version().filter(|v| !v.is_empty()).map(str::to_owned),
            qualifiers: p
                .qualifiers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            subpath: subpath.map(str::to_owned),
            text: p.to_string(),
        }
    }

    pub fn ecosystem(&self) -> Ecosystem {
        self.ecosystem
    }

    /// The purl's namespace as written (decoded), if any. For OS packages it
    /// names the distribution.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The package's name in its ecosystem: `libssl3`,
    /// `org.apache.logging.log4j:log4j-core`, `@babel/traverse`, and for Go
    /// the module path with the subpath joined on
    /// (`pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2` →
    /// `github.com/nats-io/nats-server/v2`, as Syft writes major versions).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn qualifiers(&self) -> &BTreeMap<String, String> {
        &self.qualifiers
    }

    /// A qualifier's value, `None` when absent or empty.
    pub fn qualifier(&self, key: &str) -> Option<&str> {
        self.qualifiers
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The subpath after `#` (`v2` in `pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2`).
    pub fn subpath(&self) -> Option<&str> {
        self.subpath.as_deref()
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Purl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Purl {
    type Err = PurlError;
    fn from_str(s: &str) -> Result<Self, PurlError> {
        Purl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(eco: Ecosystem, name: &str, version: &str, arch: Option<&str>) -> String {
        Purl::package(eco, name, version, arch).unwrap().to_string()
    }

    #[test]
    fn os_purls_are_what_the_analysers_always_wrote() {
        assert_eq!(
            os(Ecosystem::Debian, "git-core", "1:2.14.2-1", Some("all")),
            "pkg:deb/debian/git-core@1:2.14.2-1?arch=all"
        );
        assert_eq!(
            os(
                Ecosystem::Debian,
                "libpam-runtime",
                "1.5.2-6+deb12u1~x",
                Some("all")
            ),
            "pkg:deb/debian/libpam-runtime@1.5.2-6%2Bdeb12u1~x?arch=all"
        );
        assert_eq!(
            os(Ecosystem::Alpine, "musl", "1.2.3-r5", None),
            "pkg:apk/alpine/musl@1.2.3-r5"
        );
        assert_eq!(
            os(Ecosystem::Alpine, "musl", "1.2.3-r5", Some("")),
            "pkg:apk/alpine/musl@1.2.3-r5"
        );
        assert_eq!(
            os(Ecosystem::RedHat, "strata-demo", "2:1.4.0-3.fc40", Some("noarch")),
            "pkg:rpm/redhat/strata-demo@2:1.4.0-3.fc40?arch=noarch"
        );
        assert_eq!(
            Purl::package(Ecosystem::Debian, "", "1", None),
            Err(PurlError::Build("missing name".into()))
        );
    }

    #[test]
    fn language_purls_split_the_name_as_the_row_says() {
        for (eco, name, want) in [
            (
                Ecosystem::Npm,
                "@babel/traverse",
                "pkg:npm/%40babel/traverse@7.22.5",
            ),
            (Ecosystem::Npm, "lodash", "pkg:npm/lodash@7.22.5"),
            (
                Ecosystem::Go,
                "golang.org/x/net",
                "pkg:golang/golang.org/x/net@7.22.5",
            ),
            (
                Ecosystem::Maven,
                "org.example:core",
                "pkg:maven/org.example/core@7.22.5",
            ),
            (
                Ecosystem::Packagist,
                "laravel/framework",
                "pkg:composer/laravel/framework@7.22.5",
            ),
            (Ecosystem::PyPI, "requests", "pkg:pypi/requests@7.22.5"),
            (Ecosystem::CratesIo, "smallvec", "pkg:cargo/smallvec@7.22.5"),
        ] {
            let p = Purl::package(eco, name, "7.22.5", None).unwrap();
            assert_eq!(p.as_str(), want);
            let back = Purl::parse(want).unwrap();
            assert_eq!((back.ecosystem(), back.name()), (eco, name), "{want}");
        }
    }

    #[test]
    fn parse_keeps_qualifiers_and_subpath() {
        let p = Purl::parse("pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2").unwrap();
        assert_eq!(p.ecosystem(), Ecosystem::Go);
        // The subpath is the rest of the module path (Syft's form): the
        // module is `/v2`, not the old v1 module.
        assert_eq!(p.name(), "github.com/nats-io/nats-server/v2");
        assert_eq!(p.version(), Some("v2.15.1"));
        assert_eq!(p.subpath(), Some("v2"));
        assert_eq!(p.as_str(), "pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2");

        let p = Purl::parse("pkg:deb/debian/libssl3@3.0.11-1~deb12u2?distro=debian-12&arch=amd64&upstream=")
            .unwrap();
        assert_eq!(p.qualifier("arch"), Some("amd64"));
        assert_eq!(p.qualifier("upstream"), None);
        assert_eq!(p.qualifiers().len(), 2, "packageurl drops empty values");
        assert_eq!(p.namespace(), Some("debian"));
        assert_eq!(p.subpath(), None);
        assert_eq!(p.version(), Some("3.0.11-1~deb12u2"));
        assert_eq!(Purl::parse("pkg:pypi/requests").unwrap().version(), None);
    }

    /// Go module paths: built as the purl spec says (the whole path over
    /// namespace and name), read in that form and in Syft's (the path after
    /// the third segment in the subpath); both give the module path back.
    #[test]
    fn go_module_paths_round_trip_in_both_forms() {
        for (module, built, syft) in [
            (
                "github.com/nats-io/nats-server/v2",
                "pkg:golang/github.com/nats-io/nats-server/v2@v2.15.1",
                "pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2",
            ),
            (
                "github.com/coreos/go-systemd/v22",
                "pkg:golang/github.com/coreos/go-systemd/v22@v2.15.1",
                "pkg:golang/github.com/coreos/go-systemd@v2.15.1#v22",
            ),
            (
                "google.golang.org/genproto/googleapis/api",
                "pkg:golang/google.golang.org/genproto/googleapis/api@v2.15.1",
                "pkg:golang/google.golang.org/genproto/googleapis@v2.15.1#api",
            ),
            (
                "go.opencensus.io",
                "pkg:golang/go.opencensus.io@v2.15.1",
                "pkg:golang/go.opencensus.io@v2.15.1",
            ),
        ] {
            let p = Purl::package(Ecosystem::Go, module, "v2.15.1", None).unwrap();
            assert_eq!(p.as_str(), built);
            assert_eq!(p.name(), module);
            assert_eq!(Purl::parse(built).unwrap().name(), module, "{built}");
            assert_eq!(Purl::parse(syft).unwrap().name(), module, "{syft}");
        }
        // The subpath of any other type is not part of the name.
        let npm = Purl::parse("pkg:npm/%40babel/traverse@7.22.5#lib/index.js").unwrap();
        assert_eq!(npm.name(), "@babel/traverse");
    }

    #[test]
    fn errors_come_in_the_order_they_always_did() {
        assert!(matches!(Purl::parse("not a purl"), Err(PurlError::Parse { .. })));
        // No version beats an unsupported type.
        assert!(matches!(
            Purl::parse_installed("pkg:github/actions/checkout"),
            Err(PurlError::NoVersion { .. })
        ));
        assert!(matches!(
            Purl::parse_installed("pkg:github/actions/checkout@v4"),
            Err(PurlError::UnsupportedType { .. })
        ));
        assert_eq!(
            Purl::parse("pkg:deb/Raspbian/foo@1").unwrap_err().to_string(),
            "purl \"pkg:deb/Raspbian/foo@1\": unknown distribution \"raspbian\" for type \"deb\""
        );
        // An rpm without a namespace is placed by its distro qualifier.
        assert_eq!(
            Purl::parse("pkg:rpm/curl@1-1?distro=rocky-9.3")
                .unwrap()
                .ecosystem(),
            Ecosystem::RockyLinux
        );
    }

    #[test]
    fn a_purl_moves_to_a_sibling_distribution_and_nowhere_else() {
        let p = Purl::parse("pkg:deb/debian/libpam-runtime@1.5.2-6%2Bdeb12u1~x?arch=all").unwrap();
        let u = p.for_distro(Ecosystem::Ubuntu).unwrap();
        assert_eq!(
            u.as_str(),
            "pkg:deb/ubuntu/libpam-runtime@1.5.2-6%2Bdeb12u1~x?arch=all"
        );
        assert_eq!(u.ecosystem(), Ecosystem::Ubuntu);
        assert!(p.for_distro(Ecosystem::Alpine).is_err());
        assert!(p.for_distro(Ecosystem::PyPI).is_err());
    }

    /// Found by fuzzing (`fuzz/`, target `purl`): a namespace of only dot
    /// segments was dropped on parsing, and the text written for the purl
    /// (`pkg:composer//x@2`) did not parse.
    #[test]
    fn parse_refuses_what_would_not_read_back() {
        for s in [
            // The fuzzer's input, as it found it.
            "pkg:composer/../\u{11}\0@o\0e@e\u{1}x@2k",
            "pkg:composer/../x@2",
            "pkg:npm/./a@1",
            "pkg:maven/../a@1",
        ] {
            match Purl::parse(s) {
                Err(PurlError::Parse { .. }) => {}
                Err(e) => panic!("{s}: unexpected error {e}"),
                Ok(p) => assert_eq!(
                    Purl::parse(p.as_str()).map(|b| b.as_str().to_owned()),
                    Ok(p.as_str().to_owned()),
                    "{s}"
                ),
            }
        }
        // Ordinary purls still parse and keep their text.
        let p = Purl::parse("pkg:composer/monolog/monolog@3.5.0").unwrap();
        assert_eq!(p.as_str(), "pkg:composer/monolog/monolog@3.5.0");
    }

    #[test]
    fn split_distro_takes_the_numeric_tail() {
        assert_eq!(split_distro("debian-12"), ("debian", "12"));
        assert_eq!(split_distro("opensuse-leap-15.5"), ("opensuse-leap", "15.5"));
        assert_eq!(split_distro("sid"), ("sid", ""));
        assert_eq!(split_distro("-12"), ("-12", ""));
    }
}
