//! Webhooks: each event a webhook's filter keeps is POSTed to it as JSON,
//! signed, in sequence order, retried, and never sent again once delivered.
//!
//! # Configuration
//! In the role's config file (never a flag: the secret's path sits with the
//! rest), an array of tables:
//! ```toml
//! [[webhooks]]
//! url = "https://hooks.example.com/strata"
//! secret_file = "/etc/strata/webhook.key"  # the HMAC key, 16+ bytes, trimmed
//! min_severity = "high"                     # optional: the lowest severity sent
//! repositories = ["ghcr.io/acme/**"]        # optional: globs over the image's repository
//! kinds = ["finding_new"]                   # optional: finding_new, finding_resolved, image_severity
//! max_attempts = 8                          # optional: tries of one event, 1 to 20
//! ```
//!
//! # The request
//! `POST <url>` with `Content-Type: application/json`, the body one event as
//! [`event_json`] writes it (with `sequence` and `event_id`), and
//! - `X-Strata-Timestamp: <unix seconds>` — when this attempt was signed;
//! - `X-Strata-Signature: sha256=<hex>` — HMAC-SHA256, keyed with the
//!   secret, of the bytes `<timestamp>.<body>` (the timestamp header's
//!   value, a full stop, the raw body).
//!
//! A receiver verifies by computing the same HMAC over the header and the
//! raw body it got and comparing in constant time; it rejects a timestamp
//! more than a few minutes from its clock (a replayed request carries an old
//! one, and changing it breaks the signature), and drops an event whose
//! `sequence` it already has (delivery is at least once: see below).
//!
//! # Delivery
//! - One task per webhook reads the log from its cursor, in sequence order;
//!   an event is sent only after the one before it was delivered or given up.
//! - A 2xx delivers. A network error, a timeout, a 429 or a 5xx is tried
//!   again after a doubling pause ([`RetryPolicy`]: 1 s, 2 s, … at most 60 s,
//!   a 429's `Retry-After` within that), at most `max_attempts` tries and
//!   [`RetryPolicy::max_total`] in all; any other answer (a 4xx, a redirect)
//!   is not retried. Given up: a dead letter, counted and logged with the
//!   event's sequence; the cursor moves past it.
//! - The cursor (the last sequence delivered or given up) is stored in the
//!   state store (a `strata_webhooks` key-value bucket in the cluster, a
//!   table of the `redb` file for `strata serve`), keyed by the URL's hash,
//!   after every delivery: a restart resumes after it. A delivery cut by
//!   shutdown, or a crash between the receiver's 2xx and the write, is sent
//!   again: at least once, never skipped.
//! - A webhook seen for the first time starts at the log's newest event: it
//!   is told what happens from then on, not the whole history kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use strata_proto::{Severity, v1};
use tokio::sync::broadcast::error::RecvError;

use super::{EventFilter, EventLog, event_json, parse_kind};
use crate::cluster::kv::Kv;

/// The state bucket (or `redb` table) webhook cursors are kept in.
pub const WEBHOOKS_BUCKET: &str = "strata_webhooks";
pub const SIGNATURE_HEADER: &str = "x-strata-signature";
pub const TIMESTAMP_HEADER: &str = "x-strata-timestamp";
/// Bound on a secret file.
const MAX_SECRET_BYTES: u64 = 4096;
/// A key shorter than this is refused (as API tokens are).
const MIN_SECRET_BYTES: usize = 16;
/// Bound on webhooks configured.
const MAX_WEBHOOKS: usize = 64;
/// Events read from the log at once.
const PAGE: usize = 256;
/// A quiet webhook looks at the log this often even without a live event.
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// Pause after the log could not be read.
const LOG_RETRY: Duration = Duration::from_secs(2);
/// Bound on one attempt (connect, send, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[webhooks]]` table of a role's config file.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// A file holding the HMAC key (surrounding whitespace trimmed).
    pub secret_file: PathBuf,
    /// The lowest severity sent (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
    /// Globs over the image's repository (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Event kinds sent (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Tries of one event before it is a dead letter (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// Why the webhooks could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("webhook {url}: {reason}")]
pub struct WebhookError {
    url: String,
    reason: String,
}

/// How one event is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The pause after the first failed try (doubling after each).
    pub first_pause: Duration,
    pub max_pause: Duration,
    pub max_attempts: u32,
    /// Bound on the tries of one event, pauses included.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(60),
            max_attempts: 8,
            max_total: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed try number `attempt` (1-based).
    fn pause(&self, attempt: u32) -> Duration {
        let doubled = self
            .first_pause
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX));
        doubled.min(self.max_pause)
    }
}

/// A webhook, checked and with its key read.
#[derive(Clone)]
pub struct Webhook {
    url: reqwest::Url,
    secret: Vec<u8>,
    filter: EventFilter,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url.as_str())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Webhook {
    /// Checks `config` and reads its key.
    pub fn load(config: &WebhookConfig) -> Result<Webhook, WebhookError> {
        let fail = |reason: String| WebhookError {
            url: shown(&config.url),
            reason,
        };
        let url = reqwest::Url::parse(config.url.trim()).map_err(|e| fail(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(fail("give an http:// or https:// URL".to_owned()));
        }
        let secret = read_secret(&config.secret_file).map_err(fail)?;
        let min_severity = match &config.min_severity {
            Some(s) => Some(
                s.parse::<Severity>()
                    .map_err(|e| fail(format!("min_severity: {e}")))?,
            ),
            None => None,
        };
        let kinds = config
            .kinds
            .iter()
            .map(|k| {
                parse_kind(k).ok_or_else(|| {
                    fail(format!(
                        "kinds: {k:?} is not one of finding_new, finding_resolved, image_severity"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = EventFilter::new(min_severity, kinds, &config.repositories).map_err(fail)?;
        let max_attempts = config.max_attempts.unwrap_or(RetryPolicy::default().max_attempts);
        if !(1..=20).contains(&max_attempts) {
            return Err(fail("max_attempts must be 1 to 20".to_owned()));
        }
        Ok(Webhook {
            url,
            secret,
            filter,
            retry: RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            },
        })
    }

    /// Every webhook of a role's config.
    pub fn load_all(configs: &[WebhookConfig]) -> Result<Vec<Webhook>, WebhookError> {
        if configs.len() > MAX_WEBHOOKS {
            return Err(WebhookError {
                url: "-".to_owned(),
                reason: format!("{} webhooks: at most {MAX_WEBHOOKS}", configs.len()),
            });
        }
        configs.iter().map(Webhook::load).collect()
    }

    /// This webhook with another retry policy (tests: shorter pauses).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Webhook {
        self.retry = retry;
        self
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The key its cursor is stored under.
    fn cursor_key(&self) -> String {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(self.url.as_str().as_bytes());
        format!("cursor.{}", hex::encode(&hash[..16]))
    }
}

/// The URL without credentials or query (which may carry a token), for messages.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => strata_proto::text::cut(url, 100).to_string(),
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err("secret_file: give the file holding the HMAC key".to_owned());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("secret_file {shown}: {e}"))?;
    if meta.len() > MAX_SECRET_BYTES {
        return Err(format!("secret_file {shown}: over {MAX_SECRET_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("secret_file {shown}: {e}"))?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "secret_file {shown}: the key must be at least {MIN_SECRET_BYTES} bytes"
        ));
    }
    Ok(secret)
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`: what follows `sha256=`
/// in the signature header.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Delivery figures since the process started, for `GetStatus`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    webhooks: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    dead_letters: AtomicU64,
}

/// A snapshot of [`DeliveryStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deliveries {
    pub webhooks: u64,
    pub delivered: u64,
    pub retries: u64,
    pub dead_letters: u64,
}

impl DeliveryStats {
    pub fn snapshot(&self) -> Deliveries {
        Deliveries {
            webhooks: self.webhooks.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
        }
    }
}

/// Delivers every webhook's events from `log` until `shutdown`, cursors
/// kept in `cursors`. Returns once every webhook's task has stopped.
/// Whether this process delivers now: with several coordinators, the one
/// holding the `webhooks` lease does (the cursors are shared, so the next
/// holder goes on from the last event delivered; around a takeover an
/// event may be sent twice, never skipped: receivers dedupe by event id).
pub type Holds = Arc<dyn Fn() -> bool + Send + Sync>;

/// How often a deliverer without the lease looks again.
const LEASE_CHECK: Duration = Duration::from_secs(1);

pub async fn run(
    webhooks: Vec<Webhook>,
    log: EventLog,
    cursors: Kv,
    holds: Option<Holds>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    log.deliveries()
        .webhooks
        .store(webhooks.len() as u64, Ordering::Relaxed);
    if webhooks.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        // A webhook answers; it does not send the signed body elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(format!("strata/{}", crate::VERSION))
        .build()
    {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "webhooks: cannot build the HTTP client; no webhook is delivered");
            return;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for hook in webhooks {
        let deliverer = Deliverer {
            hook,
            log: log.clone(),
            cursors: cursors.clone(),
            client: client.clone(),
            holds: holds.clone(),
        };
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = deliverer.run() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

struct Deliverer {
    hook: Webhook,
    log: EventLog,
    cursors: Kv,
    client: reqwest::Client,
    holds: Option<Holds>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    url: String,
    sequence: u64,
}

/// What the tries of one event came to.
enum Outcome {
    Delivered,
    DeadLetter(String),
    /// The lease went to another coordinator between tries: it sends it.
    Abandoned,
}

impl Deliverer {
    /// Runs until cancelled (the caller selects on shutdown).
    async fn run(self) {
        let url = shown(self.hook.url());
        let mut live = self.log.subscribe();
        let held = || self.held();
        while !held() {
            tokio::time::sleep(LEASE_CHECK).await;
        }
        let mut cursor = self.start_retrying(&url).await;
        tracing::info!(webhook = %url, after = cursor, "webhook delivering");
        loop {
            if !held() {
                tracing::info!(webhook = %url, "webhook paused: another coordinator holds the webhooks lease");
                while !held() {
                    tokio::time::sleep(LEASE_CHECK).await;
                }
                // The last holder moved the shared cursor on meanwhile.
                cursor = self.start_retrying(&url).await;
                tracing::info!(webhook = %url, after = cursor, "webhook delivering");
            }
            let page = match self.log.after(cursor, PAGE).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(webhook = %url, error = %err, "webhook: cannot read the event log");
                    tokio::time::sleep(LOG_RETRY).await;
                    continue;
                }
            };
            if page.is_empty() {
                tokio::select! {
                    r = live.recv() => if let Err(RecvError::Closed) = r {
                        tokio::time::sleep(IDLE_CHECK).await;
                    },
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            }
            let mut moved = false;
            for e in page {
                if !held() {
                    // Lost the lease mid-page: the holder goes on from the
                    // stored cursor (this one's unsaved moves are redone).
                    moved = false;
                    break;
                }
                if self.hook.filter.matches(&e) {
                    match self.deliver(&e).await {
                        Outcome::Abandoned => {
                            moved = false;
                            break;
                        }
                        Outcome::Delivered => {
                            self.log.deliveries().delivered.fetch_add(1, Ordering::Relaxed);
                            if let Some(m) = self.log.metrics() {
                                m.webhook_delivered();
                            }
                        }
                        Outcome::DeadLetter(reason) => {
                            self.log.deliveries().dead_letters.fetch_add(1, Ordering::Relaxed);
                            if let Some(m) = self.log.metrics() {
                                m.webhook_dead_letter();
                            }
                            tracing::warn!(webhook = %url, sequence = e.sequence, reason = %reason, "webhook gave up on an event (dead letter)");
                        }
                    }
                    cursor = e.sequence;
                    self.save(cursor).await;
                    moved = false;
                } else {
                    cursor = e.sequence;
                    moved = true;
                }
            }
            if moved {
                self.save(cursor).await;
            }
        }
    }

    async fn start_retrying(&self, url: &str) -> u64 {
        loop {
            match self.start().await {
                Ok(c) => return c,
                Err(err) => {
                    tracing::warn!(webhook = %url, error = %err, "webhook cursor unreadable; trying again");
                    tokio::time::sleep(LOG_RETRY).await;
                }
            }
        }
    }

    /// The stored cursor, or (first time) the log's newest sequence, stored.
    async fn start(&self) -> Result<u64, String> {
        let key = self.hook.cursor_key();
        if let Some(entry) = self.cursors.get(&key).await.map_err(|e| e.to_string())? {
            let c: Cursor = serde_json::from_slice(&entry.value).map_err(|e| format!("cursor {key}: {e}"))?;
            return Ok(c.sequence);
        }
        let newest = self.log.last_sequence().await.map_err(|e| e.to_string())?;
        self.save(newest).await;
        Ok(newest)
    }

    /// Whether this process delivers now (the `webhooks` lease).
    fn held(&self) -> bool {
        self.holds.as_ref().is_none_or(|h| h())
    }

    async fn save(&self, sequence: u64) {
        if !self.held() {
            // The cursor is the holder's now: never moved back from here.
            return;
        }
        let cursor = Cursor {
            url: shown(self.hook.url()),
            sequence,
        };
        let Ok(value) = serde_json::to_vec(&cursor) else {
            return;
        };
        if let Err(err) = self.cursors.put(&self.hook.cursor_key(), value.into()).await {
            // Delivery goes on; a restart before the next write re-sends.
            tracing::warn!(webhook = %cursor.url, sequence, error = %err, "webhook cursor not stored");
        }
    }

    /// Tries `e` until delivered or given up.
    async fn deliver(&self, e: &v1::FleetEvent) -> Outcome {
        let body = match serde_json::to_vec(&event_json(e)) {
            Ok(b) => b,
            Err(err) => return Outcome::DeadLetter(format!("encoding: {err}")),
        };
        let policy = self.hook.retry;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (retry, reason, asked_pause) = match self.attempt(&body).await {
                Ok(()) => return Outcome::Delivered,
                Err(failure) => failure,
            };
            if let Some(m) = self.log.metrics() {
                m.webhook_failed();
            }
            if !retry {
                return Outcome::DeadLetter(reason);
            }
            if attempt >= policy.max_attempts {
                return Outcome::DeadLetter(format!("{reason} (after {attempt} tries)"));
            }
            let pause = asked_pause
                .unwrap_or_else(|| policy.pause(attempt))
                .min(policy.max_pause);
            if started.elapsed() + pause > policy.max_total {
                return Outcome::DeadLetter(format!("{reason} (gave up after {:?})", started.elapsed()));
            }
            tracing::debug!(webhook = %shown(self.hook.url()), sequence = e.sequence, attempt, reason = %reason, "webhook delivery failed; retrying");
            self.log.deliveries().retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            if !self.held() {
                return Outcome::Abandoned;
            }
        }
    }

    /// One signed POST. `Err((retry?, reason, pause asked by the server))`.
    async fn attempt(&self, body: &[u8]) -> Result<(), (bool, String, Option<Duration>)> {
        let timestamp = u64::try_from(strata_proto::text::now_unix_ms() / 1000).unwrap_or(0);
        let sig = signature(&self.hook.secret, timestamp, body);
        let sent = self
            .client
            .post(self.hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, format!("sha256={sig}"))
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(err) => return Err((true, strata_proto::text::error_chain(&err), None)),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        Err((retry, format!("answered {status}"), retry_after.filter(|_| retry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn signature_is_hmac_sha256() {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The signed message is "<timestamp>.<body>".
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, b"{\"a\":1}"),
            hex::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn pauses_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        let pauses: Vec<u64> = (1..=9).map(|a| p.pause(a).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.pause(100), p.max_pause);
    }

    #[test]
    fn configs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "0123456789abcdef-secret\n").unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny").unwrap();
        let good = WebhookConfig {
            url: "https://user:pw@hooks.example.com/x?token=t".into(),
            secret_file: key.clone(),
            min_severity: Some("high".into()),
            repositories: vec!["ghcr.io/acme/**".into()],
            kinds: vec!["finding_new".into()],
            max_attempts: Some(3),
        };
        let hook = Webhook::load(&good).unwrap();
        assert_eq!(hook.secret, b"0123456789abcdef-secret");
        assert!(!format!("{hook:?}").contains("secret\""));
        for (bad, says) in [
            (
                WebhookConfig {
                    url: "ftp://x/y".into(),
                    ..good.clone()
                },
                "http",
            ),
            (
                WebhookConfig {
                    secret_file: short.clone(),
                    ..good.clone()
                },
                "at least 16",
            ),
            (
                WebhookConfig {
                    secret_file: dir.path().join("missing"),
                    ..good.clone()
                },
                "secret_file",
            ),
            (
                WebhookConfig {
                    kinds: vec!["finding_old".into()],
                    ..good.clone()
                },
                "kinds",
            ),
            (
                WebhookConfig {
                    min_severity: Some("dire".into()),
                    ..good.clone()
                },
                "min_severity",
            ),
            (
                WebhookConfig {
                    max_attempts: Some(0),
                    ..good.clone()
                },
                "max_attempts",
            ),
        ] {
            let err = Webhook::load(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
            // Credentials and query never shown.
            assert!(!err.contains("pw@") && !err.contains("token=t"), "{err}");
        }
    }
}
