//! Scan records as the coordinator and its callers read them, and each
//! scan's event stream (emitted as it moves, replayed to `WatchScan`).

use strata_proto::v1::{self, scan_event::Event};

use super::error::from_json;
use super::events;
use super::records::*;
use super::{Coordinator, CoordinatorError};

impl Coordinator {
    pub(super) async fn load_scan(&self, id: &str) -> Result<Option<(ScanRecord, u64)>, CoordinatorError> {
        match self.inner.buckets.scans.get(id).await? {
            Some(e) => Ok(Some((from_json("scan", &e.value)?, e.revision))),
            None => Ok(None),
        }
    }

    /// The scan, if it exists.
    pub async fn scan(&self, id: &str) -> Result<Option<ScanRecord>, CoordinatorError> {
        Ok(self.load_scan(id).await?.map(|(s, _)| s))
    }

    /// The latest scan of an image digest.
    pub async fn scan_for_digest(&self, digest: &str) -> Result<Option<ScanRecord>, CoordinatorError> {
        match self.inner.buckets.scans.get(&digest_index_key(digest)).await? {
            Some(e) => self.scan(&String::from_utf8_lossy(&e.value)).await,
            None => Ok(None),
        }
    }

    /// Every stored scan (for fleet queries).
    pub async fn scans(&self) -> Result<Vec<ScanRecord>, CoordinatorError> {
        let mut out = Vec::new();
        for key in self.inner.buckets.scans.keys().await? {
            if key.starts_with("s-")
                && let Some((s, _)) = self.load_scan(&key).await?
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    pub(super) fn emit(&self, id: &str, event: Event) {
        self.inner.events.emit(id, event);
    }

    /// Events of a scan so far, and a receiver for what follows. A scan whose
    /// log was not kept (a restart, or evicted) gets its events rebuilt from
    /// the record.
    pub async fn watch(
        &self,
        id: &str,
    ) -> Result<
        (
            Vec<v1::ScanEvent>,
            tokio::sync::broadcast::Receiver<v1::ScanEvent>,
        ),
        CoordinatorError,
    > {
        let scan = self
            .scan(id)
            .await?
            .ok_or_else(|| CoordinatorError::NotFound(format!("scan {id}")))?;
        let subscribed = self.inner.events.subscribe(id, || events::replay(&scan));
        // A change written by another coordinator between the read above
        // and the subscription reached no log here: read again, now that
        // one is kept (what was told already is dropped by its key).
        if self.peers().is_some()
            && let Some(now) = self.scan(id).await?
            && now.updated_unix_ms != scan.updated_unix_ms
        {
            self.inner.events.emit_replayed(&now);
        }
        Ok(subscribed)
    }
}
