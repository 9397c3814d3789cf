//! Composition: squash an image's ordered layer inventories (base first) into
//! its package inventory, as an overlay filesystem would stack the layers.
//!
//! Per layer, in order, against everything below it:
//! - opaque directories (`.wh..wh..opq`) hide every lower package whose
//!   path is under the directory;
//! - whiteouts (`.wh.NAME`) hide every lower package whose path is the
//!   whited-out path or under it;
//! - a file the layer's analysers read (`analyzed_files`) replaces the lower
//!   file at the same path entirely: every lower package read from that path
//!   goes, so a new dpkg status without a package removes it;
//! - then the layer's own packages are added (a layer's whiteouts never hide
//!   its own files, per the OCI image spec).
//!
//! The os-release follows the same rules: the latest wins, and it is removed
//! when its file is whited out or replaced by a file that yields none.
//! Finally OS packages take their ecosystem from the os-release (`Debian`
//! packages in an image whose os-release says `ubuntu` become `Ubuntu`,
//! purl namespace too); which os-release ids name which ecosystem, and which
//! ecosystems share a package family, is the ecosystem table's
//! (`strata_proto::ecosystem`). Never fails: an empty list gives an empty
//! inventory.

use std::collections::HashSet;

use strata_proto::purl::Purl;
use strata_proto::{Ecosystem, LayerInventory, OsRelease, Package};

/// What an image holds once its layers are stacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInventory {
    pub packages: Vec<Package>,
    pub os_release: Option<OsRelease>,
}

/// Squash `layers` (base layer first).
pub fn compose(layers: &[LayerInventory]) -> ImageInventory {
    let mut packages: Vec<Package> = Vec::new();
    let mut os_release: Option<OsRelease> = None;
    for layer in layers {
        let hides = Hides::new(layer);
        packages.retain(|p| !hides.hides(&p.path));
        if os_release.as_ref().is_some_and(|o| hides.hides(&o.path)) {
            os_release = None;
        }
        if let Some(o) = &layer.os_release {
            os_release = Some(o.clone());
        }
        packages.extend(layer.packages.iter().cloned());
    }
    if let Some(target) = os_release
        .as_ref()
        .and_then(|o| Ecosystem::from_os_release_id(&o.id))
    {
        for p in &mut packages {
            retarget(p, target);
        }
    }
    ImageInventory { packages, os_release }
}

/// What one layer hides of the layers below it.
struct Hides<'a> {
    replaced: HashSet<&'a str>,
    whiteouts: HashSet<&'a str>,
    opaque: HashSet<&'a str>,
}

impl<'a> Hides<'a> {
    fn new(layer: &'a LayerInventory) -> Self {
        let set = |v: &'a [String]| v.iter().map(String::as_str).collect();
        Hides {
            replaced: set(&layer.analyzed_files),
            whiteouts: set(&layer.whiteouts),
            opaque: set(&layer.opaque_dirs),
        }
    }

    fn hides(&self, path: &str) -> bool {
        self.replaced.contains(path)
            || self.whiteouts.contains(path)
            || ancestors(path).any(|dir| self.whiteouts.contains(dir) || self.opaque.contains(dir))
    }
}

/// The strict ancestors of an absolute path: `/a/b/c` → `/a/b`, `/a`, `/`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.rfind('/') {
            Some(0) if current.len() > 1 => {
                rest = Some("/");
                Some("/")
            }
            Some(i) if i > 0 => {
                let parent = &current[..i];
                rest = Some(parent);
                Some(parent)
            }
            _ => {
                rest = None;
                None
            }
        }
    })
}

/// Moves an OS package to the image's distribution when both are of one
/// package family (deb, apk, rpm): the analyser named the format's default
/// distribution (`Debian` for dpkg), the os-release names the real one.
/// The purl is rebuilt for the new distribution only when its namespace is
/// the one the old ecosystem writes (a purl naming another distribution is
/// left as it is); the analysers' purls are canonical, so only the
/// namespace changes.
fn retarget(p: &mut Package, target: Ecosystem) {
    if p.ecosystem == target || p.ecosystem.family().is_none() || p.ecosystem.family() != target.family() {
        return;
    }
    let old = p.ecosystem.row().purl.namespace;
    if let Ok(purl) = Purl::parse(&p.purl)
        && purl
            .namespace()
            .is_some_and(|ns| old.is_some_and(|old| ns.eq_ignore_ascii_case(old)))
        && let Ok(moved) = purl.for_distro(target)
    {
        p.purl = moved.to_string();
    }
    p.ecosystem = target;
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::Digest;

    const STATUS: &str = "/var/lib/dpkg/status";
    const METADATA: &str = "/usr/lib/python3/site-packages/foo-1.0.dist-info/METADATA";

    fn layer_digest(n: u8) -> Digest {
        Digest::sha256_from_hex(&format!("{n:02x}").repeat(32)).unwrap()
    }

    fn deb(name: &str, version: &str, layer: u8) -> Package {
        Package {
            ecosystem: Ecosystem::Debian,
            name: name.into(),
            version: version.into(),
            source_name: None,
            source_version: None,
            arch: Some("amd64".into()),
            purl: format!("pkg:deb/debian/{name}@{version}?arch=amd64"),
            path: STATUS.into(),
            layer: Some(layer_digest(layer)),
            evidence: Default::default(),
        }
    }

    fn pypi(name: &str, path: &str, layer: u8) -> Package {
        Package {
            ecosystem: Ecosystem::PyPI,
            name: name.into(),
            version: "1.0".into(),
            source_name: None,
            source_version: None,
            arch: None,
            purl: format!("pkg:pypi/{name}@1.0"),
            path: path.into(),
            layer: Some(layer_digest(layer)),
            evidence: Default::default(),
        }
    }

    fn os(id: &str, version: &str, path: &str) -> OsRelease {
        OsRelease {
            id: id.into(),
            version_id: version.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    fn layer(n: u8, packages: Vec<Package>) -> LayerInventory {
        let mut analyzed: Vec<String> = packages.iter().map(|p| p.path.clone()).collect();
        analyzed.sort();
        analyzed.dedup();
        LayerInventory {
            digest: Some(layer_digest(n)),
            analyzer_set_version: "test".into(),
            packages,
            analyzed_files: analyzed,
            ..Default::default()
        }
    }

    fn names(inv: &ImageInventory) -> Vec<&str> {
        inv.packages.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn a_package_removed_by_a_new_status_disappears() {
        let base = layer(1, vec![deb("libc6", "2.36-9", 1), deb("curl", "7.88.1-10", 1)]);
        // `apt-get remove curl`: a new status without curl.
        let top = layer(2, vec![deb("libc6", "2.36-9", 2)]);
        let inv = compose(&[base, top]);
        assert_eq!(names(&inv), ["libc6"]);
        assert_eq!(inv.packages[0].layer, Some(layer_digest(2)));
    }

    #[test]
    fn a_replaced_database_replaces_every_package_from_it() {
        let base = layer(1, vec![deb("libc6", "2.36-9", 1), deb("openssl", "3.0.11-1", 1)]);
        let mut mid = layer(2, vec![pypi("foo", METADATA, 2)]);
        mid.analyzed_files.push("/etc/hostname".into());
        let top = layer(
            3,
            vec![deb("libc6", "2.36-9+deb12u4", 3), deb("openssl", "3.0.15-1", 3)],
        );
        let inv = compose(&[base, mid, top]);
        let got: Vec<(&str, &str)> = inv
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("foo", "1.0"),
                ("libc6", "2.36-9+deb12u4"),
                ("openssl", "3.0.15-1")
            ]
        );
    }

    #[test]
    fn an_analysed_file_yielding_nothing_still_replaces() {
        let base = layer(1, vec![deb("libc6", "2.36-9", 1)]);
        let mut top = layer(2, vec![]);
        top.analyzed_files = vec![STATUS.into()];
        assert!(compose(&[base, top]).packages.is_empty());
    }

    #[test]
    fn a_whiteout_deletes_a_language_package() {
        let base = layer(1, vec![deb("libc6", "2.36-9", 1)]);
        let app = layer(
            2,
            vec![pypi("foo", METADATA, 2), pypi("bar", "/app/requirements.txt", 2)],
        );
        let mut cleanup = layer(3, vec![]);
        cleanup.whiteouts = vec!["/usr/lib/python3/site-packages/foo-1.0.dist-info".into()];
        let inv = compose(&[base.clone(), app.clone(), cleanup]);
        assert_eq!(names(&inv), ["libc6", "bar"]);
        // Whiting out the file itself works as well, and a sibling path
        // that only shares a prefix survives.
        let mut exact = layer(3, vec![]);
        exact.whiteouts = vec![METADATA.into(), "/app/requirements".into()];
        assert_eq!(names(&compose(&[base, app, exact])), ["libc6", "bar"]);
    }

    #[test]
    fn an_opaque_dir_clears_lower_layers_but_not_its_own() {
        let base = layer(1, vec![deb("libc6", "2.36-9", 1), pypi("foo", METADATA, 1)]);
        let mut top = layer(
            2,
            vec![pypi(
                "baz",
                "/usr/lib/python3/site-packages/baz-2.dist-info/METADATA",
                2,
            )],
        );
        top.opaque_dirs = vec!["/usr/lib/python3".into()];
        let inv = compose(&[base.clone(), top]);
        assert_eq!(names(&inv), ["libc6", "baz"]);
        let mut root = layer(2, vec![]);
        root.opaque_dirs = vec!["/".into()];
        assert!(compose(&[base, root]).packages.is_empty());
    }

    #[test]
    fn later_whiteouts_do_not_hide_a_later_layers_own_files() {
        let base = layer(1, vec![deb("libc6", "2.36-9", 1)]);
        let mut top = layer(2, vec![deb("libc6", "2.36-9+deb12u4", 2)]);
        top.whiteouts = vec![STATUS.into()];
        let inv = compose(&[base, top]);
        assert_eq!(inv.packages.len(), 1);
        assert_eq!(inv.packages[0].version, "2.36-9+deb12u4");
    }

    #[test]
    fn the_latest_os_release_wins_and_goes_with_its_file() {
        let mut base = layer(1, vec![deb("libc6", "2.36-9", 1)]);
        base.os_release = Some(os("debian", "11", "/usr/lib/os-release"));
        let mut upgrade = layer(2, vec![]);
        upgrade.os_release = Some(os("debian", "12", "/usr/lib/os-release"));
        upgrade.analyzed_files = vec!["/usr/lib/os-release".into()];
        let inv = compose(&[base.clone(), upgrade.clone()]);
        assert_eq!(inv.os_release.as_ref().map(|o| o.version_id.as_str()), Some("12"));

        let mut gone = layer(3, vec![]);
        gone.whiteouts = vec!["/usr/lib/os-release".into()];
        assert_eq!(compose(&[base, upgrade, gone]).os_release, None);
    }

    #[test]
    fn os_packages_take_the_ecosystem_of_the_os_release() {
        let mut base = layer(
            1,
            vec![deb("libc6", "2.35-0ubuntu3", 1), pypi("foo", METADATA, 1)],
        );
        base.os_release = Some(os("ubuntu", "22.04", "/etc/os-release"));
        let inv = compose(&[base]);
        assert_eq!(inv.packages[0].ecosystem, Ecosystem::Ubuntu);
        assert_eq!(
            inv.packages[0].purl,
            "pkg:deb/ubuntu/libc6@2.35-0ubuntu3?arch=amd64"
        );
        assert_eq!(inv.packages[1].ecosystem, Ecosystem::PyPI);
        assert_eq!(inv.packages[1].purl, "pkg:pypi/foo@1.0");

        // No os-release, or one OSV does not cover: left as the analyser said.
        let mut other = layer(1, vec![deb("libc6", "2.36-9", 1)]);
        assert_eq!(
            compose(std::slice::from_ref(&other)).packages[0].ecosystem,
            Ecosystem::Debian
        );
        other.os_release = Some(os("kali", "2024.1", "/etc/os-release"));
        assert_eq!(compose(&[other]).packages[0].ecosystem, Ecosystem::Debian);
    }

    #[test]
    fn os_packages_move_only_within_their_family() {
        let pkg = |eco, purl: &str| Package {
            ecosystem: eco,
            purl: purl.into(),
            ..deb("x", "1", 1)
        };
        let rpm = pkg(
            Ecosystem::RedHat,
            "pkg:rpm/redhat/strata-demo@2:1.4.0-3.fc40?arch=noarch",
        );
        let apk = pkg(Ecosystem::Alpine, "pkg:apk/alpine/musl@1.2.3-r5");
        let deb = pkg(
            Ecosystem::Debian,
            "pkg:deb/debian/libpam-runtime@1.5.2-6%2Bdeb12u1~x?arch=all",
        );
        // A purl that does not name the analyser's distribution keeps its text.
        let odd = pkg(Ecosystem::RedHat, "pkg:rpm/fedora/bash@5.2-1.fc40");
        let mut base = layer(1, vec![rpm, apk.clone(), deb.clone(), odd]);
        base.os_release = Some(os("Rocky", "9.3", "/etc/os-release"));
        let inv = compose(&[base]);
        let got: Vec<(Ecosystem, &str)> = inv
            .packages
            .iter()
            .map(|p| (p.ecosystem, p.purl.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Ecosystem::RockyLinux,
                    "pkg:rpm/rocky/strata-demo@2:1.4.0-3.fc40?arch=noarch"
                ),
                (Ecosystem::Alpine, apk.purl.as_str()),
                (Ecosystem::Debian, deb.purl.as_str()),
                (Ecosystem::RockyLinux, "pkg:rpm/fedora/bash@5.2-1.fc40"),
            ]
        );

        let mut wolfi = layer(1, vec![apk]);
        wolfi.os_release = Some(os("wolfi", "20230201", "/etc/os-release"));
        let p = &compose(&[wolfi]).packages[0];
        assert_eq!(
            (p.ecosystem, p.purl.as_str()),
            (Ecosystem::Wolfi, "pkg:apk/wolfi/musl@1.2.3-r5")
        );
    }

    #[test]
    fn ancestors_walk_up_to_the_root() {
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/a").collect::<Vec<_>>(), ["/"]);
        assert_eq!(ancestors("/").count(), 0);
        assert_eq!(ancestors("").count(), 0);
    }

    #[test]
    fn no_layers_no_packages() {
        assert_eq!(compose(&[]), ImageInventory::default());
    }
}
