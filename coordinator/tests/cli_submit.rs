//! `strata submit` as CI runs it: the real binary against a real server
//! (`strata serve`: the coordinator, worker slots and the in-process queue,
//! the same code paths as the cluster) and a real docker registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use strata_harness::fixtures::{self, ServeProcess, TestCa, free_port, write_file as write};
use strata_harness::image::{Compression, Image, Layer};
use strata_harness::registry::Registry;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata` command with nothing from the caller's environment that
/// would change its behaviour.
fn strata() -> Command {
    fixtures::strata_command(STRATA)
}

/// An advisory of our own with a CVSS score (the test advisories for
/// Alpine carry none, so their findings are of unknown severity): musl in
/// Alpine 3.12 before 1.1.24-r11, medium (4.3).
const MEDIUM_ADVISORY: &str = r#"{
  "id": "STRATA-TEST-2026-0001",
  "modified": "2026-01-01T00:00:00Z",
  "summary": "test advisory for musl",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:L/I:N/A:N"}],
  "affected": [{
    "package": {"name": "musl", "ecosystem": "Alpine:v3.12", "purl": "pkg:alpine/musl"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1.24-r11"}]}]
  }]
}"#;

fn build_db(dir: &Path) -> PathBuf {
    let extra = dir.join("osv-extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("STRATA-TEST-2026-0001.json"), MEDIUM_ADVISORY).unwrap();
    fixtures::import_db(strata(), dir, &[&extra])
}

/// `strata serve` on free ports; killed on drop.
struct Server {
    _process: ServeProcess,
    grpc: String,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, db: &Path, extra: &[&str]) -> Server {
        let log = dir.join("serve.log");
        let scheme = if extra.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        for _ in 0..3 {
            let started = fixtures::start_serve(Duration::from_secs(60), true, |grpc_port, metrics_port| {
                let file = std::fs::File::create(&log).unwrap();
                strata()
                    .args(["serve", "--data-dir"])
                    .arg(dir.join("data"))
                    .arg("--db")
                    .arg(db)
                    .args(["--listen", &format!("127.0.0.1:{grpc_port}")])
                    .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
                    .args(["--workers", "2"])
                    .args(extra)
                    .env("STRATA_LOG", "info")
                    .stdout(Stdio::null())
                    .stderr(file)
                    .spawn()
                    .unwrap()
            });
            if let Ok(process) = started {
                return Server {
                    grpc: format!("{scheme}://127.0.0.1:{}", process.grpc_port),
                    _process: process,
                    log,
                };
            }
            // Most likely a port taken in between: try others.
        }
        panic!(
            "strata serve did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Alpine 3.12 with mariadb-client and libexif versions the test advisories hit.
fn vulnerable_layer() -> Layer {
    Layer::builder()
        .file(
            "etc/os-release",
            "ID=alpine\nVERSION_ID=3.12.12\nPRETTY_NAME=\"Alpine Linux v3.12\"\n",
        )
        .file(
            "lib/apk/db/installed",
            "P:musl\nV:1.1.24-r10\nA:x86_64\no:musl\n\nP:mariadb-client\nV:10.4.24-r0\nA:x86_64\no:mariadb\n\nP:libexif\nV:0.6.19-r0\nA:x86_64\no:libexif\n",
        )
        .build(Compression::Gzip)
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one `strata: …` line of an error exit.
fn error_line(out: &Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("strata: ")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got:\n{err}");
    eprintln!("error line: {}", lines[0]);
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_prints_reports_and_gates() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let registry = Registry::start().unwrap();
    let host = registry.host();
    let layer = vulnerable_layer();
    let base_digest = layer.digest.clone();
    let image = Image::builder()
        .layer(layer)
        .layer(
            Layer::builder()
                .file("srv/app/README", "the application")
                .build(Compression::Zstd)
                .unwrap(),
        )
        .build()
        .unwrap();
    image.push(&registry, "team/db", "1").await.unwrap();
    let reference = format!("{host}/team/db:1");
    // The server lists the registry: a caller may then ask for plain HTTP.
    let server = Server::start(dir.path(), &db, &["--insecure-registry", &host]);
    let submit = |extra: &[&str]| -> Output {
        strata()
            .args([
                "submit",
                &reference,
                "--server",
                &server.grpc,
                "--insecure-registry",
            ])
            .args(extra)
            .output()
            .unwrap()
    };

    // Without --wait: the scan id on stdout, exit 0.
    let quick = submit(&[]);
    assert_eq!(
        quick.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&quick),
        server.log()
    );
    let scan_id = String::from_utf8(quick.stdout.clone()).unwrap().trim().to_owned();
    assert!(!scan_id.is_empty() && !scan_id.contains('\n'), "{scan_id:?}");

    // --wait --format json: a parseable report; no --fail-on: exit 0.
    let out = submit(&["--wait", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), server.log());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("json report: {e}\n{}", String::from_utf8_lossy(&out.stdout)));
    let ids: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["vulnerability_id"].as_str())
        .collect();
    assert!(ids.contains(&"CVE-2022-27449"), "{ids:?}");
    assert!(ids.contains(&"STRATA-TEST-2026-0001"), "{ids:?}");
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["vulnerability_id"] == "CVE-2022-27449")
        .unwrap();
    assert_eq!(finding["package"]["layer"], base_digest.as_str());
    // The same image again is the same scan (submits are idempotent).
    assert_eq!(report["scan_id"].as_str(), Some(scan_id.as_str()), "{report}");
    // Not a terminal: plain progress lines on stderr, nothing but the report on stdout.
    let err = stderr(&out);
    assert!(err.contains("submitted: scan "), "{err}");
    assert!(err.contains("done: complete"), "{err}");

    // A fresh image: the whole event sequence as plain lines.
    let fresh = Image::builder()
        .layer(vulnerable_layer())
        .layer(
            Layer::builder()
                .file("srv/other/README", "another application")
                .build(Compression::Gzip)
                .unwrap(),
        )
        .build()
        .unwrap();
    fresh.push(&registry, "team/other", "2").await.unwrap();
    let fresh_ref = format!("{host}/team/other:2");
    let out = strata()
        .args([
            "submit",
            &fresh_ref,
            "--server",
            &server.grpc,
            "--insecure-registry",
        ])
        .args(["--wait", "--format", "table", "--fail-on", "low"])
        .output()
        .unwrap();
    // --fail-on low on an image with findings: exit 1, the report still printed.
    assert_eq!(out.status.code(), Some(1), "{}\n{}", stderr(&out), server.log());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("CVE-2022-27449"), "{table}");
    let err = stderr(&out);
    assert!(err.contains("resolved sha256:"), "{err}");
    assert!(err.contains(" 2 layers"), "{err}");
    assert!(err.contains("layer 2/2 sha256:"), "{err}");
    assert!(err.contains("matched: "), "{err}");
    assert!(err.contains("done: complete"), "{err}");
    assert!(!err.contains("strata: "), "no error line on a verdict: {err}");

    // SARIF to a file: valid JSON with runs; below the threshold (the worst
    // finding is medium): exit 0.
    let sarif_path = dir.path().join("strata.sarif");
    let sarif_arg = sarif_path.to_str().unwrap();
    let out = submit(&[
        "--wait",
        "--format",
        "sarif",
        "--fail-on",
        "high",
        "--output",
        sarif_arg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), server.log());
    assert!(out.stdout.is_empty(), "the report went to --output");
    let sarif: serde_json::Value = serde_json::from_slice(&std::fs::read(&sarif_path).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert!(
        !sarif["runs"][0]["results"].as_array().unwrap().is_empty(),
        "{sarif}"
    );

    // CycloneDX too, with the same token-file handling CI uses (the server
    // does not check tokens yet; the client must still read and send it).
    let token = dir.path().join("token");
    std::fs::write(&token, "  s3cr3t-token-value\n").unwrap();
    let out = submit(&[
        "--wait",
        "--format",
        "cyclonedx",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bom: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert!(!stderr(&out).contains("s3cr3t"), "{}", stderr(&out));

    // An empty token file is refused before anything is sent.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = submit(&["--wait", "--token-file", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(error_line(&out).contains("empty"), "{}", stderr(&out));

    // A reference with a space: exit 2, one line with the server's reason.
    let out = strata()
        .args(["submit", "team/bad ref:1", "--server", &server.grpc, "--wait"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let line = error_line(&out);
    assert!(line.contains("INVALID_ARGUMENT"), "{line}");

    // An image that is not there: the submit is refused or the scan fails; exit 2.
    let missing = strata()
        .args(["submit", &format!("{host}/team/nope:9"), "--server", &server.grpc])
        .args(["--insecure-registry", "--wait", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(missing.stdout.is_empty());
    assert!(error_line(&missing).contains("team/nope"), "{}", stderr(&missing));

    // A layer whose blob does not match its digest: the scan completes
    // without it. Not a clean verdict: exit 2, the partial report on stdout.
    let broken_layer = Layer::builder()
        .file("srv/broken/README", "this layer will be corrupted")
        .build(Compression::Gzip)
        .unwrap();
    let broken_digest = broken_layer.digest.clone();
    let broken = Image::builder()
        .layer(vulnerable_layer())
        .layer(broken_layer)
        .build()
        .unwrap();
    broken.push(&registry, "team/broken", "1").await.unwrap();
    registry
        .overwrite_blob(&broken_digest, b"not the layer that was pushed")
        .unwrap();
    let out = strata()
        .args([
            "submit",
            &format!("{host}/team/broken:1"),
            "--server",
            &server.grpc,
        ])
        .args([
            "--insecure-registry",
            "--wait",
            "--format",
            "json",
            "--fail-on",
            "high",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}\n{}", stderr(&out), server.log());
    let line = error_line(&out);
    assert!(
        line.contains("incomplete") && line.contains(&broken_digest),
        "{line}"
    );
    assert!(stderr(&out).contains("layer 2/2 sha256:"), "{}", stderr(&out));
    let partial: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!partial["findings"].as_array().unwrap().is_empty(), "{partial}");

    // The fleet commands against the same server.
    let fleet = |args: &[&str]| -> Output {
        strata()
            .arg("fleet")
            .args(args)
            .args(["--server", &server.grpc])
            .output()
            .unwrap()
    };
    let fleet_json = |args: &[&str]| -> serde_json::Value {
        let out = fleet(args);
        assert_eq!(out.status.code(), Some(0), "fleet {args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("fleet {args:?}: {e}"))
    };
    let out = fleet(&["add", &reference, "--insecure-registry"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), server.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("registered"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let images = fleet_json(&["list", "--json"]);
        let done = images.as_array().unwrap().iter().any(|i| {
            i["reference"].as_str().is_some_and(|r| r.contains("team/db")) && i["status"] == "complete"
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not complete: {images}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let affected = fleet_json(&["affected", "CVE-2022-27449", "-f", "json"]);
    let hit = affected.as_array().unwrap();
    assert!(
        hit.iter()
            .any(|i| i["packages"][0]["layer_digest"] == base_digest.as_str()),
        "{affected}"
    );
    let table = fleet(&["affected", "CVE-2022-27449"]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let table = String::from_utf8_lossy(&table.stdout);
    eprintln!("fleet affected:\n{table}");
    assert!(
        table.contains("mariadb-client") && table.contains("10.4.25-r0"),
        "{table}"
    );
    let by_package = fleet_json(&["affected", "--package", "musl", "--ecosystem", "Alpine", "--json"]);
    assert!(!by_package.as_array().unwrap().is_empty(), "{by_package}");
    let medium = fleet_json(&["list", "--min-severity", "medium", "--json"]);
    assert!(!medium.as_array().unwrap().is_empty(), "{medium}");
    let summary = fleet_json(&["summary", "--format", "json"]);
    assert!(
        summary["images_by_status"]["complete"].as_u64() >= Some(1),
        "{summary}"
    );
    let out = fleet(&["summary"]);
    eprintln!("fleet summary:\n{}", String::from_utf8_lossy(&out.stdout));
    let list = fleet(&["list"]);
    eprintln!("fleet list:\n{}", String::from_utf8_lossy(&list.stdout));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("findings"),
        "{}",
        stderr(&out)
    );
    let out = fleet(&["remove", &reference]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 image(s) removed"));
    let out = fleet(&["add", "bad ref"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("strata: "))
    );

    // `strata status` through the same connection options.
    let status = strata()
        .args(["status", "--server", &server.grpc, "-f", "json"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["version"].is_string());
    // Everything AdminService says: the workers one by one, the queues, the layer cache.
    assert!(status["workers"].is_array(), "{status}");
    assert!(status["queues"].is_array(), "{status}");
    assert!(status["layer_cache"]["layers"].is_u64(), "{status}");
}

#[test]
fn unreachable_server_exits_2_with_one_line() {
    // A port nothing listens on.
    let port = free_port();
    let out = strata()
        .args(["submit", "registry.example/app:1", "--wait", "--format", "sarif"])
        .args([
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--timeout-secs",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let line = error_line(&out);
    assert!(
        line.contains("cannot reach the server at http://127.0.0.1:"),
        "{line}"
    );

    // A token given on the command line never shows, whatever fails.
    let out = strata()
        .args(["fleet", "list", "--token", "hunter2-secret"])
        .args([
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--timeout-secs",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));

    // --fail-on needs --wait (a usage error is exit 2 too).
    let out = strata()
        .args(["submit", "registry.example/app:1", "--fail-on", "high"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = build_db(d);
    let registry = Registry::start().unwrap();
    let image = Image::builder().layer(vulnerable_layer()).build().unwrap();
    image.push(&registry, "team/tls", "1").await.unwrap();
    let reference = format!("{}/team/tls:1", registry.host());

    let server_ca = TestCa::new("strata test server CA");
    let client_ca = TestCa::new("strata test client CA");
    let (server_cert, server_key) = server_ca.leaf("strata-server", true, false);
    let (client_cert, client_key) = client_ca.leaf("ci-runner", false, false);
    let ca = write(d, "ca.pem", &server_ca.pem());
    let cert = write(d, "client.pem", &client_cert);
    let key = write(d, "client.key", &client_key);
    let token = "ci-token-0123456789abcdef";
    let tokens = write(d, "tokens", &format!("# name token\nci {token}\n"));
    let good = write(d, "good-token", &format!("{token}\n"));
    let wrong = write(d, "wrong-token", "not-the-token-0123456789\n");
    let server = Server::start(
        d,
        &db,
        &[
            "--tls-cert",
            &write(d, "server.pem", &server_cert),
            "--tls-key",
            &write(d, "server.key", &server_key),
            "--client-ca",
            &write(d, "client-ca.pem", &client_ca.pem()),
            "--token-file",
            &tokens,
            "--insecure-registry",
            &registry.host(),
        ],
    );
    assert!(server.grpc.starts_with("https://"));
    let run = |args: &[&str]| -> Output {
        strata()
            .args([
                "submit",
                &reference,
                "--insecure-registry",
                "--server",
                &server.grpc,
            ])
            .args(["--timeout-secs", "10"])
            .args(args)
            .output()
            .unwrap()
    };
    let mtls = [
        "--ca",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];

    // Everything right: a report.
    let out = run(&[&mtls[..], &["--token-file", &good, "--wait", "--format", "json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), server.log());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["findings"].as_array().is_some_and(|f| !f.is_empty()),
        "{report}"
    );
    assert!(!stderr(&out).contains(token));

    // The token in the environment works the same.
    let out = strata()
        .args(["status", "--server", &server.grpc])
        .args(mtls)
        .env("STRATA_TOKEN", token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // No token: UNAUTHENTICATED, saying how to give one.
    let out = run(&[&mtls[..], &["--wait"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("UNAUTHENTICATED") && line.contains("--token-file"),
        "{line}"
    );
    assert!(out.stdout.is_empty());

    // A wrong token: refused, and never echoed.
    let out = run(&[&mtls[..], &["--token-file", &wrong, "--wait"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("the server refused the token (UNAUTHENTICATED)"),
        "{line}"
    );
    assert!(!stderr(&out).contains("not-the-token"), "{}", stderr(&out));

    // No client certificate: the server will not talk to us.
    let out = run(&["--ca", &ca, "--token-file", &good, "--wait"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(error_line(&out).contains("--cert"), "{}", stderr(&out));

    // The server's certificate from a CA we do not trust (the system roots).
    let out = run(&["--cert", &cert, "--key", &key, "--token-file", &good, "--wait"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(line.contains("certificate") || line.contains("Unknown"), "{line}");

    // Plain gRPC to a TLS server: exit 2 too.
    let plain = server.grpc.replace("https://", "http://");
    let out = strata()
        .args(["submit", &reference, "--server", &plain, "--timeout-secs", "5"])
        .args(["--token-file", &good])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(error_line(&out).contains("https://"), "{}", stderr(&out));
}
