//! `strata fleet …`: what security teams ask of a coordinator's
//! `FleetService`: which images a vulnerability hits, a summary of the
//! fleet, the registered images, registering or removing them, the
//! fleet's events as they happen (`watch`), and a full re-match.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use strata_proto::v1::{self, list_affected_request::Query};
use strata_proto::{Ecosystem, Severity};

use super::client::{self, ConnectArgs, Connection, one_line};

/// Bound on pages followed for one listing (the server caps page sizes).
const MAX_PAGES: usize = 10_000;
/// Bound on references given in one `add` / `remove`.
const MAX_REFERENCES: usize = 10_000;

#[derive(Args, Debug)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Which registered images a vulnerability (id or alias) or a package hits, and in which layer.
    Affected(AffectedArgs),
    /// Images by status, findings by severity, and the vulnerabilities hitting the most images.
    Summary(SummaryArgs),
    /// Register images (or a whole repository) to be scanned and kept rescanned.
    Add(AddArgs),
    /// Unregister images or a repository.
    Remove(RemoveArgs),
    /// The registered images with their status and finding counts.
    List(ListArgs),
    /// Print fleet events (findings new and resolved) as they happen,
    /// resuming after the last one printed when the connection drops (on
    /// the next --server when several are given).
    Watch(WatchArgs),
    /// Match every image again against the vulnerability data in force,
    /// from the stored inventories (after a matcher or analyser upgrade;
    /// advisory updates re-match what they touch by themselves). What
    /// changes becomes events.
    Rematch(RematchArgs),
}

#[derive(Args, Debug)]
pub struct RematchArgs {
    #[command(flatten)]
    pub output: super::TableOrJson,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Start after this event sequence (0: from the oldest event kept).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub after: u64,
    /// Only events at or above this severity.
    #[arg(long, value_name = "SEVERITY")]
    pub min_severity: Option<Severity>,
    /// Only events of this kind (finding_new, finding_resolved, image_severity). Repeatable.
    #[arg(long = "kind", value_name = "KIND", value_parser = parse_event_kind)]
    pub kinds: Vec<v1::EventKind>,
    /// Only images of repositories matching this glob (`*` within a path
    /// segment, `**` across them), e.g. 'ghcr.io/acme/**'.
    #[arg(long, value_name = "GLOB")]
    pub repository: Option<String>,
    /// table: one line per event; json: one JSON object per line (with its sequence).
    #[arg(short = 'f', long = "format", value_enum, default_value_t = WatchFormat::Table)]
    pub format: WatchFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFormat {
    Table,
    Json,
}

fn parse_event_kind(s: &str) -> Result<v1::EventKind, String> {
    strata_coordinator::notify::parse_kind(s)
        .ok_or_else(|| format!("{s:?}: one of finding_new, finding_resolved, image_severity"))
}

#[derive(Args, Debug)]
pub struct AffectedArgs {
    /// A vulnerability id or any of its aliases (CVE-…, GHSA-…, DSA-…).
    #[arg(required_unless_present = "package", conflicts_with = "package")]
    pub id: Option<String>,
    /// Ask by package name instead of vulnerability.
    #[arg(long, value_name = "NAME")]
    pub package: Option<String>,
    /// With --package: its ecosystem (OSV name: Debian, Alpine, PyPI, npm, …).
    #[arg(long, value_name = "ECOSYSTEM", requires = "package")]
    pub ecosystem: Option<Ecosystem>,
    /// With --package: a version range, e.g. ">=1.2.0, <1.4.1".
    #[arg(long, value_name = "RANGE", requires = "package")]
    pub range: Option<String>,
    #[command(flatten)]
    pub output: super::TableOrJson,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// How many of the most widespread vulnerabilities to list (0: the server's default).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub top: u32,
    #[command(flatten)]
    pub output: super::TableOrJson,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Image references the coordinator can pull.
    #[arg(required_unless_present = "repository", conflicts_with = "repository")]
    pub references: Vec<String>,
    /// Register every tag of this repository (registry/name) instead.
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,
    /// With --repository: only tags matching this glob (e.g. 'v*').
    #[arg(long, value_name = "GLOB", requires = "repository")]
    pub tags: Option<String>,
    /// Platform to pick from multi-platform indexes (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Let the coordinator speak plain HTTP to these images' registry.
    #[arg(long)]
    pub insecure_registry: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Image references to unregister.
    #[arg(required_unless_present = "repository", conflicts_with = "repository")]
    pub references: Vec<String>,
    /// Unregister this repository (registry/name) instead.
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only images of this repository.
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,
    /// Only images in this state.
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
    /// Only images with a finding at or above this severity.
    #[arg(long, value_name = "SEVERITY")]
    pub min_severity: Option<Severity>,
    #[command(flatten)]
    pub output: super::TableOrJson,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum StatusFilter {
    Pending,
    Running,
    Complete,
    Failed,
}

impl From<StatusFilter> for v1::ScanStatus {
    fn from(s: StatusFilter) -> Self {
        match s {
            StatusFilter::Pending => v1::ScanStatus::Pending,
            StatusFilter::Running => v1::ScanStatus::Running,
            StatusFilter::Complete => v1::ScanStatus::Complete,
            StatusFilter::Failed => v1::ScanStatus::Failed,
        }
    }
}

pub async fn run(args: FleetArgs) -> anyhow::Result<u8> {
    match args.command {
        FleetCommand::Affected(a) => affected(a).await,
        FleetCommand::Summary(a) => summary(a).await,
        FleetCommand::Add(a) => add(a).await,
        FleetCommand::Remove(a) => remove(a).await,
        FleetCommand::List(a) => list(a).await,
        FleetCommand::Watch(a) => watch(a).await,
        FleetCommand::Rematch(a) => rematch(a).await,
    }
}

async fn rematch(args: RematchArgs) -> anyhow::Result<u8> {
    let conn = args.connect.connect().await?;
    let r = conn
        .call(conn.fleet().rematch(conn.request(v1::RematchRequest {})))
        .await
        .context("re-matching the fleet")?;
    if args.output.json() {
        println!(
            "{}",
            serde_json::json!({
                "images_changed": r.images,
                "findings_new": r.findings_new,
                "findings_resolved": r.findings_resolved,
                "distinct_packages": r.distinct_packages,
                "vulndb_version": r.vulndb_version,
                "duration_ms": r.duration_ms,
            })
        );
    } else {
        println!(
            "re-matched against {}: {} distinct packages, {} image(s) changed: {} finding(s) new, {} resolved ({} ms)",
            r.vulndb_version,
            r.distinct_packages,
            r.images,
            r.findings_new,
            r.findings_resolved,
            r.duration_ms
        );
    }
    Ok(super::EXIT_OK)
}

/// Follows `next_page_token` until the last page, refusing a server that
/// repeats a token or never stops.
async fn all_pages<T, F, Fut>(mut fetch: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let (mut page, next) = fetch(token.clone()).await?;
        items.append(&mut page);
        if next.is_empty() {
            return Ok(items);
        }
        anyhow::ensure!(next != token, "the server sent the same page token twice");
        token = next;
    }
    anyhow::bail!("the listing did not end after {MAX_PAGES} pages")
}

async fn affected(args: AffectedArgs) -> anyhow::Result<u8> {
    let query = match (&args.id, &args.package) {
        (Some(id), _) => {
            let id = id.trim();
            anyhow::ensure!(!id.is_empty(), "give a vulnerability id");
            Query::VulnerabilityId(id.to_owned())
        }
        (None, Some(name)) => Query::Package(v1::PackageQuery {
            ecosystem: args.ecosystem.map(|e| e.to_string()).unwrap_or_default(),
            name: name.trim().to_owned(),
            version_range: args.range.clone().unwrap_or_default(),
        }),
        (None, None) => anyhow::bail!("give a vulnerability id or --package NAME"),
    };
    let conn = args.connect.connect().await?;
    let images = all_pages(|page_token| {
        let conn = conn.clone();
        let query = query.clone();
        async move {
            let resp = conn
                .call(conn.fleet().list_affected(conn.request(v1::ListAffectedRequest {
                    query: Some(query),
                    page_size: 0,
                    page_token,
                })))
                .await
                .context("listing affected images")?;
            Ok((resp.images, resp.next_page_token))
        }
    })
    .await?;

    if args.output.json() {
        let doc: Vec<serde_json::Value> = images
            .iter()
            .map(|img| {
                serde_json::json!({
                    "reference": img.reference,
                    "tags": img.tags,
                    "digest": img.digest,
                    "packages": img.packages.iter().map(|a| {
                        let p = a.package.clone().unwrap_or_default();
                        serde_json::json!({
                            "ecosystem": p.ecosystem,
                            "name": p.name,
                            "version": p.version,
                            "layer_digest": p.layer_digest,
                            "path": p.path,
                            "fixed_versions": a.fixed_versions,
                            "vulnerability_ids": a.vulnerability_ids,
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(super::EXIT_OK);
    }
    let mut rows = Vec::new();
    for img in &images {
        for a in &img.packages {
            let p = a.package.clone().unwrap_or_default();
            rows.push(vec![
                img.reference.clone(),
                img.tags.join(","),
                short(&p.layer_digest),
                format!("{} ({})", p.name, p.ecosystem),
                p.version,
                if a.fixed_versions.is_empty() {
                    "-".to_owned()
                } else {
                    a.fixed_versions.join(",")
                },
                a.vulnerability_ids.join(","),
            ]);
        }
        if img.packages.is_empty() {
            rows.push(vec![
                img.reference.clone(),
                img.tags.join(","),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    if rows.is_empty() {
        println!("no registered image is affected");
    } else {
        print!(
            "{}",
            table(
                &[
                    "IMAGE",
                    "TAGS",
                    "LAYER",
                    "PACKAGE",
                    "INSTALLED",
                    "FIXED IN",
                    "VULNERABILITIES"
                ],
                &rows
            )
        );
        println!("{} image(s) affected", images.len());
    }
    Ok(super::EXIT_OK)
}

async fn summary(args: SummaryArgs) -> anyhow::Result<u8> {
    let conn = args.connect.connect().await?;
    let s = conn
        .call(
            conn.fleet()
                .summary(conn.request(v1::SummaryRequest { top_n: args.top })),
        )
        .await
        .context("fleet summary")?;
    let counts = s.findings.unwrap_or_default();
    if args.output.json() {
        let by_status: serde_json::Map<String, serde_json::Value> = s
            .images_by_status
            .iter()
            .map(|c| (client::status_word(c.status).to_owned(), c.images.into()))
            .collect();
        let doc = serde_json::json!({
            "images_by_status": by_status,
            "findings": counts_json(&counts),
            "top": s.top.iter().map(|t| serde_json::json!({
                "id": t.id,
                "aliases": t.aliases,
                "severity": severity_word(t.severity),
                "images_affected": t.images_affected,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(super::EXIT_OK);
    }
    let total: u32 = s.images_by_status.iter().map(|c| c.images).sum();
    let mut out = format!("images    {total}");
    let parts: Vec<String> = s
        .images_by_status
        .iter()
        .filter(|c| c.images > 0)
        .map(|c| format!("{} {}", c.images, client::status_word(c.status)))
        .collect();
    if !parts.is_empty() {
        out.push_str(&format!(" ({})", parts.join(", ")));
    }
    out.push_str(&format!(
        "\nfindings  {} critical, {} high, {} medium, {} low, {} unknown\n",
        counts.critical, counts.high, counts.medium, counts.low, counts.unknown
    ));
    if !s.top.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = s
            .top
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    severity_word(t.severity).to_owned(),
                    t.images_affected.to_string(),
                    t.aliases.join(","),
                ]
            })
            .collect();
        out.push_str(&table(&["VULNERABILITY", "SEVERITY", "IMAGES", "ALIASES"], &rows));
    }
    print!("{out}");
    Ok(super::EXIT_OK)
}

fn check_references(refs: &[String]) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        refs.len() <= MAX_REFERENCES,
        "{} references: give at most {MAX_REFERENCES} at once",
        refs.len()
    );
    let refs: Vec<String> = refs.iter().map(|r| r.trim().to_owned()).collect();
    anyhow::ensure!(refs.iter().all(|r| !r.is_empty()), "an image reference is empty");
    Ok(refs)
}

async fn add(args: AddArgs) -> anyhow::Result<u8> {
    let conn = args.connect.connect().await?;
    let platform = args.platform.clone().unwrap_or_default();
    if let Some(repository) = &args.repository {
        let resp = conn
            .call(
                conn.fleet()
                    .register_repository(conn.request(v1::RegisterRepositoryRequest {
                        repository: repository.trim().to_owned(),
                        tag_pattern: args.tags.clone().unwrap_or_default(),
                        platform,
                        insecure_registry: args.insecure_registry,
                    })),
            )
            .await
            .with_context(|| format!("registering repository {repository}"))?;
        println!(
            "registered repository {repository}: {} tag(s)",
            resp.tags_registered
        );
        return Ok(super::EXIT_OK);
    }
    let references = check_references(&args.references)?;
    let asked = references.len();
    let resp = conn
        .call(
            conn.fleet()
                .register_images(conn.request(v1::RegisterImagesRequest {
                    references,
                    platform,
                    insecure_registry: args.insecure_registry,
                })),
        )
        .await
        .context("registering images")?;
    let mut rejected = 0;
    for img in &resp.images {
        if img.error.is_empty() {
            println!("registered {} (scan {})", img.reference, img.scan_id);
        } else {
            rejected += 1;
            eprintln!("strata: {}: {}", img.reference, one_line(&img.error, 500));
        }
    }
    anyhow::ensure!(rejected == 0, "{rejected} of {asked} reference(s) were rejected");
    Ok(super::EXIT_OK)
}

async fn remove(args: RemoveArgs) -> anyhow::Result<u8> {
    let conn = args.connect.connect().await?;
    if let Some(repository) = &args.repository {
        let resp = conn
            .call(
                conn.fleet()
                    .unregister_repository(conn.request(v1::UnregisterRepositoryRequest {
                        repository: repository.trim().to_owned(),
                    })),
            )
            .await
            .with_context(|| format!("unregistering repository {repository}"))?;
        println!(
            "unregistered repository {repository}: {} image(s) removed",
            resp.removed
        );
        return Ok(super::EXIT_OK);
    }
    let references = check_references(&args.references)?;
    let resp = conn
        .call(
            conn.fleet()
                .unregister_images(conn.request(v1::UnregisterImagesRequest { references })),
        )
        .await
        .context("unregistering images")?;
    println!("{} image(s) removed", resp.removed);
    Ok(super::EXIT_OK)
}

async fn list(args: ListArgs) -> anyhow::Result<u8> {
    let conn: Connection = args.connect.connect().await?;
    let request = v1::ListImagesRequest {
        repository: args.repository.clone().unwrap_or_default(),
        status: args.status.map(v1::ScanStatus::from).unwrap_or_default().into(),
        min_severity: args
            .min_severity
            .map(v1::Severity::from)
            .unwrap_or_default()
            .into(),
        page_size: 0,
        page_token: String::new(),
    };
    let images = all_pages(|page_token| {
        let conn = conn.clone();
        let request = v1::ListImagesRequest {
            page_token,
            ..request.clone()
        };
        async move {
            let resp = conn
                .call(conn.fleet().list_images(conn.request(request)))
                .await
                .context("listing images")?;
            Ok((resp.images, resp.next_page_token))
        }
    })
    .await?;

    if args.output.json() {
        let doc: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "reference": i.reference,
                    "tags": i.tags,
                    "digest": i.digest,
                    "status": client::status_word(i.status),
                    "counts": counts_json(&i.counts.unwrap_or_default()),
                    "scan_id": i.scan_id,
                    "last_scanned": timestamp(i.last_scanned_unix_ms),
                    "error": i.error,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(super::EXIT_OK);
    }
    if images.is_empty() {
        println!("no registered images");
        return Ok(super::EXIT_OK);
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let c = i.counts.unwrap_or_default();
            let mut status = client::status_word(i.status).to_owned();
            if !i.error.is_empty() {
                status.push_str(&format!(": {}", one_line(&i.error, 80)));
            }
            vec![
                i.reference.clone(),
                short(&i.digest),
                status,
                format!("{}/{}/{}/{}/{}", c.critical, c.high, c.medium, c.low, c.unknown),
                timestamp(i.last_scanned_unix_ms).unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["IMAGE", "DIGEST", "STATUS", "C/H/M/L/U", "LAST SCANNED"], &rows)
    );
    Ok(super::EXIT_OK)
}

/// The first pause before reconnecting a watch (doubling up to [`RECONNECT_MAX`]).
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Answers that no retry changes: the watch ends with the error.
use super::client::is_final;

async fn watch(args: WatchArgs) -> anyhow::Result<u8> {
    let servers = args.connect.servers()?.len();
    let mut conn = args.connect.connect().await?;
    let request = v1::WatchEventsRequest {
        after_sequence: args.after,
        min_severity: args
            .min_severity
            .map(v1::Severity::from)
            .unwrap_or_default()
            .into(),
        kinds: args.kinds.iter().map(|k| i32::from(*k)).collect(),
        repository_glob: args.repository.clone().unwrap_or_default(),
    };
    let mut out = std::io::stdout();
    if args.format == WatchFormat::Table {
        print_line(&mut out, &watch_header())?;
    }
    // The last sequence printed: a reconnect resumes after it, and nothing
    // at or below it is printed again.
    let mut last = args.after;
    let mut pause = RECONNECT_FIRST;
    loop {
        // No deadline: the stream is endless (the connect timeout bounds the rest).
        let mut client = conn.fleet();
        let call = client.watch_events(tonic::Request::new(v1::WatchEventsRequest {
            after_sequence: last,
            ..request.clone()
        }));
        let lost = match tokio::time::timeout(conn.timeout(), call).await {
            Err(_) => conn.deadline_error(),
            Ok(Err(status)) if is_final(status.code()) => return Err(conn.status_error(&status)),
            Ok(Err(status)) => conn.status_error(&status),
            Ok(Ok(response)) => {
                let mut events = response.into_inner();
                loop {
                    match events.message().await {
                        Ok(Some(e)) if e.sequence <= last => {}
                        Ok(Some(e)) => {
                            let line = match args.format {
                                WatchFormat::Json => {
                                    serde_json::to_string(&strata_coordinator::notify::event_json(&e))?
                                }
                                WatchFormat::Table => watch_line(&e),
                            };
                            print_line(&mut out, &line)?;
                            last = e.sequence;
                            pause = RECONNECT_FIRST;
                        }
                        Ok(None) => break anyhow::anyhow!("the server ended the stream"),
                        Err(status) if is_final(status.code()) => return Err(conn.status_error(&status)),
                        Err(status) => break conn.status_error(&status),
                    }
                }
            }
        };
        eprintln!(
            "strata: {}; reconnecting in {:.1}s (resuming after event {last})",
            one_line(&format!("{lost:#}"), 300),
            pause.as_secs_f64()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
        // One server: its channel reconnects by itself. Several: the next
        // one (round-robin); the events are the cluster's, in one log, so
        // `after_sequence` means the same on every coordinator.
        if servers > 1 {
            match args.connect.reconnect(&conn).await {
                Ok(next) => {
                    eprintln!(
                        "strata: connection to {} lost; resuming on {} after event {last}",
                        conn.server(),
                        next.server()
                    );
                    conn = next;
                }
                Err(e) => eprintln!("strata: {}", one_line(&format!("{e:#}"), 300)),
            }
        }
    }
}

/// Writes one line and flushes it (a pipe reader sees each event as it
/// comes); a closed stdout ends the command quietly.
fn print_line(out: &mut std::io::Stdout, line: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut lock = out.lock();
    match writeln!(lock, "{line}").and_then(|()| lock.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(super::EXIT_OK.into()),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

fn watch_header() -> String {
    format!(
        "{:>8}  {:<20}  {:<16}  {:<8}  {}",
        "SEQ", "TIME", "KIND", "SEVERITY", "IMAGE  VULNERABILITY  PACKAGE  DETAIL"
    )
}

/// One event as a table line (cells flattened; columns after the image
/// are as wide as they come).
fn watch_line(e: &v1::FleetEvent) -> String {
    let package = e
        .package
        .as_ref()
        .map(|p| format!("{} {} ({})", p.name, p.version, p.ecosystem))
        .unwrap_or_else(|| "-".to_owned());
    let reason = strata_coordinator::notify::reason_name(e.reason);
    let detail = if !reason.is_empty() {
        reason.to_owned()
    } else if !e.fixed_versions.is_empty() {
        format!("fixed in {}", e.fixed_versions.join(","))
    } else {
        "-".to_owned()
    };
    let vulnerability = if e.vulnerability_id.is_empty() {
        "-"
    } else {
        &e.vulnerability_id
    };
    format!(
        "{:>8}  {:<20}  {:<16}  {:<8}  {}  {}  {}  {}",
        e.sequence,
        timestamp(e.at_unix_ms).unwrap_or_else(|| "-".to_owned()),
        strata_coordinator::notify::kind_name(e.kind),
        severity_word(e.severity),
        one_line(&e.image_reference, 300),
        one_line(vulnerability, 200),
        one_line(&package, 300),
        one_line(&detail, 300)
    )
}

fn counts_json(c: &v1::SeverityCounts) -> serde_json::Value {
    serde_json::json!({
        "critical": c.critical,
        "high": c.high,
        "medium": c.medium,
        "low": c.low,
        "unknown": c.unknown,
    })
}

fn severity_word(s: i32) -> &'static str {
    Severity::from(v1::Severity::try_from(s).unwrap_or(v1::Severity::Unspecified)).as_str()
}

fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ if digest.is_empty() => "-".to_owned(),
        _ => digest.to_owned(),
    }
}

/// RFC 3339 in UTC, or nothing for 0.
fn timestamp(unix_ms: i64) -> Option<String> {
    if unix_ms <= 0 {
        return None;
    }
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// Left-aligned columns, two spaces apart; cells are flattened to one line.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| one_line(c, 200)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                l.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long value".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A           BB\nlong value  x\ny           z\n");
    }

    #[tokio::test]
    async fn pages_are_followed_and_loops_refused() {
        let pages = all_pages(|token| async move {
            Ok(match token.as_str() {
                "" => (vec![1], "a".to_owned()),
                "a" => (vec![2], "b".to_owned()),
                _ => (vec![3], String::new()),
            })
        })
        .await
        .unwrap();
        assert_eq!(pages, vec![1, 2, 3]);
        let looped = all_pages(|_| async { Ok((vec![1], "same".to_owned())) }).await;
        assert!(looped.is_err());
    }

    #[test]
    fn watch_lines() {
        let e = v1::FleetEvent {
            sequence: 12,
            at_unix_ms: 1_700_000_000_000,
            kind: v1::EventKind::FindingResolved.into(),
            severity: v1::Severity::High.into(),
            image_reference: "r/a:1".into(),
            vulnerability_id: "CVE-1".into(),
            package: Some(v1::Package {
                ecosystem: "Debian".into(),
                name: "nginx".into(),
                version: "1.2".into(),
                ..Default::default()
            }),
            reason: v1::ResolvedReason::PackageUpgraded.into(),
            ..Default::default()
        };
        let line = watch_line(&e);
        assert!(
            line.starts_with("      12  2023-11-14T22:13:20Z  finding_resolved"),
            "{line}"
        );
        for part in [
            "finding_resolved",
            "high",
            "r/a:1  CVE-1  nginx 1.2 (Debian)  package_upgraded",
        ] {
            assert!(line.contains(part), "{line}");
        }
        assert!(parse_event_kind("finding_new").is_ok());
        assert!(parse_event_kind("new").is_err());
        assert!(is_final(tonic::Code::InvalidArgument) && !is_final(tonic::Code::Unavailable));
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), None);
        assert_eq!(
            timestamp(1_700_000_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
    }
}
