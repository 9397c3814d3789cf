//! `strata submit`: what CI runs. Submit an image to a coordinator; with
//! `--wait` follow the scan's events until it is done, fetch the report,
//! print it in the format asked for, and gate on `--fail-on`.
//!
//! stdout carries the report (or, without `--wait`, the scan id) and nothing
//! else; progress goes to stderr: a progress bar on a terminal, plain lines
//! otherwise (CI logs).

use std::collections::BTreeSet;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_coordinator::output::{self, ReportFormat};
use strata_proto::v1::{self, get_report_request::Selector, scan_event::Event};
use strata_proto::{Report, Severity};
use tokio::time::Instant;
use tonic::Code;

use super::client::{self, ConnectArgs, Connection};

/// How often a broken event stream is re-watched before giving up.
const MAX_REWATCH: u32 = 5;
/// Bound on the image reference sent (the server checks it again).
const MAX_REFERENCE_LEN: usize = 4096;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The image, as the coordinator can pull it (`registry/name:tag` or `…@sha256:…`).
    pub image: String,
    /// Platform to pick from a multi-platform index (os/arch[/variant]; default linux/amd64).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Let the coordinator speak plain HTTP to this image's registry.
    #[arg(long)]
    pub insecure_registry: bool,
    /// Queue behind CI work (a background rescan rather than a pipeline waiting).
    #[arg(long)]
    pub background: bool,
    /// Wait for the scan, print the report, and exit by --fail-on. Without it,
    /// print the scan id and exit.
    #[arg(long)]
    pub wait: bool,
    /// Report format with --wait: table, json (strata.report/v1), sarif (2.1.0), cyclonedx (1.5).
    #[arg(long, short = 'f', default_value = "table")]
    pub format: ReportFormat,
    /// Write the report to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE", requires = "wait")]
    pub output: Option<PathBuf>,
    /// Exit 1 when a finding (after the server's suppressions) is at or above this severity.
    #[arg(long, value_name = "SEVERITY", requires = "wait")]
    pub fail_on: Option<Severity>,
    /// With --wait: give up waiting after this many seconds (the scan goes on on the server).
    #[arg(long, env = "STRATA_WAIT_TIMEOUT_SECS", default_value_t = 1800, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wait_timeout_secs: u64,
    /// Progress on stderr: auto (a bar on a terminal, lines otherwise), bar, lines, none.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Bar,
    Lines,
    None,
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<u8> {
    let reference = args.image.trim().to_owned();
    anyhow::ensure!(!reference.is_empty(), "give an image reference");
    anyhow::ensure!(
        reference.len() <= MAX_REFERENCE_LEN,
        "the image reference is over {MAX_REFERENCE_LEN} characters"
    );
    let conn = args.connect.connect().await?;
    let overall = Duration::from_secs(args.wait_timeout_secs);
    let deadline = Instant::now() + overall;

    let request = v1::SubmitImageRequest {
        reference: reference.clone(),
        platform: args.platform.clone().unwrap_or_default(),
        priority: if args.background {
            v1::Priority::Background
        } else {
            v1::Priority::Ci
        }
        .into(),
        wait: args.wait,
        insecure_registry: args.insecure_registry,
    };
    // The server's deadline covers the whole stream when waiting.
    let call_deadline = if args.wait { overall } else { conn.timeout() };
    let mut client = conn.scan();
    let mut stream = conn
        .call(client.submit_image(conn.request_within(request, call_deadline)))
        .await
        .with_context(|| format!("submitting {reference}"))?;

    let mut progress = Progress::new(args.progress);
    let first = match tokio::time::timeout(conn.timeout(), stream.message()).await {
        Ok(Ok(Some(event))) => event,
        Ok(Ok(None)) => {
            anyhow::bail!("submitting {reference}: the server closed the stream without an answer")
        }
        Ok(Err(status)) => {
            return Err(conn.status_error(&status)).with_context(|| format!("submitting {reference}"));
        }
        Err(_) => return Err(conn.deadline_error()).with_context(|| format!("submitting {reference}")),
    };
    let scan_id = first.scan_id.clone();
    anyhow::ensure!(
        !scan_id.is_empty(),
        "submitting {reference}: the server answered without a scan id"
    );
    progress.event(&first);
    if !args.wait {
        progress.finish();
        println!("{scan_id}");
        return Ok(super::EXIT_OK);
    }
    let done = match &first.event {
        Some(Event::Done(done)) => done.clone(),
        _ => follow(&conn, &scan_id, stream, &mut progress, deadline, overall).await?,
    };
    progress.finish();

    let status = v1::ScanStatus::try_from(done.status).unwrap_or(v1::ScanStatus::Unspecified);
    if status != v1::ScanStatus::Complete {
        let why = super::client::one_line(&done.error, 500);
        anyhow::bail!(
            "scan {scan_id} of {reference} {}{}",
            match status {
                v1::ScanStatus::Failed => "failed",
                _ => "ended without a report",
            },
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        );
    }

    let wire = conn
        .call(conn.scan().get_report(conn.request(v1::GetReportRequest {
            selector: Some(Selector::ScanId(scan_id.clone())),
        })))
        .await
        .with_context(|| format!("fetching the report of scan {scan_id}"))?;
    let report = Report::try_from(wire).with_context(|| format!("the report of scan {scan_id}"))?;
    write_report(&args, &report)?;

    let gated = args
        .fail_on
        .is_some_and(|threshold| report.findings.iter().any(|f| f.severity >= threshold));
    if gated {
        return Ok(super::EXIT_FINDINGS);
    }
    // A clean verdict needs every layer: an unanalysed layer may hold anything.
    if let Some(first) = report.layer_errors.first() {
        anyhow::bail!(
            "scan {scan_id} is incomplete: {} layer(s) could not be analysed (first: {}: {})",
            report.layer_errors.len(),
            first.digest,
            super::client::one_line(&first.error, 300)
        );
    }
    Ok(super::EXIT_OK)
}

/// Reads events until `Done`, watching the scan again (the server replays
/// it) when the stream breaks, until `deadline`.
async fn follow(
    conn: &Connection,
    scan_id: &str,
    mut stream: tonic::Streaming<v1::ScanEvent>,
    progress: &mut Progress,
    deadline: Instant,
    overall: Duration,
) -> anyhow::Result<v1::Done> {
    let mut rewatches = 0;
    loop {
        let broken = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => anyhow::bail!(
                "scan {scan_id} not done after {}s (--wait-timeout-secs); it goes on on the server",
                overall.as_secs()
            ),
            Ok(Ok(Some(event))) => {
                progress.event(&event);
                if let Some(Event::Done(done)) = event.event {
                    return Ok(done);
                }
                continue;
            }
            Ok(Ok(None)) => None,
            Ok(Err(status))
                if matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled) =>
            {
                Some(status)
            }
            Ok(Err(status)) => {
                return Err(conn.status_error(&status)).with_context(|| format!("following scan {scan_id}"));
            }
        };
        rewatches += 1;
        if rewatches > MAX_REWATCH {
            let why = match broken {
                Some(status) => conn.status_error(&status).to_string(),
                None => "the server kept closing the stream before the scan was done".to_owned(),
            };
            anyhow::bail!("following scan {scan_id}: {why}");
        }
        progress.note(&format!("event stream broke; watching scan {scan_id} again"));
        tokio::time::sleep(Duration::from_secs(u64::from(rewatches))).await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let request = conn.request_within(
            v1::WatchScanRequest {
                scan_id: scan_id.to_owned(),
            },
            remaining.max(Duration::from_secs(1)),
        );
        match tokio::time::timeout(conn.timeout(), conn.scan().watch_scan(request)).await {
            Ok(Ok(response)) => stream = response.into_inner(),
            Ok(Err(status)) if status.code() == Code::Unavailable => continue,
            Ok(Err(status)) => {
                return Err(conn.status_error(&status)).with_context(|| format!("following scan {scan_id}"));
            }
            Err(_) => continue,
        }
    }
}

fn write_report(args: &SubmitArgs, report: &Report) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    output::write_report(&mut bytes, args.format, report)?;
    match &args.output {
        Some(path) => std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?,
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            out.write_all(&bytes).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
    }
    Ok(())
}

/// `sha256:0123456789ab…`: enough to tell layers apart in a log.
fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}…", &hex[..12]),
        _ => digest.to_owned(),
    }
}

enum Display {
    Bar(ProgressBar),
    Lines,
    Quiet,
}

/// The progress display on stderr, fed by scan events. Replayed events
/// (after a re-watch) are not counted twice.
struct Progress {
    display: Display,
    total: usize,
    done: BTreeSet<u32>,
}

impl Progress {
    fn new(mode: ProgressMode) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let display = match mode {
            ProgressMode::None => Display::Quiet,
            ProgressMode::Lines => Display::Lines,
            ProgressMode::Auto if !terminal => Display::Lines,
            ProgressMode::Auto | ProgressMode::Bar => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} layers  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message("submitting");
                Display::Bar(bar)
            }
        };
        Progress {
            display,
            total: 0,
            done: BTreeSet::new(),
        }
    }

    /// A line the user should see whatever the display.
    fn note(&self, line: &str) {
        match &self.display {
            Display::Bar(bar) => bar.suspend(|| eprintln!("strata: {line}")),
            Display::Lines => eprintln!("{line}"),
            Display::Quiet => {}
        }
    }

    /// A progress line, or the bar's message.
    fn show(&self, line: String) {
        match &self.display {
            Display::Bar(bar) => bar.set_message(line),
            Display::Lines => eprintln!("{line}"),
            Display::Quiet => {}
        }
    }

    fn event(&mut self, event: &v1::ScanEvent) {
        let Some(e) = &event.event else { return };
        match e {
            Event::Submitted(s) => self.show(format!(
                "submitted: scan {}{} ({})",
                event.scan_id,
                if s.existing { ", existing" } else { "" },
                client::status_word(s.status)
            )),
            Event::Resolved(r) => {
                self.total = r.layer_digests.len();
                if let Display::Bar(bar) = &self.display {
                    bar.set_length(self.total as u64);
                }
                let platform = if r.platform.is_empty() {
                    String::new()
                } else {
                    format!(" {}", r.platform)
                };
                self.show(format!(
                    "resolved {}{platform} {} layers",
                    short(&r.image_digest),
                    self.total
                ));
            }
            Event::Layer(l) => {
                let state = v1::LayerState::try_from(l.state).unwrap_or(v1::LayerState::Unspecified);
                let (word, finished) = match state {
                    v1::LayerState::Queued => ("queued", false),
                    v1::LayerState::Cached => ("cached", true),
                    v1::LayerState::Analysed => ("analysed", true),
                    v1::LayerState::Failed => ("failed", true),
                    v1::LayerState::Unspecified => ("in an unknown state", false),
                };
                if finished {
                    self.done.insert(l.index);
                    if let Display::Bar(bar) = &self.display {
                        bar.set_position(self.done.len() as u64);
                    }
                }
                let detail = match state {
                    v1::LayerState::Failed => format!(": {}", super::client::one_line(&l.error, 300)),
                    v1::LayerState::Cached | v1::LayerState::Analysed => {
                        format!(" ({} packages)", l.packages)
                    }
                    _ => String::new(),
                };
                let line = format!(
                    "layer {}/{} {} {word}{detail}",
                    l.index + 1,
                    self.total.max(l.index as usize + 1),
                    short(&l.digest)
                );
                if state == v1::LayerState::Failed {
                    self.note(&line);
                } else {
                    self.show(line);
                }
            }
            Event::Matched(m) => self.show(format!(
                "matched: {} packages, {} findings",
                m.packages, m.findings
            )),
            Event::Done(d) => {
                let mut line = format!("done: {}", client::status_word(d.status));
                if d.layers_total > 0 {
                    line.push_str(&format!(
                        " ({} layers: {} cached, {} analysed, {} failed)",
                        d.layers_total, d.layers_cached, d.layers_analysed, d.layers_failed
                    ));
                }
                if let Some(c) = &d.counts {
                    line.push_str(&format!(
                        "; findings: {} critical, {} high, {} medium, {} low, {} unknown",
                        c.critical, c.high, c.medium, c.low, c.unknown
                    ));
                }
                if !d.error.is_empty() {
                    line.push_str(&format!(": {}", super::client::one_line(&d.error, 300)));
                }
                self.finish();
                self.show(line);
            }
        }
    }

    fn finish(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
            // What is left to say goes out as plain lines.
            self.display = Display::Lines;
        }
    }
}
