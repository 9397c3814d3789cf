//! `strata`: one binary, a subcommand per role. See `cli/` for each one.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("strata: cannot start the async runtime: {err}");
            return ExitCode::from(cli::EXIT_ERROR);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // One line, with the chain of causes: CI logs read this.
            eprintln!("strata: {err:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
