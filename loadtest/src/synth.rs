//! A synthetic fleet and advisory database in OSV's shape, seeded, for the
//! matching and fleet benchmarks: OS advisories per release (Debian 11/12,
//! Ubuntu 22.04, Alpine 3.19) on source packages, language advisories
//! (PyPI with `versions` lists, npm, Go, Maven, crates.io); three in four
//! advisories name packages no image has, as in real data. Images of one
//! distro share a base set, and most packages are at their current version,
//! so most (name, version) pairs repeat across images.

use std::hash::BuildHasher;

use strata_coordinator::vulndb::{Advisory, AffectedEntry, EvalRange, Event, RangeKind};
use strata_proto::{Ecosystem, OsRelease, Package, Severity};

/// A distro's release as images and advisories name it.
pub struct Distro {
    pub eco: Ecosystem,
    pub id: &'static str,
    pub version_id: &'static str,
    pub release: &'static str,
    /// Share of images built on it, in percent.
    pub share: u32,
}

pub const DISTROS: &[Distro] = &[
    Distro {
        eco: Ecosystem::Debian,
        id: "debian",
        version_id: "12",
        release: "12",
        share: 55,
    },
    Distro {
        eco: Ecosystem::Debian,
        id: "debian",
        version_id: "11",
        release: "11",
        share: 10,
    },
    Distro {
        eco: Ecosystem::Ubuntu,
        id: "ubuntu",
        version_id: "22.04",
        release: "22.04",
        share: 15,
    },
    Distro {
        eco: Ecosystem::Alpine,
        id: "alpine",
        version_id: "3.19.1",
        release: "3.19",
        share: 20,
    },
];

/// Language ecosystems with the number of package names in the pool.
pub const LANGS: &[(Ecosystem, usize)] = &[
    (Ecosystem::PyPI, 3000),
    (Ecosystem::Npm, 6000),
    (Ecosystem::Go, 2000),
    (Ecosystem::Maven, 2000),
    (Ecosystem::CratesIo, 1000),
];

/// Source packages per OS ecosystem, and binaries per source (1..=3).
pub const OS_SOURCES: usize = 2500;
/// Packages every image of a distro has (its base image).
pub const BASE_OS_PACKAGES: usize = 120;
pub const OS_PACKAGES: usize = 300;

pub fn version(eco: Ecosystem, minor: u32, patch: u32) -> String {
    match eco {
        Ecosystem::Debian | Ecosystem::Ubuntu => format!("1.{minor}.{patch}-{}", patch % 3 + 1),
        Ecosystem::Alpine => format!("1.{minor}.{patch}-r{}", patch % 3),
        Ecosystem::Go => format!("v1.{minor}.{patch}"),
        _ => format!("1.{minor}.{patch}"),
    }
}

/// Versions a range names: Go's OSV ranges are SEMVER without the `v`.
pub fn range_version(eco: Ecosystem, minor: u32, patch: u32) -> String {
    let v = version(eco, minor, patch);
    v.strip_prefix('v').map(str::to_owned).unwrap_or(v)
}

pub fn os_source(eco: Ecosystem, i: usize) -> String {
    format!("{}-src{i}", eco.as_str().to_ascii_lowercase())
}

pub fn lang_name(eco: Ecosystem, i: usize) -> String {
    match eco {
        Ecosystem::Go => format!("github.com/org{}/mod{i}", i % 97),
        Ecosystem::Maven => format!("org.group{}:artifact{i}", i % 53),
        Ecosystem::PyPI => format!("Py_Package.{i}"),
        _ => format!("pkg-{i}"),
    }
}

/// The minor version a name's versions share (stable per name).
pub fn minor_of(name: &str) -> u32 {
    (rustc_hash::FxBuildHasher.hash_one(name) % 10) as u32
}

/// Skewed pick in 0..n: low indexes (popular packages) far more often.
pub fn skewed(rng: &mut fastrand::Rng, n: usize) -> usize {
    ((rng.f64().powi(3)) * n as f64) as usize % n.max(1)
}

/// A patch level as installed: most images have the current one (4).
pub fn installed_patch(rng: &mut fastrand::Rng) -> u32 {
    if rng.u32(0..100) < 85 { 4 } else { rng.u32(0..4) }
}

pub fn advisories(n: usize, rng: &mut fastrand::Rng) -> Vec<Advisory> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let roll = rng.u32(0..100);
        // Most advisories name packages this fleet does not have.
        let outside = rng.u32(0..4) != 0;
        let severity = [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
            Severity::Unknown,
        ][rng.usize(0..5)];
        let mut affected = Vec::new();
        let (id, eco) = if roll < 40 {
            let d = &DISTROS[if roll < 30 {
                rng.usize(0..2)
            } else if roll < 35 {
                2
            } else {
                3
            }];
            (
                format!("{}-CVE-2024-{i}", d.eco.as_str().to_ascii_uppercase()),
                d.eco,
            )
        } else {
            let (eco, _) = LANGS[rng.usize(0..LANGS.len())];
            (format!("GHSA-{i:08x}"), eco)
        };
        let name = if eco.is_os() {
            let idx = rng.usize(0..OS_SOURCES) + if outside { OS_SOURCES } else { 0 };
            os_source(eco, idx)
        } else {
            let pool = LANGS.iter().find(|(e, _)| *e == eco).map_or(1000, |(_, n)| *n);
            lang_name(eco, rng.usize(0..pool) + if outside { pool } else { 0 })
        };
        let minor = minor_of(&name);
        let fixed_patch = rng.u32(1..6);
        let kind = if matches!(eco, Ecosystem::Go | Ecosystem::CratesIo | Ecosystem::Npm) {
            RangeKind::Semver
        } else {
            RangeKind::Ecosystem
        };
        let mut events = vec![if rng.u32(0..3) == 0 {
            Event::Introduced(range_version(eco, minor, 0))
        } else {
            Event::Introduced("0".into())
        }];
        if rng.u32(0..10) == 0 {
            events.push(Event::LastAffected(range_version(eco, minor, fixed_patch - 1)));
        } else {
            events.push(Event::Fixed(range_version(eco, minor, fixed_patch)));
        }
        let versions = if eco == Ecosystem::PyPI {
            (0..fixed_patch).map(|p| version(eco, minor, p)).collect()
        } else {
            Vec::new()
        };
        // Debian advisories usually cover several releases.
        for release in releases(eco) {
            affected.push(AffectedEntry {
                ecosystem: eco,
                release,
                name: name.clone(),
                ranges: vec![EvalRange {
                    kind,
                    events: events.clone(),
                }],
                versions: versions.clone(),
            });
        }
        out.push(Advisory {
            id,
            aliases: vec![format!("CVE-2024-{i}")],
            summary: format!("synthetic advisory {i} for {name}"),
            severity,
            score: Some(5.0 + (i % 50) as f64 / 10.0),
            score_source: "CVSS:3.1".into(),
            modified: String::new(),
            affected,
        });
    }
    out
}

pub fn package(eco: Ecosystem, name: String, source: Option<String>, version: String, path: &str) -> Package {
    Package {
        ecosystem: eco,
        name,
        version,
        source_name: source,
        source_version: None,
        arch: None,
        purl: String::new(),
        path: path.to_owned(),
        layer: None,
        evidence: Default::default(),
    }
}

pub fn inventories(
    n: usize,
    per_image: usize,
    rng: &mut fastrand::Rng,
) -> Vec<(Option<OsRelease>, Vec<Package>)> {
    let mut images = Vec::with_capacity(n);
    for _ in 0..n {
        let mut roll = rng.u32(0..100);
        let d = DISTROS
            .iter()
            .find(|d| {
                if roll < d.share {
                    true
                } else {
                    roll -= d.share;
                    false
                }
            })
            .unwrap_or(&DISTROS[0]);
        let os = OsRelease {
            id: d.id.into(),
            version_id: d.version_id.into(),
            path: "/etc/os-release".into(),
            ..Default::default()
        };
        let path = if d.eco == Ecosystem::Alpine {
            "/lib/apk/db/installed"
        } else {
            "/var/lib/dpkg/status"
        };
        let mut pkgs = Vec::with_capacity(per_image);
        let os_count = OS_PACKAGES.min(per_image);
        for k in 0..os_count {
            // The base set first (same in every image of the distro), then a skewed pick.
            let src = if k < BASE_OS_PACKAGES {
                k
            } else {
                skewed(rng, OS_SOURCES)
            };
            let source = os_source(d.eco, src);
            let patch = if k < BASE_OS_PACKAGES {
                4
            } else {
                installed_patch(rng)
            };
            let v = version(d.eco, minor_of(&source), patch);
            let bin = format!("{source}-bin{}", k % 3);
            pkgs.push(package(d.eco, bin, Some(source), v, path));
        }
        while pkgs.len() < per_image {
            let (eco, pool) = LANGS[rng.usize(0..LANGS.len())];
            let name = lang_name(eco, skewed(rng, pool));
            let v = version(eco, minor_of(&name), installed_patch(rng));
            pkgs.push(package(eco, name, None, v, "/app/lockfile"));
        }
        images.push((Some(os), pkgs));
    }
    images
}

/// The releases an advisory on `eco` names: every release of the fleet's
/// distros for an OS ecosystem, none for a language one.
pub fn releases(eco: Ecosystem) -> Vec<Option<String>> {
    if eco.is_os() {
        DISTROS
            .iter()
            .filter(|d| d.eco == eco)
            .map(|d| Some(d.release.to_owned()))
            .collect()
    } else {
        vec![None]
    }
}
