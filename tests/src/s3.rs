//! [`S3Server`]: moto in server mode, an S3-compatible endpoint on a free
//! loopback port. State lives in moto's memory; dropping the handle kills it.
//! Any access key and secret are accepted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{self, Probe};
use crate::{HarnessError, Result};

/// moto imports a lot of Python on start: give it time on a busy machine.
const START_LIMIT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 5;

pub struct S3Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl S3Server {
    /// Starts moto and waits until it answers `GET /`.
    pub fn start() -> Result<S3Server> {
        let binary = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("strata-s3-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temp dir for moto_server", e))?;
        let log_path = dir.path().join("moto.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = util::free_port()?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| HarnessError::io(format!("opening {}", log_path.display()), e))?;
            let log_err = log
                .try_clone()
                .map_err(|e| HarnessError::io("cloning a log file handle", e))?;
            let mut child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| HarnessError::io(format!("starting {}", binary.display()), e))?;
            let ready = || match util::http_status(port, "GET", "/") {
                Some(_) => Probe::Ready,
                None => Probe::NotYet,
            };
            match util::wait_ready(&mut child, START_LIMIT, ready) {
                Ok(()) => return Ok(S3Server { dir, port, child }),
                Err(reason) => {
                    util::kill(&mut child);
                    last_error = Some(HarnessError::NotReady {
                        what: format!("{} on port {port}", binary.display()),
                        reason,
                        log: util::log_tail(&log_path),
                    });
                }
            }
        }
        Err(last_error.unwrap_or_else(|| HarnessError::Binary("moto_server: no attempt made".into())))
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give an S3 client.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket with `PUT /<name>`.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        match util::http_status(self.port, "PUT", &format!("/{name}")) {
            Some(200) => Ok(()),
            status => Err(HarnessError::Binary(format!(
                "moto_server at {}: creating bucket {name}: status {status:?}\n{}",
                self.url(),
                util::log_tail(&self.dir.path().join("moto.log"))
            ))),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        util::kill(&mut self.child);
    }
}

fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STRATA_MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let venv = util::workspace_root().join(".ci/.venv/bin/moto_server");
    if venv.is_file() {
        return Ok(venv);
    }
    util::on_path("moto_server").into_iter().next().ok_or_else(|| {
        HarnessError::Binary(
            "moto_server not found (set STRATA_MOTO_SERVER, or \
             `.ci/.venv/bin/pip install 'moto[server]'`)"
                .into(),
        )
    })
}
