//! Shared plumbing for the server handles: binary lookup, free ports, readiness
//! probes and log capture.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// The checkout's root: the harness crate lives in `<root>/tests`.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every executable named `name` on `PATH`, in `PATH` order.
pub(crate) fn on_path(name: &str) -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .filter(|p| p.is_file())
        .collect()
}

/// A port that was free a moment ago. The caller starts its server on it and
/// retries with another one if the server then fails to bind (another process
/// may have taken it in between).
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("reading a bound port", e))?
        .port();
    Ok(port)
}

/// How a readiness probe went.
pub(crate) enum Probe {
    Ready,
    NotYet,
}

/// Polls `probe` every 25 ms until it is ready, the child exits, or `limit` passes.
/// Returns `Err(reason)` with what went wrong; the caller adds the log.
pub(crate) fn wait_ready(
    child: &mut Child,
    limit: Duration,
    mut probe: impl FnMut() -> Probe,
) -> std::result::Result<(), String> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("process exited early with {status}"));
        }
        if let Probe::Ready = probe() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!("not ready after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The status code of a one-shot HTTP/1.0 request to `127.0.0.1:port`, or `None`
/// when nothing answers yet. Hand-written: readiness probes and bucket creation
/// run in `start()`, which is synchronous (it also runs outside a tokio runtime),
/// and reqwest's blocking client panics inside one.
pub(crate) fn http_status(port: u16, method: &str, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    // The status line is "HTTP/1.x NNN ...": 12 bytes are enough.
    while filled < 12 {
        let n = stream.read(&mut head[filled..]).ok()?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let line = std::str::from_utf8(&head[..filled]).ok()?;
    line.split(' ').nth(1)?.trim().parse().ok()
}

/// The last 8 KiB of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(8192);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Kills and reaps a child; errors mean it was already gone.
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
