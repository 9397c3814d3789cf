//! Fleet-scale run: N images (default 10,000) generated with the structure
//! of real fleets, served by the synthetic registry, scanned by a real
//! cluster (nats-server, `strata coordinator`, W `strata worker`
//! processes); see `strata_loadtest::fleetrun`. Prints the figures and
//! writes `loadtest/results/<date>-<name>.json` and `.md`.
//!
//! Run: `cargo build --release -p strata-coordinator && cargo run --release
//! -p strata-loadtest --bin fleet -- --images 10000 --workers 2` (with
//! `.ci/.venv/bin` on `PATH` for nats-server: `.ci/install-deps`). With
//! `--server URL` (and `--nats`, `--feed-dir`, `--registry-listen`) it runs
//! against a cluster already running instead.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser as _;
use strata_loadtest::fleetrun::{self, BoxError};
use strata_loadtest::plot;

#[derive(clap::Parser)]
#[command(about = "A generated fleet through a real cluster: first pass, dedup, refresh, re-match")]
struct Options {
    /// Distinct images in the fleet.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Worker processes; several (`1,2`) run the fleet once per count and
    /// plot the scaling.
    #[arg(long, default_value = "2", value_delimiter = ',')]
    workers: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Padding of each base layer, KiB (small layers keep 10,000 images within one machine).
    #[arg(long, default_value_t = 256)]
    base_kib: usize,
    /// Padding of each application layer, KiB.
    #[arg(long, default_value_t = 16)]
    app_kib: usize,
    /// Share of tags moved for the steady-state refresh, percent.
    #[arg(long, default_value_t = 1.0)]
    move_percent: f64,
    /// Every k-th blob GET answered 429 (0: never).
    #[arg(long, default_value_t = 0)]
    throttle_every: u64,
    /// Latency the registry adds to every request, ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// The `strata` binary (default: target/release/strata).
    #[arg(long)]
    strata: Option<PathBuf>,
    /// Name of the results files.
    #[arg(long, default_value = "fleet")]
    name: String,
    /// Where the results go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results: PathBuf,
    /// Longest wait for a pass, seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_s: u64,
    /// Run against a cluster already running, through this coordinator's
    /// gRPC address (`http://host:port`), instead of starting one. Its
    /// coordinators and workers must reach the synthetic registry
    /// (`--registry-listen`) over plain HTTP: start them with
    /// `--insecure-registry HOST:PORT`.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// With `--server`: the cluster's NATS, for the JetStream storage at the end.
    #[arg(long, value_name = "URL", requires = "server")]
    nats: Option<String>,
    /// With `--server`: a directory the cluster polls as an advisory feed
    /// (`--feed file://DIR/`); the advisory update is written there.
    #[arg(long, value_name = "DIR", requires = "server")]
    feed_dir: Option<PathBuf>,
    /// Address the synthetic registry listens on (default 127.0.0.1 on a
    /// free port).
    #[arg(long, value_name = "ADDR")]
    registry_listen: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = Options::parse();
    if o.images == 0 || o.workers.contains(&0) {
        return Err("--images and every --workers count must be at least 1".into());
    }
    if let Some(dir) = &o.feed_dir
        && !dir.is_dir()
    {
        return Err(format!("--feed-dir {}: not a directory", dir.display()).into());
    }
    let target = match &o.server {
        Some(server) => {
            if o.workers.len() > 1 {
                return Err(
                    "--workers with several counts starts clusters of its own: not with --server".into(),
                );
            }
            fleetrun::Target::Existing {
                server: server.clone(),
                nats: o.nats.clone(),
                feed_dir: o.feed_dir.clone(),
            }
        }
        None => fleetrun::Target::Start,
    };
    let strata = o.strata.clone().unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
        target.join("release/strata")
    });
    if o.server.is_none() && !strata.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --release -p strata-coordinator) or pass --strata",
            strata.display()
        )
        .into());
    }
    let date = time::OffsetDateTime::now_utc().date();
    std::fs::create_dir_all(&o.results)?;
    let mut runs = Vec::new();
    for &workers in &o.workers {
        let mut run = fleetrun::options(o.images, workers, strata.clone());
        run.fleet.seed = o.seed;
        run.fleet.base_bytes = o.base_kib << 10;
        run.fleet.app_bytes = o.app_kib << 10;
        run.move_percent = o.move_percent;
        run.registry.throttle_every = o.throttle_every;
        run.registry.latency = Duration::from_millis(o.latency_ms);
        run.timeout = Duration::from_secs(o.timeout_s);
        run.registry.listen = o.registry_listen;
        run.target = target.clone();
        let results = fleetrun::run(&run, false).await?;
        let name = if o.workers.len() > 1 {
            format!("{}-{workers}w", o.name)
        } else {
            o.name.clone()
        };
        let md = fleetrun::markdown(&name, &results);
        println!("{md}");
        let base = o.results.join(format!("{date}-{name}"));
        let mut json = serde_json::to_value(&results)?;
        json["name"] = name.clone().into();
        json["date"] = date.to_string().into();
        std::fs::write(base.with_extension("json"), serde_json::to_vec_pretty(&json)?)?;
        std::fs::write(base.with_extension("md"), md)?;
        let png = o.results.join(format!("{date}-{name}-progress.png"));
        match plot::progress(&results, &name, &png) {
            Ok(()) => eprintln!("results: {}.json, .md and {}", base.display(), png.display()),
            Err(err) => eprintln!("results: {}.json and .md; no plot: {err}", base.display()),
        }
        runs.push(results);
    }
    if runs.len() > 1 {
        let png = o.results.join(format!("{date}-{}-scaling.png", o.name));
        match plot::scaling(&runs, &o.name, &png) {
            Ok(()) => eprintln!("scaling plot: {}", png.display()),
            Err(err) => eprintln!("no scaling plot: {err}"),
        }
    }
    Ok(())
}
