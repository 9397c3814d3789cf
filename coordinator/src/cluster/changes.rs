//! Change streams: with several coordinators (`peers.rs`), each follows
//! the state buckets as the others write them, so its waiters, its scan
//! event logs and its fleet index stay current whoever made the change.
//!
//! - `strata_scans`: a running scan is tracked (waiters on its layers; if
//!   this coordinator looks after it, refreshed once, since a layer may
//!   have finished before the waiters were in place); a finished one is
//!   dropped; the events its record implies reach `WatchScan` followers
//!   here (the event log drops those already told); the fleet index gets
//!   the record, and a completed scan's report when the index holds the
//!   scan's image.
//! - `strata_layers`: a layer analysed or failed wakes the scans waiting on
//!   it here (those this coordinator looks after).
//! - `strata_images`: image and watched-repository records, written or
//!   deleted, reach the fleet index.
//!
//! Each stream starts at the bucket's latest revision before the bucket is
//! read at start, and resumes after the last revision it saw when it
//! breaks (a bucket keeps each key's latest value, which is all a
//! follower needs). Changes this coordinator wrote come back too: every
//! handler is idempotent.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;

use super::Coordinator;
use super::error::from_json;
use super::finalize::{Known, LayerNow};
use super::kv::{Change, Kv};
use super::records::*;
use crate::util::lock;

/// Which bucket a follower follows.
#[derive(Clone, Copy, Debug)]
pub(super) enum Followed {
    Scans,
    Layers,
    Images,
}

impl Coordinator {
    fn followed_kv(&self, which: Followed) -> &Kv {
        match which {
            Followed::Scans => &self.inner.buckets.scans,
            Followed::Layers => &self.inner.buckets.layers,
            Followed::Images => &self.inner.buckets.images,
        }
    }

    /// The revision each follower starts after: read before the buckets
    /// are read at start, so nothing written in between is missed (when it
    /// cannot be read, the follower starts from the bucket's beginning:
    /// slower, never short).
    pub(super) async fn follow_from(&self, which: Followed) -> u64 {
        self.followed_kv(which).last_revision().await.unwrap_or(0)
    }

    /// Follows one bucket until `stop` (returns at once for local buckets:
    /// one process writes them).
    pub(super) async fn follow_bucket(
        self,
        which: Followed,
        mut last: u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let kv = self.followed_kv(which).clone();
        loop {
            let mut changes = match kv.watch_after(last).await {
                Ok(Some(changes)) => changes,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(bucket = ?which, error = %err, "cannot follow the bucket; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    next = changes.next() => match next {
                        Some(Ok(change)) => {
                            last = last.max(change.revision);
                            self.on_change(which, change);
                        }
                        Some(Err(err)) => {
                            tracing::warn!(bucket = ?which, error = %err, "following the bucket broke; resuming");
                            break;
                        }
                        None => break,
                    },
                    _ = stop.changed() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn on_change(&self, which: Followed, change: Change) {
        match which {
            Followed::Scans => self.on_scan_change(change),
            Followed::Layers => self.on_layer_change(change),
            Followed::Images => self.on_image_change(change),
        }
    }

    fn on_scan_change(&self, change: Change) {
        if !change.key.starts_with("s-") {
            return; // digest index entries
        }
        let Some(value) = change.value else {
            lock(&self.inner.running).remove(&change.key);
            return;
        };
        let scan: ScanRecord = match from_json("scan", &value) {
            Ok(scan) => scan,
            Err(err) => {
                tracing::warn!(scan = %change.key, error = %err, "unreadable scan record in the change stream");
                return;
            }
        };
        self.inner.events.emit_replayed(&scan);
        self.fleet_scan_changed(&scan);
        if scan.status == ScanStatus::Running {
            if self.track_running(&scan) && self.looks_after(&scan.id) {
                // Submitted elsewhere: a layer may have finished before the
                // waiters above were in place.
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(err) = this.refresh_scan(&scan.id, Known::Nothing).await {
                        tracing::debug!(scan = %scan.id, error = %err, "refresh of a scan seen in the change stream failed; retrying");
                        lock(&this.inner.retry).insert(scan.id.clone());
                    }
                });
            }
        } else {
            lock(&self.inner.running).remove(&scan.id);
            self.unwait_finished(&scan);
            if scan.status == ScanStatus::Complete {
                let this = self.clone();
                tokio::spawn(async move { this.fleet_follow_report(&scan.id).await });
            }
        }
    }

    /// Tracks a running scan: waiters on its unfinished layers. Returns
    /// whether it was new here.
    pub(super) fn track_running(&self, scan: &ScanRecord) -> bool {
        let mine = self.looks_after(&scan.id);
        if lock(&self.inner.running).insert(scan.id.clone(), mine).is_some() {
            return false;
        }
        if !mine {
            // Its owner waits on its layers; if the owner leaves, the
            // takeover dispatches it again here, waiters and all.
            return true;
        }
        let mut waiters = lock(&self.inner.waiters);
        for layer in scan.layers.iter().filter(|l| !l.state.is_terminal()) {
            waiters
                .entry(layer_key(&scan.analyzer_set, &layer.digest))
                .or_default()
                .insert(scan.id.clone());
        }
        true
    }

    /// Drops the scan from the waiters of its finished layers (of every
    /// layer once the scan is done): no result needs to wake it for them,
    /// and a base layer analysed long ago would otherwise collect every
    /// scan that ever used it.
    pub(super) fn unwait_finished(&self, scan: &ScanRecord) {
        let all = scan.status.is_terminal();
        let mut waiters = lock(&self.inner.waiters);
        for layer in scan.layers.iter().filter(|l| all || l.state.is_terminal()) {
            let key = layer_key(&scan.analyzer_set, &layer.digest);
            if let Some(set) = waiters.get_mut(&key) {
                set.remove(&scan.id);
                if set.is_empty() {
                    waiters.remove(&key);
                }
            }
        }
    }

    fn on_layer_change(&self, change: Change) {
        // Most layer changes concern no scan waiting here: looked up before
        // the record is parsed.
        let waiting = lock(&self.inner.waiters).contains_key(&change.key);
        let Some(value) = change.value.filter(|_| waiting) else {
            return;
        };
        let Ok(record) = from_json::<LayerRecord>("layer", &value) else {
            return;
        };
        if matches!(record.state, LayerState::Analysed | LayerState::Failed) {
            // Off the stream's task: a shared layer wakes hundreds of scans,
            // some finalized, and the next changes must not wait on them.
            let this = self.clone();
            tokio::spawn(async move {
                this.wake(vec![super::results::Woken {
                    key: change.key,
                    digest: record.digest.clone(),
                    stored: Some(LayerNow::of(&record)),
                }])
                .await;
            });
        }
    }

    fn on_image_change(&self, change: Change) {
        let key = change.key;
        match change.value {
            Some(value) if key.starts_with("ref.") => {
                if let Ok(record) = from_json::<ImageRecord>("image", &value) {
                    self.fleet_image_noted(&record);
                }
            }
            Some(value) if key.starts_with("repo.") => {
                if let Ok(record) = from_json::<super::fleet::RepositoryRecord>("repository", &value) {
                    self.fleet_repository_noted(record);
                }
            }
            Some(value) if key == super::fleet::REMATCH_REQUEST_KEY => self.fleet_rematch_requested(&value),
            Some(_) => {}
            None if key.starts_with("ref.") => self.fleet_image_key_deleted(&key),
            None if key.starts_with("repo.") => self.fleet_repository_key_deleted(&key),
            None => {}
        }
    }

    /// After the coordinators changed: every running scan this coordinator
    /// looks after now but did not before is dispatched again (jobs
    /// re-published under the same message ids, the scan refreshed whole),
    /// as at a restart. When one left, every scan it looks after is: the
    /// one that left may have died between writing a scan and queueing its
    /// layers.
    pub(super) async fn adopt_scans(&self, someone_left: bool) {
        let mut adopted = HashSet::new();
        {
            let mut running = lock(&self.inner.running);
            for (id, mine) in running.iter_mut() {
                let now = self.looks_after(id);
                if now && (someone_left || !*mine) {
                    adopted.insert(id.clone());
                }
                *mine = now;
            }
        }
        if adopted.is_empty() {
            return;
        }
        tracing::info!(scans = adopted.len(), "taking over running scans");
        futures::stream::iter(adopted)
            .for_each_concurrent(32, |id| async move {
                match self.load_scan(&id).await {
                    Ok(Some((scan, _))) if scan.status == ScanStatus::Running => {
                        if let Err(err) = self.dispatch_scan(&scan, true).await {
                            tracing::warn!(scan = %id, error = %err, "could not take over scan; retrying");
                            lock(&self.inner.redispatch).insert(id);
                        }
                    }
                    Ok(_) => {
                        lock(&self.inner.running).remove(&id);
                    }
                    Err(err) => {
                        tracing::warn!(scan = %id, error = %err, "could not read a scan to take over; retrying");
                        lock(&self.inner.redispatch).insert(id);
                    }
                }
            })
            .await;
    }
}
