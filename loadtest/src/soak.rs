//! The soak: a bounded chaos run. A generated fleet ([`crate::fleetgen`])
//! on the synthetic registry, scanned by a real cluster (nats-server, a
//! coordinator refreshing the fleet every few seconds, W workers), while
//! tags keep moving (so the fleet is rescanned continuously) and workers,
//! the coordinator and nats-server are killed (`SIGKILL`) and restarted at
//! random. Then the chaos stops and the run checks that the cluster
//! converges: every registered tag has a complete report of the image the
//! registry serves for it now, no scan is left running, the queue is
//! empty. Memory is sampled throughout (every process's `VmRSS`), to show
//! whether it stays flat.
//!
//! Not part of CI (minutes long); `bin/soak.rs` runs it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_proto::v1;
use strata_proto::v1::admin_service_client::AdminServiceClient;
use strata_proto::v1::fleet_service_client::FleetServiceClient;

use crate::fleetgen::{Fleet, RealData};
use crate::fleetrun::{BoxError, Clients, RunOptions, register_all, start_cluster};
use crate::synthreg::SyntheticRegistry;

/// What to run, beyond the fleet and cluster of [`RunOptions`].
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub run: RunOptions,
    /// How long the chaos lasts.
    pub chaos: Duration,
    /// Mean pause between two faults (each pause is drawn from 0.5× to 1.5×).
    pub fault_every: Duration,
    /// Tags moved every `move_every` during the chaos.
    pub moves: usize,
    pub move_every: Duration,
    /// The coordinator's `--refresh-interval-secs`.
    pub refresh_secs: u64,
    /// Longest wait for the cluster to converge once the chaos stops.
    pub converge_limit: Duration,
    pub seed: u64,
}

/// One memory sample: the resident set of each process running then.
#[derive(Debug, Clone, Serialize)]
pub struct MemorySample {
    pub t_s: f64,
    pub coordinator_rss_bytes: u64,
    pub workers_rss_bytes: Vec<u64>,
    pub nats_rss_bytes: u64,
}

/// One fault, as injected.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub t_s: f64,
    pub what: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakResults {
    pub images: usize,
    pub tags: usize,
    pub workers: usize,
    pub chaos_s: f64,
    pub faults: Vec<Fault>,
    pub tags_moved: usize,
    /// From the end of the chaos to convergence.
    pub converge_s: f64,
    /// Tags whose image record names the registry's current digest with a
    /// complete report, at the end.
    pub tags_current: usize,
    /// Tags that did not, at the end (must be 0), and the first 50 with why.
    pub tags_not_current_count: usize,
    pub tags_not_current: Vec<String>,
    pub scans_in_progress_at_end: u64,
    pub queue_pending_at_end: u64,
    pub queue_in_flight_at_end: u64,
    /// Coordinator resident set: the highest in the first and in the last
    /// quarter of the chaos (processes restarted in between count afresh).
    pub coordinator_rss_first_quarter_bytes: u64,
    pub coordinator_rss_last_quarter_bytes: u64,
    pub worker_rss_first_quarter_bytes: u64,
    pub worker_rss_last_quarter_bytes: u64,
    pub memory: Vec<MemorySample>,
}

/// `VmRSS` of a process, bytes (0 when it is gone).
fn rss_bytes(pid: Option<u32>) -> u64 {
    pid.map_or(0, |p| crate::memory::rss_kib_of(p) * 1024)
}

/// The run; progress on stderr unless `quiet`.
pub async fn run(o: &SoakOptions, quiet: bool) -> Result<SoakResults, BoxError> {
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let mut r = SoakResults {
        workers: o.run.workers,
        ..Default::default()
    };
    let data = std::sync::Arc::new(RealData::load(&o.run.testdata)?);
    let fleet = Fleet::generate(o.run.fleet.clone(), data);
    r.images = fleet.images.len();
    let repositories: Vec<String> = fleet.repositories.iter().map(|x| x.name.clone()).collect();
    let registry = SyntheticRegistry::start(fleet, o.run.registry.clone())?;
    let dir = tempfile::tempdir()?;
    // The coordinator re-resolves the fleet every few seconds: moved tags
    // are rescanned continuously.
    let refresh = ["--refresh-interval-secs".to_owned(), o.refresh_secs.to_string()];
    let (mut cluster, _updates) = start_cluster(&o.run, &registry, dir.path(), &refresh)?;
    let channel = tonic::transport::Endpoint::from_shared(cluster.grpc_url())?
        .connect()
        .await?;
    let mut clients = Clients {
        fleet: FleetServiceClient::new(channel.clone()),
        admin: AdminServiceClient::new(channel),
    };

    // Register the fleet, and let the first pass start.
    let registering = register_all(
        &clients.fleet,
        &registry.host(),
        &repositories,
        o.run.register_concurrency,
    );
    r.tags = registering.await??;
    say(format!(
        "soak: {} images, {} tags registered; chaos for {:?}",
        r.images, r.tags, o.chaos
    ));

    // The chaos: faults at random, tags moving, memory sampled.
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let started = Instant::now();
    let mut next_fault = started + jitter(&mut rng, o.fault_every);
    let mut next_move = started + o.move_every;
    let mut next_sample = started;
    let mut kinds: Vec<u8> = Vec::new();
    while started.elapsed() < o.chaos {
        let now = Instant::now();
        if now >= next_sample {
            r.memory.push(MemorySample {
                t_s: started.elapsed().as_secs_f64(),
                coordinator_rss_bytes: rss_bytes(cluster.coordinator_pid()),
                workers_rss_bytes: (0..cluster.worker_count())
                    .map(|i| rss_bytes(cluster.worker_pid(i)))
                    .collect(),
                nats_rss_bytes: rss_bytes(cluster.nats().pid()),
            });
            next_sample = now + Duration::from_secs(2);
        }
        if now >= next_move {
            let moved = registry.move_tags(o.moves, rng.u64(..));
            r.tags_moved += moved.len();
            next_move = now + o.move_every;
        }
        if now >= next_fault {
            // Every kind of fault comes round (workers twice as often, there
            // being several), in an order shuffled each round.
            if kinds.is_empty() {
                kinds = vec![0, 0, 1, 2];
                rng.shuffle(&mut kinds);
            }
            let what = match kinds.pop().unwrap_or(0) {
                0 => {
                    let i = rng.usize(..cluster.worker_count());
                    cluster.restart_worker(i)?;
                    format!("worker {i} killed and restarted")
                }
                1 => {
                    cluster.restart_coordinator()?;
                    "coordinator killed and restarted".to_owned()
                }
                _ => {
                    cluster.nats_mut().restart()?;
                    "nats-server killed and restarted".to_owned()
                }
            };
            let t_s = started.elapsed().as_secs_f64();
            say(format!("  {t_s:>6.1} s: {what}"));
            r.faults.push(Fault { t_s, what });
            next_fault = Instant::now() + jitter(&mut rng, o.fault_every);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.chaos_s = started.elapsed().as_secs_f64();
    say(format!(
        "soak: chaos over after {:.0} s ({} faults, {} tags moved); converging",
        r.chaos_s,
        r.faults.len(),
        r.tags_moved
    ));

    // Convergence: every tag current, nothing running, nothing queued.
    let calm = Instant::now();
    loop {
        let (current, missing) = currency(&mut clients, &registry)
            .await
            .unwrap_or_else(|e| (0, vec![e.to_string()]));
        let counts = clients.done().await.ok();
        let queue = clients.queue().await.ok();
        let settled =
            missing.is_empty() && counts.is_some_and(|c| c.in_progress == 0) && queue == Some((0, 0));
        if settled || calm.elapsed() > o.converge_limit {
            r.converge_s = calm.elapsed().as_secs_f64();
            r.tags_current = current;
            r.tags_not_current_count = missing.len();
            r.tags_not_current = missing.into_iter().take(50).collect();
            r.scans_in_progress_at_end = counts.map_or(u64::MAX, |c| c.in_progress);
            (r.queue_pending_at_end, r.queue_in_flight_at_end) = queue.unwrap_or((u64::MAX, u64::MAX));
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let quarter = |from: f64, to: f64, f: &dyn Fn(&MemorySample) -> u64| {
        r.memory
            .iter()
            .filter(|m| m.t_s >= from * r.chaos_s && m.t_s <= to * r.chaos_s)
            .map(f)
            .max()
            .unwrap_or(0)
    };
    let coordinator = |m: &MemorySample| m.coordinator_rss_bytes;
    let worker = |m: &MemorySample| m.workers_rss_bytes.iter().copied().max().unwrap_or(0);
    r.coordinator_rss_first_quarter_bytes = quarter(0.0, 0.25, &coordinator);
    r.coordinator_rss_last_quarter_bytes = quarter(0.75, 1.0, &coordinator);
    r.worker_rss_first_quarter_bytes = quarter(0.0, 0.25, &worker);
    r.worker_rss_last_quarter_bytes = quarter(0.75, 1.0, &worker);
    drop(cluster);
    Ok(r)
}

/// A pause around `mean`: from half to one and a half of it.
fn jitter(rng: &mut fastrand::Rng, mean: Duration) -> Duration {
    mean.mul_f64(0.5 + rng.f64())
}

/// How many registered tags have a complete report of the image the
/// registry serves for them now, and the ones that do not (with why).
async fn currency(
    clients: &mut Clients,
    registry: &SyntheticRegistry,
) -> Result<(usize, Vec<String>), BoxError> {
    let mut listed: HashMap<String, v1::ImageSummary> = HashMap::new();
    let mut token = String::new();
    loop {
        let page = clients
            .fleet
            .list_images(v1::ListImagesRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for image in page.images {
            listed.insert(image.reference.clone(), image);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let (mut current, mut missing) = (0, Vec::new());
    for (repo, tag, digest) in registry.tag_digests() {
        let reference = registry.reference(&repo, &tag);
        match listed.get(&reference) {
            None => missing.push(format!("{reference}: not registered")),
            Some(i) if i.digest != digest => missing.push(format!(
                "{reference}: at {} , the registry serves {digest}",
                i.digest
            )),
            Some(i) if i.status != v1::ScanStatus::Complete as i32 => {
                missing.push(format!("{reference}: status {} {}", i.status, i.error))
            }
            Some(_) => current += 1,
        }
    }
    Ok((current, missing))
}

/// The Markdown summary of `r`.
pub fn markdown(r: &SoakResults) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    // The highest resident set of each minute, per role: flat or not.
    let mut minutes: std::collections::BTreeMap<u64, [u64; 3]> = std::collections::BTreeMap::new();
    for m in &r.memory {
        let e = minutes.entry(m.t_s as u64 / 60).or_default();
        e[0] = e[0].max(m.coordinator_rss_bytes);
        e[1] = e[1].max(m.workers_rss_bytes.iter().copied().max().unwrap_or(0));
        e[2] = e[2].max(m.nats_rss_bytes);
    }
    let by_minute = |i: usize| {
        minutes
            .values()
            .map(|v| format!("{:.0}", mib(v[i])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut faults: HashMap<&str, usize> = HashMap::new();
    for f in &r.faults {
        let kind = if f.what.starts_with("worker") {
            "worker"
        } else if f.what.starts_with("coordinator") {
            "coordinator"
        } else {
            "nats-server"
        };
        *faults.entry(kind).or_default() += 1;
    }
    format!(
        "# Soak: {} images ({} tags), {} workers, {:.0} s of chaos\n\n\
         | | |\n|---|---|\n\
         | faults (SIGKILL, then restart) | {} worker, {} coordinator, {} nats-server |\n\
         | tags moved during the chaos | {} |\n\
         | converged after the chaos in | {:.1} s |\n\
         | tags with a current complete report | {} of {} |\n\
         | scans running / queue pending + in flight at the end | {} / {} + {} |\n\
         | coordinator RSS, highest in the first / last quarter | {:.0} / {:.0} MiB |\n\
         | worker RSS, highest in the first / last quarter | {:.0} / {:.0} MiB |\n\
         | coordinator RSS, highest per minute | {} MiB |\n\
         | worker RSS, highest per minute | {} MiB |\n\
         | nats-server RSS, highest per minute | {} MiB |\n",
        r.images,
        r.tags,
        r.workers,
        r.chaos_s,
        faults.get("worker").unwrap_or(&0),
        faults.get("coordinator").unwrap_or(&0),
        faults.get("nats-server").unwrap_or(&0),
        r.tags_moved,
        r.converge_s,
        r.tags_current,
        r.tags_current + r.tags_not_current_count,
        r.scans_in_progress_at_end,
        r.queue_pending_at_end,
        r.queue_in_flight_at_end,
        mib(r.coordinator_rss_first_quarter_bytes),
        mib(r.coordinator_rss_last_quarter_bytes),
        mib(r.worker_rss_first_quarter_bytes),
        mib(r.worker_rss_last_quarter_bytes),
        by_minute(0),
        by_minute(1),
        by_minute(2),
    )
}
