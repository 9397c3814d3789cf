//! The soak (see `strata_loadtest::soak`): a generated fleet rescanned
//! continuously by a real cluster while workers, the coordinator and
//! nats-server are killed and restarted at random; then every registered
//! tag must have a current report, no scan stuck, memory flat. Prints the
//! figures and writes `loadtest/results/<date>-soak.json` and `.md`; exits
//! 1 when the cluster did not converge.
//!
//! Run: `cargo build --release -p strata-coordinator && cargo run --release
//! -p strata-loadtest --bin soak -- --images 300 --chaos-secs 300` (with
//! `.ci/.venv/bin` on `PATH` for nats-server: `.ci/install-deps`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser as _;
use strata_loadtest::fleetrun::{self, BoxError};
use strata_loadtest::soak::{self, SoakOptions};

#[derive(clap::Parser)]
#[command(
    about = "A fleet rescanned while cluster processes are killed at random; then convergence is checked"
)]
struct Options {
    /// Distinct images in the fleet.
    #[arg(long, default_value_t = 300)]
    images: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How long faults are injected, seconds.
    #[arg(long, default_value_t = 300)]
    chaos_secs: u64,
    /// Mean seconds between two faults.
    #[arg(long, default_value_t = 20)]
    fault_every_secs: u64,
    /// Tags moved every `--move-every-secs` during the chaos.
    #[arg(long, default_value_t = 5)]
    moves: usize,
    #[arg(long, default_value_t = 10)]
    move_every_secs: u64,
    /// The coordinator's refresh interval, seconds.
    #[arg(long, default_value_t = 5)]
    refresh_secs: u64,
    /// Longest wait for convergence after the chaos, seconds.
    #[arg(long, default_value_t = 300)]
    converge_secs: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `strata` binary (default: target/release/strata).
    #[arg(long)]
    strata: Option<PathBuf>,
    /// Where the results go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = Options::parse();
    if o.images == 0 || o.workers == 0 || o.fault_every_secs == 0 || o.refresh_secs == 0 {
        return Err("--images, --workers, --fault-every-secs and --refresh-secs must be at least 1".into());
    }
    let strata = fleetrun::strata_binary(o.strata.clone())?;
    let mut run = fleetrun::options(o.images, o.workers, strata);
    run.fleet.seed = o.seed;
    let options = SoakOptions {
        run,
        chaos: Duration::from_secs(o.chaos_secs),
        fault_every: Duration::from_secs(o.fault_every_secs),
        moves: o.moves,
        move_every: Duration::from_secs(o.move_every_secs.max(1)),
        refresh_secs: o.refresh_secs,
        converge_limit: Duration::from_secs(o.converge_secs),
        seed: o.seed,
    };
    let results = soak::run(&options, false).await?;
    let md = soak::markdown(&results);
    println!("{md}");
    for t in &results.tags_not_current {
        println!("not current: {t}");
    }
    let date = time::OffsetDateTime::now_utc().date();
    std::fs::create_dir_all(&o.results)?;
    let base = o.results.join(format!("{date}-soak"));
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(base.with_extension("md"), md)?;
    eprintln!("results: {}.json, .md", base.display());
    let converged = results.tags_not_current_count == 0
        && results.scans_in_progress_at_end == 0
        && results.queue_pending_at_end == 0
        && results.queue_in_flight_at_end == 0;
    if !converged {
        eprintln!("soak: the cluster did not converge");
        std::process::exit(1);
    }
    Ok(())
}
