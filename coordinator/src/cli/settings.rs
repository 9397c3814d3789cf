//! Role settings, each declared once.
//!
//! A role's settings are one struct that is both its flags and its config
//! file: a field is a flag (clap: `--the-name`, its `STRATA_*` variable and
//! its default, shown in `--help`) and a key of the TOML `--config` file
//! (serde: the field's name; [`QueueSettings`] and [`SecuritySettings`] are
//! the nested tables `[queue]` and `[security]`; `webhooks`, an array of
//! `[[webhooks]]` tables, is a file key only). [`resolve`] lays the file
//! under the flags in one generic pass, so no setting is written again as a
//! file field, a default or an overlay:
//!
//! ```text
//! flag  >  STRATA_* variable  >  config file  >  default
//! ```
//!
//! A repeatable flag (`--insecure-registry`) adds to the file's list. A key
//! the role does not have is an error naming it (`unknown key
//! security.tls_crt`), as is a value of the wrong type (`queue.max_deliver:
//! invalid type …`): unknown keys are rejected at every level, as serde's
//! `deny_unknown_fields` would (which cannot be combined with the
//! `#[serde(flatten)]` of [`ServerSettings`]). Ranges are checked once, at
//! start, by each role's `validate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use strata_coordinator::cluster::CoordinatorConfig;
use strata_coordinator::feeds::{self, FeedsConfig};
use strata_coordinator::notify::webhook::WebhookConfig;
use strata_worker::queue as jobs;
use strata_worker::source::RegistryPolicy;
use strata_worker::source::policy::PolicySettings;

/// Bound on a config file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Registered images are resolved again every six hours by default.
pub const DEFAULT_REFRESH_SECS: u64 = 6 * 3600;
/// Unreferenced reports and inventories are kept a week by default.
pub const DEFAULT_GC_GRACE_SECS: u64 = 7 * 24 * 3600;

/// `parsed` (what clap made of the flags, variables and defaults) with the
/// config file at `file` laid under it: a file key replaces a value that
/// came from a default (or was absent), never one given as a flag or a
/// `STRATA_*` variable. `matches` are the subcommand's, where clap records
/// where each value came from.
pub fn resolve<T: Serialize + DeserializeOwned>(
    parsed: T,
    matches: &clap::ArgMatches,
    file: Option<&Path>,
) -> anyhow::Result<T> {
    let Some(path) = file else {
        return Ok(parsed);
    };
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("config {shown}"))?;
    anyhow::ensure!(
        meta.len() <= MAX_CONFIG_BYTES,
        "config {shown}: {} bytes is over the {MAX_CONFIG_BYTES}-byte limit",
        meta.len()
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("config {shown}"))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("config {shown}"))?;
    let Value::Object(from_file) = serde_json::to_value(table).context("config as JSON")? else {
        anyhow::bail!("config {shown}: not a table");
    };
    let Value::Object(defaults) = serde_json::to_value(&parsed).context("settings as JSON")? else {
        anyhow::bail!("settings are not a struct");
    };
    let mut merged = defaults.clone();
    let mut written = Vec::new();
    lay_under(&mut merged, from_file, matches, &[], &mut written)
        .with_context(|| format!("config {shown}"))?;
    serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| {
        let key = e.path().to_string();
        if key != "." {
            return anyhow::anyhow!("config {shown}: {key}: {}", e.into_inner());
        }
        // Inside a `#[serde(flatten)]` the path is lost: find the file's
        // value that is wrong by trying each alone (a file is small).
        for (keys, value) in written {
            let mut one = defaults.clone();
            set(&mut one, &keys, value);
            if let Err(e) = serde_json::from_value::<T>(Value::Object(one)) {
                return anyhow::anyhow!("config {shown}: {}: {e}", keys.join("."));
            }
        }
        anyhow::anyhow!("config {shown}: {}", e.into_inner())
    })
}

/// Writes each key of `file` into `into` unless the command line or the
/// environment gave it (a list given there adds to the file's); recurses
/// into tables; rejects keys `into` lacks. What it wrote is pushed to `written`.
fn lay_under(
    into: &mut Map<String, Value>,
    file: Map<String, Value>,
    matches: &clap::ArgMatches,
    prefix: &[String],
    written: &mut Vec<(Vec<String>, Value)>,
) -> anyhow::Result<()> {
    for (key, value) in file {
        let keys: Vec<String> = prefix.iter().cloned().chain([key.clone()]).collect();
        let path = keys.join(".");
        if !into.contains_key(&key) {
            let known: Vec<&str> = into.keys().map(String::as_str).collect();
            anyhow::bail!("unknown key {path} (known here: {})", known.join(", "));
        }
        let Some(slot) = into.get_mut(&key) else {
            continue;
        };
        match (slot, value) {
            (Value::Object(table), Value::Object(value)) => lay_under(table, value, matches, &keys, written)?,
            (Value::Object(_), _) => anyhow::bail!("{path} must be a table ([{path}])"),
            (slot, value) => {
                // Clap's ids are the field names, unique across a role's
                // settings; a file-only field (`#[arg(skip)]`) has none.
                let given = matches!(matches.try_contains_id(&key), Ok(true))
                    && matches!(
                        matches.value_source(&key),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    );
                match (slot, value) {
                    (Value::Array(flags), Value::Array(mut listed)) if given => {
                        listed.append(flags);
                        *flags = listed;
                    }
                    _ if given => {}
                    (slot, value) => {
                        *slot = value.clone();
                        written.push((keys, value));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Sets the value at `keys` (tables that exist, as `lay_under` found them).
fn set(table: &mut Map<String, Value>, keys: &[String], value: Value) {
    match keys {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            if let Some(Value::Object(inner)) = table.get_mut(first) {
                set(inner, rest, value);
            }
        }
    }
}

/// What the API-serving roles (`coordinator`, `serve`) share: keys at the
/// top level of their config files, the `[queue]` and `[security]` tables,
/// and the `[[webhooks]]` array of tables.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone)]
pub struct ServerSettings {
    /// gRPC address.
    #[arg(
        long,
        env = "STRATA_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:7700"
    )]
    pub listen: String,
    /// Prometheus /metrics and /healthz address.
    #[arg(
        long,
        env = "STRATA_METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:9100"
    )]
    pub metrics_listen: String,
    /// The vulnerability database file (`strata db import` / `strata db update`).
    /// With --feed: the data to start with until the feeds' own is stored.
    #[arg(long, env = "STRATA_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// An advisory feed polled live: an OSV `all.zip` or a directory of OSV
    /// JSON at https://, http://, s3://, file:// (or a path), or `osv` for
    /// osv.dev's per-ecosystem exports. Repeatable; `STRATA_FEEDS` takes a
    /// comma-separated list.
    #[arg(
        long = "feed",
        env = "STRATA_FEEDS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub feeds: Vec<String>,
    /// Seconds between polls of each feed (a failed poll is retried sooner,
    /// backing off up to this).
    #[arg(long, env = "STRATA_FEED_INTERVAL_SECS", value_name = "SECS", default_value_t = feeds::DEFAULT_INTERVAL_SECS)]
    pub feed_interval_secs: u64,
    /// A registry (`host[:port]`) to speak plain HTTP to. Repeatable. A
    /// caller's `--insecure-registry` may ask for plain HTTP only to these.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub registry_policy: RegistryPolicySettings,
    /// Seconds between re-resolving registered images and re-listing watched
    /// repositories (moved tags are rescanned; 0: never).
    #[arg(long, env = "STRATA_REFRESH_INTERVAL_SECS", value_name = "SECS", default_value_t = DEFAULT_REFRESH_SECS)]
    pub refresh_interval_secs: u64,
    /// Seconds a report or layer inventory that no image references any
    /// more is kept before it is removed (0: never removed).
    #[arg(long, env = "STRATA_GC_GRACE_SECS", value_name = "SECS", default_value_t = DEFAULT_GC_GRACE_SECS)]
    pub gc_grace_secs: u64,
    #[command(flatten)]
    pub queue: QueueSettings,
    #[command(flatten)]
    pub security: SecuritySettings,
    /// Where fleet events are POSTed: `[[webhooks]]` tables of the config
    /// file only (url, secret_file, min_severity, repositories, kinds,
    /// max_attempts; see `notify::webhook`), never flags: each names a
    /// file holding its HMAC key.
    #[arg(skip)]
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

impl ServerSettings {
    /// `None` when the refresh is off (0).
    pub fn refresh_interval(&self) -> Option<Duration> {
        (self.refresh_interval_secs > 0).then(|| Duration::from_secs(self.refresh_interval_secs))
    }

    pub fn db_path(&self) -> anyhow::Result<&Path> {
        self.db.as_deref().context(
            "no vulnerability database: give --db FILE (build one with `strata db import`) or --feed URL",
        )
    }

    /// The feeds to poll, checked (`None`: no `--feed`, the data is `--db`'s).
    pub fn feeds_config(&self) -> anyhow::Result<Option<FeedsConfig>> {
        if self.feeds.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(
            self.feed_interval_secs >= 1,
            "feed_interval_secs must be at least 1"
        );
        let config = FeedsConfig {
            urls: self.feeds.clone(),
            interval: Duration::from_secs(self.feed_interval_secs),
        };
        feeds::expand(&config.urls)?;
        Ok(Some(config))
    }

    /// The gRPC and metrics addresses, checked.
    pub fn addresses(&self) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        Ok((
            parse_addr("--listen", &self.listen)?,
            parse_addr("--metrics-listen", &self.metrics_listen)?,
        ))
    }

    /// The coordinator's configuration these settings give, with its
    /// object store at `store_url`.
    pub fn coordinator_config(&self, store_url: &str) -> anyhow::Result<CoordinatorConfig> {
        let mut config = CoordinatorConfig::new(store_url);
        config.source.insecure_registries = self.insecure_registries.clone();
        config.source.policy = self.registry_policy.policy()?;
        config.local_images_over_api = self.security.allow_local_images;
        config.refresh_interval = self.refresh_interval();
        config.gc_grace = (self.gc_grace_secs > 0).then(|| Duration::from_secs(self.gc_grace_secs));
        // Often enough that removal follows the grace closely, never more
        // than hourly (a collection lists every record).
        config.gc_interval = config
            .gc_grace
            .map(|g| (g / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600)));
        Ok(config)
    }
}

/// Where callers may make the server connect: the registry policy of the
/// coordinator, the workers and `serve` (see
/// `strata_worker::source::policy`). Private, loopback and link-local
/// addresses are refused unless a network below holds them or the host is
/// named exactly here or in `insecure_registries`.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct RegistryPolicySettings {
    /// A registry callers may name (`host[:port]` glob, e.g. `ghcr.io` or
    /// `*.example.com`; without a port, any port). Repeatable. None given:
    /// every registry not denied.
    #[arg(long = "allow-registry", value_name = "GLOB")]
    pub allowed_registries: Vec<String>,
    /// A registry refused even when allowed (glob, as above); also checked
    /// on every redirect. Repeatable.
    #[arg(long = "deny-registry", value_name = "GLOB")]
    pub denied_registries: Vec<String>,
    /// A private, loopback or link-local network (CIDR, e.g. 10.0.0.0/8)
    /// registries may be reached in. Repeatable.
    #[arg(long = "allow-network", value_name = "CIDR")]
    pub allowed_networks: Vec<String>,
}

impl RegistryPolicySettings {
    pub fn policy(&self) -> anyhow::Result<RegistryPolicy> {
        Ok(RegistryPolicy::new(&PolicySettings {
            allowed_registries: self.allowed_registries.clone(),
            denied_registries: self.denied_registries.clone(),
            allowed_networks: self.allowed_networks.clone(),
        })?)
    }
}

pub fn parse_addr(what: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value.parse().with_context(|| {
        format!("{what} {value:?}: expected HOST:PORT with an IP address, e.g. 127.0.0.1:7700")
    })
}

/// What the cluster roles (`coordinator`, `worker`) share.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone)]
pub struct ClusterSettings {
    /// NATS server URL (JetStream enabled, 2.10 or newer).
    #[arg(
        long,
        env = "STRATA_NATS",
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// Object storage for inventories and reports, the same for every role of
    /// a cluster: file:///DIR or s3://BUCKET/PREFIX (settings from `AWS_*`).
    #[arg(long, env = "STRATA_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// OTLP/gRPC collector for traces and metrics (off when unset).
    #[arg(long, env = "STRATA_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub shutdown: ShutdownSettings,
}

/// How long a role may take to stop: every long-running role has it.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone)]
pub struct ShutdownSettings {
    /// Seconds from SIGTERM to exit: past them (NATS or the store
    /// unreachable, a drain that cannot finish) the process logs so and
    /// exits with status 2. A second signal exits at once.
    #[arg(
        long,
        env = "STRATA_SHUTDOWN_TIMEOUT_SECS",
        value_name = "SECS",
        default_value_t = 45
    )]
    pub shutdown_timeout_secs: u64,
}

impl ShutdownSettings {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_timeout_secs)
    }
}

impl ClusterSettings {
    pub fn store_url(&self) -> anyhow::Result<&str> {
        self.store.as_deref().context(
            "no object store: give --store file:///DIR or s3://BUCKET/PREFIX (the same for every role)",
        )
    }
}

/// The job queue's settings: `[queue]` in a config file.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Job queue")]
pub struct QueueSettings {
    /// Seconds a worker may hold a job without a progress ack.
    #[arg(long, env = "STRATA_ACK_WAIT_SECS", value_name = "SECS", default_value_t = jobs::QueueSettings::default().ack_wait.as_secs())]
    pub ack_wait_secs: u64,
    /// Deliveries of one layer job before its layer is marked failed.
    #[arg(long, env = "STRATA_MAX_DELIVER", default_value_t = jobs::QueueSettings::default().max_deliver)]
    pub max_deliver: u32,
    /// Jobs delivered and not yet acked across all workers.
    #[arg(long, env = "STRATA_MAX_ACK_PENDING", default_value_t = jobs::QueueSettings::default().max_ack_pending)]
    pub max_ack_pending: i64,
    /// Jobs the queue holds before a submit is refused (back-pressure).
    #[arg(long, env = "STRATA_MAX_JOBS", default_value_t = jobs::QueueSettings::default().max_jobs)]
    pub max_jobs: i64,
    /// Replicas of streams and buckets (3 on a clustered NATS).
    #[arg(long, env = "STRATA_REPLICAS", default_value_t = jobs::QueueSettings::default().replicas)]
    pub replicas: usize,
    /// Seconds within which a job published twice (same layer) is dropped.
    #[arg(long, env = "STRATA_DUPLICATE_WINDOW_SECS", value_name = "SECS", default_value_t = jobs::QueueSettings::default().duplicate_window.as_secs())]
    pub duplicate_window_secs: u64,
}

impl QueueSettings {
    /// The queue's settings, checked.
    pub fn to_queue(&self) -> anyhow::Result<jobs::QueueSettings> {
        anyhow::ensure!(self.max_deliver >= 1, "max_deliver must be at least 1");
        anyhow::ensure!(self.ack_wait_secs >= 1, "ack_wait_secs must be at least 1");
        anyhow::ensure!(self.max_ack_pending >= 1, "max_ack_pending must be at least 1");
        anyhow::ensure!((1..=5).contains(&self.replicas), "replicas must be 1 to 5");
        Ok(jobs::QueueSettings {
            ack_wait: Duration::from_secs(self.ack_wait_secs),
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            max_jobs: self.max_jobs,
            replicas: self.replicas,
            duplicate_window: Duration::from_secs(self.duplicate_window_secs.max(1)),
        })
    }
}

/// How the gRPC server is secured: `[security]` in a config file.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Security")]
pub struct SecuritySettings {
    /// PEM server certificate (chain): serve gRPC over TLS (with --tls-key).
    #[arg(long, env = "STRATA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mTLS); the
    /// certificate's name identifies the caller in audit logs.
    #[arg(long, env = "STRATA_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on every Strata call; the file
    /// has one `NAME TOKEN` per line (`#` comments), tokens of 16+ characters.
    #[arg(long, env = "STRATA_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow plain (non-TLS) gRPC on a non-loopback address.
    #[arg(long, env = "STRATA_ALLOW_REMOTE")]
    pub allow_remote: bool,
    /// Let API callers submit `oci-dir:` / `docker-archive:` paths, which
    /// this server then reads from its own filesystem (off: registry images only).
    #[arg(long, env = "STRATA_ALLOW_LOCAL_IMAGES")]
    pub allow_local_images: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    /// A role's settings as the roles declare theirs.
    #[derive(Parser, Serialize, Deserialize, Debug)]
    struct Role {
        /// A plain setting with a default.
        #[arg(
            long,
            env = "STRATA_TEST_SETTINGS_NATS",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats: String,
        #[arg(long)]
        store: Option<String>,
        #[command(flatten)]
        #[serde(flatten)]
        server: ServerSettings,
    }

    fn parse(args: &[&str], file: Option<&str>) -> anyhow::Result<Role> {
        let matches = Role::command()
            .try_get_matches_from(std::iter::once("role").chain(args.iter().copied()))
            .unwrap();
        let parsed = Role::from_arg_matches(&matches).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("role.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        resolve(parsed, &matches, file.map(|_| path.as_path()))
    }

    #[test]
    fn defaults_without_a_file() {
        let r = parse(&[], None).unwrap();
        assert_eq!(r.nats, "nats://127.0.0.1:4222");
        assert_eq!(r.server.listen, "127.0.0.1:7700");
        assert_eq!(r.server.refresh_interval_secs, DEFAULT_REFRESH_SECS);
        assert_eq!(
            r.server.queue.max_deliver,
            jobs::QueueSettings::default().max_deliver
        );
        assert!(r.store.is_none() && !r.server.security.allow_remote);
    }

    #[test]
    fn the_file_replaces_defaults_and_flags_replace_the_file() {
        let file = "nats = \"nats://file:4222\"\nstore = \"file:///data\"\nlisten = \"127.0.0.1:1\"\n\
                    [queue]\nmax_deliver = 9\nreplicas = 3\n\
                    [security]\ntls_cert = \"/etc/strata/cert.pem\"\ntoken_file = \"/etc/strata/tokens\"\nallow_remote = true\n";
        let r = parse(&[], Some(file)).unwrap();
        assert_eq!(r.nats, "nats://file:4222");
        assert_eq!(r.store.as_deref(), Some("file:///data"));
        assert_eq!(r.server.listen, "127.0.0.1:1");
        assert_eq!((r.server.queue.max_deliver, r.server.queue.replicas), (9, 3));
        assert_eq!(
            r.server.queue.ack_wait_secs,
            jobs::QueueSettings::default().ack_wait.as_secs()
        );
        assert_eq!(
            r.server.security.tls_cert.as_deref(),
            Some(Path::new("/etc/strata/cert.pem"))
        );
        assert!(r.server.security.allow_remote);

        let r = parse(
            &[
                "--nats",
                "nats://flag:4222",
                "--max-deliver",
                "2",
                "--token-file",
                "/run/tokens",
            ],
            Some(file),
        )
        .unwrap();
        assert_eq!(r.nats, "nats://flag:4222");
        assert_eq!(r.server.queue.max_deliver, 2);
        assert_eq!(
            r.server.queue.replicas, 3,
            "a key the flags leave alone stays the file's"
        );
        assert_eq!(
            r.server.security.token_file.as_deref(),
            Some(Path::new("/run/tokens"))
        );
        assert_eq!(
            r.server.security.tls_cert.as_deref(),
            Some(Path::new("/etc/strata/cert.pem"))
        );
        // A switch given on the command line stays on whatever the file says.
        let r = parse(&["--allow-remote"], Some("[security]\nallow_remote = false\n")).unwrap();
        assert!(r.server.security.allow_remote);
    }

    #[test]
    fn repeated_flags_add_to_the_files_list() {
        let file = "insecure_registries = [\"a:5000\"]\n";
        let r = parse(&[], Some(file)).unwrap();
        assert_eq!(r.server.insecure_registries, ["a:5000"]);
        let r = parse(&["--insecure-registry", "b:5000"], Some(file)).unwrap();
        assert_eq!(r.server.insecure_registries, ["a:5000", "b:5000"]);
    }

    #[test]
    fn feeds_are_flags_variables_and_keys() {
        let r = parse(&[], None).unwrap();
        assert!(r.server.feeds.is_empty() && r.server.feeds_config().unwrap().is_none());
        assert_eq!(r.server.feed_interval_secs, feeds::DEFAULT_INTERVAL_SECS);
        let file = "feeds = [\"osv\"]\nfeed_interval_secs = 60\n";
        let r = parse(&["--feed", "file:///srv/osv"], Some(file)).unwrap();
        assert_eq!(r.server.feeds, ["osv", "file:///srv/osv"]);
        let config = r.server.feeds_config().unwrap().unwrap();
        assert_eq!(config.interval, Duration::from_secs(60));
        let r = parse(&["--feed", "gopher://x"], None).unwrap();
        assert!(format!("{:#}", r.server.feeds_config().unwrap_err()).contains("unsupported scheme"));
        let r = parse(&["--feed", "osv", "--feed-interval-secs", "0"], None).unwrap();
        assert!(
            r.server
                .feeds_config()
                .unwrap_err()
                .to_string()
                .contains("feed_interval_secs")
        );
    }

    #[test]
    fn webhooks_come_from_the_file_only() {
        assert!(parse(&[], None).unwrap().server.webhooks.is_empty());
        let file = "[[webhooks]]\nurl = \"https://a.example/hook\"\nsecret_file = \"/etc/strata/a.key\"\n\
                    min_severity = \"high\"\nkinds = [\"finding_new\"]\n\
                    [[webhooks]]\nurl = \"http://b.example/\"\nsecret_file = \"/etc/strata/b.key\"\n\
                    repositories = [\"ghcr.io/acme/**\"]\nmax_attempts = 3\n";
        let hooks = parse(&["--listen", "127.0.0.1:9"], Some(file))
            .unwrap()
            .server
            .webhooks;
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].url, "https://a.example/hook");
        assert_eq!(hooks[0].min_severity.as_deref(), Some("high"));
        assert_eq!(hooks[0].kinds, ["finding_new"]);
        assert_eq!(hooks[1].secret_file, Path::new("/etc/strata/b.key"));
        assert_eq!(hooks[1].repositories, ["ghcr.io/acme/**"]);
        assert_eq!(hooks[1].max_attempts, Some(3));
        // A key a webhook does not have is named.
        let err = format!(
            "{:#}",
            parse(
                &[],
                Some("[[webhooks]]\nurl = \"http://x/\"\nsecret_file = \"/k\"\nsecret = \"s\"\n")
            )
            .unwrap_err()
        );
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        for (file, key) in [
            ("bogus = 1\n", "unknown key bogus"),
            ("[queue]\nmax_deliver = 3\nbogus = 1\n", "unknown key queue.bogus"),
            // The security keys live in their table now, not at the top.
            ("tls_cert = \"/x\"\n", "unknown key tls_cert"),
            ("[security]\ntls_crt = \"/x\"\n", "unknown key security.tls_crt"),
            ("queue = 3\n", "queue must be a table"),
        ] {
            let err = format!("{:#}", parse(&[], Some(file)).unwrap_err());
            assert!(err.contains(key), "{file:?}: {err}");
            assert!(err.contains("role.toml"), "{err}");
        }
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = format!(
            "{:#}",
            parse(&[], Some("[queue]\nmax_deliver = \"many\"\n")).unwrap_err()
        );
        assert!(err.contains("queue.max_deliver"), "{err}");
        let err = format!("{:#}", parse(&[], Some("listen = 7700\n")).unwrap_err());
        assert!(err.contains("listen"), "{err}");
        let err = format!("{:#}", parse(&[], Some("not toml [")).unwrap_err());
        assert!(err.contains("role.toml"), "{err}");
    }

    #[test]
    fn queue_settings_are_checked() {
        let mut q = parse(&[], None).unwrap().server.queue;
        assert!(q.to_queue().is_ok());
        q.replicas = 7;
        assert!(q.to_queue().unwrap_err().to_string().contains("replicas"));
        q.replicas = 1;
        q.max_deliver = 0;
        assert!(q.to_queue().unwrap_err().to_string().contains("max_deliver"));
    }
}
