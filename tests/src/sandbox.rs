//! [`ClusterSandbox`]: a coordinator and worker loops in this process, on a
//! real queue, for tests and benchmarks that drive the coordinator's API
//! directly (where [`Cluster`](crate::Cluster) runs `strata` processes).
//!
//! # Contract
//! - [`ClusterSandboxBuilder::start`] must run inside a multi-threaded Tokio
//!   runtime. It sets up, in this order:
//!   1. a temporary directory (`strata-sandbox-*`), with the object store at
//!      `<dir>/store` (a local directory through `object_store`, URL
//!      `file://<dir>/store`, as workers open it);
//!   2. the queue and the state buckets: [`SandboxQueue::Memory`] is
//!      `Queue::memory` with the embedded `redb` state file `<dir>/state.redb`
//!      (what `strata serve` runs); [`SandboxQueue::Nats`] starts a
//!      [`NatsServer`] and [`SandboxQueue::NatsAt`] connects to a given one:
//!      `NatsQueue::create` and JetStream key-value buckets (1 replica) on one
//!      connection (what `strata coordinator` runs);
//!   3. the [`Coordinator`] (default: an empty vulnerability database; the
//!      insecure registries in its `source`; then every
//!      [`configure`](ClusterSandboxBuilder::configure) closure) and its
//!      background loops (`Coordinator::run`);
//!   4. the worker loops (`strata_worker::run::run`), ids `worker-0`,
//!      `worker-1`, …, each with its own `JobContext` (the same store, the
//!      insecure registries) and the same [`WorkerOptions`]; on the memory
//!      queue they share the coordinator's queue, on NATS each has its own
//!      connection (`NatsQueue::bind`), as worker processes do. With
//!      `workers(0)` none start: the caller answers jobs itself from
//!      [`ClusterSandbox::worker_queue`];
//!   5. with [`grpc(true)`](ClusterSandboxBuilder::grpc), the gRPC API
//!      (`serve_all`: scan, fleet and admin services, health, reflection) on
//!      `127.0.0.1:0`, plain HTTP/2 without tokens:
//!      [`ClusterSandbox::grpc_url`]. No other port is opened (the NATS
//!      server's aside). Its shutdown closes the coordinator's event log
//!      first, so open `WatchEvents` streams end.
//!
//!   A step that fails stops what the earlier ones started and returns
//!   [`HarnessError::Sandbox`].
//! - [`ClusterSandbox::stop`] signals shutdown to every task it started (the
//!   coordinator's loops, the workers, the API server), then waits for all of
//!   them at most the stop limit (default 60 s,
//!   [`stop_limit`](ClusterSandboxBuilder::stop_limit)); tasks still running
//!   then are aborted and named in the error, as is a task that panicked or
//!   a server that failed. Last it drains the coordinator's NATS connection,
//!   so no connection task outlives the sandbox.
//! - Dropping the handle without `stop` signals shutdown and aborts every task
//!   without waiting, then stops the NATS server it started (not a given one)
//!   and removes the directory.
//!
//! # Example
//! ```no_run
//! # async fn example() -> strata_harness::Result<()> {
//! use std::time::Duration;
//! use strata_coordinator::cluster::SubmitRequest;
//! use strata_harness::{ClusterSandbox, Registry, SandboxQueue};
//! let registry = Registry::start()?;
//! let sandbox = ClusterSandbox::builder()
//!     .workers(2)
//!     .queue(SandboxQueue::Nats)
//!     .insecure_registry(registry.host())
//!     .start()
//!     .await?;
//! let (scan, _) = sandbox
//!     .coordinator()
//!     .submit(SubmitRequest {
//!         reference: format!("{}/app:1", registry.host()),
//!         ..Default::default()
//!     })
//!     .await
//!     .expect("submitted");
//! sandbox.wait_scan(&scan.id, Duration::from_secs(60)).await?;
//! sandbox.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use strata_coordinator::api::{self, AdminApi, NatsHandle, Security, Services};
use strata_coordinator::cluster::peers::{PeerConfig, Peers};
use strata_coordinator::cluster::records::{ScanRecord, ScanStatus};
use strata_coordinator::cluster::{Buckets, Coordinator, CoordinatorConfig, VulnData};
use strata_coordinator::vulndb::Db;
use strata_worker::job::JobContext;
use strata_worker::queue::nats::NatsQueue;
use strata_worker::queue::{Queue, QueueSettings};
use strata_worker::run::{self, WorkerOptions};
use strata_worker::telemetry::Metrics;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

use crate::nats::NatsServer;
use crate::{HarnessError, Result};

/// Default bound on [`ClusterSandbox::stop`].
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// Bound on closing the coordinator's NATS connection in `stop`.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Pause between two looks at that connection.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Pause between two looks at a scan in [`ClusterSandbox::wait_scan`].
const POLL: Duration = Duration::from_millis(50);

/// The job transport a [`ClusterSandbox`] runs on.
#[derive(Debug, Clone, Default)]
pub enum SandboxQueue {
    /// The in-process queue and the embedded state file (`strata serve`).
    #[default]
    Memory,
    /// A [`NatsServer`] of its own, started first and stopped last.
    Nats,
    /// A NATS server already running at this URL (left running).
    NatsAt(String),
}

type Configure = Box<dyn FnOnce(&mut CoordinatorConfig) + Send>;

/// Options for [`ClusterSandbox`]; see [`ClusterSandbox::builder`].
pub struct ClusterSandboxBuilder {
    workers: usize,
    coordinators: usize,
    queue: SandboxQueue,
    worker_options: WorkerOptions,
    insecure_registries: Vec<String>,
    vulndb: Option<VulnData>,
    grpc: bool,
    stop_limit: Duration,
    configure: Vec<Configure>,
}

impl ClusterSandboxBuilder {
    /// How many worker loops to run (default 1; 0: the caller answers jobs).
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = count;
        self
    }

    /// How many coordinators share the NATS queue and buckets (default 1;
    /// more need a NATS queue). They run side by side as in the cluster
    /// (`cluster::peers`), ids `sandbox-0`, `sandbox-1`, …; the extra ones
    /// match against an empty database whatever [`Self::vulndb`] says.
    pub fn coordinators(mut self, count: usize) -> Self {
        self.coordinators = count.max(1);
        self
    }

    /// The job transport (default [`SandboxQueue::Memory`]).
    pub fn queue(mut self, queue: SandboxQueue) -> Self {
        self.queue = queue;
        self
    }

    /// Every worker loop's options: slots, grace, polls (default
    /// `WorkerOptions::default()`).
    pub fn worker_options(mut self, options: WorkerOptions) -> Self {
        self.worker_options = options;
        self
    }

    /// A plain-HTTP registry (`HOST:PORT`) for the coordinator and every
    /// worker. Repeatable.
    pub fn insecure_registry(mut self, host: impl Into<String>) -> Self {
        self.insecure_registries.push(host.into());
        self
    }

    /// The vulnerability data in force (default: an empty database).
    pub fn vulndb(mut self, data: VulnData) -> Self {
        self.vulndb = Some(data);
        self
    }

    /// Serve the gRPC API on `127.0.0.1:0` (default off).
    pub fn grpc(mut self, on: bool) -> Self {
        self.grpc = on;
        self
    }

    /// Bound on [`ClusterSandbox::stop`] (default 60 s).
    pub fn stop_limit(mut self, limit: Duration) -> Self {
        self.stop_limit = limit;
        self
    }

    /// Changes the coordinator's config after the sandbox's own settings.
    /// Repeatable; applied in order.
    pub fn configure(mut self, f: impl FnOnce(&mut CoordinatorConfig) + Send + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Starts everything; see the module's contract for the order.
    pub async fn start(self) -> Result<ClusterSandbox> {
        let dir = tempfile::Builder::new()
            .prefix("strata-sandbox-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating the sandbox's temp dir", e))?;
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir)
            .map_err(|e| HarnessError::io(format!("creating {}", store_dir.display()), e))?;
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(&store_dir).map_err(failed("opening the store"))?);
        let store_url = format!("file://{}", store_dir.display());

        let (nats, nats_url) = match &self.queue {
            SandboxQueue::Memory => (None, None),
            SandboxQueue::Nats => {
                let server = NatsServer::start()?;
                let url = server.url();
                (Some(server), Some(url))
            }
            SandboxQueue::NatsAt(url) => (None, Some(url.clone())),
        };
        let (queue, buckets, nats_client) = match &nats_url {
            None => (
                Queue::memory(QueueSettings::default()),
                Buckets::local(&dir.path().join("state.redb")).map_err(failed("opening the state file"))?,
                None,
            ),
            Some(url) => {
                let client = connect(url).await?;
                let queue = NatsQueue::create(client.clone(), &QueueSettings::default())
                    .await
                    .map_err(failed("creating the NATS streams"))?;
                let buckets = Buckets::nats(&async_nats::jetstream::new(client.clone()), 1)
                    .await
                    .map_err(failed("creating the key-value buckets"))?;
                (Queue::Nats(Box::new(queue)), buckets, Some(client))
            }
        };

        let mut config = CoordinatorConfig::new(store_url.clone());
        config.source.insecure_registries = self.insecure_registries.clone();
        for f in self.configure {
            f(&mut config);
        }
        let empty = || VulnData::new(&Db::from_advisories(Vec::new(), Vec::new()));
        let vulndb = self.vulndb.unwrap_or_else(empty);
        let metrics = Metrics::new("strata-sandbox", None).map_err(failed("metrics"))?;
        let mut coordinator = Coordinator::new(
            config.clone(),
            queue.clone(),
            buckets.clone(),
            store.clone(),
            vulndb,
            metrics.clone(),
        );
        // Side by side: each its own connection, queue handle and peers.
        let mut others = Vec::new();
        if self.coordinators > 1 {
            let (Some(url), Some(client)) = (&nats_url, &nats_client) else {
                return Err(HarnessError::Binary(
                    "ClusterSandbox: several coordinators need a NATS queue".into(),
                ));
            };
            let peers = |js: async_nats::jetstream::Context, i: usize| async move {
                Peers::open(
                    &js,
                    PeerConfig {
                        id: format!("sandbox-{i}"),
                        address: format!("in-process-{i}"),
                        ttl: Duration::from_secs(10),
                    },
                    1,
                )
                .await
                .map(Arc::new)
                .map_err(failed("opening the coordinators' bucket"))
            };
            coordinator = coordinator.with_peers(peers(async_nats::jetstream::new(client.clone()), 0).await?);
            for i in 1..self.coordinators {
                let client = connect(url).await?;
                let js = async_nats::jetstream::new(client.clone());
                let queue = NatsQueue::create(client.clone(), &QueueSettings::default())
                    .await
                    .map_err(failed("creating the NATS streams"))?;
                let buckets = Buckets::nats(&js, 1)
                    .await
                    .map_err(failed("creating the key-value buckets"))?;
                let other = Coordinator::new(
                    config.clone(),
                    Queue::Nats(Box::new(queue)),
                    buckets,
                    store.clone(),
                    empty(),
                    metrics.clone(),
                )
                .with_peers(peers(js, i).await?);
                others.push((other, client));
            }
        }

        let (stop, _) = watch::channel(false);
        let mut sandbox = ClusterSandbox {
            coordinator,
            others: others.iter().map(|(c, _)| c.clone()).collect(),
            other_clients: others.into_iter().map(|(_, client)| client).collect(),
            buckets,
            queue,
            store,
            store_url,
            grpc_url: None,
            nats_url,
            nats_client: nats_client.clone(),
            stop,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stop_limit: self.stop_limit,
            nats,
            dir,
        };
        let all: Vec<Coordinator> = std::iter::once(sandbox.coordinator.clone())
            .chain(sandbox.others.iter().cloned())
            .collect();
        for (i, c) in all.into_iter().enumerate() {
            let stopped = sandbox.stopped();
            let name = if i == 0 {
                "coordinator".to_owned()
            } else {
                format!("coordinator-{i}")
            };
            sandbox.spawn(name, async move {
                c.run(stopped).await;
                Ok(())
            });
        }
        for i in 0..self.workers {
            let queue = sandbox.worker_queue().await?;
            let mut ctx = JobContext::new(format!("worker-{i}"), sandbox.store.clone());
            ctx.source.insecure_registries = self.insecure_registries.clone();
            let options = self.worker_options.clone();
            let stopped = sandbox.stopped();
            sandbox.spawn(format!("worker-{i}"), async move {
                run::run(queue, ctx, options, stopped).await;
                Ok(())
            });
        }
        if self.grpc {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| HarnessError::io("binding the sandbox's gRPC port", e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| HarnessError::io("the sandbox's gRPC port", e))?;
            sandbox.grpc_url = Some(format!("http://{addr}"));
            let admin = AdminApi::new(
                nats_client
                    .clone()
                    .zip(sandbox.nats_url.clone())
                    .map(|(client, url)| NatsHandle { client, url }),
            );
            let services = Services::of(&sandbox.coordinator, admin);
            let stopped = sandbox.stopped();
            // As the roles do: open `WatchEvents` streams end on shutdown
            // (the event log is closed), or graceful shutdown waits on them.
            let events = sandbox.coordinator.event_log().clone();
            let stopped = async move {
                stopped.await;
                events.close();
            };
            sandbox.spawn("grpc".into(), async move {
                api::serve_all(listener, services, Security::default(), stopped)
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        Ok(sandbox)
    }
}

/// A coordinator, its state, a queue, an object store and worker loops in
/// this process. See the module documentation for the contract.
pub struct ClusterSandbox {
    coordinator: Coordinator,
    /// The coordinators beside the first ([`ClusterSandboxBuilder::coordinators`]).
    others: Vec<Coordinator>,
    /// Their connections, closed by `stop` as the first one's is.
    other_clients: Vec<async_nats::Client>,
    buckets: Buckets,
    queue: Queue,
    store: Arc<dyn ObjectStore>,
    store_url: String,
    grpc_url: Option<String>,
    nats_url: Option<String>,
    /// The coordinator's connection, drained by `stop` while the server runs.
    nats_client: Option<async_nats::Client>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<std::result::Result<(), String>>,
    /// Task names by id, for the error when some do not stop.
    names: HashMap<Id, String>,
    stop_limit: Duration,
    // Dropped after the tasks are aborted: the server, then the directory.
    nats: Option<NatsServer>,
    dir: tempfile::TempDir,
}

impl ClusterSandbox {
    /// A builder: one worker on the memory queue, no gRPC, an empty database.
    pub fn builder() -> ClusterSandboxBuilder {
        ClusterSandboxBuilder {
            workers: 1,
            coordinators: 1,
            queue: SandboxQueue::Memory,
            worker_options: WorkerOptions::default(),
            insecure_registries: Vec::new(),
            vulndb: None,
            grpc: false,
            stop_limit: STOP_LIMIT,
            configure: Vec::new(),
        }
    }

    /// The coordinator (cheap to clone).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Every coordinator, the first one first.
    pub fn coordinators(&self) -> Vec<&Coordinator> {
        std::iter::once(&self.coordinator)
            .chain(self.others.iter())
            .collect()
    }

    /// The coordinator's state buckets.
    pub fn buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// The coordinator's side of the queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// A queue handle for a worker the caller runs itself: on the memory
    /// queue the shared queue, on NATS a new connection bound to the streams.
    pub async fn worker_queue(&self) -> Result<Queue> {
        match &self.nats_url {
            None => Ok(self.queue.clone()),
            Some(url) => {
                let queue = NatsQueue::bind(connect(url).await?)
                    .await
                    .map_err(failed("binding a worker to the NATS streams"))?;
                Ok(Queue::Nats(Box::new(queue)))
            }
        }
    }

    /// The object store (the directory `<dir>/store`).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object store's URL, `file://<dir>/store`.
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// The sandbox's temporary directory, removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gRPC API's URL, `http://127.0.0.1:PORT`.
    ///
    /// # Panics
    /// When the sandbox was started without [`grpc(true)`](ClusterSandboxBuilder::grpc).
    pub fn grpc_url(&self) -> String {
        self.grpc_url
            .clone()
            .expect("the sandbox was started without .grpc(true)")
    }

    /// The NATS server's URL (`None` on the memory queue).
    pub fn nats_url(&self) -> Option<&str> {
        self.nats_url.as_deref()
    }

    /// The NATS server the sandbox started ([`SandboxQueue::Nats`] only).
    pub fn nats(&self) -> Option<&NatsServer> {
        self.nats.as_ref()
    }

    /// Polls scan `id` until it is complete (returned) or failed, or `limit`
    /// has passed (errors).
    pub async fn wait_scan(&self, id: &str, limit: Duration) -> Result<ScanRecord> {
        let deadline = Instant::now() + limit;
        loop {
            let scan = self.read_scan(id).await?;
            if scan.status == ScanStatus::Complete {
                return Ok(scan);
            }
            if scan.status == ScanStatus::Failed || Instant::now() > deadline {
                return Err(HarnessError::Sandbox(format!(
                    "scan {id} did not complete: {:?} {:?}",
                    scan.status, scan.error
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Looks at scan `id` once: `Some` when it completed cleanly, `None`
    /// while it runs; an error when it failed, completed with an error, or
    /// vanished. For callers polling many scans on their own schedule.
    pub async fn scan_finished(&self, id: &str) -> Result<Option<ScanRecord>> {
        let scan = self.read_scan(id).await?;
        match scan.status {
            ScanStatus::Complete if scan.error.is_none() => Ok(Some(scan)),
            ScanStatus::Complete | ScanStatus::Failed => Err(HarnessError::Sandbox(format!(
                "scan {id} ({}) ended {:?}: {}",
                scan.reference,
                scan.status,
                scan.error.unwrap_or_default()
            ))),
            _ => Ok(None),
        }
    }

    /// Signals shutdown and waits for every task, at most the stop limit.
    /// Errors name the tasks that had to be aborted, panicked or failed.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.send_replace(true);
        let mut problems = Vec::new();
        let joined = tokio::time::timeout(self.stop_limit, async {
            while let Some(joined) = self.tasks.join_next_with_id().await {
                let (id, outcome) = match joined {
                    Ok((id, Ok(()))) => (id, None),
                    Ok((id, Err(e))) => (id, Some(format!("failed: {e}"))),
                    Err(e) => (e.id(), Some(format!("panicked: {e}"))),
                };
                let name = self.names.remove(&id).unwrap_or_default();
                if let Some(outcome) = outcome {
                    problems.push(format!("{name} {outcome}"));
                }
            }
        })
        .await;
        if joined.is_err() {
            self.tasks.abort_all();
            let mut names: Vec<_> = self.names.values().cloned().collect();
            names.sort();
            problems.push(format!(
                "{} did not stop within {:?} (aborted)",
                names.join(", "),
                self.stop_limit
            ));
        }
        // Closed while the server still runs: a connection that sees its
        // server killed before it sees its last handle dropped keeps trying
        // to reconnect, a task outliving the sandbox.
        for client in std::mem::take(&mut self.other_clients) {
            let _ = client.drain().await;
        }
        if let Some(client) = self.nats_client.take() {
            let _ = client.drain().await;
            // Once the connection has closed, commands fail at once.
            let deadline = Instant::now() + DRAIN_LIMIT;
            while Instant::now() < deadline {
                if let Ok(Err(_)) = tokio::time::timeout(DRAIN_POLL, client.flush()).await {
                    break;
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Sandbox(problems.join("; ")))
        }
    }

    async fn read_scan(&self, id: &str) -> Result<ScanRecord> {
        self.coordinator
            .scan(id)
            .await
            .map_err(failed(format!("reading scan {id}")))?
            .ok_or_else(|| HarnessError::Sandbox(format!("scan {id} vanished")))
    }

    fn spawn(
        &mut self,
        name: String,
        task: impl Future<Output = std::result::Result<(), String>> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// A future that completes when shutdown is signalled.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

impl Drop for ClusterSandbox {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.tasks.abort_all();
    }
}

async fn connect(url: &str) -> Result<async_nats::Client> {
    async_nats::connect(url)
        .await
        .map_err(failed(format!("connecting to NATS at {url}")))
}

/// Maps an error of a step to [`HarnessError::Sandbox`] naming the step.
fn failed<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> HarnessError {
    let what = what.into();
    move |e| HarnessError::Sandbox(format!("{what}: {e}"))
}
