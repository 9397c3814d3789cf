//! `strata submit`: what CI runs. Submit an image to a coordinator; with
//! `--wait` follow the scan's events until it is done, fetch the report,
//! print it in the format asked for, and gate on `--fail-on`.
//!
//! stdout carries the report (or, without `--wait`, the scan id) and nothing
//! else; progress goes to stderr: a progress bar on a terminal, plain lines
//! otherwise (CI logs).
//!
//! Given several `--server`s, a broken connection (before the first answer,
//! or while following the scan) moves to the next one: the submit is sent
//! again (submits are idempotent) or the scan is watched again
//! (`WatchScan` replays its history; events already shown, keyed by
//! [`EventKey`], are dropped), so the output is as without the break.

use std::collections::{BTreeSet, HashSet};
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_coordinator::cluster::events::EventKey;
use strata_coordinator::output::{self, ReportFormat};
use strata_proto::v1::{self, get_report_request::Selector, scan_event::Event};
use strata_proto::{Report, Severity};
use tokio::time::Instant;
use tonic::Code;

use super::client::{self, ConnectArgs, Connection};

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
    /// With --wait: give up waiting after this many seconds (the scan goes on
    /// on the server). A broken connection is resumed (on the next --server,
    /// round-robin) for up to 2 minutes without news, within this bound.
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
    let servers = args.connect.servers()?.len();
    let mut conn = args.connect.connect().await?;
    let overall = Duration::from_secs(args.wait_timeout_secs);
    let deadline = Instant::now() + overall;
    let resume_limit = client::RESUME_LIMIT.max(conn.timeout());

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
    let mut progress = Progress::new(args.progress);
    // Until the first answer: a broken connection sends the submit again
    // on the next server, each server once.
    let mut attempts = 0;
    let (first, stream) = loop {
        attempts += 1;
        match submit_once(&conn, &request, args.wait, overall).await {
            Ok(answer) => break answer,
            Err(Broken::Final(e)) => return Err(e).with_context(|| format!("submitting {reference}")),
            Err(Broken::Lost(e)) if attempts >= servers => {
                return Err(e).with_context(|| format!("submitting {reference}"));
            }
            Err(Broken::Lost(e)) => {
                let until = deadline.min(Instant::now() + resume_limit);
                conn = match args
                    .connect
                    .resume(&conn, until, |line| progress.warn(line))
                    .await
                {
                    Ok(next) => next,
                    Err(_) => return Err(e).with_context(|| format!("submitting {reference}")),
                };
            }
        }
    };
    let scan_id = first.scan_id.clone();
    anyhow::ensure!(
        !scan_id.is_empty(),
        "submitting {reference}: the server answered without a scan id"
    );
    let mut seen = HashSet::new();
    if let Some(key) = EventKey::of(&first) {
        seen.insert(key);
    }
    progress.event(&first);
    if !args.wait {
        progress.finish();
        println!("{scan_id}");
        return Ok(super::EXIT_OK);
    }
    let follower = Follower {
        connect: &args.connect,
        scan_id: &scan_id,
        deadline,
        overall,
        resume_limit,
    };
    let done = match &first.event {
        Some(Event::Done(done)) => done.clone(),
        _ => {
            follower
                .follow(&mut conn, stream, &mut progress, &mut seen)
                .await?
        }
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

    let wire = fetch_report(
        &args.connect,
        &mut conn,
        &scan_id,
        deadline.min(Instant::now() + resume_limit),
        &progress,
    )
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

/// Why a step did not get its answer: an answer no other attempt changes,
/// or a connection lost (worth resuming elsewhere).
enum Broken {
    Final(anyhow::Error),
    Lost(anyhow::Error),
}

/// One `SubmitImage` call up to its first event. A server's own refusal
/// (UNAVAILABLE included: it could not reach the registry) is final; a
/// transport failure or a stream closed without an answer is `Lost`.
async fn submit_once(
    conn: &Connection,
    request: &v1::SubmitImageRequest,
    wait: bool,
    overall: Duration,
) -> Result<(v1::ScanEvent, tonic::Streaming<v1::ScanEvent>), Broken> {
    // The server's deadline covers the whole stream when waiting.
    let call_deadline = if wait { overall } else { conn.timeout() };
    let mut client = conn.scan();
    let call = client.submit_image(conn.request_within(request.clone(), call_deadline));
    let mut stream = match tokio::time::timeout(conn.timeout(), call).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) if client::is_transport(&status) => {
            return Err(Broken::Lost(conn.status_error(&status)));
        }
        Ok(Err(status)) => return Err(Broken::Final(conn.status_error(&status))),
        Err(_) => return Err(Broken::Final(conn.deadline_error())),
    };
    match tokio::time::timeout(conn.timeout(), stream.message()).await {
        Ok(Ok(Some(event))) => Ok((event, stream)),
        Ok(Ok(None)) => Err(Broken::Lost(anyhow::anyhow!(
            "the server closed the stream without an answer"
        ))),
        Ok(Err(status)) if client::is_transport(&status) => Err(Broken::Lost(conn.status_error(&status))),
        Ok(Err(status)) => Err(Broken::Final(conn.status_error(&status))),
        Err(_) => Err(Broken::Final(conn.deadline_error())),
    }
}

/// Following one scan to its `Done`, across broken connections.
struct Follower<'a> {
    connect: &'a ConnectArgs,
    scan_id: &'a str,
    deadline: Instant,
    overall: Duration,
    resume_limit: Duration,
}

impl Follower<'_> {
    fn timed_out(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "scan {} not done after {}s (--wait-timeout-secs); it goes on on the server",
            self.scan_id,
            self.overall.as_secs()
        )
    }

    /// Reads events until `Done`. When the stream breaks (a transport error,
    /// a status other than the caller's fault, the stream ending early), it
    /// resumes on the next server and watches the scan again, dropping the
    /// events `seen` already holds; it gives up after `resume_limit` without
    /// a new event, or at the deadline.
    async fn follow(
        &self,
        conn: &mut Connection,
        mut stream: tonic::Streaming<v1::ScanEvent>,
        progress: &mut Progress,
        seen: &mut HashSet<EventKey>,
    ) -> anyhow::Result<v1::Done> {
        let scan_id = self.scan_id;
        let mut quiet_since = Instant::now();
        loop {
            let lost = match tokio::time::timeout_at(self.deadline, stream.message()).await {
                Err(_) => return Err(self.timed_out()),
                Ok(Ok(Some(event))) => {
                    let Some(key) = EventKey::of(&event) else { continue };
                    if !seen.insert(key) {
                        continue;
                    }
                    quiet_since = Instant::now();
                    progress.event(&event);
                    if let Some(Event::Done(done)) = event.event {
                        return Ok(done);
                    }
                    continue;
                }
                Ok(Ok(None)) => anyhow::anyhow!("the server closed the stream before the scan was done"),
                Ok(Err(status)) if client::is_final(status.code()) => {
                    return Err(conn.status_error(&status))
                        .with_context(|| format!("following scan {scan_id}"));
                }
                Ok(Err(status))
                    if status.code() == Code::DeadlineExceeded && Instant::now() >= self.deadline =>
                {
                    return Err(self.timed_out());
                }
                Ok(Err(status)) => conn.status_error(&status),
            };
            stream = self.rewatch(conn, lost, quiet_since, progress).await?;
        }
    }

    /// A new connection (the next server) and a `WatchScan` on it, retried
    /// until `resume_limit` after `quiet_since` or the deadline.
    async fn rewatch(
        &self,
        conn: &mut Connection,
        mut lost: anyhow::Error,
        quiet_since: Instant,
        progress: &Progress,
    ) -> anyhow::Result<tonic::Streaming<v1::ScanEvent>> {
        let scan_id = self.scan_id;
        // From the break or the last event, whichever is later: a scan
        // quiet for long (one big layer) still gets the whole window.
        let until = self
            .deadline
            .min(quiet_since.max(Instant::now()) + self.resume_limit);
        loop {
            if Instant::now() >= until {
                if Instant::now() >= self.deadline {
                    return Err(self.timed_out());
                }
                return Err(lost).with_context(|| format!("following scan {scan_id}"));
            }
            *conn = match self.connect.resume(conn, until, |line| progress.warn(line)).await {
                Ok(next) => next,
                Err(_) => return Err(lost).with_context(|| format!("following scan {scan_id}")),
            };
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let request = conn.request_within(
                v1::WatchScanRequest {
                    scan_id: scan_id.to_owned(),
                },
                remaining.max(Duration::from_secs(1)),
            );
            match tokio::time::timeout(conn.timeout(), conn.scan().watch_scan(request)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if client::is_final(status.code()) => {
                    return Err(conn.status_error(&status))
                        .with_context(|| format!("following scan {scan_id}"));
                }
                Ok(Err(status)) => lost = conn.status_error(&status),
                Err(_) => lost = conn.deadline_error(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `GetReport`, resumed on the next server when the connection breaks.
async fn fetch_report(
    connect: &ConnectArgs,
    conn: &mut Connection,
    scan_id: &str,
    until: Instant,
    progress: &Progress,
) -> anyhow::Result<v1::Report> {
    loop {
        let request = conn.request(v1::GetReportRequest {
            selector: Some(Selector::ScanId(scan_id.to_owned())),
        });
        let mut client = conn.scan();
        let call = client.get_report(request);
        let status = match tokio::time::timeout(conn.timeout(), call).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => status,
            Err(_) => return Err(conn.deadline_error()),
        };
        if !client::is_transport(&status) || Instant::now() >= until {
            return Err(conn.status_error(&status));
        }
        let lost = conn.status_error(&status);
        *conn = match connect.resume(conn, until, |line| progress.warn(line)).await {
            Ok(next) => next,
            Err(_) => return Err(lost),
        };
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

    /// A warning that goes out whatever the display (`--progress none` too),
    /// as `strata: <line>`.
    fn warn(&self, line: &str) {
        match &self.display {
            Display::Bar(bar) => bar.suspend(|| eprintln!("strata: {line}")),
            Display::Lines | Display::Quiet => eprintln!("strata: {line}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(e: Event) -> v1::ScanEvent {
        v1::ScanEvent {
            scan_id: "s1".into(),
            event: Some(e),
            ..Default::default()
        }
    }

    fn layer(index: u32, state: v1::LayerState) -> v1::ScanEvent {
        event(Event::Layer(v1::LayerProgress {
            index,
            state: state.into(),
            digest: format!("sha256:{index}"),
            ..Default::default()
        }))
    }

    #[test]
    fn event_keys_tell_kind_layer_and_state_apart() {
        use v1::LayerState::{Analysed, Queued};
        let submitted = event(Event::Submitted(v1::Submitted::default()));
        let resolved = event(Event::Resolved(v1::Resolved::default()));
        let matched = event(Event::Matched(v1::Matched::default()));
        let done = event(Event::Done(v1::Done::default()));
        let keys: Vec<EventKey> = [
            &submitted,
            &resolved,
            &layer(0, Queued),
            &layer(1, Queued),
            &layer(0, Analysed),
            &matched,
            &done,
        ]
        .into_iter()
        .map(|e| EventKey::of(e).unwrap())
        .collect();
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(
            EventKey::of(&layer(3, Analysed)),
            Some(EventKey::Layer {
                index: 3,
                state: Analysed as i32
            })
        );
        // The same layer event again (a replay) has the same key, whatever
        // else differs (the digest is not part of it).
        let mut again = layer(0, Analysed);
        if let Some(Event::Layer(l)) = &mut again.event {
            l.packages = 7;
        }
        assert_eq!(EventKey::of(&again), EventKey::of(&layer(0, Analysed)));
        assert_eq!(EventKey::of(&v1::ScanEvent::default()), None);
    }

    #[test]
    fn a_replayed_history_adds_only_what_was_not_seen() {
        use v1::LayerState::{Analysed, Cached, Queued};
        // Seen before the break: submitted, resolved, both layers queued,
        // layer 0 cached.
        let before = [
            event(Event::Submitted(v1::Submitted::default())),
            event(Event::Resolved(v1::Resolved::default())),
            layer(0, Queued),
            layer(1, Queued),
            layer(0, Cached),
        ];
        let mut seen = HashSet::new();
        for e in &before {
            assert!(seen.insert(EventKey::of(e).unwrap()));
        }
        // WatchScan replays everything, then goes on.
        let replay: Vec<v1::ScanEvent> = before
            .iter()
            .cloned()
            .chain([
                layer(1, Analysed),
                event(Event::Matched(v1::Matched::default())),
                event(Event::Done(v1::Done::default())),
            ])
            .collect();
        let fresh: Vec<EventKey> = replay
            .iter()
            .filter_map(EventKey::of)
            .filter(|k| seen.insert(*k))
            .collect();
        assert_eq!(
            fresh,
            [
                EventKey::Layer {
                    index: 1,
                    state: Analysed as i32
                },
                EventKey::Matched,
                EventKey::Done
            ]
        );
    }
}
