//! `strata`: one binary, a subcommand per role. See `cli/` for each one.

use std::process::ExitCode;

mod cli;

/// mimalloc rather than glibc's malloc: a coordinator holding a 10,000-image
/// fleet stays at half the resident memory (glibc's arenas fragment under
/// re-matches) and an advisory update's re-match runs about a third faster
/// (`loadtest` `fleet_update`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let (args, matches) = cli::Cli::parse_with_matches();
    if !args.command.is_role() {
        cli::init_logging(&args.global);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("strata: cannot start the async runtime: {err}");
            return ExitCode::from(cli::EXIT_ERROR);
        }
    };
    match runtime.block_on(cli::run(args, &matches)) {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`strata sbom … | head`): not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::from(cli::EXIT_OK),
        Err(err) => {
            // One line, with the chain of causes: CI logs read this. It may
            // quote outside text (a tar path, a tag): escaped, so it cannot
            // drive the terminal.
            eprintln!("strata: {}", strata_proto::text::escape_controls(&one_line(&err)));
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already carries (our error types print their source inline).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
