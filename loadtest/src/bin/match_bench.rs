//! Matching benchmark: database load and fleet matching.
//!
//! 1. Synthesises `--advisories` (default 100,000) advisories in OSV's shape:
//!    OS advisories per release (Debian 11/12, Ubuntu 22.04, Alpine 3.19) on
//!    source packages, language advisories (PyPI with `versions` lists,
//!    npm, Go, Maven, crates.io) with `introduced`/`fixed`/`last_affected`
//!    events; three in four name packages no image has, as in real data.
//! 2. Builds the matcher index (target for loading a database: < 1 s).
//! 3. Builds `--inventories` (default 10,000) images of `--packages` (500)
//!    packages from a realistic pool: images of one distro share a base set,
//!    and most packages are at their current version, so most
//!    (name, version) pairs repeat across images.
//! 4. Baseline, in the same run: hashing every (ecosystem, name, version) of
//!    the inventories once (and, for reference, building the set of distinct
//!    ones). Then `match_fleet_compact` (the matching: every distinct key
//!    matched once, findings counted, not built) and `match_fleet` (also
//!    materialising every owned `Finding`; cloning them alone is reported
//!    too). Target: < 2 s on 2 cores. Best of `--rounds` (default 3).
//! 5. Scaling: 1k/5k/10k inventories with all advisories, and
//!    25k/50k/100k advisories with all inventories.
//!
//! Run: `cargo run --release -p strata-loadtest --bin match_bench`.

use std::error::Error;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use strata_coordinator::matching::Matcher;
use strata_coordinator::vulndb::{Advisory, AffectedEntry, Db, EvalRange, Event, RangeKind};
use strata_proto::{Ecosystem, OsRelease, Package, Severity};

/// A distro's release as images and advisories name it.
struct Distro {
    eco: Ecosystem,
    id: &'static str,
    version_id: &'static str,
    release: &'static str,
    /// Share of images built on it, in percent.
    share: u32,
}

const DISTROS: &[Distro] = &[
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
const LANGS: &[(Ecosystem, usize)] = &[
    (Ecosystem::PyPI, 3000),
    (Ecosystem::Npm, 6000),
    (Ecosystem::Go, 2000),
    (Ecosystem::Maven, 2000),
    (Ecosystem::CratesIo, 1000),
];

/// Source packages per OS ecosystem, and binaries per source (1..=3).
const OS_SOURCES: usize = 2500;
/// Packages every image of a distro has (its base image).
const BASE_OS_PACKAGES: usize = 120;
const OS_PACKAGES: usize = 300;

fn version(eco: Ecosystem, minor: u32, patch: u32) -> String {
    match eco {
        Ecosystem::Debian | Ecosystem::Ubuntu => format!("1.{minor}.{patch}-{}", patch % 3 + 1),
        Ecosystem::Alpine => format!("1.{minor}.{patch}-r{}", patch % 3),
        Ecosystem::Go => format!("v1.{minor}.{patch}"),
        _ => format!("1.{minor}.{patch}"),
    }
}

/// Versions a range names: Go's OSV ranges are SEMVER without the `v`.
fn range_version(eco: Ecosystem, minor: u32, patch: u32) -> String {
    let v = version(eco, minor, patch);
    v.strip_prefix('v').map(str::to_owned).unwrap_or(v)
}

fn os_source(eco: Ecosystem, i: usize) -> String {
    format!("{}-src{i}", eco.as_str().to_ascii_lowercase())
}

fn lang_name(eco: Ecosystem, i: usize) -> String {
    match eco {
        Ecosystem::Go => format!("github.com/org{}/mod{i}", i % 97),
        Ecosystem::Maven => format!("org.group{}:artifact{i}", i % 53),
        Ecosystem::PyPI => format!("Py_Package.{i}"),
        _ => format!("pkg-{i}"),
    }
}

/// The minor version a name's versions share (stable per name).
fn minor_of(name: &str) -> u32 {
    (rustc_hash::FxBuildHasher.hash_one(name) % 10) as u32
}

/// Skewed pick in 0..n: low indexes (popular packages) far more often.
fn skewed(rng: &mut fastrand::Rng, n: usize) -> usize {
    ((rng.f64().powi(3)) * n as f64) as usize % n.max(1)
}

/// A patch level as installed: most images have the current one (4).
fn installed_patch(rng: &mut fastrand::Rng) -> u32 {
    if rng.u32(0..100) < 85 { 4 } else { rng.u32(0..4) }
}

fn synth_advisories(n: usize, rng: &mut fastrand::Rng) -> Vec<Advisory> {
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
        let releases: Vec<Option<String>> = if eco.is_os() {
            DISTROS
                .iter()
                .filter(|d| d.eco == eco)
                .map(|d| Some(d.release.to_owned()))
                .collect()
        } else {
            vec![None]
        };
        for release in releases {
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
            modified: String::new(),
            aliases: vec![format!("CVE-2024-{i}")],
            summary: format!("synthetic advisory {i} for {name}"),
            severity,
            score: Some(5.0 + (i % 50) as f64 / 10.0),
            score_source: "CVSS:3.1".into(),
            affected,
        });
    }
    out
}

fn package(eco: Ecosystem, name: String, source: Option<String>, version: String, path: &str) -> Package {
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

fn synth_inventories(
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

fn best_of<T>(rounds: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed());
        last = Some(out);
    }
    (best, last.unwrap_or_else(|| unreachable!("rounds is at least 1")))
}

/// The baseline: hashing every (ecosystem, name, version) of the fleet once.
fn hash_all(images: &[(Option<OsRelease>, Vec<Package>)]) -> u64 {
    let mut acc = 0u64;
    for (_, pkgs) in images {
        for p in pkgs {
            let mut h = rustc_hash::FxHasher::default();
            (p.ecosystem, &p.name, &p.version).hash(&mut h);
            acc = acc.wrapping_add(h.finish());
        }
    }
    acc
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut n_adv = 100_000usize;
    let mut n_inv = 10_000usize;
    let mut per_image = 500usize;
    let mut rounds = 3u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--advisories" => n_adv = value()?.parse()?,
            "--inventories" => n_inv = value()?.parse()?,
            "--packages" => per_image = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    println!("threads: {}", rayon::current_num_threads());
    let mut rng = fastrand::Rng::with_seed(42);
    let t = Instant::now();
    let advisories = synth_advisories(n_adv, &mut rng);
    let images = synth_inventories(n_inv, per_image, &mut rng);
    println!(
        "synthesised {} advisories, {} inventories x {} packages in {}",
        advisories.len(),
        images.len(),
        per_image,
        ms(t.elapsed())
    );

    // Loading a database from disk: the file `strata scan` and the
    // coordinator open, then the index built from it.
    let path = std::env::temp_dir().join(format!("strata-match-bench-{}.db", std::process::id()));
    Db::from_advisories(advisories.clone(), vec!["synthetic".into()]).write(&path)?;
    let file_bytes = std::fs::metadata(&path)?.len();
    let (open, db) = best_of(rounds, || Db::open(&path).expect("open the benchmark database"));
    let (load_index, _) = best_of(rounds, || Matcher::new(&db));
    std::fs::remove_file(&path).ok();
    println!(
        "database load: {} advisories, file {:.1} MiB, Db::open {}, + index {} = {} (target < 1 s)",
        db.advisories().len(),
        file_bytes as f64 / (1024.0 * 1024.0),
        ms(open),
        ms(load_index),
        ms(open + load_index)
    );

    let (build, matcher) = best_of(rounds, || Matcher::from_advisories("bench", &advisories));
    println!("index build ({:?}): {}", matcher.stats(), ms(build));

    let (dedup, n_distinct) = best_of(rounds, || {
        let mut distinct = rustc_hash::FxHashSet::default();
        for (_, pkgs) in &images {
            for p in pkgs {
                distinct.insert((p.ecosystem, p.name.as_str(), p.version.as_str()));
            }
        }
        distinct.len()
    });
    println!(
        "distinct (ecosystem, name, version): {} of {} packages (dedup set alone: {})",
        n_distinct,
        images.iter().map(|(_, p)| p.len()).sum::<usize>(),
        ms(dedup)
    );

    let (base, h) = best_of(rounds, || hash_all(&images));
    std::hint::black_box(h);
    let (compact, fm) = best_of(rounds, || matcher.match_fleet_compact(&images));
    println!(
        "match_fleet_compact: {} ({} distinct keys matched, {} findings not materialised); ratio to baseline {:.1}x",
        ms(compact),
        fm.distinct_keys(),
        (0..images.len()).map(|i| fm.finding_count(i)).sum::<usize>(),
        compact.as_secs_f64() / base.as_secs_f64().max(1e-9)
    );
    drop(fm);
    let (fleet, findings) = best_of(rounds, || matcher.match_fleet(&images));
    let total: usize = findings.iter().map(Vec::len).sum();
    // What materialising that many owned `Finding`s costs by itself.
    let (clone, copy) = best_of(1, || findings.par_iter().map(|f| f.to_vec()).collect::<Vec<_>>());
    drop(copy);
    drop(findings);
    println!("cloning the findings alone (parallel): {}", ms(clone));
    println!(
        "match_fleet: {} ({} findings); baseline hash-all: {}; ratio {:.1}x",
        ms(fleet),
        total,
        ms(base),
        fleet.as_secs_f64() / base.as_secs_f64().max(1e-9)
    );

    println!("scaling with inventories ({n_adv} advisories):");
    for n in [1_000usize, 5_000, 10_000] {
        let n = n.min(images.len());
        let (c, _) = best_of(rounds, || matcher.match_fleet_compact(&images[..n]));
        let (d, _) = best_of(rounds, || matcher.match_fleet(&images[..n]));
        println!("  {n:>6} inventories: compact {}, with findings {}", ms(c), ms(d));
    }
    println!("scaling with advisories ({} inventories):", images.len());
    for n in [25_000usize, 50_000, 100_000] {
        let n = n.min(advisories.len());
        let m = Matcher::from_advisories("bench", &advisories[..n]);
        let (c, _) = best_of(rounds, || m.match_fleet_compact(&images));
        let (d, f) = best_of(rounds, || m.match_fleet(&images));
        println!(
            "  {n:>6} advisories: compact {}, with findings {} ({} findings)",
            ms(c),
            ms(d),
            f.iter().map(Vec::len).sum::<usize>()
        );
    }
    Ok(())
}
