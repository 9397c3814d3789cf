//! Advisory feeds polled live: the vulnerability data in force follows the
//! feeds (`--feed`) without a restart.
//!
//! # Layout
//! - this file: [`FeedsConfig`] and the word `osv` ([`expand`]), [`Feeds`]
//!   (the handle the roles and `AdminService` hold) and its loop.
//! - `round.rs`: one round: every feed due polled, then, when one changed,
//!   the next database built and put in force.
//! - `fetch.rs`: conditional fetching per scheme (HTTP validators, object
//!   store `head`, directory fingerprints), bounded.
//! - [`state`]: what survives a restart: per-feed state in the state
//!   buckets, each feed's last good records and the combined database in
//!   the object store.
//!
//! # Contract
//! - Each feed is polled at start, then every interval after a success; a
//!   failure is retried after 15 s, doubling each time, never later than
//!   the interval. One round runs at a time, so one poll at a time per feed.
//! - A feed that changed is read into records (`vulndb::FeedRecords`: the
//!   importer's normalisation, strict about unreadable records); the next
//!   database is the merge of the latest good records of **every** feed
//!   (`vulndb::combine`), its `ChangeSet` against the data in force
//!   (`vulndb::diff`) is handed to `Coordinator::apply_vulndb`, which swaps
//!   it in atomically.
//! - A broken feed (unreachable, an error status, a truncated zip, invalid
//!   JSON, a record that does not parse) changes nothing in force: its last
//!   good records stay, its error is in its state and in the metrics.
//! - Data from `--db` is replaced only once every feed has been read (a
//!   server started with one feed's data would otherwise lose every other
//!   ecosystem's advisories until they arrive); a server with no data at
//!   all takes what the feeds give as it comes.
//! - A restart starts from the combined database in the store and each
//!   feed's validators and records, so unchanged feeds answer `304`.

mod fetch;
mod round;
pub mod state;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt as _};

use crate::cluster::kv::Kv;
use crate::cluster::{Coordinator, VulnData};
use crate::util::lock;
use crate::vulndb::{self, Db, FeedRecords};
use fetch::FeedSource;
pub use round::{Applied, Poll, Round};
pub use state::FeedState;

/// The word for osv.dev's per-ecosystem exports.
pub const OSV: &str = "osv";
/// Polls every hour by default.
pub const DEFAULT_INTERVAL_SECS: u64 = 3600;
/// The first retry after a failure; doubled per failure, capped at the interval.
const FIRST_RETRY: Duration = Duration::from_secs(15);
/// The loop wakes at least this often (feed age gauges stay current).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How often a coordinator without the feeds lease looks for what the
/// holder stored (a head of one object, a key-value read per feed).
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("feed {feed}: {reason}")]
    Config { feed: String, reason: String },
    #[error("vulnerability database: {0}")]
    Data(#[from] vulndb::VulnDbError),
    #[error("{0}")]
    Task(String),
}

/// Which feeds, how often.
#[derive(Clone, Debug)]
pub struct FeedsConfig {
    /// As given: URLs, paths, or `osv` (see [`expand`]).
    pub urls: Vec<String>,
    pub interval: Duration,
}

/// `osv` → osv.dev's per-ecosystem export URLs (`vulndb::DEFAULT_FEEDS`
/// under `vulndb::OSV_EXPORT_BASE`); everything else as given, checked.
/// Duplicates (after credentials are removed) are dropped.
pub fn expand(given: &[String]) -> Result<Vec<String>, FeedError> {
    let mut out: Vec<String> = Vec::new();
    for url in given {
        let urls = if url.trim() == OSV {
            vulndb::osv_export_urls(vulndb::OSV_EXPORT_BASE, vulndb::DEFAULT_FEEDS)
        } else {
            FeedSource::parse(url).map_err(|reason| FeedError::Config {
                feed: fetch::redact(url),
                reason,
            })?;
            vec![url.clone()]
        };
        for url in urls {
            let shown = fetch::redact(&url);
            if !out.iter().any(|u| fetch::redact(u) == shown) {
                out.push(url);
            }
        }
    }
    Ok(out)
}

/// One feed as configured.
struct Feed {
    /// As given (may hold credentials: never shown).
    source: FeedSource,
    /// Without credentials: shown, stored, a metric label.
    shown: String,
    key: String,
}

/// The feeds and their state. Cheap to clone.
#[derive(Clone)]
pub struct Feeds {
    inner: Arc<Inner>,
}

struct Inner {
    feeds: Vec<Feed>,
    interval: Duration,
    kv: Kv,
    store: Arc<dyn ObjectStore>,
    http: reqwest::Client,
    /// Per feed, in the order of `feeds`: as the round in progress changes it.
    states: Mutex<Vec<FeedState>>,
    /// As last written to the state bucket (at the end of each round): what
    /// [`Feeds::status`] shows, so what it shows survives a restart.
    published: Mutex<Vec<FeedState>>,
    /// Per feed: its last good records.
    records: Mutex<Vec<Option<Arc<FeedRecords>>>>,
    /// The data in force and where it came from.
    data: Mutex<InForce>,
    /// One round at a time.
    round: tokio::sync::Mutex<()>,
    /// The stored combined database last taken in without the feeds lease
    /// (its entity tag, time and size).
    followed: Mutex<Option<String>>,
}

struct InForce {
    db: Arc<Db>,
    /// No data at start (neither stored nor `--db`): any feed's is better.
    started_empty: bool,
    /// The feeds' records differ from what is in force: combine at the next round.
    dirty: bool,
}

impl Feeds {
    /// Reads the feeds' state (from `kv`) and their last good records and
    /// the combined database (from `store`), then picks the data to start
    /// with: the stored combined database, else `db` (`--db`), else none.
    pub async fn open(
        config: &FeedsConfig,
        kv: Kv,
        store: Arc<dyn ObjectStore>,
        db: Option<&Path>,
    ) -> Result<Feeds, FeedError> {
        let urls = expand(&config.urls)?;
        let mut feeds = Vec::with_capacity(urls.len());
        let mut states = Vec::with_capacity(urls.len());
        let mut records = Vec::with_capacity(urls.len());
        for url in &urls {
            let shown = fetch::redact(url);
            let key = state::feed_key(&shown);
            let source = FeedSource::parse(url).map_err(|reason| FeedError::Config {
                feed: shown.clone(),
                reason,
            })?;
            let mut feed_state = match state::load_state(&kv, &key).await {
                Ok(s) => s.unwrap_or_default(),
                Err(err) => {
                    tracing::warn!(feed = %shown, error = %err, "feed state unreadable; starting it afresh");
                    FeedState::default()
                }
            };
            feed_state.url = shown.clone();
            let kept = match state::load_records(&store, &key, &feed_state.content).await {
                Ok(r) => r.map(Arc::new),
                Err(err) => {
                    tracing::warn!(feed = %shown, error = %err, "feed records unreadable; fetching the feed again");
                    None
                }
            };
            if kept.is_none() {
                // Validators without their records would make the next poll a 304 with nothing.
                feed_state.etag.clear();
                feed_state.last_modified.clear();
                feed_state.content.clear();
                feed_state.records = 0;
            }
            feeds.push(Feed { source, shown, key });
            states.push(feed_state);
            records.push(kept);
        }
        let stored = match state::load_combined(&store).await {
            Ok(db) => db,
            Err(err) => {
                tracing::warn!(error = %err, "stored feed database unreadable; starting from --db");
                None
            }
        };
        let expected = sources(&feeds, &states);
        let data = match (stored, db) {
            (Some(stored), _) => {
                tracing::info!(
                    version = stored.version(),
                    "starting from the feeds' last database"
                );
                let dirty = stored.status().sources != expected;
                InForce {
                    db: Arc::new(stored),
                    started_empty: false,
                    dirty,
                }
            }
            (None, Some(path)) => InForce {
                db: Arc::new(open_db(path).await?),
                started_empty: false,
                dirty: true,
            },
            (None, None) => {
                tracing::warn!(
                    "no vulnerability data until the first feed is read (no --db, nothing stored)"
                );
                InForce {
                    db: Arc::new(Db::from_advisories(Vec::new(), Vec::new())),
                    started_empty: true,
                    dirty: true,
                }
            }
        };
        Ok(Feeds {
            inner: Arc::new(Inner {
                feeds,
                interval: config.interval.max(Duration::from_secs(1)),
                kv,
                store,
                http: fetch::http_client().map_err(FeedError::Task)?,
                published: Mutex::new(states.clone()),
                states: Mutex::new(states),
                records: Mutex::new(records),
                data: Mutex::new(data),
                round: tokio::sync::Mutex::new(()),
                followed: Mutex::new(None),
            }),
        })
    }

    /// The data to build the coordinator with (what [`Self::open`] picked;
    /// its index takes seconds for a large database: off the async threads).
    pub async fn vuln_data(&self) -> Result<VulnData, FeedError> {
        let db = self.db();
        tokio::task::spawn_blocking(move || VulnData::new(&db))
            .await
            .map_err(|e| FeedError::Task(format!("building the vulnerability index: {e}")))
    }

    /// The database in force, as the feeds know it.
    pub fn db(&self) -> Arc<Db> {
        lock(&self.inner.data).db.clone()
    }

    /// Every feed's state as of the last round (written to the state
    /// bucket by then), in the configured order.
    pub fn status(&self) -> Vec<FeedState> {
        lock(&self.inner.published).clone()
    }

    /// Every feed's state as the round in progress changes it.
    fn current(&self) -> Vec<FeedState> {
        lock(&self.inner.states).clone()
    }

    /// Polls until `shutdown`: every feed at once at start, then each when
    /// due. A fetch in progress is abandoned on shutdown; a database being
    /// put in force is not.
    pub async fn run(self, coordinator: Coordinator, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut first = true;
        if let Some(peers) = coordinator.peers() {
            tokio::select! {
                _ = peers.first_round() => {}
                _ = &mut shutdown => return,
            }
        }
        loop {
            // With several coordinators one polls (the feeds lease); the
            // others load what it stores.
            if !coordinator.holds_lease(crate::cluster::peers::LEASE_FEEDS) {
                self.follow(&coordinator).await;
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_EVERY) => continue,
                    _ = &mut shutdown => return,
                }
            }
            let round = self.round(&coordinator, first, stop_rx.clone());
            tokio::pin!(round);
            tokio::select! {
                _ = &mut round => {}
                _ = &mut shutdown => {
                    let _ = stop_tx.send(true);
                    // Only fetches stop at once; a combine in progress finishes.
                    round.await;
                    return;
                }
            }
            first = false;
            self.record_ages(&coordinator);
            let wait = self.until_next().min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// Without the feeds lease: takes in what the holder stored, each
    /// feed's state and records (so a lease taken over polls on from where
    /// the holder was, validators and records agreeing) and the combined
    /// database, put in force here as the holder did (only what changed
    /// re-matched).
    async fn follow(&self, coordinator: &Coordinator) {
        for (i, feed) in self.inner.feeds.iter().enumerate() {
            let Ok(Some(mut stored)) = state::load_state(&self.inner.kv, &feed.key).await else {
                continue;
            };
            stored.url = feed.shown.clone();
            let ours = lock(&self.inner.states).get(i).map(|s| s.content.clone());
            if ours.as_deref() != Some(stored.content.as_str()) {
                match state::load_records(&self.inner.store, &feed.key, &stored.content).await {
                    Ok(Some(records)) => lock(&self.inner.records)[i] = Some(Arc::new(records)),
                    // Not readable yet: what is kept here stays, with its state.
                    _ => continue,
                }
            }
            lock(&self.inner.states)[i] = stored.clone();
            lock(&self.inner.published)[i] = stored;
        }
        let tag = match self
            .inner
            .store
            .head(&object_store::path::Path::from(state::COMBINED_PATH))
            .await
        {
            Ok(meta) => format!("{:?}/{}/{}", meta.e_tag, meta.last_modified, meta.size),
            Err(_) => return,
        };
        if lock(&self.inner.followed).as_deref() == Some(tag.as_str()) {
            self.mark_dirty_unless_combined();
            return;
        }
        let new = match state::load_combined(&self.inner.store).await {
            Ok(Some(db)) => Arc::new(db),
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "the feeds' database another coordinator stored is unreadable; trying again");
                return;
            }
        };
        let old = self.db();
        if old.version() != new.version() {
            let applied = async {
                let (index, changes) = {
                    let (old, new) = (old.clone(), new.clone());
                    tokio::task::spawn_blocking(move || (VulnData::new(&new), vulndb::diff::diff(&old, &new)))
                        .await
                        .map_err(|e| format!("building the vulnerability index failed: {e}"))?
                };
                coordinator
                    .apply_vulndb(index, &changes)
                    .await
                    .map_err(|e| format!("putting the new data in force: {e}"))
            };
            match applied.await {
                Ok(summary) => tracing::info!(
                    version = new.version(),
                    images = summary.images,
                    "new vulnerability data in force (polled by another coordinator)"
                ),
                Err(err) => {
                    tracing::warn!(error = %err, "taking in the feeds' new database failed; trying again");
                    return;
                }
            }
        }
        let mut data = lock(&self.inner.data);
        data.db = new;
        data.started_empty = false;
        drop(data);
        *lock(&self.inner.followed) = Some(tag);
        self.mark_dirty_unless_combined();
    }

    /// Whether the data in force is the combination of the feeds' records
    /// as stored: a holder that stored a feed's new records and died before
    /// storing the database leaves it behind, and whoever holds the lease
    /// next must combine (its polls of that feed will be "not modified").
    fn mark_dirty_unless_combined(&self) {
        let expected = sources(&self.inner.feeds, &self.current());
        let mut data = lock(&self.inner.data);
        data.dirty = data.db.status().sources != expected;
    }

    /// One round now with every feed polled, due or not (tests, and the
    /// first round of [`Self::run`]).
    pub async fn poll_now(&self, coordinator: &Coordinator) -> Round {
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        self.round(coordinator, true, stop_rx).await
    }

    /// How long until the next feed is due (or a combine is to be retried).
    fn until_next(&self) -> Duration {
        let now = strata_proto::text::now_unix_ms();
        let next = lock(&self.inner.states)
            .iter()
            .map(|s| s.next_poll_unix_ms)
            .min()
            .unwrap_or(i64::MAX);
        let wait = Duration::from_millis(next.saturating_sub(now).max(0) as u64);
        let dirty = lock(&self.inner.data).dirty;
        if dirty && self.every_feed_read() {
            wait.min(FIRST_RETRY)
        } else {
            wait
        }
    }

    fn every_feed_read(&self) -> bool {
        lock(&self.inner.records).iter().all(Option::is_some)
    }

    fn record_ages(&self, coordinator: &Coordinator) {
        let now = strata_proto::text::now_unix_ms();
        for s in lock(&self.inner.published).iter() {
            if s.last_success_unix_ms > 0 {
                let age = (now - s.last_success_unix_ms).max(0) as f64 / 1000.0;
                coordinator.metrics().feed_age(&s.url, age);
            }
            coordinator
                .metrics()
                .feed_consecutive_failures(&s.url, u64::from(s.consecutive_failures));
        }
    }
}

/// A database file, read off the async threads.
async fn open_db(path: &Path) -> Result<Db, FeedError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Db::open(&path))
        .await
        .map_err(|e| FeedError::Task(format!("reading the database: {e}")))?
        .map_err(FeedError::from)
}

/// The delay before the next poll after `failures` failures in a row.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1 << doublings).min(interval)
}

/// How the combined database names its inputs: each feed with its content.
fn sources(feeds: &[Feed], states: &[FeedState]) -> Vec<String> {
    feeds
        .iter()
        .zip(states)
        .map(|(f, s)| format!("{} {}", f.shown, s.content))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osv_is_every_ecosystem_export() {
        let urls = expand(&["osv".to_owned(), "https://mirror.example/x/all.zip".to_owned()]).unwrap();
        assert_eq!(urls.len(), vulndb::DEFAULT_FEEDS.len() + 1);
        assert_eq!(urls[0], format!("{}/Debian/all.zip", vulndb::OSV_EXPORT_BASE));
        assert!(urls.contains(&format!("{}/Red%20Hat/all.zip", vulndb::OSV_EXPORT_BASE)));
        assert!(urls.contains(&format!("{}/crates.io/all.zip", vulndb::OSV_EXPORT_BASE)));
        assert_eq!(urls.last().unwrap(), "https://mirror.example/x/all.zip");
        // Given twice (or once by `osv` and once by hand): polled once.
        let again = expand(&[
            "osv".to_owned(),
            format!("{}/PyPI/all.zip", vulndb::OSV_EXPORT_BASE),
            "osv".to_owned(),
        ])
        .unwrap();
        assert_eq!(again.len(), vulndb::DEFAULT_FEEDS.len());
        assert!(expand(&["gopher://x".to_owned()]).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        let delays: Vec<u64> = (1..=10).map(|n| backoff(n, hour).as_secs()).collect();
        assert_eq!(delays, [15, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(1, Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, hour), hour);
    }
}
