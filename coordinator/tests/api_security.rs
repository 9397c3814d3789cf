//! The gRPC server's security on the real `strata serve` binary (the same
//! server code as `strata coordinator`, with the in-process queue): bearer
//! tokens, TLS with a trusted and an expired certificate, mTLS, and the
//! refusal to serve plain gRPC on a non-loopback address.
//!
//! Certificates are made per test with rcgen; images are OCI layouts on
//! disk (no registry needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use strata_harness::fixtures::{
    self, DEBIAN_ZLIB_STATUS, ServeFailure, ServeProcess, TestCa, debian_layer, free_port,
    write_file as write,
};
use strata_harness::image::Image;
use strata_proto::v1::{
    self, admin_service_client::AdminServiceClient, scan_event::Event, scan_service_client::ScanServiceClient,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const CI_TOKEN: &str = "ci-bot-0123456789-abcdefghij";
const OPS_TOKEN: &str = "ops-team-9876543210-zyxwvuts";

/// One vulnerability database for every test in this file.
fn db() -> &'static Path {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let db = fixtures::build_db(STRATA, dir.path());
        (dir, db)
    })
    .1
}

fn strata_command(args: &[String], log: &Path) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = fixtures::strata_command(STRATA);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env("STRATA_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

/// `text` without ANSI escape sequences (in case colours are on anyway).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running `strata serve`; killed on drop.
struct Serve {
    // Declared first: killed before the directory goes.
    _process: ServeProcess,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// `strata serve` on free loopback ports with `extra` flags; ready once
    /// `/healthz` answers.
    fn start(extra: &[String]) -> Serve {
        Serve::start_on("127.0.0.1", extra)
    }

    /// As [`Serve::start`], listening for gRPC on `host`.
    fn start_on(host: &str, extra: &[String]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        for _ in 0..3 {
            let started = fixtures::start_serve(Duration::from_secs(30), false, |port, metrics| {
                let mut args: Vec<String> = [
                    "serve",
                    "--data-dir",
                    dir.path().join("data").to_str().unwrap(),
                    "--db",
                    db().to_str().unwrap(),
                    "--listen",
                    &format!("{host}:{port}"),
                    "--metrics-listen",
                    &format!("127.0.0.1:{metrics}"),
                    "--workers",
                    "1",
                ]
                .map(str::to_owned)
                .to_vec();
                args.extend(extra.iter().cloned());
                // The tests submit oci-dir: layouts (files on this machine), unless told not to.
                if !extra.iter().any(|a| a == "--no-local-images") {
                    args.push("--allow-local-images".to_owned());
                } else {
                    args.retain(|a| a != "--no-local-images");
                }
                strata_command(&args, &log).spawn().unwrap()
            });
            match started {
                Ok(process) => {
                    return Serve {
                        port: process.grpc_port,
                        _process: process,
                        log,
                        _dir: dir,
                    };
                }
                Err(ServeFailure::Exited) => continue, // a port taken in between: try again
                Err(ServeFailure::NotReady) => panic!(
                    "strata serve not ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        panic!(
            "strata serve exited early:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

/// A plain channel, retried briefly while the server starts accepting.
async fn plain_channel(port: u16) -> Channel {
    fixtures::connect_retrying(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(20),
        Duration::from_millis(100),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"))
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// An OCI layout with a one-layer Debian image; its `oci-dir:` reference.
fn oci_image(dir: &Path) -> String {
    let layer = debian_layer("12", DEBIAN_ZLIB_STATUS);
    let layout = dir.join("layout");
    Image::builder()
        .layer(layer)
        .build()
        .unwrap()
        .write_oci_layout(&layout, "v1")
        .unwrap();
    format!("oci-dir:{}:v1", layout.display())
}

/// Submits `reference` with `wait` and returns the final `Done`.
async fn submit_and_wait(
    client: &mut ScanServiceClient<Channel>,
    request: tonic::Request<v1::SubmitImageRequest>,
) -> v1::Done {
    let mut stream = client.submit_image(request).await.unwrap().into_inner();
    let limit = Instant::now() + Duration::from_secs(120);
    while let Some(event) = tokio::time::timeout_at(limit.into(), stream.next())
        .await
        .expect("scan not done within 2 minutes")
    {
        if let Some(Event::Done(done)) = event.unwrap().event {
            return done;
        }
    }
    panic!("stream ended without Done");
}

fn submit_request(reference: &str) -> v1::SubmitImageRequest {
    v1::SubmitImageRequest {
        reference: reference.to_owned(),
        wait: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_strata_services_but_not_health() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# who may call\n\nci-bot {CI_TOKEN}\nops {OPS_TOKEN}\n"),
    )
    .unwrap();
    let serve = Serve::start(&["--token-file".into(), tokens.display().to_string()]);
    let channel = plain_channel(serve.port).await;
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut scan = ScanServiceClient::new(channel.clone());

    // No token.
    let status = admin.get_status(v1::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "missing bearer token");
    let status = scan
        .get_report(v1::GetReportRequest {
            selector: Some(v1::get_report_request::Selector::ScanId("x".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    // Another scheme is no bearer token either.
    let mut basic = tonic::Request::new(v1::GetStatusRequest {});
    basic
        .metadata_mut()
        .insert("authorization", "Basic Y2k6Ym90".parse().unwrap());
    let status = admin.get_status(basic).await.unwrap_err();
    assert_eq!(status.message(), "missing bearer token");

    // A wrong token: not echoed back.
    let wrong = "not-the-right-token-at-all-0000";
    let status = admin
        .get_status(with_token(v1::GetStatusRequest {}, wrong))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "invalid token");
    assert!(!format!("{status:?}").contains(wrong));

    // The right token.
    let ok = admin
        .get_status(with_token(v1::GetStatusRequest {}, OPS_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.version, strata_coordinator::VERSION);

    // Health needs no token.
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "strata.v1.ScanService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    // A submit with ci-bot's token is audited as ci-bot.
    let reference = oci_image(dir.path());
    let done = submit_and_wait(&mut scan, with_token(submit_request(&reference), CI_TOKEN)).await;
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");

    let log = serve.log();
    assert!(
        log.contains("caller=ci-bot@127.0.0.1:"),
        "the audit log names the caller:\n{log}"
    );
    assert!(log.contains("call without a bearer token refused"), "{log}");
    assert!(log.contains("call with an invalid token refused"), "{log}");
    for secret in [CI_TOKEN, OPS_TOKEN, wrong] {
        assert!(!log.contains(secret), "a token reached the log:\n{log}");
    }
}

#[test]
fn bad_token_files_stop_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("short", "a 0123456789\n".to_owned(), "shorter than 16"),
        (
            "dup-name",
            format!("a {CI_TOKEN}\na {OPS_TOKEN}\n"),
            "the name a is on line 1",
        ),
        (
            "dup-token",
            format!("a {CI_TOKEN}\nb {CI_TOKEN}\n"),
            "same token as line 1",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let (code, stderr) = run_to_exit(&["--token-file".into(), path.display().to_string()]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{name}: {stderr}");
        assert!(!stderr.contains(CI_TOKEN), "{name}: the token is shown: {stderr}");
    }
    // The same key in a config file (its `[security]` table).
    let config = dir.path().join("serve.toml");
    let short = dir.path().join("short");
    std::fs::write(
        &config,
        format!("[security]\ntoken_file = {:?}\n", short.display().to_string()),
    )
    .unwrap();
    let (code, stderr) = run_to_exit(&["--config".into(), config.display().to_string()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("shorter than 16"), "{stderr}");

    let missing = dir.path().join("nope");
    let (code, stderr) = run_to_exit(&["--token-file".into(), missing.display().to_string()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

/// Runs `strata serve` (loopback ports) with `extra`, expecting it to exit
/// within 30 s; its exit code and output.
fn run_to_exit_on(listen: &str, extra: &[String]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let mut args: Vec<String> = [
        "serve",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--db",
        db().to_str().unwrap(),
        "--listen",
        listen,
        "--metrics-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--workers",
        "1",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().cloned());
    let mut child = strata_command(&args, &log).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "strata serve did not exit:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default()),
    )
}

fn run_to_exit(extra: &[String]) -> (Option<i32>, String) {
    run_to_exit_on(&format!("127.0.0.1:{}", free_port()), extra)
}

#[test]
fn plain_grpc_on_a_non_loopback_address_is_refused() {
    let port = free_port();
    let (code, out) = run_to_exit_on(&format!("0.0.0.0:{port}"), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "refusing to serve plain gRPC on 0.0.0.0:{port}: configure --tls-cert/--tls-key or pass --allow-remote"
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_remote_still_serves_plain_grpc() {
    let serve = Serve::start_on("0.0.0.0", &["--allow-remote".into()]);
    let status = AdminServiceClient::new(plain_channel(serve.port).await)
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, strata_coordinator::VERSION);
    assert!(
        serve
            .log()
            .contains("serving plain gRPC on a non-loopback address"),
        "{}",
        serve.log()
    );
}

// ---- certificates ----------------------------------------------------------

/// A TLS endpoint for the server on `port`, trusting `ca`, as `localhost`.
fn tls_endpoint(port: u16, ca: &str, identity: Option<(&str, &str)>) -> Endpoint {
    strata_coordinator::api::auth::install_crypto_provider();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .tls_config(tls)
        .unwrap()
}

/// The whole source chain of an error, for assertions on its cause.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_trusted_certificate_and_refusal_of_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("strata test CA");
    let (cert, key) = ca.leaf("strata-coordinator", true, false);
    let serve = Serve::start(&[
        "--tls-cert".into(),
        write(dir.path(), "cert.pem", &cert),
        "--tls-key".into(),
        write(dir.path(), "key.pem", &key),
    ]);
    let channel = tls_endpoint(serve.port, &ca.pem(), None)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", chain(&e), serve.log()));
    let status = AdminServiceClient::new(channel)
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, strata_coordinator::VERSION);
    // A client that does not trust the CA cannot connect.
    let other = TestCa::new("another CA");
    let err = tls_endpoint(serve.port, &other.pem(), None)
        .connect()
        .await
        .expect_err("an untrusted server certificate");
    assert!(
        chain(&err).contains("invalid peer certificate"),
        "{}",
        chain(&err)
    );
    drop(serve);

    // Expired: the server starts (and warns), clients refuse the handshake.
    // The error is the transport's connect error, caused by rustls'
    // "invalid peer certificate: certificate expired: ...".
    let (cert, key) = ca.leaf("strata-coordinator", true, true);
    let serve = Serve::start(&[
        "--tls-cert".into(),
        write(dir.path(), "expired.pem", &cert),
        "--tls-key".into(),
        write(dir.path(), "expired-key.pem", &key),
    ]);
    let err = tls_endpoint(serve.port, &ca.pem(), None)
        .connect()
        .await
        .expect_err("an expired server certificate is refused");
    eprintln!("expired server certificate: {}", chain(&err));
    let text = chain(&err).to_lowercase();
    assert!(
        text.contains("invalid peer certificate") && text.contains("expired"),
        "{text}"
    );
    assert!(
        serve.log().contains("the TLS certificate is not valid now"),
        "{}",
        serve.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_and_names_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("strata server CA");
    let client_ca = TestCa::new("strata client CA");
    let (cert, key) = server_ca.leaf("strata-coordinator", true, false);
    let serve = Serve::start(&[
        "--tls-cert".into(),
        write(dir.path(), "cert.pem", &cert),
        "--tls-key".into(),
        write(dir.path(), "key.pem", &key),
        "--client-ca".into(),
        write(dir.path(), "client-ca.pem", &client_ca.pem()),
    ]);

    // Without a client certificate: with TLS 1.3 the client's handshake may
    // finish before the server checks, so the failure shows either at
    // connect or on the first call; either way nothing is served.
    let refused = match tls_endpoint(serve.port, &server_ca.pem(), None).connect().await {
        Err(e) => Err(chain(&e)),
        Ok(channel) => AdminServiceClient::new(channel)
            .get_status(v1::GetStatusRequest {})
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
    };
    eprintln!("without a client certificate: {refused:?}");
    assert!(refused.is_err(), "a call without a client certificate succeeded");

    // A certificate signed by another CA is refused too.
    let (stranger, stranger_key) = server_ca.leaf("stranger", false, false);
    let refused = match tls_endpoint(serve.port, &server_ca.pem(), Some((&stranger, &stranger_key)))
        .connect()
        .await
    {
        Err(e) => Err(chain(&e)),
        Ok(channel) => AdminServiceClient::new(channel)
            .get_status(v1::GetStatusRequest {})
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
    };
    eprintln!("client certificate of another CA: {refused:?}");
    assert!(
        refused.is_err(),
        "a client certificate of another CA was accepted"
    );

    // Signed by the client CA: served, and audited under its name.
    let (client, client_key) = client_ca.leaf("ci-runner-7", false, false);
    let channel = tls_endpoint(serve.port, &server_ca.pem(), Some((&client, &client_key)))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", chain(&e), serve.log()));
    let status = AdminServiceClient::new(channel.clone())
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, strata_coordinator::VERSION);
    let reference = oci_image(dir.path());
    let done = submit_and_wait(
        &mut ScanServiceClient::new(channel),
        tonic::Request::new(submit_request(&reference)),
    )
    .await;
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
    let log = serve.log();
    assert!(log.contains("caller=ci-runner-7@127.0.0.1:"), "{log}");
}

#[test]
fn tls_files_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write(dir.path(), "cert.pem", "hello\n");
    let key = write(dir.path(), "key.pem", "hello\n");
    let (code, out) = run_to_exit(&["--tls-cert".into(), not_pem.clone(), "--tls-key".into(), key]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&not_pem), "{out}");
    let (code, out) = run_to_exit(&["--tls-cert".into(), not_pem]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--tls-cert and --tls-key go together"), "{out}");
}

/// A remote caller cannot make the server read its own files: `oci-dir:`
/// and `docker-archive:` references are refused unless the server was
/// started with `--allow-local-images`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_image_paths_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let reference = oci_image(dir.path());
    let serve = Serve::start(&["--no-local-images".to_owned()]);
    let mut client = ScanServiceClient::new(plain_channel(serve.port).await);
    for r in [reference.as_str(), "docker-archive:/etc/passwd", " dir:/"] {
        let err = client
            .submit_image(submit_request(r))
            .await
            .expect_err("a local path over the API");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{r}: {err:?}");
        assert!(
            err.message().contains("--allow-local-images"),
            "{}",
            err.message()
        );
    }
    // The default Serve allows them: the same reference scans.
    let allowed = Serve::start(&[]);
    let mut client = ScanServiceClient::new(plain_channel(allowed.port).await);
    let done = submit_and_wait(&mut client, tonic::Request::new(submit_request(&reference))).await;
    assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{done:?}");
}
