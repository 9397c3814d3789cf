//! Fleet update benchmark: what an advisory update costs a coordinator that
//! holds a fleet.
//!
//! 1. A real `nats-server` (JetStream key-value state and the `STRATA_EVENTS`
//!    stream, as `strata coordinator` runs) and a local-filesystem object
//!    store in a temp dir.
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
//! 4. `--updates` (default 3) advisory updates of each scenario, each
//!    touching `--names` (default 50) package names the fleet has:
//!    - typical: names drawn as the synthetic database draws them (popular
//!      packages far more often); per name an advisory added with a range
//!      like the database's, one changed, or one withdrawn;
//!    - worst: a fifth of the names in every image of a distro (its base),
//!      the rest popular; per name a new critical advisory on every
//!      version and one withdrawn, so every image gains and loses findings.
//!
//!    Each is `vulndb::diff` then `apply_vulndb`; the time to its events
//!    published (and to the last one reaching a stream consumer) is the
//!    figure (target < 1 s).
//! 5. A full re-match of the fleet (`rematch_all`; target < 5 s).
//! 6. The coordinator's resident memory with the fleet, and its peak since
//!    the load began (target < 2 GiB). The process uses the `strata`
//!    binary's allocator (mimalloc), so the figures are the binary's.
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
use strata_coordinator::notify::EventLog;
use strata_coordinator::vulndb::{Advisory, AffectedEntry, Db, EvalRange, Event, RangeKind, diff};
use strata_harness::NatsServer;
use strata_loadtest::memory;
use strata_loadtest::synth;
use strata_proto::{Ecosystem, Report, Severity};
use strata_worker::queue::Queue;

/// The `strata` binary's allocator (`coordinator/src/main.rs`): the
/// coordinator runs in this process, so its figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Advisory updates per scenario, each on different names.
    #[arg(long, default_value_t = 3)]
    updates: usize,
    /// Which updates (default: both, typical first).
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Exit right after the memory figures, without freeing anything (for a
    /// heap profiler: what is left is what the coordinator holds).
    #[arg(long)]
    exit_after_memory: bool,
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

/// How an update's advisories are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Names drawn as the synthetic database draws advisory names
    /// (popular packages far more often, 40% OS), from the packages the
    /// fleet has; per name an advisory added with a range like the
    /// database's (70%), one changed (its severity, 20%), or one withdrawn
    /// (10%).
    Typical,
    /// Every name in every image of a distro (base packages) or popular;
    /// per name a new critical advisory affecting every version, and one
    /// withdrawn: every image gains and loses findings.
    Worst,
}

/// The names update `u` of the worst case touches: a fifth from the
/// distros' base sets (every image of the distro has them), the rest
/// popular OS source packages and language packages.
fn worst_names(u: usize, count: usize) -> Vec<(Ecosystem, String)> {
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

/// Distinct names drawn as the synthetic database draws them, among the
/// packages images have.
fn typical_names(count: usize, rng: &mut fastrand::Rng) -> Vec<(Ecosystem, String)> {
    let mut names = BTreeSet::new();
    while names.len() < count {
        if rng.u32(0..100) < 40 {
            let d = &synth::DISTROS[rng.usize(0..synth::DISTROS.len())];
            names.insert((
                d.eco,
                synth::os_source(d.eco, synth::skewed(rng, synth::OS_SOURCES)),
            ));
        } else {
            let (eco, pool) = synth::LANGS[rng.usize(0..synth::LANGS.len())];
            names.insert((eco, synth::lang_name(eco, synth::skewed(rng, pool))));
        }
    }
    names.into_iter().collect()
}

/// A new advisory on `name`, fixed at `fixed`.
fn advisory(id: String, eco: Ecosystem, name: &str, severity: Severity, fixed: String) -> Advisory {
    let kind = if matches!(eco, Ecosystem::Go | Ecosystem::CratesIo | Ecosystem::Npm) {
        RangeKind::Semver
    } else {
        RangeKind::Ecosystem
    };
    Advisory {
        aliases: vec![format!("CVE-{id}")],
        summary: format!("{id}: {name}"),
        severity,
        score: Some(7.5),
        score_source: "CVSS:3.1".into(),
        modified: "2026-12-07T00:00:00Z".into(),
        affected: synth::releases(eco)
            .into_iter()
            .map(|release| AffectedEntry {
                ecosystem: eco,
                release,
                name: name.to_owned(),
                ranges: vec![EvalRange {
                    kind,
                    events: vec![Event::Introduced("0".into()), Event::Fixed(fixed.clone())],
                }],
                versions: Vec::new(),
            })
            .collect(),
        id,
    }
}

/// The advisories after update `u`, and the names it touches.
fn updated(
    scenario: Scenario,
    advisories: &[Advisory],
    count: usize,
    u: usize,
    rng: &mut fastrand::Rng,
) -> Vec<Advisory> {
    let names = match scenario {
        Scenario::Typical => typical_names(count, rng),
        Scenario::Worst => worst_names(u, count),
    };
    // What happens to each name: 0 added, 1 changed, 2 withdrawn (and, in
    // the worst case, a critical added as well as one withdrawn).
    let mut fate: std::collections::BTreeMap<(Ecosystem, String), u32> = names
        .iter()
        .map(|n| {
            let f = match scenario {
                Scenario::Worst => 2,
                Scenario::Typical => match rng.u32(0..10) {
                    0..7 => 0,
                    7..9 => 1,
                    _ => 2,
                },
            };
            (n.clone(), f)
        })
        .collect();
    let mut out = Vec::with_capacity(advisories.len() + names.len());
    for a in advisories {
        let key = a.affected.first().map(|e| (e.ecosystem, e.name.clone()));
        match key.as_ref().and_then(|k| fate.get(k).copied()) {
            Some(2) => {
                fate.remove(&key.unwrap_or_else(|| unreachable!()));
                continue; // withdrawn
            }
            Some(1) => {
                let mut changed = a.clone();
                changed.severity = Severity::Critical.max(a.severity);
                changed.modified = "2026-12-07T00:00:00Z".into();
                out.push(changed);
                fate.remove(&key.unwrap_or_else(|| unreachable!()));
                continue;
            }
            _ => {}
        }
        out.push(a.clone());
    }
    for (n, (eco, name)) in names.iter().enumerate() {
        let id = format!("BENCH-{u}-{n}");
        let add = match scenario {
            Scenario::Worst => Some(advisory(
                id,
                *eco,
                name,
                Severity::Critical,
                synth::range_version(*eco, 99, 0),
            )),
            // Added, or to be changed or withdrawn but had none: added.
            Scenario::Typical if fate.contains_key(&(*eco, name.clone())) => {
                let minor = synth::minor_of(name);
                let fixed = synth::range_version(*eco, minor, rng.u32(1..6));
                let severity = [
                    Severity::Low,
                    Severity::Medium,
                    Severity::High,
                    Severity::Critical,
                ][rng.usize(0..4)];
                Some(advisory(id, *eco, name, severity, fixed))
            }
            Scenario::Typical => None,
        };
        out.extend(add);
    }
    out
}

/// A consumer of the event stream (the JetStream tail every subscriber
/// gets): the newest sequence received and when.
struct Consumer {
    latest: Arc<std::sync::Mutex<(u64, Instant)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    fn start(c: &Coordinator) -> Consumer {
        let mut live = c.event_log().subscribe();
        let latest = Arc::new(std::sync::Mutex::new((0, Instant::now())));
        let seen = latest.clone();
        let task = tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(e) => {
                        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                        if e.sequence > s.0 {
                            *s = (e.sequence, Instant::now());
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Consumer { latest, task }
    }

    /// When sequence `last` (or later) was received, after `start`; `None`
    /// if not within 30 s.
    async fn received(self, last: u64, start: Instant) -> Option<Duration> {
        let limit = Instant::now() + Duration::from_secs(30);
        let out = loop {
            let (seq, at) = *self.latest.lock().unwrap_or_else(|p| p.into_inner());
            if seq >= last {
                break Some(at.saturating_duration_since(start));
            }
            if Instant::now() > limit {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.task.abort();
        out
    }
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
    let advisories = synth::advisories(o.advisories, &mut rng);
    let fleet_seed = rng.u64(..);
    let bytes = write_fleet(&o, &mut fastrand::Rng::with_seed(fleet_seed), &buckets, &store).await?;
    println!(
        "fleet written: {} reports ({:.0} MiB of JSON) and records in {}",
        o.images,
        bytes as f64 / (1024.0 * 1024.0),
        secs(t.elapsed())
    );

    // The data in force is held as a database too (the feeds keep theirs).
    let db = Db::from_advisories(advisories, vec!["synthetic".into()]);
    let coordinator = Coordinator::new(
        CoordinatorConfig::new(format!("file://{}", dir.path().join("store").display())),
        Queue::memory(Default::default()),
        buckets,
        store,
        VulnData::new(&db),
        strata_worker::telemetry::Metrics::new("fleet-update-bench", None)?,
    )
    .with_event_log(EventLog::jetstream(&js, 1).await?);
    let held_before = memory::rss_kib();
    let reset = memory::reset_peak_rss();

    // 3. Load, match, baseline histories.
    let t = Instant::now();
    let baseline = coordinator.fleet_reconcile_all().await?;
    let (new, resolved) = (baseline.new, baseline.resolved);
    let load = t.elapsed();
    let events = coordinator.event_log().last_sequence().await?;
    println!(
        "load + match + baseline histories: {} ({events} events: images' severities; {new} new, {resolved} resolved); RSS {:.0} MiB, peak {:.0} MiB",
        secs(load),
        memory::mib(memory::rss_kib()),
        memory::mib(memory::peak_rss_kib())
    );

    // 4. Updates.
    let mut old = db;
    let mut medians = Vec::new();
    let scenarios = match o.scenario {
        Some(one) => vec![one],
        None => vec![Scenario::Typical, Scenario::Worst],
    };
    let mut update_rng = fastrand::Rng::with_seed(7);
    let mut u = 0;
    for scenario in scenarios {
        println!("{scenario:?} updates ({} names each):", o.names);
        let mut times = Vec::new();
        for _ in 0..o.updates {
            u += 1;
            let new_db = Db::from_advisories(
                updated(scenario, old.advisories(), o.names, u, &mut update_rng),
                vec!["synthetic".into()],
            );
            let t = Instant::now();
            let changes = diff::diff(&old, &new_db);
            let diffed = t.elapsed();
            let t = Instant::now();
            let data = VulnData::new(&new_db);
            let indexed = t.elapsed();
            let seq = coordinator.event_log().last_sequence().await?;
            let consumer = Consumer::start(&coordinator);
            let t = Instant::now();
            let summary = coordinator.apply_vulndb(data, &changes).await?;
            let applied = t.elapsed();
            let last = coordinator.event_log().last_sequence().await?;
            let received = consumer.received(last, t).await;
            println!(
                "  {} added, {} changed, {} withdrawn; {} names -> {} images' findings changed ({} distinct packages matched): {} new + {} resolved findings, {} events",
                changes.added.len(),
                changes.changed.len(),
                changes.removed.len(),
                changes.touched.len(),
                summary.images,
                summary.distinct_packages,
                summary.findings_new,
                summary.findings_resolved,
                last - seq,
            );
            println!(
                "    events published {} after the update (target < 1 s), the last received by a stream consumer at {}; matched and in force at {}, histories stored at {}; before it: diff {}, index {}; RSS {:.0} MiB",
                secs(summary.published_in),
                received.map_or("(not received)".into(), secs),
                secs(summary.matched_in),
                secs(applied),
                secs(diffed),
                secs(indexed),
                memory::mib(memory::rss_kib())
            );
            times.push(summary.published_in);
            old = new_db;
        }
        times.sort();
        if let Some(m) = times.get(times.len() / 2) {
            println!("  {scenario:?}: median time to events published {}", secs(*m));
            medians.push((scenario, *m));
        }
    }

    // 5. Full re-match.
    let t = Instant::now();
    let full = coordinator.rematch_all().await?;
    let full_time = t.elapsed();
    println!(
        "full re-match: {} distinct packages matched, {} images' findings changed ({} new + {} resolved) in {} (target < 5 s)",
        full.distinct_packages,
        full.images,
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

    if o.exit_after_memory {
        std::process::exit(0);
    }

    // 7. Baselines.
    let matcher = &coordinator.vulndb().matcher;
    let images = synth::inventories(o.images, o.packages, &mut fastrand::Rng::with_seed(fleet_seed));
    let mut compact = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(matcher.match_fleet_compact(&images));
        compact = compact.min(t.elapsed());
    }
    println!(
        "baseline: the matcher alone over the fleet (match_fleet_compact) {}; full re-match / matcher alone = {:.2}",
        secs(compact),
        full_time.as_secs_f64() / compact.as_secs_f64().max(1e-9),
    );
    for (scenario, m) in medians {
        println!(
            "  {scenario:?} update (median, to events published) / full re-match = {:.3}",
            m.as_secs_f64() / full_time.as_secs_f64().max(1e-9)
        );
    }
    drop(nats);
    Ok(())
}
