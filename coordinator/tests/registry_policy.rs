//! The registry policy on a real cluster (`strata coordinator` and `strata
//! worker` processes, nats-server, docker-registry): each rule refuses what
//! it should with `PERMISSION_DENIED` naming the rule, before any
//! connection is made to the refused place, and the audit log names the
//! caller. A "trap" listener stands for an internal service: it counts the
//! connections it gets, which must stay 0. A small hostile registry answers
//! `/v2/` and redirects every other request where the test tells it to.

// Each test holds a std Mutex across awaits on purpose: it serializes whole
// tests (each on its own runtime), so no task can wait on it from the same runtime.
#![allow(clippy::await_holding_lock)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use strata_harness::fixtures::{
    self, DEBIAN_ZLIB_STATUS as STATUS, build_db, debian_layer, image_on, serial,
};
use strata_harness::{Cluster, Registry};
use strata_proto::v1::{
    self, fleet_service_client::FleetServiceClient, scan_service_client::ScanServiceClient,
};
use tokio::io::AsyncWriteExt as _;
use tonic::Code;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A listener that only counts connections (and closes them).
struct Trap {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn trap() -> Trap {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    Trap { port, hits }
}

/// A registry that lets anyone in at `/v2/` and answers every other
/// request with a `302` to `location`.
async fn redirecting_registry(location: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                // One request per connection: read its head, answer, close.
                let Some(head) = fixtures::read_request_head(&mut conn).await else {
                    return;
                };
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let answer = if path == "/v2/" {
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                };
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

fn submit(reference: &str, insecure: bool) -> v1::SubmitImageRequest {
    v1::SubmitImageRequest {
        reference: reference.to_owned(),
        insecure_registry: insecure,
        wait: false,
        ..Default::default()
    }
}

/// The status a submit ends with (its first message, or the call's error).
async fn submit_status(
    client: &mut ScanServiceClient<tonic::transport::Channel>,
    req: v1::SubmitImageRequest,
) -> tonic::Status {
    match client.submit_image(req).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.message().await {
                Err(status) => status,
                Ok(event) => tonic::Status::ok(format!("{event:?}")),
            }
        }
    }
}

#[track_caller]
fn assert_refused(status: &tonic::Status, rule: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&format!("(registry policy: {rule})")),
        "names the rule {rule}: {status:?}"
    );
}

#[test]
fn each_rule_of_the_registry_policy_refuses_before_connecting() {
    let _serial = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start().unwrap();
        let image = image_on(&[debian_layer("12", STATUS)]).build().unwrap();
        image.push(&registry, "team/app", "1").await.unwrap();
        let internal = trap().await;
        // A hostile registry (named, so allowed on loopback) whose manifests
        // redirect to the trap over plain HTTP, and one whose redirect goes
        // to the cloud metadata address.
        let to_trap = redirecting_registry(format!("http://localhost:{}/v2/x", internal.port)).await;
        let to_metadata = redirecting_registry("https://169.254.169.254/latest/meta-data/".into()).await;
        let db = build_db(STRATA, dir.path());
        let cluster = Cluster::builder(STRATA)
            .workers(1)
            .db(&db)
            .insecure_registry(registry.host())
            .insecure_registry(format!("127.0.0.1:{to_trap}"))
            .insecure_registry(format!("127.0.0.1:{to_metadata}"))
            .coordinator_args([
                "--allow-registry",
                &registry.host(),
                "--allow-registry",
                "127.0.0.1:*",
                "--allow-registry",
                "local*",
                "--allow-registry",
                "169.254.*",
                "--allow-registry",
                "*.example.com",
                "--deny-registry",
                "blocked.example.com",
            ])
            .start()
            .unwrap();
        let channel = fixtures::coordinator_channel(&cluster, Duration::from_secs(30)).await;
        let mut scans = ScanServiceClient::new(channel.clone());

        // What the server lists works.
        let ok = submit_status(
            &mut scans,
            submit(&format!("{}/team/app:1", registry.host()), true),
        )
        .await;
        assert_eq!(ok.code(), Code::Ok, "{ok:?}\n{}", cluster.coordinator_log());

        let cases = [
            ("blocked.example.com/team/app:1", false, "denied_registries"),
            ("ghcr.io/team/app:1", false, "allowed_registries"),
            // Plain HTTP to a registry the server does not list.
            (
                &*format!("localhost:{}/team/app:1", internal.port),
                true,
                "insecure_registries",
            ),
            // A name resolving to loopback, not named by the operator.
            (
                &*format!("localhost:{}/team/app:1", internal.port),
                false,
                "allowed_networks",
            ),
            ("169.254.169.254/latest:1", false, "allowed_networks"),
            (
                &*format!("127.0.0.1:{}/team/app:1", internal.port),
                false,
                "allowed_networks",
            ),
            // Redirects: to plain HTTP elsewhere, to a link-local address.
            (
                &*format!("127.0.0.1:{to_trap}/team/app:1"),
                false,
                "insecure_registries",
            ),
            (
                &*format!("127.0.0.1:{to_metadata}/team/app:1"),
                false,
                "allowed_networks",
            ),
        ];
        for (reference, insecure, rule) in cases {
            let status = submit_status(&mut scans, submit(reference, insecure)).await;
            assert_refused(&status, rule);
        }

        // Registering is refused the same way: per image, and a repository whole.
        let mut fleet = FleetServiceClient::new(channel);
        let registered = fleet
            .register_images(v1::RegisterImagesRequest {
                references: vec![
                    "blocked.example.com/a:1".into(),
                    format!("{}/team/app:1", registry.host()),
                ],
                insecure_registry: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            registered.images[0]
                .error
                .contains("(registry policy: denied_registries)"),
            "{registered:?}"
        );
        assert_eq!(registered.images[1].error, "", "{registered:?}");
        let status = fleet
            .register_repository(v1::RegisterRepositoryRequest {
                repository: format!("localhost:{}/team/app", internal.port),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_refused(&status, "allowed_networks");

        assert_eq!(
            internal.hits.load(Ordering::SeqCst),
            0,
            "nothing reached the internal service"
        );
        let log = cluster.coordinator_log();
        let refusals: Vec<&str> = log.lines().filter(|l| l.contains("request refused")).collect();
        assert_eq!(
            refusals.len(),
            cases.len() + 2,
            "one audit line per refusal:\n{log}"
        );
        assert!(
            refusals.iter().all(|l| l.contains("caller=127.0.0.1:")),
            "the audit line names the caller:\n{log}"
        );
        assert!(
            refusals
                .iter()
                .any(|l| l.contains("call=\"RegisterRepository\"") || l.contains("call=RegisterRepository")),
            "{log}"
        );
    });
}

#[test]
fn a_bad_policy_setting_stops_the_coordinator_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = fixtures::strata_command(STRATA)
        .args(["coordinator", "--store"])
        .arg(format!("file://{}", dir.path().display()))
        .args(["--db", "/nonexistent", "--allow-network", "10.0.0.0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("allowed_networks: \"10.0.0.0\""), "{stderr}");
}
