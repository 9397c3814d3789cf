//! Fixtures the coordinator crate's integration tests share: the test
//! vulnerability database, Debian layers, gRPC channels retried while a server
//! starts, waiting for a scan's `Done`, a `strata serve` process on free
//! ports, and a throwaway certificate authority.
//!
//! Like [`Cluster::builder`], anything that runs `strata` takes the binary
//! from the caller (the harness cannot name another crate's binary): tests
//! in the coordinator crate pass `env!("CARGO_BIN_EXE_strata")`.
//!
//! Everything here panics on failure, with the log or output involved: these
//! are test fixtures, and a panic is how a test fails.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use strata_proto::v1::{self, scan_event::Event, scan_service_client::ScanServiceClient};
use tonic::transport::{Channel, Endpoint};

use crate::image::{Compression, Image, ImageBuilder, Layer};
use crate::{Cluster, util};

// ---- processes and the vulnerability database -------------------------------

/// The OSV advisories of the shared test data, which every test database is
/// imported from.
pub const OSV_TESTDATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/osv/from-testdata"
);

/// Serializes whole tests within one test binary (each test that starts a
/// whole cluster holds the guard; the machine has two cores). A test that
/// panicked while holding it does not poison it for the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `command` (a `strata` command) as `db import --db <dir>/vulndb
/// <OSV_TESTDATA> <extra>...` and returns the database's path; panics with
/// its stderr if the import fails.
pub fn import_db(mut command: Command, dir: &Path, extra: &[&Path]) -> PathBuf {
    let db = dir.join("vulndb");
    let out = command
        .args(["db", "import", "--db", db.to_str().unwrap(), OSV_TESTDATA])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    db
}

/// [`import_db`] of [`OSV_TESTDATA`] alone, run as a plain `strata` command.
pub fn build_db(strata: impl AsRef<OsStr>, dir: &Path) -> PathBuf {
    import_db(Command::new(strata), dir, &[])
}

/// A `strata` command with nothing from the caller's environment that would
/// change its behaviour: every `STRATA_*` variable removed, and
/// `DOCKER_CONFIG` pointed at nothing (no credentials of the host leak in).
pub fn strata_command(strata: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(strata);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRATA_") {
            command.env_remove(key);
        }
    }
    command.env("DOCKER_CONFIG", "/nonexistent/strata-test");
    command
}

/// A port on 127.0.0.1 that was free a moment ago (another process may take
/// it before the caller binds it: retry on a fresh one if the server exits).
pub fn free_port() -> u16 {
    util::free_port().unwrap()
}

/// The status code of `GET /healthz` on `127.0.0.1:port`, or `None` while
/// nothing answers.
pub fn healthz(port: u16) -> Option<u16> {
    util::http_status(port, "GET", "/healthz")
}

/// A server process started by [`start_serve`] on two loopback ports;
/// killed (and reaped) on drop.
pub struct ServeProcess {
    child: Child,
    /// The port given for gRPC.
    pub grpc_port: u16,
    /// The port given for metrics, where `/healthz` answered.
    pub metrics_port: u16,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        util::kill(&mut self.child);
    }
}

/// Why one [`start_serve`] attempt gave up. The process is killed by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeFailure {
    /// It exited before it was ready: most likely a port was taken in
    /// between, so the caller tries again (fresh ports).
    Exited,
    /// Still not ready after the limit.
    NotReady,
}

/// One attempt at starting a server such as `strata serve`: picks a free
/// gRPC port and a free metrics port, calls `spawn(grpc_port, metrics_port)`,
/// then polls every 50 ms until `GET /healthz` on the metrics port answers
/// 200 and, with `wait_for_grpc`, the gRPC port also accepts a connection.
pub fn start_serve(
    limit: Duration,
    wait_for_grpc: bool,
    spawn: impl FnOnce(u16, u16) -> Child,
) -> Result<ServeProcess, ServeFailure> {
    let (grpc_port, metrics_port) = (free_port(), free_port());
    let mut process = ServeProcess {
        child: spawn(grpc_port, metrics_port),
        grpc_port,
        metrics_port,
    };
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = process.child.try_wait() {
            return Err(ServeFailure::Exited);
        }
        if healthz(metrics_port) == Some(200)
            && (!wait_for_grpc || TcpStream::connect((Ipv4Addr::LOCALHOST, grpc_port)).is_ok())
        {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            return Err(ServeFailure::NotReady);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- images -----------------------------------------------------------------

/// A dpkg status database with one package: zlib1g 1:1.2.13.dfsg-1 (source zlib).
pub const DEBIAN_ZLIB_STATUS: &str = "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\n\n";

/// `etc/os-release` of Debian `version_id` (`"12"`, `"7"`, …).
pub fn debian_os_release(version_id: &str) -> String {
    format!("ID=debian\nVERSION_ID=\"{version_id}\"\n")
}

/// A gzip layer of Debian `version_id`: `etc/os-release`, then `status` as
/// `var/lib/dpkg/status`.
pub fn debian_layer(version_id: &str, status: &str) -> Layer {
    Layer::builder()
        .file("etc/os-release", debian_os_release(version_id))
        .file("var/lib/dpkg/status", status)
        .build(Compression::Gzip)
        .unwrap()
}

/// An image builder with `base`'s layers, in order, for the caller to add
/// its own on top.
pub fn image_on(base: &[Layer]) -> ImageBuilder {
    base.iter()
        .fold(Image::builder(), |builder, layer| builder.layer(layer.clone()))
}

// ---- gRPC -------------------------------------------------------------------

/// A channel to `url`, tried again every `pause` while the server is not
/// accepting yet; the last error once `limit` has passed.
pub async fn connect_retrying(
    url: &str,
    limit: Duration,
    pause: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url.to_owned()).expect("a valid gRPC URL");
    let deadline = Instant::now() + limit;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(pause).await,
            Err(e) => return Err(e),
        }
    }
}

/// A channel of its own to the cluster's coordinator, retried every 200 ms
/// for `limit` while it starts or restarts; then panics with its log.
pub async fn coordinator_channel(cluster: &Cluster, limit: Duration) -> Channel {
    connect_retrying(&cluster.grpc_url(), limit, Duration::from_millis(200))
        .await
        .unwrap_or_else(|e| panic!("cannot reach the coordinator: {e}\n{}", cluster.coordinator_log()))
}

/// Waits up to `limit` for the `Done` event of scan `scan_id`, watching it
/// again (the stream replays) whenever the watch fails, the stream breaks or
/// stays quiet for 10 s, so it carries on across coordinator restarts. Each
/// watch connects with [`coordinator_channel`] and `connect_limit`. Panics
/// with the coordinator's log after `limit`.
pub async fn wait_done(
    cluster: &Cluster,
    scan_id: &str,
    limit: Duration,
    connect_limit: Duration,
) -> v1::Done {
    let deadline = Instant::now() + limit;
    loop {
        assert!(
            Instant::now() < deadline,
            "scan {scan_id} not done in {limit:?}\n--- coordinator ---\n{}",
            cluster.coordinator_log()
        );
        let mut client = ScanServiceClient::new(coordinator_channel(cluster, connect_limit).await);
        let Ok(resp) = client
            .watch_scan(v1::WatchScanRequest {
                scan_id: scan_id.to_owned(),
            })
            .await
        else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let mut stream = resp.into_inner();
        // A broken stream or a quiet spell ends this loop: watch again.
        while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            if let Some(Event::Done(done)) = event.event {
                return done;
            }
        }
    }
}

// ---- certificates -----------------------------------------------------------

/// A throwaway certificate authority (rcgen) for TLS and mTLS tests.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and its key (PEM) signed by this CA. `server`: for
    /// localhost and 127.0.0.1, else a client certificate named `cn`.
    /// `expired`: valid from 30 days ago until yesterday, else from yesterday
    /// for 30 days.
    pub fn leaf(&self, cn: &str, server: bool, expired: bool) -> (String, String) {
        let sans = if server {
            vec!["localhost".to_owned()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if server {
            params
                .subject_alt_names
                .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let now = time::OffsetDateTime::now_utc();
        if expired {
            params.not_before = now - time::Duration::days(30);
            params.not_after = now - time::Duration::days(1);
        } else {
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(30);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name`; the path, as a command-line argument.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// How a child process ended (see [`run_measured`]).
#[derive(Debug)]
pub struct Measured {
    /// The exit code; `None` when a signal ended it (or the limit killed it).
    pub code: Option<i32>,
    pub stdout: String,
    /// Its stderr, without GNU time's line.
    pub stderr: String,
    /// The process's own peak resident set, as the kernel counted it
    /// (`ru_maxrss`, reported by GNU time).
    pub peak_rss_bytes: u64,
    /// Killed for running past the limit.
    pub timed_out: bool,
}

/// GNU time's marker on the last line of a measured child's stderr.
const PEAK_MARK: &str = "strata-harness peak_rss_kib=";

/// Runs `command` to its end (killed past `limit`) under GNU time
/// (`/usr/bin/time`, Debian's `time`, installed by `.ci/install-deps`),
/// capturing its output and its own peak resident set: the kernel's
/// `ru_maxrss` of that one process, which time reads from `wait4` (this
/// crate forbids the `unsafe` calling it directly would need).
pub fn run_measured(command: Command, limit: Duration) -> Measured {
    use std::process::Stdio;
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg(format!("{PEAK_MARK}%M"))
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => timed.env(key, v),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    timed
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = timed.spawn().unwrap_or_else(|e| {
        panic!("spawning /usr/bin/time (Debian package `time`; .ci/install-deps installs it): {e}")
    });
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    use std::io::Read as _;
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the measured child") {
            break status;
        }
        if !timed_out && Instant::now() > deadline {
            // The measured process (time's child) first, then time.
            let _ = Command::new("pkill")
                .arg("-KILL")
                .arg("-P")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr.join().unwrap_or_default();
    let (peak, rest): (Vec<&str>, Vec<&str>) = stderr.lines().partition(|l| l.starts_with(PEAK_MARK));
    let peak_kib: u64 = peak
        .last()
        .and_then(|l| l[PEAK_MARK.len()..].trim().parse().ok())
        .unwrap_or(0);
    // GNU time says "Command exited with non-zero status N" before its line.
    let rest: Vec<&str> = rest
        .into_iter()
        .filter(|l| {
            !l.starts_with("Command exited with non-zero status")
                && !l.starts_with("Command terminated by signal")
        })
        .collect();
    Measured {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: rest.join("\n"),
        peak_rss_bytes: peak_kib * 1024,
        timed_out,
    }
}

/// The head of one HTTP/1.1 request on `conn` (method, path, headers: up to
/// the blank line), at most 64 KiB; `None` when the peer goes away or sends
/// more. For the small hostile servers tests write (a registry that
/// redirects, streams forever, stalls).
pub async fn read_request_head(conn: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return None;
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
