//! `strata coordinator`: the cluster's coordinator role. Jobs and results
//! over NATS JetStream, state in JetStream key-value buckets, fleet events
//! in the stream `STRATA_EVENTS` (and to the configured webhooks),
//! inventories and reports in object storage, the gRPC API for clients.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use strata_coordinator::api::{self, AdminApi, NatsHandle, Services};
use strata_coordinator::cluster::kv::Kv;
use strata_coordinator::cluster::peers::{self, PeerConfig, Peers};
use strata_coordinator::cluster::{Buckets, Coordinator};
use strata_coordinator::feeds::Feeds;
use strata_coordinator::notify::EventLog;
use strata_coordinator::notify::webhook::{self, Webhook};
use strata_worker::queue::{Queue, nats::NatsQueue};

use super::roles::{self, Shutdown};
use super::settings::{self, ClusterSettings, ServerSettings};

/// `strata coordinator`: its flags are its config file's keys (see [`settings`]).
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// A TOML file with any of the settings below; flags and `STRATA_*`
    /// variables override it ([queue] and [security] are tables;
    /// [[webhooks]] an array of tables, in the file only).
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: CoordinatorSettings,
}

/// Every setting of `strata coordinator`, declared once.
#[derive(Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CoordinatorSettings {
    #[command(flatten)]
    #[serde(flatten)]
    pub cluster: ClusterSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    #[serde(flatten)]
    pub peers: PeerSettings,
}

/// How this coordinator runs beside others on the same NATS (see
/// `cluster::peers`): any number may run, all active.
#[derive(Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PeerSettings {
    /// This coordinator's name, unique among the cluster's and the same
    /// across its restarts (a pod name). Default: the host name and the
    /// --listen port.
    #[arg(long, env = "STRATA_COORDINATOR_ID", value_name = "ID")]
    pub coordinator_id: Option<String>,
    /// The gRPC address `strata status` shows for this coordinator
    /// (default: --listen).
    #[arg(long, env = "STRATA_ADVERTISE_ADDRESS", value_name = "HOST:PORT")]
    pub advertise_address: Option<String>,
    /// Seconds a coordinator's presence and leases last unrenewed (renewed
    /// every third): how long the work of a coordinator that died waits
    /// before the others take it over. 2 to 300.
    #[arg(long, env = "STRATA_LEASE_TTL_SECS", value_name = "SECS", default_value_t = DEFAULT_LEASE_TTL_SECS)]
    pub lease_ttl_secs: u64,
}

const DEFAULT_LEASE_TTL_SECS: u64 = 10;

impl PeerSettings {
    fn config(&self, listen: std::net::SocketAddr) -> anyhow::Result<PeerConfig> {
        anyhow::ensure!(
            (2..=300).contains(&self.lease_ttl_secs),
            "lease_ttl_secs: {} is outside 2 to 300 seconds",
            self.lease_ttl_secs
        );
        let id = match &self.coordinator_id {
            Some(id) => {
                let clean = peers::sanitize_id(id);
                anyhow::ensure!(
                    clean == *id,
                    "coordinator_id: {id:?} may hold only letters, digits, '-' and '_' (at most 64)"
                );
                clean
            }
            None => {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "coordinator".to_owned());
                // Stable across restarts (a restarted coordinator is not a
                // second one), and two on one host differ by their port.
                peers::sanitize_id(&format!("{host}-{}", listen.port()))
            }
        };
        Ok(PeerConfig {
            id,
            address: self
                .advertise_address
                .clone()
                .unwrap_or_else(|| listen.to_string()),
            ttl: std::time::Duration::from_secs(self.lease_ttl_secs),
        })
    }
}

pub async fn run(
    args: CoordinatorArgs,
    matches: &clap::ArgMatches,
    global: &super::GlobalArgs,
) -> anyhow::Result<u8> {
    let c = settings::resolve(args.settings, matches, args.config.as_deref())?;
    let store_url = c.cluster.store_url()?.to_owned();
    // Checked before anything starts (the registry policy's settings among them).
    let config = c.server.coordinator_config(&store_url)?;
    let (listen, metrics_addr) = c.server.addresses()?;
    let peer_config = c.peers.config(listen)?;
    let queue_settings = c.server.queue.to_queue()?;
    let feeds_config = c.server.feeds_config()?;
    // Without feeds the data is --db's: required, and read before connecting.
    let db_path = match &feeds_config {
        None => Some(c.server.db_path()?.to_owned()),
        Some(_) => c.server.db.clone(),
    };
    let _telemetry = roles::init_telemetry(global, "strata-coordinator", c.cluster.otlp_endpoint.as_deref())?;
    let metrics = roles::metrics("strata-coordinator", c.cluster.otlp_endpoint.as_deref())?;
    let security = roles::load_security(&c.server.security, listen)?;
    let webhooks = Webhook::load_all(&c.server.webhooks)?;

    let vulndb = match (&feeds_config, &db_path) {
        (None, Some(path)) => Some(roles::load_vulndb(path).await?),
        _ => None,
    };
    let store = roles::open_store(&store_url)?;
    let client = roles::connect_nats(&c.cluster.nats, "strata-coordinator").await?;
    let queue = loop {
        match NatsQueue::create(client.clone(), &queue_settings).await {
            Ok(q) => break Queue::Nats(Box::new(q)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot set up the job streams yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let buckets = loop {
        match Buckets::nats(&js, queue_settings.replicas).await {
            Ok(b) => break b,
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the state buckets yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    // With feeds, the data to start with is the feeds' last (in the store), else --db.
    let (vulndb, feeds) = match (vulndb, feeds_config) {
        (Some(vulndb), _) => (vulndb, None),
        (None, Some(config)) => {
            let feeds = Feeds::open(
                &config,
                buckets.images.clone(),
                Arc::clone(&store),
                db_path.as_deref(),
            )
            .await
            .context("opening the advisory feeds")?;
            (feeds.vuln_data().await?, Some(feeds))
        }
        (None, None) => anyhow::bail!("no vulnerability data"),
    };
    let events = loop {
        match EventLog::jetstream(&js, queue_settings.replicas).await {
            Ok(log) => break log,
            Err(err) => {
                tracing::warn!(error = %err, "cannot set up the event stream yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let cursors = loop {
        match Kv::nats(&js, webhook::WEBHOOKS_BUCKET, queue_settings.replicas).await {
            Ok(kv) => break kv,
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the webhook cursors yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let peers = loop {
        match Peers::open(&js, peer_config.clone(), queue_settings.replicas).await {
            Ok(p) => break Arc::new(p),
            Err(err) => {
                tracing::warn!(error = %err, "cannot open the coordinators' bucket yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let coordinator = Coordinator::new(
        config,
        queue,
        buckets,
        Arc::clone(&store),
        vulndb,
        metrics.clone(),
    )
    .with_event_log(events)
    .with_peers(peers);

    let shutdown = Shutdown::on_signal("coordinator", c.cluster.shutdown.timeout());
    // `/readyz` on the metrics port follows NATS like the gRPC health does
    // (a probe that works whether or not the API speaks TLS).
    let ready: strata_worker::telemetry::http::Ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics_at =
        roles::spawn_metrics(metrics_addr, metrics, Some(ready.clone()), shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the gRPC address {listen}"))?;
    let mut admin = AdminApi::new(Some(NatsHandle {
        client: client.clone(),
        url: roles::redact(&c.cluster.nats),
    }));
    if let Some(feeds) = &feeds {
        admin = admin.with_feeds(feeds.clone());
    }
    let server = tokio::spawn(api::serve_all_with_health(
        listener,
        Services::of(&coordinator, admin),
        security,
        {
            // Ready only while NATS is connected (see api::readiness).
            let (client, shutdown, ready) = (client.clone(), shutdown.clone(), ready.clone());
            move |health| {
                drop(api::readiness::follow_nats(
                    health,
                    client,
                    ready,
                    shutdown.wait(),
                ))
            }
        },
        {
            // Open event watches end first, or the server's graceful
            // shutdown would wait on them forever.
            let shutdown = shutdown.clone();
            let log = coordinator.event_log().clone();
            async move {
                shutdown.wait().await;
                log.close();
            }
        },
    ));
    let deliveries = tokio::spawn(webhook::run(
        webhooks,
        coordinator.event_log().clone(),
        cursors,
        Some({
            let coordinator = coordinator.clone();
            Arc::new(move || coordinator.holds_lease(peers::LEASE_WEBHOOKS))
        }),
        shutdown.clone().wait(),
    ));
    tracing::info!(grpc = %listen, metrics = %metrics_at, nats = %roles::redact(&c.cluster.nats), store = %store_url, id = %peer_config.id, lease_ttl_secs = peer_config.ttl.as_secs(), "coordinator running");
    let polling = feeds.map(|feeds| tokio::spawn(feeds.run(coordinator.clone(), shutdown.clone().wait())));
    coordinator.run(shutdown.clone().wait()).await;
    if let Some(polling) = polling {
        let _ = polling.await;
    }
    let _ = deliveries.await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err.into()),
        Err(err) => anyhow::bail!("gRPC server task: {err}"),
    }
    // Buffered publishes and acks reach the server before we exit.
    let _ = client.flush().await;
    tracing::info!("coordinator stopped");
    Ok(super::EXIT_OK)
}
