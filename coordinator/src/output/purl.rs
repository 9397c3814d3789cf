//! Package URL → Strata package identity (ecosystem, name, version, source
//! package, arch) and, for OS packages, the distribution it names.
//!
//! Parsing, and which ecosystem a purl names, is `strata_proto::purl`'s (the
//! ecosystem table's purl types and namespaces: `deb` with `debian` /
//! `ubuntu`; `apk` with `alpine` / `wolfi` / `chainguard`; `rpm` with
//! `redhat` (or `rhel`) / `almalinux` / `rocky` / `suse` (or `sles`) /
//! `opensuse`; `pypi`, `npm` (`@scope/name`), `golang` (`namespace/name`),
//! `cargo`, `maven` (`group:artifact`), `gem`, `nuget`, `composer`
//! (`vendor/name`)). What this adds, for OS packages: the `upstream`
//! qualifier gives the source package (`name`, `name@version`, or an rpm's
//! source rpm file name), `epoch` is folded into an rpm version as
//! `epoch:version`, and the `distro` qualifier (`debian-12`,
//! `alpine-3.19.1`) gives the OS release.
//!
//! Anything else is an error the caller may count and skip. A Go purl's
//! subpath is the rest of the module path (Syft writes
//! `github.com/nats-io/nats-server/v2` as
//! `pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2`); other types'
//! subpaths do not change the package.

use strata_proto::domain::{Ecosystem, OsRelease};
use strata_proto::ecosystem::Family;
use strata_proto::purl::{Purl, split_distro};

pub use strata_proto::purl::PurlError;

/// What a purl says about a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurlPackage {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub source_name: Option<String>,
    pub source_version: Option<String>,
    pub arch: Option<String>,
    /// The distribution, for OS packages: from `distro=` when present (with
    /// its version), else from the namespace alone (no version).
    pub os: Option<OsRelease>,
}

/// `bash-5.1.8-6.el9.src.rpm` → (`bash`, `5.1.8-6.el9`).
fn split_source_rpm(s: &str) -> Option<(String, String)> {
    let base = s
        .strip_suffix(".src.rpm")
        .or_else(|| s.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = base.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    (!name.is_empty()).then(|| (name.to_owned(), format!("{version}-{release}")))
}

/// Parses `purl` into a package identity; see the module docs for the mapping.
pub fn parse(purl: &str) -> Result<PurlPackage, PurlError> {
    let p = Purl::parse_installed(purl)?;
    let ecosystem = p.ecosystem();
    let version = p.version().unwrap_or_default().to_owned();
    if !ecosystem.is_os() {
        return Ok(PurlPackage {
            ecosystem,
            name: p.name().to_owned(),
            version,
            source_name: None,
            source_version: None,
            arch: None,
            os: None,
        });
    }

    // OS packages: the distribution is the `distro` qualifier's when there
    // is one, else the one the namespace stands for.
    let os = match p.qualifier("distro").map(split_distro) {
        Some((id, version_id)) if !id.is_empty() => OsRelease {
            id: id.to_owned(),
            version_id: version_id.to_owned(),
            ..OsRelease::default()
        },
        _ => OsRelease {
            id: ecosystem
                .os_release_id(&p.namespace().unwrap_or_default().to_ascii_lowercase())
                .to_owned(),
            ..OsRelease::default()
        },
    };

    let rpm = ecosystem.family() == Some(Family::Rpm);
    let mut version = version;
    if rpm
        && let Some(epoch) = p.qualifier("epoch")
        && epoch != "0"
        && !version.contains(':')
    {
        version = format!("{epoch}:{version}");
    }
    let (source_name, source_version) = match p.qualifier("upstream").map(str::to_owned) {
        None => (None, None),
        Some(u) if rpm => match split_source_rpm(&u) {
            Some((n, v)) => (Some(n), Some(v)),
            None => (Some(u), None),
        },
        Some(u) => match u.split_once('@') {
            Some((n, v)) => (Some(n.to_owned()), Some(v.to_owned())),
            None => (Some(u), None),
        },
    };
    // A source version equal to the binary's says nothing new.
    let source_version = source_version.filter(|v| *v != version);
    Ok(PurlPackage {
        ecosystem,
        name: p.name().to_owned(),
        version,
        source_name,
        source_version,
        arch: p.qualifier("arch").map(str::to_owned),
        os: Some(os),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_with_distro_and_upstream() {
        let p = parse("pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12&upstream=openssl")
            .unwrap();
        assert_eq!(p.ecosystem, Ecosystem::Debian);
        assert_eq!(p.name, "libssl3");
        assert_eq!(p.version, "3.0.11-1~deb12u2");
        assert_eq!(p.source_name.as_deref(), Some("openssl"));
        assert_eq!(p.arch.as_deref(), Some("amd64"));
        let os = p.os.unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("debian", "12"));
    }

    #[test]
    fn deb_epoch_and_source_version() {
        let p = parse("pkg:deb/ubuntu/libc6@2.35-0ubuntu3.1?upstream=glibc%402.35-0ubuntu3").unwrap();
        assert_eq!(p.ecosystem, Ecosystem::Ubuntu);
        assert_eq!(p.source_name.as_deref(), Some("glibc"));
        assert_eq!(p.source_version.as_deref(), Some("2.35-0ubuntu3"));
        // The namespace alone names the distribution, without a version.
        assert_eq!(p.os.unwrap().id, "ubuntu");
        let z = parse("pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1").unwrap();
        assert_eq!(z.version, "1:1.2.13.dfsg-1");
    }

    #[test]
    fn apk_and_rpm() {
        let a = parse("pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&upstream=busybox&distro=alpine-3.19.1")
            .unwrap();
        assert_eq!(a.ecosystem, Ecosystem::Alpine);
        assert_eq!(a.os.unwrap().version_id, "3.19.1");
        let w = parse("pkg:apk/wolfi/glibc@2.39-r1").unwrap();
        assert_eq!(w.ecosystem, Ecosystem::Wolfi);

        let r = parse(
            "pkg:rpm/redhat/bash@5.1.8-6.el9?arch=x86_64&epoch=1&upstream=bash-5.1.8-6.el9.src.rpm&distro=rhel-9.3",
        )
        .unwrap();
        assert_eq!(r.ecosystem, Ecosystem::RedHat);
        assert_eq!(r.version, "1:5.1.8-6.el9");
        assert_eq!(r.source_name.as_deref(), Some("bash"));
        assert_eq!(r.source_version.as_deref(), Some("5.1.8-6.el9"));
        let os = r.os.unwrap();
        assert_eq!((os.id.as_str(), os.version_id.as_str()), ("rhel", "9.3"));
        for (purl, eco) in [
            ("pkg:rpm/almalinux/curl@7.76.1-26.el9", Ecosystem::AlmaLinux),
            ("pkg:rpm/rocky/curl@7.76.1-26.el9", Ecosystem::RockyLinux),
            ("pkg:rpm/suse/curl@8.0.1-1", Ecosystem::Suse),
            ("pkg:rpm/opensuse/curl@8.0.1-1", Ecosystem::OpenSuse),
        ] {
            assert_eq!(parse(purl).unwrap().ecosystem, eco, "{purl}");
        }
    }

    #[test]
    fn language_ecosystems() {
        let cases = [
            ("pkg:pypi/requests@2.31.0", Ecosystem::PyPI, "requests"),
            (
                "pkg:npm/%40babel/traverse@7.22.5",
                Ecosystem::Npm,
                "@babel/traverse",
            ),
            ("pkg:npm/lodash@4.17.21", Ecosystem::Npm, "lodash"),
            (
                "pkg:golang/golang.org/x/net@v0.17.0",
                Ecosystem::Go,
                "golang.org/x/net",
            ),
            (
                "pkg:golang/github.com/nats-io/nats-server@v2.15.1#v2",
                Ecosystem::Go,
                "github.com/nats-io/nats-server/v2",
            ),
            (
                "pkg:golang/github.com/nats-io/nats-server/v2@v2.15.1",
                Ecosystem::Go,
                "github.com/nats-io/nats-server/v2",
            ),
            ("pkg:cargo/smallvec@1.6.0", Ecosystem::CratesIo, "smallvec"),
            (
                "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
                Ecosystem::Maven,
                "org.apache.logging.log4j:log4j-core",
            ),
            ("pkg:gem/rails@7.0.0", Ecosystem::RubyGems, "rails"),
            (
                "pkg:nuget/Newtonsoft.Json@12.0.1",
                Ecosystem::NuGet,
                "Newtonsoft.Json",
            ),
            (
                "pkg:composer/laravel/framework@8.0.0",
                Ecosystem::Packagist,
                "laravel/framework",
            ),
        ];
        for (purl, eco, name) in cases {
            let p = parse(purl).unwrap();
            assert_eq!((p.ecosystem, p.name.as_str()), (eco, name), "{purl}");
            assert!(p.os.is_none());
        }
    }

    #[test]
    fn rejects_what_it_cannot_map() {
        assert!(matches!(parse("not a purl"), Err(PurlError::Parse { .. })));
        assert!(matches!(
            parse("pkg:github/actions/checkout@v4"),
            Err(PurlError::UnsupportedType { .. })
        ));
        assert!(matches!(
            parse("pkg:deb/raspbian/foo@1"),
            Err(PurlError::UnknownDistro { .. })
        ));
        assert!(matches!(
            parse("pkg:pypi/requests"),
            Err(PurlError::NoVersion { .. })
        ));
        // An rpm without a namespace is placed by its distro qualifier.
        assert_eq!(
            parse("pkg:rpm/curl@1-1?distro=rocky-9.3").unwrap().ecosystem,
            Ecosystem::RockyLinux
        );
    }
}
