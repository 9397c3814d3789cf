//! The command line: argument structs and one module per subcommand.
//!
//! Exit codes are part of the interface CI gates on: 0 clean, 1 findings at
//! or above `--fail-on`, 2 an error (with a one-line message on stderr).

mod client;
mod coordinator;
mod db;
mod fleet;
mod image;
mod roles;
mod sbom;
mod scan;
mod serve;
mod settings;
mod status;
mod submit;
mod worker;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "strata", version = strata_coordinator::VERSION, about = "Distributed vulnerability scanner for fleets of container images")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "STRATA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,strata_worker=debug`).
    #[arg(long, global = true, default_value = "warn", env = "STRATA_LOG")]
    pub log: String,
}

/// `-f table|json`: how a command that prints a table or a document
/// prints, the same flag as `scan`, `sbom` and `submit` use.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TableOrJson {
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value_t = Plain::Table)]
    format: Plain,
    /// The same as `-f json` (kept for scripts written before `-f`).
    #[arg(long, hide = true)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plain {
    Table,
    Json,
}

impl TableOrJson {
    pub fn json(&self) -> bool {
        self.json || self.format == Plain::Json
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build and inspect the local vulnerability database (OSV).
    Db(db::DbArgs),
    /// Scan an image (or an SBOM) for known vulnerabilities; `--fail-on` gates CI.
    Scan(scan::ScanArgs),
    /// List an image's packages (an SBOM): table, json, cyclonedx or spdx.
    Sbom(sbom::SbomArgs),
    /// Submit an image to a coordinator; `--wait` prints its report and `--fail-on` gates CI.
    Submit(submit::SubmitArgs),
    /// Ask a coordinator about the fleet: affected images, summary, registered images.
    Fleet(fleet::FleetArgs),
    /// Show a coordinator's status (version, uptime, NATS connection, workers).
    Status(status::StatusArgs),
    /// Run the cluster's coordinator (NATS JetStream, object storage, gRPC API).
    Coordinator(coordinator::CoordinatorArgs),
    /// Run a cluster worker: analyse layer jobs from NATS JetStream.
    Worker(worker::WorkerArgs),
    /// Run everything in one process with an in-process queue (no broker).
    Serve(serve::ServeArgs),
}

impl Command {
    /// Long-running roles set up their own telemetry (OTLP, JSON logs).
    pub fn is_role(&self) -> bool {
        matches!(
            self,
            Command::Coordinator(_) | Command::Worker(_) | Command::Serve(_)
        )
    }
}

pub fn init_logging(global: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Text => builder
            .fmt_fields(strata_worker::telemetry::EscapedFields)
            .with_ansi(strata_worker::telemetry::stderr_colours())
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

impl Cli {
    /// The command line, and clap's record of where each value came from
    /// (flag, variable or default), which the roles' settings need.
    pub fn parse_with_matches() -> (Cli, clap::ArgMatches) {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Cli::command().get_matches();
        match Cli::from_arg_matches(&matches) {
            Ok(cli) => (cli, matches),
            Err(err) => err.format(&mut Cli::command()).exit(),
        }
    }
}

/// `matches` are the whole command line's; a role reads its subcommand's.
pub async fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    let global = cli.global;
    // Clap requires a subcommand, so there is always one.
    let sub = || matches.subcommand().map_or(matches, |(_, m)| m);
    match cli.command {
        Command::Coordinator(args) => coordinator::run(args, sub(), &global).await,
        Command::Worker(args) => worker::run(args, sub(), &global).await,
        Command::Serve(args) => serve::run(args, sub(), &global).await,
        Command::Db(args) => db::run(args).await,
        Command::Scan(args) => scan::run(args).await,
        Command::Sbom(args) => sbom::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Fleet(args) => fleet::run(args).await,
    }
}

/// Milliseconds since the Unix epoch, for report timestamps.
pub use strata_proto::text::now_unix_ms;
