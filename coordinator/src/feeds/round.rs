//! One round of the poller: every feed due is polled in turn (one poll at a
//! time per feed: rounds hold a lock), then, if any feed's records changed,
//! the next database is built from every feed's latest good records, stored,
//! diffed against the data in force and put in force by
//! `Coordinator::apply_vulndb`. State is written after the records it
//! names; records no longer named are removed last.

use std::sync::Arc;
use std::time::Duration;

use strata_proto::text::{cut_marked, now_unix_ms};

use super::fetch::{self, Fetched, Validators};
use super::{Feeds, backoff, sources, state};
use crate::cluster::fleet::RematchSummary;
use crate::cluster::{Coordinator, VulnData};
use crate::util::lock;
use crate::vulndb::{self, ChangeSet, FeedRecords};

/// Longest error kept in a feed's state.
const MAX_ERROR_CHARS: usize = 500;
/// Bound on one poll's fetch (reading a large directory or object included).
const POLL_LIMIT: Duration = Duration::from_secs(900);

/// What one round did.
#[derive(Debug, Default)]
pub struct Round {
    /// Each feed polled (URL without credentials) and what its poll found.
    pub polled: Vec<(String, Poll)>,
    /// The new data put in force, if any.
    pub applied: Option<Applied>,
    /// Why changed records could not be put in force (tried again next round).
    pub error: Option<String>,
}

/// What one feed's poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Not modified (a `304`, the same validators, or the same bytes).
    Unchanged,
    /// New records read and kept.
    Changed {
        records: usize,
    },
    Failed(String),
}

/// A new database put in force.
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: String,
    /// What was handed to `Coordinator::apply_vulndb`.
    pub changes: ChangeSet,
    pub summary: RematchSummary,
}

/// A poll's result before it is written into the feed's state.
enum Found {
    Unchanged(Option<Validators>),
    Changed {
        records: Arc<FeedRecords>,
        validators: Validators,
        content: String,
    },
    Failed(String),
}

impl Feeds {
    /// One round: with `all`, every feed is polled, else those due. A
    /// fetch is abandoned when `stop` turns true.
    pub(super) async fn round(
        &self,
        coordinator: &Coordinator,
        all: bool,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Round {
        let _one = self.inner.round.lock().await;
        let mut out = Round::default();
        let now = now_unix_ms();
        let due: Vec<usize> = {
            let states = lock(&self.inner.states);
            (0..self.inner.feeds.len())
                .filter(|&i| all || states[i].next_poll_unix_ms <= now)
                .collect()
        };
        let mut replaced = Vec::new();
        for &i in &due {
            if *stop.borrow() {
                break;
            }
            let found = tokio::select! {
                found = self.poll_feed(i) => found,
                _ = stop.wait_for(|s| *s) => break,
            };
            let feed = &self.inner.feeds[i];
            let poll = self.record(i, found, &mut replaced);
            let outcome = match &poll {
                Poll::Unchanged => "unchanged",
                Poll::Changed { .. } => "changed",
                Poll::Failed(_) => "failed",
            };
            coordinator.metrics().feed_poll(&feed.shown, outcome);
            match &poll {
                Poll::Failed(err) => {
                    tracing::warn!(feed = %feed.shown, error = %err, "feed poll failed; the data in force stays")
                }
                Poll::Changed { records } => tracing::info!(feed = %feed.shown, records, "feed changed"),
                Poll::Unchanged => tracing::debug!(feed = %feed.shown, "feed unchanged"),
            }
            out.polled.push((feed.shown.clone(), poll));
        }

        match self.put_in_force(coordinator).await {
            Ok(applied) => out.applied = applied,
            Err(err) => {
                tracing::error!(error = %err, "new feed data not put in force; the data in force stays");
                coordinator.metrics().vulndb_update("failed");
                out.error = Some(err);
            }
        }

        // The state names records only once they are stored; what it no
        // longer names goes after it is written.
        let states = self.current();
        let mut saved = vec![false; states.len()];
        let write: Vec<usize> = if out.applied.is_some() {
            (0..states.len()).collect()
        } else {
            due.clone()
        };
        for i in write {
            let feed = &self.inner.feeds[i];
            match state::save_state(&self.inner.kv, &feed.key, &states[i]).await {
                Ok(()) => saved[i] = true,
                Err(err) => tracing::warn!(feed = %feed.shown, error = %err, "feed state not saved"),
            }
        }
        for &i in &replaced {
            if saved[i] {
                let feed = &self.inner.feeds[i];
                state::remove_other_records(&self.inner.store, &feed.key, &states[i].content).await;
            }
        }
        *lock(&self.inner.published) = states;
        out
    }

    /// Fetches feed `i` and, when it changed, reads and stores its records.
    async fn poll_feed(&self, i: usize) -> Found {
        let feed = &self.inner.feeds[i];
        let (known, content) = {
            let has_records = lock(&self.inner.records)[i].is_some();
            let s = &lock(&self.inner.states)[i];
            let known = has_records.then(|| Validators {
                etag: s.etag.clone(),
                last_modified: s.last_modified.clone(),
            });
            (known, s.content.clone())
        };
        let fetched = tokio::time::timeout(
            POLL_LIMIT,
            fetch::fetch(&feed.source, &self.inner.http, known.as_ref()),
        )
        .await;
        let fetched = match fetched {
            Ok(Ok(f)) => f,
            Ok(Err(err)) => return Found::Failed(err),
            Err(_) => return Found::Failed(format!("no answer within {POLL_LIMIT:?}")),
        };
        let (read, validators, new_content) = match fetched {
            Fetched::NotModified => return Found::Unchanged(None),
            Fetched::Body {
                content: c,
                validators,
                ..
            }
            | Fetched::Dir {
                content: c,
                validators,
                ..
            } if known.is_some() && c == content => {
                // The same bytes again (a server without validators).
                return Found::Unchanged(Some(validators));
            }
            Fetched::Body {
                bytes,
                validators,
                content,
            } => {
                let origin = feed.shown.clone();
                let read =
                    tokio::task::spawn_blocking(move || FeedRecords::from_bytes(&bytes, &origin)).await;
                (read, validators, content)
            }
            Fetched::Dir {
                path,
                validators,
                content,
            } => {
                let read = tokio::task::spawn_blocking(move || FeedRecords::from_dir(&path)).await;
                (read, validators, content)
            }
        };
        let records = match read {
            Ok(Ok((records, summary))) => {
                if summary.skipped_total > 0 {
                    tracing::info!(feed = %feed.shown, skipped = summary.skipped_total, "feed records partly skipped (as an import skips them)");
                }
                Arc::new(records)
            }
            Ok(Err(err)) => return Found::Failed(err.to_string()),
            Err(err) => return Found::Failed(format!("reading the feed failed: {err}")),
        };
        if let Err(err) =
            state::save_records(&self.inner.store, &feed.key, &new_content, records.clone()).await
        {
            return Found::Failed(err);
        }
        Found::Changed {
            records,
            validators,
            content: new_content,
        }
    }

    /// Writes a poll's result into feed `i`'s state (and its records).
    fn record(&self, i: usize, found: Found, replaced: &mut Vec<usize>) -> Poll {
        let now = now_unix_ms();
        let interval = self.inner.interval;
        let mut states = lock(&self.inner.states);
        let s = &mut states[i];
        s.last_attempt_unix_ms = now;
        let succeeded = |s: &mut state::FeedState| {
            s.last_success_unix_ms = now;
            s.last_error.clear();
            s.consecutive_failures = 0;
            s.next_poll_unix_ms = now.saturating_add(interval.as_millis() as i64);
        };
        match found {
            Found::Unchanged(validators) => {
                succeeded(s);
                if let Some(v) = validators {
                    s.etag = v.etag;
                    s.last_modified = v.last_modified;
                }
                Poll::Unchanged
            }
            Found::Changed {
                records,
                validators,
                content,
            } => {
                succeeded(s);
                s.etag = validators.etag;
                s.last_modified = validators.last_modified;
                s.content = content;
                let n = records.len();
                drop(states);
                lock(&self.inner.records)[i] = Some(records);
                lock(&self.inner.data).dirty = true;
                replaced.push(i);
                Poll::Changed { records: n }
            }
            Found::Failed(err) => {
                let err = cut_marked(&err, MAX_ERROR_CHARS);
                s.last_error = err.clone();
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                let delay = backoff(s.consecutive_failures, interval);
                s.next_poll_unix_ms = now.saturating_add(delay.as_millis() as i64);
                Poll::Failed(err)
            }
        }
    }

    /// When the feeds' records changed (and every feed has been read, or
    /// there was no data at all): the next database, stored, then put in force.
    async fn put_in_force(&self, coordinator: &Coordinator) -> Result<Option<Applied>, String> {
        let (old, started_empty) = {
            let data = lock(&self.inner.data);
            if !data.dirty {
                return Ok(None);
            }
            (data.db.clone(), data.started_empty)
        };
        let records = lock(&self.inner.records).clone();
        let every_feed = records.iter().all(Option::is_some);
        let present: Vec<Arc<FeedRecords>> = records.into_iter().flatten().collect();
        if present.is_empty() || (!every_feed && !started_empty) {
            return Ok(None);
        }
        let names = sources(&self.inner.feeds, &self.current());
        let (new, changes) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&FeedRecords> = present.iter().map(AsRef::as_ref).collect();
            let new = vulndb::combine(&refs, names);
            let changes = vulndb::diff::diff(&old, &new);
            (Arc::new(new), changes)
        })
        .await
        .map_err(|e| format!("building the database failed: {e}"))?;
        state::save_combined(&self.inner.store, new.clone()).await?;
        let same = changes.is_empty() && lock(&self.inner.data).db.version() == new.version();
        let applied = if same {
            None
        } else {
            let index = {
                let new = new.clone();
                tokio::task::spawn_blocking(move || VulnData::new(&new))
                    .await
                    .map_err(|e| format!("building the vulnerability index failed: {e}"))?
            };
            let summary = coordinator
                .apply_vulndb(index, &changes)
                .await
                .map_err(|e| format!("putting the new data in force: {e}"))?;
            coordinator.metrics().vulndb_update("applied");
            tracing::info!(
                version = new.version(),
                advisories = new.advisories().len(),
                added = changes.added.len(),
                changed = changes.changed.len(),
                removed = changes.removed.len(),
                packages = changes.touched.len(),
                images = summary.images,
                findings_new = summary.findings_new,
                findings_resolved = summary.findings_resolved,
                "new vulnerability data in force"
            );
            Some(Applied {
                version: new.version().to_owned(),
                changes,
                summary,
            })
        };
        let counts: Vec<u64> = lock(&self.inner.records)
            .iter()
            .map(|r| r.as_ref().map_or(0, |r| r.len() as u64))
            .collect();
        for (s, n) in lock(&self.inner.states).iter_mut().zip(counts) {
            s.records = n;
        }
        let mut data = lock(&self.inner.data);
        data.db = new;
        data.started_empty = started_empty && !every_feed;
        data.dirty = false;
        Ok(applied)
    }
}
