//! Takeover after `kill -9` of a coordinator, with two coordinators on one
//! NATS (`cluster::peers`): real `strata` processes (two coordinators, two
//! workers), nats-server and docker-registry behind a proxy that slows
//! blobs so scans are in flight.
//!
//! Each round: `--images` images (their own layers, so nothing is cached)
//! are submitted, spread over both coordinators, and every scan is watched
//! through the coordinator that will survive. Once a third of the layers
//! are fetched, the other is SIGKILLed. Measured from the kill:
//! - **next job dispatched**: an image submitted to the survivor right
//!   after the kill, from the submit until a worker fetches its layer (the
//!   survivor is active: no takeover stands between); the same measured
//!   before the kill is the round's baseline (both include the resolve,
//!   whose config blob the proxy delays too);
//! - **leases moved**: until the survivor holds every lease;
//! - **waiting clients' next event**: for each scan not done at the kill,
//!   the first event its watcher gets after it, split by which coordinator
//!   owned the scan (the killed one's wait for the takeover; the survivor's
//!   are the baseline of the same run).
//!
//! Run: `cargo build --release -p strata-coordinator && cargo run --release
//! -p strata-loadtest --bin takeover -- --ttl-secs 10` (with `.ci/.venv/bin`
//! on `PATH` for nats-server: `.ci/install-deps`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use futures::StreamExt as _;
use strata_coordinator::cluster::peers::owner_of;
use strata_harness::fixtures::{DEBIAN_ZLIB_STATUS as STATUS, build_db, debian_layer, image_on};
use strata_harness::image::{Compression, Layer};
use strata_harness::{Cluster, Registry, RegistryProxy};
use strata_proto::v1::{
    self, admin_service_client::AdminServiceClient, scan_service_client::ScanServiceClient,
};

use strata_loadtest::fleetrun::BoxError;

#[derive(clap::Parser)]
#[command(about = "Takeover time after kill -9 of one of two coordinators")]
struct Options {
    /// Images in flight at the kill.
    #[arg(long, default_value_t = 40)]
    images: usize,
    /// The coordinators' --lease-ttl-secs.
    #[arg(long, default_value_t = 10)]
    ttl_secs: u64,
    /// Rounds (the killed coordinator is restarted between them).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Delay the proxy adds to every blob, milliseconds.
    #[arg(long, default_value_t = 400)]
    blob_delay_ms: u64,
    /// The `strata` binary (default: target/release/strata).
    #[arg(long)]
    strata: Option<PathBuf>,
}

const ALL_LEASES: usize = 5;

/// One watcher's events: (time received, was it `Done`).
type Seen = Arc<Mutex<Vec<(Instant, bool)>>>;

async fn push(registry: &Registry, base: &[Layer], tag: &str, unique: &str) -> Result<String, BoxError> {
    let layer = Layer::builder()
        .file(&format!("srv/{unique}"), unique.to_owned())
        .build(Compression::Gzip)?;
    let digest = layer.digest.clone();
    image_on(base)
        .layer(layer)
        .build()?
        .push(registry, "takeover/app", tag)
        .await?;
    Ok(digest)
}

async fn channel(url: &str) -> Result<tonic::transport::Channel, BoxError> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

async fn submit(url: &str, reference: &str) -> Result<String, BoxError> {
    let mut stream = ScanServiceClient::new(channel(url).await?)
        .submit_image(v1::SubmitImageRequest {
            reference: reference.to_owned(),
            insecure_registry: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = stream.next().await.ok_or("no answer")??;
    Ok(first.scan_id)
}

/// Watches `scan_id` on `url`, noting when each event arrives.
fn watch(url: String, scan_id: String, seen: Seen) {
    tokio::spawn(async move {
        let Ok(ch) = channel(&url).await else { return };
        let Ok(resp) = ScanServiceClient::new(ch)
            .watch_scan(v1::WatchScanRequest { scan_id })
            .await
        else {
            return;
        };
        let mut stream = resp.into_inner();
        while let Some(Ok(event)) = stream.next().await {
            let done = matches!(event.event, Some(v1::scan_event::Event::Done(_)));
            seen.lock().unwrap().push((Instant::now(), done));
            if done {
                return;
            }
        }
    });
}

async fn leases_held_by(url: &str, id: &str) -> bool {
    let Ok(ch) = channel(url).await else { return false };
    let Ok(status) = AdminServiceClient::new(ch)
        .get_status(v1::GetStatusRequest {})
        .await
    else {
        return false;
    };
    status
        .into_inner()
        .coordinators
        .iter()
        .filter(|c| c.id == id)
        .map(|c| c.leases.len())
        .sum::<usize>()
        == ALL_LEASES
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn summary(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    v.sort_by(f64::total_cmp);
    format!(
        "n={} min {:.2} median {:.2} max {:.2}",
        v.len(),
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = Options::parse();
    let strata = strata_loadtest::fleetrun::strata_binary(o.strata.clone())?;
    let dir = tempfile::tempdir()?;
    let db = build_db(&strata, dir.path());
    let registry = Registry::start()?;
    let proxy = RegistryProxy::builder(&registry)
        .blob_delay(Duration::from_millis(o.blob_delay_ms))
        .start()?;
    let base = vec![debian_layer("12", STATUS)];
    let mut cluster = Cluster::builder(&strata)
        .coordinators(2)
        .workers(2)
        .db(&db)
        .insecure_registry(proxy.host())
        .coordinator_args(["--lease-ttl-secs", &o.ttl_secs.to_string()])
        .worker_args(["--concurrency", "4"])
        .start()?;
    let urls = [cluster.grpc_url_of(0), cluster.grpc_url_of(1)];
    let ids = ["coordinator-0", "coordinator-1"];
    println!(
        "takeover: 2 coordinators, 2 workers, --lease-ttl-secs {}, {} images per round, blobs delayed {} ms",
        o.ttl_secs, o.images, o.blob_delay_ms
    );
    println!(
        "round  victim         baseline_s dispatch_s  leases_s  victim_scans_next_event_s                      survivor_scans_next_event_s"
    );
    let mut all_baseline = Vec::new();
    let mut all_dispatch = Vec::new();
    let mut all_leases = Vec::new();
    let mut all_victim = Vec::new();
    let mut all_survivor = Vec::new();
    for round in 0..o.rounds {
        let victim = round % 2;
        let survivor = 1 - victim;
        // Both alive and known to each other.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = async {
                let s = AdminServiceClient::new(channel(&urls[survivor]).await.ok()?)
                    .get_status(v1::GetStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                Some(s.coordinators.len() == 2)
            }
            .await;
            if ok == Some(true) {
                break;
            }
            if Instant::now() > deadline {
                return Err("the coordinators did not see each other".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut layers = Vec::new();
        let mut refs = Vec::new();
        for i in 0..o.images {
            let tag = format!("r{round}-{i}");
            layers.push(push(&registry, &base, &tag, &format!("round {round} image {i}")).await?);
            refs.push(format!("{}/takeover/app:{tag}", proxy.host()));
        }
        // The same measure with nobody killed, as the baseline of this round.
        let base_layer = push(
            &registry,
            &base,
            &format!("r{round}-baseline"),
            &format!("baseline {round}"),
        )
        .await?;
        let asked = Instant::now();
        submit(
            &urls[survivor],
            &format!("{}/takeover/app:r{round}-baseline", proxy.host()),
        )
        .await?;
        while proxy.blob_gets(&base_layer) == 0 {
            if asked.elapsed() > Duration::from_secs(120) {
                return Err("the baseline image was never fetched".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let baseline = secs(asked.elapsed());
        // All at once, as CI would.
        let scan_ids = futures::future::try_join_all(refs.iter().enumerate().map(|(i, r)| {
            let url = urls[i % 2].clone();
            async move { submit(&url, r).await }
        }))
        .await?;
        let mut scans = Vec::new();
        for id in scan_ids {
            let seen: Seen = Arc::default();
            watch(urls[survivor].clone(), id.clone(), seen.clone());
            scans.push((id, seen));
        }
        let third = (o.images / 3).max(1);
        let deadline = Instant::now() + Duration::from_secs(120);
        while layers.iter().filter(|d| proxy.blob_gets(d) > 0).count() < third {
            if Instant::now() > deadline {
                return Err("layers are not being fetched".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let killed = Instant::now();
        cluster.kill_coordinator_at(victim);
        // A new image to the survivor at once: when is its job dispatched?
        let fresh = format!("fresh {round}");
        let fresh_layer = push(&registry, &base, &format!("r{round}-fresh"), &fresh).await?;

        submit(
            &urls[survivor],
            &format!("{}/takeover/app:r{round}-fresh", proxy.host()),
        )
        .await?;
        let mut dispatch = None;
        let asked = Instant::now();
        let mut leases = None;
        let deadline = killed + Duration::from_secs(300);
        while dispatch.is_none() || leases.is_none() {
            if dispatch.is_none() && proxy.blob_gets(&fresh_layer) > 0 {
                // From the submit (the push before it is the bench's own doing).
                dispatch = Some(asked.elapsed());
            }
            if leases.is_none() && leases_held_by(&urls[survivor], ids[survivor]).await {
                leases = Some(killed.elapsed());
            }
            if Instant::now() > deadline {
                return Err("no takeover within 300 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Every scan done, then the first event after the kill of each scan
        // that was not done at the kill.
        let deadline = killed + Duration::from_secs(600);
        while scans
            .iter()
            .any(|(_, seen)| !seen.lock().unwrap().iter().any(|(_, done)| *done))
        {
            if Instant::now() > deadline {
                return Err("scans not done within 600 s of the kill".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (mut on_victim, mut on_survivor) = (Vec::new(), Vec::new());
        for (id, seen) in &scans {
            let seen = seen.lock().unwrap();
            let done_before = seen.iter().any(|(at, done)| *done && *at < killed);
            if done_before {
                continue;
            }
            let Some((next, _)) = seen.iter().find(|(at, _)| *at >= killed) else {
                continue;
            };
            let wait = secs(next.duration_since(killed));
            if owner_of(&ids, id) == Some(ids[victim]) {
                on_victim.push(wait);
            } else {
                on_survivor.push(wait);
            }
        }
        let (d, l) = (
            secs(dispatch.unwrap_or_default()),
            secs(leases.unwrap_or_default()),
        );
        all_baseline.push(baseline);
        println!(
            "{round:<6} {:<14} {baseline:>11.2} {d:>10.2} {l:>9.2}  {:<46} {}",
            ids[victim],
            summary(on_victim.clone()),
            summary(on_survivor.clone())
        );
        all_dispatch.push(d);
        all_leases.push(l);
        all_victim.extend(on_victim);
        all_survivor.extend(on_survivor);
        cluster.restart_coordinator_at(victim)?;
    }
    println!();
    println!(
        "job dispatched, nobody killed (s):           {}",
        summary(all_baseline)
    );
    println!(
        "next job dispatched after the kill (s):      {}",
        summary(all_dispatch)
    );
    println!(
        "leases held by the survivor after (s):       {}",
        summary(all_leases)
    );
    println!(
        "killed one's scans, next event after (s):    {}",
        summary(all_victim.clone())
    );
    println!(
        "survivor's scans, next event after (s):      {}",
        summary(all_survivor.clone())
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    if let (Some(a), Some(b)) = (median(all_victim), median(all_survivor)) {
        println!(
            "median next event, killed one's scans / survivor's: {:.1}x (lease time {} s)",
            a / b.max(0.001),
            o.ttl_secs
        );
    }
    Ok(())
}
