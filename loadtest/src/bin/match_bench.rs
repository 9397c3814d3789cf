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
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use strata_coordinator::matching::Matcher;
use strata_coordinator::vulndb::Db;
use strata_loadtest::synth;
use strata_proto::{OsRelease, Package};

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
    let advisories = synth::advisories(n_adv, &mut rng);
    let images = synth::inventories(n_inv, per_image, &mut rng);
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
