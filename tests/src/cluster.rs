//! [`Cluster`]: a coordinator and workers as real `strata` processes, with a
//! real [`NatsServer`] between them, each on free loopback ports.
//!
//! # Contract
//! - The `strata` binary is given by the caller, because the harness crate
//!   cannot name another crate's binary: integration tests in the coordinator
//!   crate pass `env!("CARGO_BIN_EXE_strata")`.
//! - [`ClusterBuilder::start`] starts, in this order and each only once the
//!   previous one is ready: a [`NatsServer`]; the coordinator,
//!   `strata coordinator --nats URL --store URL --listen 127.0.0.1:G
//!   --metrics-listen 127.0.0.1:M --db FILE [--insecure-registry H]...
//!   [coordinator_args]...`; then each worker, `strata worker --nats URL
//!   --store URL --metrics-listen 127.0.0.1:M --worker-id worker-N
//!   [--insecure-registry H]... [worker_args]...`. A process is ready when
//!   `GET /healthz` on its metrics port answers 200; it gets 30 s, else the
//!   start fails with [`HarnessError::NotReady`] carrying its log tail (and
//!   "exited early" when it died first). A process that exits before it is
//!   ready is retried a few times on fresh ports (another process may have
//!   taken one in between), like the other servers here.
//! - Every process runs with the inherited environment minus every `STRATA_*`
//!   variable, plus `STRATA_LOG=info`, `DOCKER_CONFIG=/nonexistent/strata-test`
//!   (no credentials of the host leak in), plus [`ClusterBuilder::env`]
//!   (applied last, so it can override those).
//! - Each process's stdout and stderr go, appended across restarts, to
//!   `<dir>/logs/<name>.log` (`coordinator`, `worker-0`, `worker-1`, …);
//!   [`Cluster::coordinator_log`] and [`Cluster::worker_log`] read them whole.
//! - The object store defaults to `file://<dir>/store` (created), readable
//!   with [`Cluster::store_dir`].
//! - Workers are addressed by index, in start order; ids are `worker-<index>`
//!   and never reused. A restarted process ([`Cluster::restart_worker`],
//!   [`Cluster::restart_coordinator`]) gets the same ports, id and arguments.
//! - Dropping the handle SIGKILLs every process, then the NATS server, and
//!   removes the directory.
//!
//! # Several coordinators (active/active)
//! - [`ClusterBuilder::coordinators`]`(n)` starts `n` coordinators, each on
//!   ports of its own, all on the one NATS server and store. Coordinator 0 is
//!   the one every unindexed method (`grpc_url`, `kill_coordinator`, …)
//!   means; the `*_of(i)` / `*_at(i)` methods address any of them. With
//!   `n > 1` each gets `--coordinator-id coordinator-<i>` (before
//!   `coordinator_args`); with `n == 1` the command line is unchanged.
//!   Log files: `coordinator` for 0, `coordinator-1`, `coordinator-2`, ….
//! - Coordinators start one after the other, each once the previous one is
//!   ready, unless [`ClusterBuilder::start_coordinators_together`]: then all
//!   are spawned before any is waited for (racing on an empty NATS).
//! - [`ClusterBuilder::coordinator_nats_via_proxy`]`(i)` puts a [`TcpProxy`]
//!   between coordinator `i` and NATS ([`Cluster::nats_proxy_of`]), to cut
//!   NATS from that coordinator alone.
//!
//! # Example (from a test in the coordinator crate)
//! ```no_run
//! # fn main() -> strata_harness::Result<()> {
//! # let db = std::path::PathBuf::from("db");
//! # let strata_bin = "strata";
//! use strata_harness::{Cluster, Registry, RegistryProxy};
//! let registry = Registry::start()?;
//! let proxy = RegistryProxy::builder(&registry).start()?;
//! // In the coordinator crate's tests: env!("CARGO_BIN_EXE_strata").
//! let mut cluster = Cluster::builder(strata_bin)
//!     .workers(2)
//!     .db(&db)
//!     .insecure_registry(proxy.host())
//!     .worker_args(["--concurrency", "2"])
//!     .start()?;
//! // ... scan through cluster.grpc_url() ...
//! cluster.kill_worker(0);
//! let metrics = cluster.metrics(&cluster.worker_metrics_url(1))?;
//! # let _ = metrics;
//! # Ok(())
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::nats::NatsServer;
use crate::tcp_proxy::TcpProxy;
use crate::util::{self, Probe};
use crate::{HarnessError, Result};

/// Bound on how long one process may take to answer `/healthz`.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Bound on how long a SIGTERMed process may take to exit.
const TERM_LIMIT: Duration = Duration::from_secs(30);
/// Attempts when a process exits before it is ready (a port taken in between).
const PORT_ATTEMPTS: usize = 3;

/// Options for [`Cluster`]; see [`Cluster::builder`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    binary: PathBuf,
    workers: usize,
    db: Option<PathBuf>,
    insecure_registries: Vec<String>,
    worker_args: Vec<OsString>,
    coordinator_args: Vec<OsString>,
    store_url: Option<String>,
    env: Vec<(OsString, OsString)>,
    coordinators: usize,
    coordinators_together: bool,
    nats_via_proxy: Vec<usize>,
}

impl ClusterBuilder {
    /// How many coordinators to start (default 1; at least 1). With more
    /// than one, each gets `--coordinator-id coordinator-<i>`.
    pub fn coordinators(mut self, count: usize) -> Self {
        self.coordinators = count.max(1);
        self
    }

    /// Spawn every coordinator before waiting for any to be ready (default:
    /// one after the other), so they race on an empty NATS.
    pub fn start_coordinators_together(mut self, together: bool) -> Self {
        self.coordinators_together = together;
        self
    }

    /// Coordinator `i` reaches NATS through a [`TcpProxy`] the test can cut
    /// ([`Cluster::nats_proxy_of`]). Repeatable; workers always connect directly.
    pub fn coordinator_nats_via_proxy(mut self, i: usize) -> Self {
        if !self.nats_via_proxy.contains(&i) {
            self.nats_via_proxy.push(i);
        }
        self
    }

    /// How many workers to start (default 1; 0 is allowed).
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = count;
        self
    }

    /// The vulnerability database file the coordinator loads (`--db`). Required.
    pub fn db(mut self, path: impl Into<PathBuf>) -> Self {
        self.db = Some(path.into());
        self
    }

    /// A plain-HTTP registry (`HOST:PORT`), passed to every process as
    /// `--insecure-registry`. Repeatable.
    pub fn insecure_registry(mut self, host: impl Into<String>) -> Self {
        self.insecure_registries.push(host.into());
        self
    }

    /// Extra arguments for every worker, after the harness's own.
    pub fn worker_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.worker_args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Extra arguments for every coordinator, after the harness's own.
    pub fn coordinator_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.coordinator_args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The object store every process uses (`--store`), e.g. `s3://bucket`.
    /// Default: `file://<cluster dir>/store`.
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// An extra environment variable for every process (e.g. `AWS_ENDPOINT`).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts NATS, the coordinator and the workers, each once the previous
    /// one is ready; see the module documentation.
    pub fn start(self) -> Result<Cluster> {
        if !self.binary.is_file() {
            return Err(HarnessError::Binary(format!(
                "strata binary {} not found (integration tests pass env!(\"CARGO_BIN_EXE_strata\"))",
                self.binary.display()
            )));
        }
        let db = self.db.clone().ok_or_else(|| {
            HarnessError::Binary("Cluster: no vulnerability db given (call .db(path))".into())
        })?;
        let dir = tempfile::Builder::new()
            .prefix("strata-cluster-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temp dir for the cluster", e))?;
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs)
            .map_err(|e| HarnessError::io(format!("creating {}", logs.display()), e))?;
        let (store_url, default_store) = match &self.store_url {
            Some(url) => (url.clone(), None),
            None => {
                let store = dir.path().join("store");
                std::fs::create_dir(&store)
                    .map_err(|e| HarnessError::io(format!("creating {}", store.display()), e))?;
                (format!("file://{}", store.display()), Some(store))
            }
        };
        let nats = NatsServer::start()?;
        let nats_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, nats.port()));
        let mut nats_proxies = Vec::new();
        for i in 0..self.coordinators {
            nats_proxies.push(if self.nats_via_proxy.contains(&i) {
                Some(TcpProxy::start(nats_addr)?)
            } else {
                None
            });
        }
        let mut cluster = Cluster {
            spawner: Spawner {
                binary: self.binary,
                env: self.env,
                logs,
            },
            dir,
            nats,
            store_url,
            default_store,
            db,
            insecure_registries: self.insecure_registries,
            worker_args: self.worker_args,
            coordinator_args: self.coordinator_args,
            coordinator_total: self.coordinators,
            coordinators: Vec::new(),
            nats_proxies,
            workers: Vec::new(),
        };
        // On an error below, dropping `cluster` kills what was started.
        if self.coordinators_together {
            cluster.launch_coordinators_together()?;
        } else {
            for i in 0..self.coordinators {
                let proc = cluster.launch_coordinator(i)?;
                cluster.coordinators.push(proc);
            }
        }
        for _ in 0..self.workers {
            cluster.start_worker()?;
        }
        Ok(cluster)
    }
}

/// One `strata` process the cluster runs.
struct Proc {
    /// `coordinator` or `worker-N`: its log file's name too.
    name: String,
    args: Vec<OsString>,
    metrics_port: u16,
    /// The gRPC port of a coordinator (0 for a worker).
    grpc_port: u16,
    child: Option<Child>,
}

/// A running cluster; see the module documentation.
pub struct Cluster {
    spawner: Spawner,
    dir: tempfile::TempDir,
    nats: NatsServer,
    store_url: String,
    default_store: Option<PathBuf>,
    db: PathBuf,
    insecure_registries: Vec<String>,
    worker_args: Vec<OsString>,
    coordinator_args: Vec<OsString>,
    /// How many coordinators the builder asked for.
    coordinator_total: usize,
    /// By index; complete once [`ClusterBuilder::start`] returns.
    coordinators: Vec<Proc>,
    /// Per coordinator: the proxy it reaches NATS through, if any.
    nats_proxies: Vec<Option<TcpProxy>>,
    workers: Vec<Proc>,
}

impl Cluster {
    /// A cluster running `strata_bin` (in the coordinator crate's tests:
    /// `env!("CARGO_BIN_EXE_strata")`), one worker unless told otherwise.
    pub fn builder(strata_bin: impl Into<PathBuf>) -> ClusterBuilder {
        ClusterBuilder {
            binary: strata_bin.into(),
            workers: 1,
            db: None,
            insecure_registries: Vec::new(),
            worker_args: Vec::new(),
            coordinator_args: Vec::new(),
            store_url: None,
            env: Vec::new(),
            coordinators: 1,
            coordinators_together: false,
            nats_via_proxy: Vec::new(),
        }
    }

    /// `http://127.0.0.1:PORT`, the coordinator's gRPC endpoint.
    pub fn grpc_url(&self) -> String {
        self.grpc_url_of(0)
    }

    /// `http://127.0.0.1:PORT`, coordinator `i`'s gRPC endpoint. Panics when
    /// there is no coordinator `i`.
    pub fn grpc_url_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.coordinator_at(i).grpc_port)
    }

    /// Every coordinator's gRPC endpoint, in index order.
    pub fn grpc_urls(&self) -> Vec<String> {
        (0..self.coordinators.len())
            .map(|i| self.grpc_url_of(i))
            .collect()
    }

    /// How many coordinators were started (running or not).
    pub fn coordinator_count(&self) -> usize {
        self.coordinators.len()
    }

    /// Coordinator `i`'s `--coordinator-id` (`coordinator-<i>`; given on its
    /// command line only when the cluster has more than one).
    pub fn coordinator_id_of(&self, i: usize) -> String {
        format!("coordinator-{i}")
    }

    /// `http://127.0.0.1:PORT/metrics` of the coordinator.
    pub fn coordinator_metrics_url(&self) -> String {
        self.coordinator_metrics_url_of(0)
    }

    /// `http://127.0.0.1:PORT/metrics` of coordinator `i`.
    pub fn coordinator_metrics_url_of(&self, i: usize) -> String {
        metrics_url(self.coordinator_at(i).metrics_port)
    }

    /// The proxy coordinator `i` reaches NATS through
    /// ([`ClusterBuilder::coordinator_nats_via_proxy`]), if any.
    pub fn nats_proxy_of(&self, i: usize) -> Option<&TcpProxy> {
        self.nats_proxies.get(i)?.as_ref()
    }

    /// `http://127.0.0.1:PORT/metrics` of worker `i`. Panics when there is no
    /// worker `i`.
    pub fn worker_metrics_url(&self, i: usize) -> String {
        metrics_url(self.worker(i).metrics_port)
    }

    /// How many workers were started (running or not).
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Worker `i`'s `--worker-id` (`worker-<i>`).
    pub fn worker_id(&self, i: usize) -> String {
        self.worker(i).name.clone()
    }

    /// The coordinator's process id, while it runs (for its CPU time and
    /// memory in `/proc`).
    pub fn coordinator_pid(&self) -> Option<u32> {
        self.coordinators.first()?.child.as_ref().map(Child::id)
    }

    /// Coordinator `i`'s process id, while it runs.
    pub fn coordinator_pid_of(&self, i: usize) -> Option<u32> {
        self.coordinators.get(i)?.child.as_ref().map(Child::id)
    }

    /// Worker `i`'s process id, while it runs.
    pub fn worker_pid(&self, i: usize) -> Option<u32> {
        self.worker(i).child.as_ref().map(Child::id)
    }

    /// The NATS server the processes use.
    pub fn nats(&self) -> &NatsServer {
        &self.nats
    }

    /// The NATS server, to stop or restart it (same port, same store).
    pub fn nats_mut(&mut self) -> &mut NatsServer {
        &mut self.nats
    }

    /// The `--store` URL every process was given.
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// The default `file://` store's directory; `None` with
    /// [`ClusterBuilder::store_url`].
    pub fn store_dir(&self) -> Option<PathBuf> {
        self.default_store.clone()
    }

    /// The directory holding `logs/` (and `store/` by default).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs worker `i` (as a crash would) and waits for it to exit.
    /// Nothing happens when it is not running. Panics when there is no worker `i`.
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut child) = self.worker_mut(i).child.take() {
            util::kill(&mut child);
        }
    }

    /// Sends SIGTERM to worker `i` and waits up to 30 s for it to exit;
    /// returns how it exited. When it does not exit in time, it is SIGKILLed
    /// and this is an error with its log tail. Panics when there is no worker `i`.
    pub fn terminate_worker(&mut self, i: usize) -> Result<ExitStatus> {
        let logs = self.spawner.logs.clone();
        terminate(self.worker_mut(i), &logs)
    }

    /// Starts one more worker (next index, new id, new port) and waits until
    /// it is ready; returns its index.
    pub fn start_worker(&mut self) -> Result<usize> {
        let index = self.workers.len();
        let name = format!("worker-{index}");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let metrics_port = util::free_port()?;
            let args = self.worker_command(&name, metrics_port);
            let mut proc = Proc {
                name: name.clone(),
                args,
                metrics_port,
                grpc_port: 0,
                child: None,
            };
            match self.spawner.launch(&mut proc) {
                Ok(()) => {
                    self.workers.push(proc);
                    return Ok(index);
                }
                Err(Launch::ExitedEarly(e)) => last_error = Some(e),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| HarnessError::Binary(format!("{name}: no attempt made"))))
    }

    /// Kills worker `i` if it runs and starts it again with the same id, port
    /// and arguments; waits until it is ready. Panics when there is no worker `i`.
    pub fn restart_worker(&mut self, i: usize) -> Result<()> {
        self.kill_worker(i);
        let count = self.workers.len();
        let proc = self
            .workers
            .get_mut(i)
            .unwrap_or_else(|| panic!("no worker {i}: the cluster has {count}"));
        self.spawner.relaunch(proc)
    }

    /// SIGKILLs the coordinator and waits for it to exit (nothing happens
    /// when it is not running).
    pub fn kill_coordinator(&mut self) {
        self.kill_coordinator_at(0);
    }

    /// SIGKILLs coordinator `i` and waits for it to exit (nothing happens
    /// when it is not running). Panics when there is no coordinator `i`.
    pub fn kill_coordinator_at(&mut self, i: usize) {
        if let Some(mut child) = self.coordinator_at_mut(i).child.take() {
            util::kill(&mut child);
        }
    }

    /// Sends SIGTERM to the coordinator and waits up to 30 s for it to exit;
    /// as [`terminate_worker`](Self::terminate_worker).
    pub fn terminate_coordinator(&mut self) -> Result<ExitStatus> {
        self.terminate_coordinator_at(0)
    }

    /// [`terminate_coordinator`](Self::terminate_coordinator) for coordinator `i`.
    pub fn terminate_coordinator_at(&mut self, i: usize) -> Result<ExitStatus> {
        let logs = self.spawner.logs.clone();
        terminate(self.coordinator_at_mut(i), &logs)
    }

    /// Kills the coordinator if it runs and starts it again on the same
    /// ports with the same arguments; waits until it is ready.
    pub fn restart_coordinator(&mut self) -> Result<()> {
        self.restart_coordinator_at(0)
    }

    /// [`restart_coordinator`](Self::restart_coordinator) for coordinator `i`.
    pub fn restart_coordinator_at(&mut self, i: usize) -> Result<()> {
        self.kill_coordinator_at(i);
        self.coordinator_at(i);
        self.spawner.relaunch(&mut self.coordinators[i])
    }

    /// Spawns coordinator `i` again (same ports, id and arguments) after a
    /// kill or terminate, **without** waiting for it to be ready (so several
    /// can be started at once); follow with
    /// [`wait_coordinator_ready_at`](Self::wait_coordinator_ready_at). An
    /// error when it is running already.
    pub fn start_coordinator_at(&mut self, i: usize) -> Result<()> {
        let proc = self.coordinator_at_mut(i);
        if proc.child.is_some() {
            return Err(HarnessError::Binary(format!(
                "strata {}: cannot start it, it is running",
                proc.name
            )));
        }
        self.spawner
            .spawn(&mut self.coordinators[i])
            .map_err(Launch::into_error)
    }

    /// Waits (30 s) until coordinator `i` answers `/healthz`; when it does
    /// not, it is killed and this is [`HarnessError::NotReady`] with its log tail.
    pub fn wait_coordinator_ready_at(&mut self, i: usize) -> Result<()> {
        self.coordinator_at(i);
        self.spawner
            .wait_ready(&mut self.coordinators[i])
            .map_err(Launch::into_error)
    }

    /// The coordinator's whole log (stdout and stderr, every run).
    pub fn coordinator_log(&self) -> String {
        self.coordinator_log_of(0)
    }

    /// Coordinator `i`'s whole log (`logs/coordinator.log` for 0,
    /// `logs/coordinator-<i>.log` for the others).
    pub fn coordinator_log_of(&self, i: usize) -> String {
        read_log(&self.spawner.log_path(&coordinator_name(i)))
    }

    /// Worker `i`'s whole log (stdout and stderr, every run). Panics when
    /// there is no worker `i`.
    pub fn worker_log(&self, i: usize) -> String {
        read_log(&self.spawner.log_path(&self.worker(i).name))
    }

    /// The body of `GET url` on a loopback address: the text of a
    /// `/metrics` endpoint. `url` is one of the `*_metrics_url()`s, or an
    /// `http://127.0.0.1:PORT` base to which `/metrics` is added. Any status
    /// other than 200 is an error with the body.
    pub fn metrics(&self, url: &str) -> Result<String> {
        let full = if url.trim_end_matches('/').ends_with("/metrics") {
            url.to_owned()
        } else {
            format!("{}/metrics", url.trim_end_matches('/'))
        };
        let (status, body) = http_get(&full)?;
        if status != 200 {
            return Err(HarnessError::Binary(format!("GET {full}: HTTP {status}: {body}")));
        }
        Ok(body)
    }

    fn coordinator_at(&self, i: usize) -> &Proc {
        let count = self.coordinators.len();
        self.coordinators
            .get(i)
            .unwrap_or_else(|| panic!("no coordinator {i}: the cluster has {count}"))
    }

    fn coordinator_at_mut(&mut self, i: usize) -> &mut Proc {
        let count = self.coordinators.len();
        self.coordinators
            .get_mut(i)
            .unwrap_or_else(|| panic!("no coordinator {i}: the cluster has {count}"))
    }

    fn worker(&self, i: usize) -> &Proc {
        let count = self.workers.len();
        self.workers
            .get(i)
            .unwrap_or_else(|| panic!("no worker {i}: the cluster has {count}"))
    }

    fn worker_mut(&mut self, i: usize) -> &mut Proc {
        let count = self.workers.len();
        self.workers
            .get_mut(i)
            .unwrap_or_else(|| panic!("no worker {i}: the cluster has {count}"))
    }

    /// The flags every process gets: `--nats`, `--store`.
    fn common_args(&self, nats_url: String) -> Vec<OsString> {
        vec![
            "--nats".into(),
            nats_url.into(),
            "--store".into(),
            self.store_url.clone().into(),
        ]
    }

    fn insecure_args(&self) -> Vec<OsString> {
        self.insecure_registries
            .iter()
            .flat_map(|host| ["--insecure-registry".into(), host.into()])
            .collect()
    }

    #[cfg(test)]
    fn coordinator_command(&self, grpc_port: u16, metrics_port: u16) -> Vec<OsString> {
        self.coordinator_command_at(0, grpc_port, metrics_port)
    }

    fn coordinator_command_at(&self, i: usize, grpc_port: u16, metrics_port: u16) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["coordinator".into()];
        let nats_url = match self.nats_proxy_of(i) {
            Some(proxy) => format!("nats://{}", proxy.host()),
            None => self.nats.url(),
        };
        args.extend(self.common_args(nats_url));
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{grpc_port}").into(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}").into(),
            "--db".into(),
            self.db.clone().into_os_string(),
        ]);
        if self.coordinator_total > 1 {
            args.extend(["--coordinator-id".into(), self.coordinator_id_of(i).into()]);
        }
        args.extend(self.insecure_args());
        args.extend(self.coordinator_args.iter().cloned());
        args
    }

    fn worker_command(&self, name: &str, metrics_port: u16) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["worker".into()];
        args.extend(self.common_args(self.nats.url()));
        args.extend([
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}").into(),
            "--worker-id".into(),
            name.into(),
        ]);
        args.extend(self.insecure_args());
        args.extend(self.worker_args.iter().cloned());
        args
    }

    /// A coordinator process on fresh ports, not yet spawned.
    fn coordinator_proc(&self, i: usize) -> Result<Proc> {
        let grpc_port = util::free_port()?;
        let metrics_port = util::free_port()?;
        Ok(Proc {
            name: coordinator_name(i),
            args: self.coordinator_command_at(i, grpc_port, metrics_port),
            metrics_port,
            grpc_port,
            child: None,
        })
    }

    /// The first start of coordinator `i`, on fresh ports.
    fn launch_coordinator(&mut self, i: usize) -> Result<Proc> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let mut proc = self.coordinator_proc(i)?;
            match self.spawner.launch(&mut proc) {
                Ok(()) => return Ok(proc),
                Err(Launch::ExitedEarly(e)) => last_error = Some(e),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| HarnessError::Binary(format!("{}: no attempt made", coordinator_name(i)))))
    }

    /// Every coordinator spawned, then each waited for; one that exited
    /// early (a port taken) is launched again on fresh ports by itself.
    fn launch_coordinators_together(&mut self) -> Result<()> {
        for i in 0..self.coordinator_total {
            let mut proc = self.coordinator_proc(i)?;
            let spawned = self.spawner.spawn(&mut proc);
            self.coordinators.push(proc);
            spawned.map_err(Launch::into_error)?;
        }
        for i in 0..self.coordinator_total {
            match self.spawner.wait_ready(&mut self.coordinators[i]) {
                Ok(()) => {}
                Err(Launch::ExitedEarly(_)) => self.coordinators[i] = self.launch_coordinator(i)?,
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `coordinator` for 0 (as before several existed), `coordinator-<i>` else.
fn coordinator_name(i: usize) -> String {
    if i == 0 {
        "coordinator".to_owned()
    } else {
        format!("coordinator-{i}")
    }
}

/// What launching a process needs, apart from the process: a field of its
/// own so a process can be relaunched while it sits in the cluster's list.
struct Spawner {
    binary: PathBuf,
    env: Vec<(OsString, OsString)>,
    logs: PathBuf,
}

impl Spawner {
    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `proc` again with its ports and arguments, retrying a few times
    /// while its old port may still be held.
    fn relaunch(&self, proc: &mut Proc) -> Result<()> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match self.launch(proc) {
                Ok(()) => return Ok(()),
                Err(Launch::ExitedEarly(e)) => last_error = Some(e),
                Err(Launch::Failed(e)) => return Err(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last_error.unwrap_or_else(|| HarnessError::Binary(format!("{}: no attempt made", proc.name))))
    }

    /// Spawns `proc` and waits for its `/healthz`.
    fn launch(&self, proc: &mut Proc) -> std::result::Result<(), Launch> {
        self.spawn(proc)?;
        self.wait_ready(proc)
    }

    /// Spawns `proc` (its child is set) without waiting for it.
    fn spawn(&self, proc: &mut Proc) -> std::result::Result<(), Launch> {
        let log_path = self.log_path(&proc.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Launch::Failed(HarnessError::io(format!("opening {}", log_path.display()), e)))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Launch::Failed(HarnessError::io("cloning a log file handle", e)))?;
        let mut command = Command::new(&self.binary);
        command
            .args(&proc.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                command.env_remove(key);
            }
        }
        command
            .env("STRATA_LOG", "info")
            .env("DOCKER_CONFIG", "/nonexistent/strata-test");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let child = command.spawn().map_err(|e| {
            Launch::Failed(HarnessError::io(
                format!("starting {} {}", self.binary.display(), proc.name),
                e,
            ))
        })?;
        proc.child = Some(child);
        Ok(())
    }

    /// Waits for a spawned `proc`'s `/healthz`; on failure it is killed and
    /// its child cleared.
    fn wait_ready(&self, proc: &mut Proc) -> std::result::Result<(), Launch> {
        let log_path = self.log_path(&proc.name);
        let Some(mut child) = proc.child.take() else {
            return Err(Launch::Failed(HarnessError::Binary(format!(
                "strata {}: not running",
                proc.name
            ))));
        };
        let port = proc.metrics_port;
        let ready = || match util::http_status(port, "GET", "/healthz") {
            Some(200) => Probe::Ready,
            _ => Probe::NotYet,
        };
        match util::wait_ready(&mut child, START_LIMIT, ready) {
            Ok(()) => {
                proc.child = Some(child);
                Ok(())
            }
            Err(reason) => {
                let exited_early = child.try_wait().ok().flatten().is_some();
                util::kill(&mut child);
                let error = HarnessError::NotReady {
                    what: format!(
                        "strata {} ({} {})",
                        proc.name,
                        self.binary.display(),
                        display_args(&proc.args)
                    ),
                    reason,
                    log: util::log_tail(&log_path),
                };
                Err(if exited_early {
                    Launch::ExitedEarly(error)
                } else {
                    Launch::Failed(error)
                })
            }
        }
    }
}

/// Why a launch failed: an early exit may be a port taken in between (worth
/// another try); anything else is final.
enum Launch {
    ExitedEarly(HarnessError),
    Failed(HarnessError),
}

impl Launch {
    fn into_error(self) -> HarnessError {
        match self {
            Launch::ExitedEarly(e) | Launch::Failed(e) => e,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.workers.iter_mut().chain(self.coordinators.iter_mut()) {
            if let Some(mut child) = proc.child.take() {
                util::kill(&mut child);
            }
        }
        // Then `nats` stops and `dir` is removed as the fields drop.
    }
}

fn metrics_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/metrics")
}

fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn display_args(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// SIGTERM through `kill(1)` (the workspace forbids `unsafe`, so no
/// `libc::kill`), then waits for the exit.
fn terminate(proc: &mut Proc, logs: &Path) -> Result<ExitStatus> {
    let log = || util::log_tail(&logs.join(format!("{}.log", proc.name)));
    let Some(mut child) = proc.child.take() else {
        return Err(HarnessError::Binary(format!(
            "strata {}: cannot terminate it, it is not running",
            proc.name
        )));
    };
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .stdin(Stdio::null())
        .status();
    match sent {
        Ok(status) if status.success() => {}
        Ok(status) => {
            // It may have exited on its own already.
            if let Ok(Some(exit)) = child.try_wait() {
                return Ok(exit);
            }
            util::kill(&mut child);
            return Err(HarnessError::Binary(format!(
                "strata {}: `kill -TERM {pid}` failed with {status}; killed it",
                proc.name
            )));
        }
        Err(e) => {
            util::kill(&mut child);
            return Err(HarnessError::io(format!("running `kill -TERM {pid}`"), e));
        }
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if start.elapsed() > TERM_LIMIT => {
                util::kill(&mut child);
                return Err(HarnessError::Binary(format!(
                    "strata {} (pid {pid}) did not exit within {TERM_LIMIT:?} of SIGTERM; \
                     SIGKILLed it\n--- its log ---\n{}",
                    proc.name,
                    log()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(25)),
            Err(e) => {
                util::kill(&mut child);
                return Err(HarnessError::io(
                    format!("waiting for strata {} (pid {pid})", proc.name),
                    e,
                ));
            }
        }
    }
}

/// `GET` over HTTP/1.0 to a `http://127.0.0.1:PORT/path` URL: status and body.
/// Hand-written for the same reason as `util::http_status`: this API is
/// synchronous and reqwest's blocking client panics inside a runtime.
fn http_get(url: &str) -> Result<(u16, String)> {
    let bad = || HarnessError::Binary(format!("not a http://HOST:PORT/PATH URL: {url}"));
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .replace("localhost", &Ipv4Addr::LOCALHOST.to_string())
        .parse()
        .map_err(|_| bad())?;
    let io = |e| HarnessError::io(format!("GET {url}"), e);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| HarnessError::Binary(format!("GET {url}: malformed response: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| HarnessError::Binary(format!("GET {url}: malformed status line: {head:?}")))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_file(dir: &Path) -> PathBuf {
        let db = dir.join("strata.db");
        std::fs::write(&db, b"not a real db").expect("writing a db file");
        db
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = Cluster::builder("/nonexistent/strata")
            .db(db_file(dir.path()))
            .start()
            .err()
            .expect("a missing binary cannot start");
        assert!(matches!(err, HarnessError::Binary(_)), "{err}");
        let message = err.to_string();
        assert!(message.contains("/nonexistent/strata"), "{message}");
        assert!(message.contains("CARGO_BIN_EXE_strata"), "{message}");
    }

    #[test]
    fn a_missing_db_is_a_clear_error() {
        let err = Cluster::builder("/bin/false").start().err().expect("no db given");
        assert!(err.to_string().contains(".db(path)"), "{err}");
    }

    #[test]
    fn a_binary_that_exits_is_not_ready_with_exited_early() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = Cluster::builder("/bin/false")
            .db(db_file(dir.path()))
            .start()
            .err()
            .expect("/bin/false never answers /healthz");
        let HarnessError::NotReady { what, reason, .. } = &err else {
            panic!("expected NotReady, got {err}");
        };
        assert!(what.contains("coordinator"), "{what}");
        assert!(what.contains("--metrics-listen 127.0.0.1:"), "{what}");
        assert!(reason.contains("exited early"), "{reason}");
    }

    #[test]
    fn builds_the_documented_command_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Only the argument building is exercised: a cluster value without
        // processes, dropped at the end (it kills nothing).
        let nats = match NatsServer::start() {
            Ok(nats) => nats,
            Err(e) => panic!("{e}"),
        };
        let cluster = Cluster {
            spawner: Spawner {
                binary: "/bin/false".into(),
                env: Vec::new(),
                logs: dir.path().join("logs"),
            },
            dir: tempfile::tempdir().expect("temp dir"),
            nats,
            store_url: "file:///tmp/store".into(),
            default_store: None,
            db: dir.path().join("db"),
            insecure_registries: vec!["127.0.0.1:5000".into(), "127.0.0.1:5001".into()],
            worker_args: vec!["--concurrency".into(), "2".into()],
            coordinator_args: vec!["--max-deliver".into(), "3".into()],
            coordinator_total: 1,
            coordinators: Vec::new(),
            nats_proxies: Vec::new(),
            workers: Vec::new(),
        };
        let nats_url = cluster.nats().url();
        let db = dir.path().join("db").display().to_string();
        assert_eq!(
            display_args(&cluster.coordinator_command(7001, 7002)),
            format!(
                "coordinator --nats {nats_url} --store file:///tmp/store --listen 127.0.0.1:7001 \
                 --metrics-listen 127.0.0.1:7002 --db {db} --insecure-registry 127.0.0.1:5000 \
                 --insecure-registry 127.0.0.1:5001 --max-deliver 3"
            )
        );
        assert_eq!(
            display_args(&cluster.worker_command("worker-4", 7003)),
            format!(
                "worker --nats {nats_url} --store file:///tmp/store --metrics-listen 127.0.0.1:7003 \
                 --worker-id worker-4 --insecure-registry 127.0.0.1:5000 \
                 --insecure-registry 127.0.0.1:5001 --concurrency 2"
            )
        );
    }

    #[test]
    fn several_coordinators_get_ids_and_their_proxies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = match NatsServer::start() {
            Ok(nats) => nats,
            Err(e) => panic!("{e}"),
        };
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, nats.port()));
        let proxy = TcpProxy::start(upstream).expect("a proxy");
        let proxy_host = proxy.host();
        let cluster = Cluster {
            spawner: Spawner {
                binary: "/bin/false".into(),
                env: Vec::new(),
                logs: dir.path().join("logs"),
            },
            dir: tempfile::tempdir().expect("temp dir"),
            nats,
            store_url: "file:///tmp/store".into(),
            default_store: None,
            db: dir.path().join("db"),
            insecure_registries: Vec::new(),
            worker_args: Vec::new(),
            coordinator_args: vec!["--lease-ttl-secs".into(), "3".into()],
            coordinator_total: 2,
            coordinators: Vec::new(),
            nats_proxies: vec![None, Some(proxy)],
            workers: Vec::new(),
        };
        let nats_url = cluster.nats().url();
        let db = dir.path().join("db").display().to_string();
        assert_eq!(
            display_args(&cluster.coordinator_command_at(0, 7001, 7002)),
            format!(
                "coordinator --nats {nats_url} --store file:///tmp/store --listen 127.0.0.1:7001 \
                 --metrics-listen 127.0.0.1:7002 --db {db} --coordinator-id coordinator-0 \
                 --lease-ttl-secs 3"
            )
        );
        assert_eq!(
            display_args(&cluster.coordinator_command_at(1, 7003, 7004)),
            format!(
                "coordinator --nats nats://{proxy_host} --store file:///tmp/store --listen 127.0.0.1:7003 \
                 --metrics-listen 127.0.0.1:7004 --db {db} --coordinator-id coordinator-1 \
                 --lease-ttl-secs 3"
            )
        );
        assert!(cluster.nats_proxy_of(0).is_none());
        assert_eq!(cluster.nats_proxy_of(1).map(TcpProxy::host), Some(proxy_host));
        assert_eq!(coordinator_name(0), "coordinator");
        assert_eq!(coordinator_name(2), "coordinator-2");
    }
}
