//! Fleet update benchmark: what an advisory update costs a coordinator that
//! holds a fleet.
//!
//! 1. A real `nats-server` (JetStream key-value state, as `strata
//!    coordinator` runs) and a local-filesystem object store in a temp dir.
//! 2. `--images` (default 10,000) registered images of `--packages` (500)
//!    packages from the synthetic fleet (`strata_loadtest::synth`: images of
//!    one distro share a base, most packages at their current version), and
//!    `--advisories` (100,000) synthetic advisories. Each image's scan
//!    record, image record and report (packages, matched under no data)
//!    are written to the state and the store, as finished scans leave them;
//!    the generator's own copy is dropped (made in chunks) before the
//!    coordinator starts, so the memory figures are the coordinator's.
//! 3. The coordinator (constructed in process, nothing else running) loads
//!    the fleet, matches it against the data and records every image's
//!    findings history (the baseline).
//! 4. `--updates` (default 3) advisory updates, each touching `--names`
//!    (default 50) package names the fleet has — a fifth of them in every
//!    image of a distro (its base), the rest popular OS and language
//!    packages: per name one advisory added (it affects what images have)
//!    and one withdrawn. Each is `vulndb::diff` then `apply_vulndb`; the time
//!    to its events published is the figure (target < 1 s).
//! 5. A full re-match of the fleet (`rematch_all`; target < 5 s).
//! 6. The coordinator's resident memory with the fleet (target < 2 GiB).
//! 7. Baseline, in this run: the matcher alone over the same inventories
//!    (`match_fleet_compact`, regenerated after the memory figures), and a
//!    full re-match against an incremental one, as ratios.
//!
//! Run: `cargo run --release -p strata-loadtest --bin fleet_update`.

use std::collections::BTreeSet;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use futures::StreamExt as _;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use strata_coordinator::cluster::records::{ImageRecord, ScanRecord, ScanStatus, image_key, scan_id};
use strata_coordinator::cluster::{Buckets, Coordinator, CoordinatorConfig, VulnData, report_path};
use strata_coordinator::vulndb::{Advisory, AffectedEntry, Db, EvalRange, Event, RangeKind, diff};
use strata_harness::NatsServer;
use strata_loadtest::memory;
use strata_loadtest::synth;
use strata_proto::{Ecosystem, Report, Severity};
use strata_worker::queue::Queue;

type BoxError = Box<dyn Error + Send + Sync>;

/// Images generated (and their copies dropped) at a time.
const CHUNK: usize = 250;
/// Records and reports written at once.
const WRITES: usize = 64;

#[derive(clap::Parser)]
#[command(about = "What an advisory update and a full re-match cost a coordinator holding a fleet")]
struct Options {
    /// Registered images in the fleet.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Packages per image.
    #[arg(long, default_value_t = 500)]
    packages: usize,
    /// Advisories in the data in force.
    #[arg(long, default_value_t = 100_000)]
    advisories: usize,
    /// Package names each update touches.
    #[arg(long, default_value_t = 50)]
    names: usize,
    /// Advisory updates, each on different names.
    #[arg(long, default_value_t = 3)]
    updates: usize,
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn reference(i: usize) -> String {
    format!("bench.test/team{}/app{i}:v1", i % 100)
}

fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

/// Writes the fleet as finished scans leave it: per image a report in the
/// store, a complete scan record and a registered image record.
async fn write_fleet(
    o: &Options,
    rng: &mut fastrand::Rng,
    buckets: &Buckets,
    store: &Arc<dyn ObjectStore>,
) -> Result<u64, BoxError> {
    let mut bytes = 0u64;
    let mut done = 0;
    while done < o.images {
        let n = CHUNK.min(o.images - done);
        let chunk = synth::inventories(n, o.packages, rng);
        let first = done;
        let writes = chunk.into_iter().enumerate().map(|(k, (os, packages))| {
            let i = first + k;
            async move {
                let digest = digest(i);
                let id = scan_id(&digest, "", "bench");
                let reference = reference(i);
                let report = Report {
                    scan_id: id.clone(),
                    image_reference: reference.clone(),
                    image_digest: digest.parse().ok(),
                    platform: "linux/amd64".into(),
                    os_release: os,
                    packages,
                    findings: Vec::new(),
                    counts: Default::default(),
                    suppressed: 0,
                    vulndb_version: "none".into(),
                    created_unix_ms: 1,
                    layer_errors: Vec::new(),
                };
                let json = serde_json::to_vec(&report)?;
                let size = json.len() as u64;
                let key = report_path(&id);
                store.put(&key, PutPayload::from(json)).await?;
                let scan = ScanRecord {
                    id: id.clone(),
                    reference: reference.clone(),
                    platform: String::new(),
                    priority: "background".into(),
                    insecure_registry: false,
                    analyzer_set: "bench".into(),
                    status: ScanStatus::Complete,
                    image_digest: digest.clone(),
                    resolved_platform: "linux/amd64".into(),
                    layers: Vec::new(),
                    location: None,
                    error: None,
                    created_unix_ms: 1,
                    updated_unix_ms: 2,
                    completed_unix_ms: 3,
                    counts: Default::default(),
                    packages: report.packages.len() as u32,
                    findings: 0,
                    vulndb_version: "none".into(),
                    report_key: Some(key.to_string()),
                };
                buckets.scans.put(&id, serde_json::to_vec(&scan)?.into()).await?;
                let image = ImageRecord {
                    reference: reference.clone(),
                    platform: String::new(),
                    insecure_registry: false,
                    registered: true,
                    digest,
                    scan_id: id,
                    updated_unix_ms: 3,
                };
                buckets
                    .images
                    .put(&image_key(&reference), serde_json::to_vec(&image)?.into())
                    .await?;
                Ok::<u64, BoxError>(size)
            }
        });
        let mut writes = futures::stream::iter(writes).buffer_unordered(WRITES);
        while let Some(written) = writes.next().await {
            bytes += written?;
        }
        done += n;
    }
    Ok(bytes)
}

/// The names update `u` touches: a fifth from the distros' base sets
/// (every image of the distro has them), the rest popular OS source
/// packages and language packages. Different for each update.
fn update_names(u: usize, count: usize) -> Vec<(Ecosystem, String)> {
    let mut names = Vec::with_capacity(count);
    let base = count / 5;
    for k in 0..count {
        let n = u * count + k;
        if k < base {
            let d = &synth::DISTROS[n % synth::DISTROS.len()];
            names.push((d.eco, synth::os_source(d.eco, n % synth::BASE_OS_PACKAGES)));
        } else if k % 2 == 0 {
            let d = &synth::DISTROS[n % synth::DISTROS.len()];
            // Popular, not base: the skewed pick's low indexes past the base.
            names.push((d.eco, synth::os_source(d.eco, synth::BASE_OS_PACKAGES + n % 200)));
        } else {
            let (eco, _) = synth::LANGS[n % synth::LANGS.len()];
            names.push((eco, synth::lang_name(eco, n % 100)));
        }
    }
    names
}

/// `advisories` with, for each of `names`, one advisory added that affects
/// every version below the next minor, and the first one naming it withdrawn.
fn updated(advisories: &[Advisory], names: &[(Ecosystem, String)], u: usize) -> Vec<Advisory> {
    let touched: BTreeSet<&(Ecosystem, String)> = names.iter().collect();
    let mut withdrawn = BTreeSet::new();
    let mut out: Vec<Advisory> = advisories
        .iter()
        .filter(|a| {
            let key = a.affected.first().map(|e| (e.ecosystem, e.name.clone()));
            match key {
                Some(k) if touched.contains(&k) && !withdrawn.contains(&k) => {
                    withdrawn.insert(k);
                    false
                }
                _ => true,
            }
        })
        .cloned()
        .collect();
    for (n, (eco, name)) in names.iter().enumerate() {
        let releases: Vec<Option<String>> = if eco.is_os() {
            synth::DISTROS
                .iter()
                .filter(|d| d.eco == *eco)
                .map(|d| Some(d.release.to_owned()))
                .collect()
        } else {
            vec![None]
        };
        let kind = if matches!(eco, Ecosystem::Go | Ecosystem::CratesIo | Ecosystem::Npm) {
            RangeKind::Semver
        } else {
            RangeKind::Ecosystem
        };
        let fixed = synth::range_version(*eco, 99, 0);
        out.push(Advisory {
            id: format!("BENCH-{u}-{n}"),
            aliases: vec![format!("CVE-2026-9{u}{n:03}")],
            summary: format!("update {u}: {name}"),
            severity: Severity::Critical,
            score: Some(9.8),
            score_source: "CVSS:3.1".into(),
            modified: String::new(),
            affected: releases
                .into_iter()
                .map(|release| AffectedEntry {
                    ecosystem: *eco,
                    release,
                    name: name.clone(),
                    ranges: vec![EvalRange {
                        kind,
                        events: vec![Event::Introduced("0".into()), Event::Fixed(fixed.clone())],
                    }],
                    versions: Vec::new(),
                })
                .collect(),
        });
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = Options::parse();
    println!(
        "threads: {}; fleet: {} images x {} packages, {} advisories",
        rayon::current_num_threads(),
        o.images,
        o.packages,
        o.advisories
    );
    let dir = tempfile::tempdir()?;
    let nats = NatsServer::start()?;
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let buckets = Buckets::nats(&js, 1).await?;
    std::fs::create_dir_all(dir.path().join("store"))?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path().join("store"))?);

    let mut rng = fastrand::Rng::with_seed(42);
    let t = Instant::now();
    let mut advisories = synth::advisories(o.advisories, &mut rng);
    let fleet_seed = rng.u64(..);
    let bytes = write_fleet(&o, &mut fastrand::Rng::with_seed(fleet_seed), &buckets, &store).await?;
    println!(
        "fleet written: {} reports ({:.0} MiB of JSON) and records in {}",
        o.images,
        bytes as f64 / (1024.0 * 1024.0),
        secs(t.elapsed())
    );

    let db = Db::from_advisories(advisories.clone(), vec!["synthetic".into()]);
    let coordinator = Coordinator::new(
        CoordinatorConfig::new(format!("file://{}", dir.path().join("store").display())),
        Queue::memory(Default::default()),
        buckets,
        store,
        VulnData::new(&db),
        strata_worker::telemetry::Metrics::new("fleet-update-bench", None)?,
    );
    let held_before = memory::rss_kib();
    let reset = memory::reset_peak_rss();

    // 3. Load, match, baseline histories.
    let t = Instant::now();
    let (new, resolved) = coordinator.fleet_reconcile_all().await?;
    let load = t.elapsed();
    let events = coordinator.event_log().last_sequence().await?;
    println!(
        "load + match + baseline histories: {} ({events} events: images' severities; {new} new, {resolved} resolved); RSS {:.0} MiB",
        secs(load),
        memory::mib(memory::rss_kib())
    );

    // 4. Updates.
    let mut old = db;
    let mut update_times = Vec::new();
    for u in 0..o.updates {
        let names = update_names(u, o.names);
        advisories = updated(&advisories, &names, u);
        let new_db = Db::from_advisories(advisories.clone(), vec!["synthetic".into()]);
        let t = Instant::now();
        let changes = diff::diff(&old, &new_db);
        let diffed = t.elapsed();
        let t = Instant::now();
        let data = VulnData::new(&new_db);
        let indexed = t.elapsed();
        let seq = coordinator.event_log().last_sequence().await?;
        let t = Instant::now();
        let summary = coordinator.apply_vulndb(data, &changes).await?;
        let applied = t.elapsed();
        let events = coordinator.event_log().last_sequence().await? - seq;
        println!(
            "update {}: {} added, {} withdrawn, {} names -> {} images, {} distinct packages matched, {} new + {} resolved findings, {events} events in {} (target < 1 s); diff {}, index {}; RSS {:.0} MiB",
            u + 1,
            changes.added.len(),
            changes.removed.len(),
            changes.touched.len(),
            summary.images,
            summary.distinct_packages,
            summary.findings_new,
            summary.findings_resolved,
            secs(applied),
            secs(diffed),
            secs(indexed),
            memory::mib(memory::rss_kib())
        );
        update_times.push(applied);
        old = new_db;
    }

    // 5. Full re-match.
    let t = Instant::now();
    let full = coordinator.rematch_all().await?;
    let full_time = t.elapsed();
    println!(
        "full re-match: {} images, {} distinct packages, {} new + {} resolved findings in {} (target < 5 s)",
        full.images,
        full.distinct_packages,
        full.findings_new,
        full.findings_resolved,
        secs(full_time)
    );

    // 6. Memory.
    let held = memory::rss_kib();
    println!(
        "coordinator memory with the fleet: RSS {:.0} MiB ({:.0} MiB before loading it), peak {} (target < 2 GiB)",
        memory::mib(held),
        memory::mib(held_before),
        if reset {
            format!("{:.0} MiB", memory::mib(memory::peak_rss_kib()))
        } else {
            "unknown (clear_refs not writable)".into()
        }
    );

    // 7. Baselines.
    let matcher = &coordinator.vulndb().matcher;
    let images = synth::inventories(o.images, o.packages, &mut fastrand::Rng::with_seed(fleet_seed));
    let mut compact = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(matcher.match_fleet_compact(&images));
        compact = compact.min(t.elapsed());
    }
    let best_update = update_times.iter().min().copied().unwrap_or_default();
    println!(
        "baseline: the matcher alone over the fleet (match_fleet_compact) {}; full re-match / matcher alone = {:.2}; best update / full re-match = {:.3}",
        secs(compact),
        full_time.as_secs_f64() / compact.as_secs_f64().max(1e-9),
        best_update.as_secs_f64() / full_time.as_secs_f64().max(1e-9),
    );
    drop(nats);
    Ok(())
}
