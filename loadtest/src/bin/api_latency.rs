//! API latency: `GetReport` and `SubmitImage` for an image whose layers are
//! all cached, with `--clients` (default 100) concurrent gRPC clients.
//!
//! 1. Pushes one image (a Debian-like base with `--packages` (default 300)
//!    dpkg packages, plus two small layers) to a real registry (Debian's
//!    `docker-registry`), starts the coordinator with the in-process queue
//!    and two worker slots (what `strata serve` runs), and the gRPC server
//!    on a loopback port, in this process (the harness's `ClusterSandbox`);
//!    scans the image once, so every later submit finds it cached.
//! 2. Baseline in the same run: `grpc.health.v1.Health/Check` from the same
//!    clients (the transport floor).
//! 3. Each client, on its own HTTP/2 connection, sends `--requests` (default
//!    50) calls one after another: `GetReport(scan_id)`, then in a second
//!    round `SubmitImage` of the image's tag (no wait: the registry is asked
//!    for the tag's digest again with a manifest HEAD, since a tag may have
//!    moved, and the existing scan is returned).
//!    `GetReport` runs twice: decoded into a `Report` by the client, and
//!    read without building it (the server's share, as for clients on other
//!    machines; on this 2-core machine the 100 clients' decoding competes
//!    with the server for the same cores).
//! 4. Prints p50 / p99 / max latency, requests/s and the p99 ratio to the
//!    baseline. Target: p99 under 50 ms for both.
//!
//! Run: `cargo run --release -p strata-loadtest --bin api_latency`.

use clap::Parser as _;
use std::error::Error;
use std::time::{Duration, Instant};

use strata_coordinator::cluster::SubmitRequest;
use strata_harness::{ClusterSandbox, Compression, Image, Layer, Registry, SandboxQueue};
use strata_proto::v1::{self, get_report_request::Selector, scan_service_client::ScanServiceClient};
use strata_worker::run::WorkerOptions;
use tonic::transport::Channel;

type BoxError = Box<dyn Error + Send + Sync>;

/// API latency under concurrent clients: GetReport and SubmitImage against a
/// health-check baseline, in one process.
#[derive(clap::Parser)]
struct Options {
    /// Concurrent gRPC clients.
    #[arg(long, default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    clients: usize,
    /// Requests per client per phase.
    #[arg(long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    requests: usize,
    /// Packages in the image's report.
    #[arg(long, default_value_t = 300, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100_000))]
    packages: usize,
}

fn image(packages: usize) -> Result<Image, BoxError> {
    let mut status = String::new();
    for i in 0..packages {
        status.push_str(&format!(
            "Package: pkg{i}\nStatus: install ok installed\nArchitecture: amd64\nSource: src{}\nVersion: 1.{i}.0-1\n\n",
            i / 3
        ));
    }
    Ok(Image::builder()
        .layer(
            Layer::builder()
                .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
                .file("var/lib/dpkg/status", status)
                .build(Compression::Gzip)?,
        )
        .layer(Layer::builder().file("srv/a", "a").build(Compression::Gzip)?)
        .layer(Layer::builder().file("srv/b", "b").build(Compression::Zstd)?)
        .build()?)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    per_sec: f64,
}

fn figures(mut samples: Vec<Duration>, wall: Duration) -> Figures {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        max: *samples.last().unwrap_or(&Duration::ZERO),
        per_sec: samples.len() as f64 / wall.as_secs_f64(),
    }
}

/// Runs `clients` tasks of `requests` sequential calls each; every call is
/// timed and must succeed.
async fn load<F, Fut>(channels: &[Channel], requests: usize, call: F) -> Result<Figures, BoxError>
where
    F: Fn(Channel) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels {
        let channel = channel.clone();
        let call = call.clone();
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                call(channel.clone()).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, BoxError>(samples)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok(figures(all, started.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = Options::parse();
    let registry = Registry::start()?;
    image(o.packages)?.push(&registry, "bench/api", "1").await?;
    let reference = format!("{}/bench/api:1", registry.host());

    let sandbox = ClusterSandbox::builder()
        .queue(SandboxQueue::Memory)
        .workers(1)
        .worker_options(WorkerOptions {
            concurrency: 2,
            ..WorkerOptions::default()
        })
        .insecure_registry(registry.host())
        .grpc(true)
        .start()
        .await?;
    let url = sandbox.grpc_url();

    // Scan once: from here on the image is cached.
    let (scan, _) = sandbox
        .coordinator()
        .submit(SubmitRequest {
            reference: reference.clone(),
            insecure_registry: true,
            ..Default::default()
        })
        .await?;
    sandbox
        .wait_scan(&scan.id, Duration::from_secs(120))
        .await
        .map_err(|e| format!("the first scan did not complete: {e}"))?;
    let report_bytes = {
        let mut c = ScanServiceClient::connect(url.clone()).await?;
        let r = c
            .get_report(v1::GetReportRequest {
                selector: Some(Selector::ScanId(scan.id.clone())),
            })
            .await?
            .into_inner();
        prost::Message::encoded_len(&r)
    };

    // One HTTP/2 connection per client, as 100 CI jobs would have, with
    // tonic's default settings (as `strata submit` uses).
    let mut channels = Vec::with_capacity(o.clients);
    for _ in 0..o.clients {
        channels.push(Channel::from_shared(url.clone())?.connect().await?);
    }
    // Warm-up: one of each per client, not counted.
    let id = scan.id.clone();
    let get_report = move |ch: Channel| {
        let id = id.clone();
        async move {
            ScanServiceClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .get_report(v1::GetReportRequest {
                    selector: Some(Selector::ScanId(id)),
                })
                .await?;
            Ok::<(), BoxError>(())
        }
    };
    // The same call read as the server sends it, without the client building
    // the report (decoded into `()`: fields skipped): the server's part, as
    // for clients on other machines.
    let id = scan.id.clone();
    let get_report_raw = move |ch: Channel| {
        let id = id.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(ch).max_decoding_message_size(64 << 20);
            grpc.ready().await?;
            grpc.unary::<_, (), _>(
                tonic::Request::new(v1::GetReportRequest {
                    selector: Some(Selector::ScanId(id)),
                }),
                tonic::codegen::http::uri::PathAndQuery::from_static("/strata.v1.ScanService/GetReport"),
                tonic_prost::ProstCodec::<v1::GetReportRequest, ()>::default(),
            )
            .await?;
            Ok::<(), BoxError>(())
        }
    };
    let r = reference.clone();
    let submit = move |ch: Channel| {
        let r = r.clone();
        async move {
            let mut stream = ScanServiceClient::new(ch)
                .submit_image(v1::SubmitImageRequest {
                    reference: r,
                    insecure_registry: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let first = stream.message().await?.ok_or("no submitted event")?;
            match first.event {
                Some(v1::scan_event::Event::Submitted(s)) if s.existing => Ok::<(), BoxError>(()),
                other => Err(format!("expected an existing scan, got {other:?}").into()),
            }
        }
    };
    let health = |ch: Channel| async move {
        tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await?;
        Ok::<(), BoxError>(())
    };
    load(&channels, 1, get_report.clone()).await?;
    load(&channels, 1, submit.clone()).await?;

    let base = load(&channels, o.requests, health).await?;
    let reports = load(&channels, o.requests, get_report).await?;
    let reports_raw = load(&channels, o.requests, get_report_raw).await?;
    let submits = load(&channels, o.requests, submit).await?;

    println!(
        "api_latency: {} clients × {} requests; report of {} packages ({} KiB on the wire)",
        o.clients,
        o.requests,
        o.packages,
        report_bytes / 1024
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "call", "p50 ms", "p99 ms", "max ms", "req/s", "p99 / base"
    );
    for (name, f) in [
        ("Health/Check (baseline)", &base),
        ("GetReport", &reports),
        ("GetReport (not decoded)", &reports_raw),
        ("SubmitImage (cached)", &submits),
    ] {
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>12.1}",
            name,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.per_sec,
            f.p99.as_secs_f64() / base.p99.as_secs_f64()
        );
    }
    let ok = reports.p99 < Duration::from_millis(50) && submits.p99 < Duration::from_millis(50);
    let server_ok = reports_raw.p99 < Duration::from_millis(50) && submits.p99 < Duration::from_millis(50);
    println!(
        "target with clients that do not build the report (as on other machines): {}",
        if server_ok { "met" } else { "MISSED" }
    );
    println!(
        "target: p99 < 50 ms for GetReport and SubmitImage: {}",
        if ok { "met" } else { "MISSED" }
    );

    sandbox.stop().await?;
    Ok(())
}
