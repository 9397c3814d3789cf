//! `strata serve`'s log: three tables of the embedded `redb` state file, so
//! events survive a restart as the rest of its state does.
//!
//! - [`LOCAL_EVENTS_TABLE`]: sequence (u64, big-endian order) → the event
//!   (protobuf, sequence left out).
//! - [`LOCAL_IDS_TABLE`]: [`event_id`] → sequence: an event published again
//!   (after a restart too) is dropped while its first copy is kept.
//! - `strata_events_meta`: `last` → the newest sequence ever given, so
//!   sequences keep increasing even when every event has aged out.
//!
//! Kept: at most [`LOCAL_MAX_EVENTS`] events and none older than
//! [`LOCAL_MAX_AGE`] (trimmed as events are published), the stream's limits
//! in the cluster.

use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};
use strata_proto::v1;
use tokio::sync::broadcast;

use super::{LogStats, NotifyError, decode, encode, event_id};

pub const LOCAL_EVENTS_TABLE: &str = "strata_events";
pub const LOCAL_IDS_TABLE: &str = "strata_event_ids";
const META_TABLE: &str = "strata_events_meta";
const LAST: &str = "last";

/// Events kept at most: about half a KiB each, so a few hundred MiB of the
/// state file at worst.
const LOCAL_MAX_EVENTS: u64 = 1_000_000;
/// The stream's max age in the cluster (see `jetstream.rs`).
const LOCAL_MAX_AGE: Duration = super::jetstream::MAX_AGE;

const EVENTS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new(LOCAL_EVENTS_TABLE);
const IDS: TableDefinition<'static, &'static str, u64> = TableDefinition::new(LOCAL_IDS_TABLE);
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new(META_TABLE);

pub(super) struct LocalLog {
    db: Arc<redb::Database>,
    /// One publish at a time, so live events go out in sequence order.
    publishing: tokio::sync::Mutex<()>,
}

fn err(what: &str) -> impl Fn(redb::Error) -> NotifyError + '_ {
    move |e| NotifyError::log(what, e)
}

impl LocalLog {
    /// Opens the tables (created when missing).
    pub(super) fn open(db: Arc<redb::Database>) -> Result<LocalLog, NotifyError> {
        let create = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(EVENTS)?;
            txn.open_table(IDS)?;
            txn.open_table(META)?;
            txn.commit()?;
            Ok(())
        };
        create().map_err(err("creating the event tables"))?;
        Ok(LocalLog {
            db,
            publishing: tokio::sync::Mutex::new(()),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&redb::Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, NotifyError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| NotifyError::log(what, e))?
            .map_err(err(what))
    }

    pub(super) async fn publish(
        &self,
        events: Vec<v1::FleetEvent>,
        live: &broadcast::Sender<v1::FleetEvent>,
    ) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        let _one = self.publishing.lock().await;
        let kept = self
            .blocking("publishing events", move |db| {
                let txn = db.begin_write()?;
                let mut kept = Vec::with_capacity(events.len());
                {
                    let mut table = txn.open_table(EVENTS)?;
                    let mut ids = txn.open_table(IDS)?;
                    let mut meta = txn.open_table(META)?;
                    let mut last = meta.get(LAST)?.map_or(0, |v| v.value());
                    for mut e in events {
                        let id = event_id(&e);
                        if ids.get(id.as_str())?.is_some() {
                            continue;
                        }
                        last += 1;
                        e.sequence = last;
                        table.insert(last, encode(&e).as_slice())?;
                        ids.insert(id.as_str(), last)?;
                        kept.push(e);
                    }
                    meta.insert(LAST, last)?;
                    trim(&mut table, &mut ids)?;
                }
                txn.commit()?;
                Ok(kept)
            })
            .await?;
        for e in &kept {
            let _ = live.send(e.clone());
        }
        Ok(kept)
    }

    pub(super) async fn after(&self, after: u64, max: usize) -> Result<Vec<v1::FleetEvent>, NotifyError> {
        let events = self
            .blocking("reading events", move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(EVENTS)?;
                let mut out = Vec::new();
                for item in table.range(after.saturating_add(1)..)?.take(max) {
                    let (seq, bytes) = item?;
                    out.push((seq.value(), bytes.value().to_vec()));
                }
                Ok(out)
            })
            .await?;
        events
            .into_iter()
            .map(|(seq, bytes)| decode(&bytes, seq))
            .collect()
    }

    pub(super) async fn stats(&self) -> Result<LogStats, NotifyError> {
        self.blocking("reading the event log's state", |db| {
            let txn = db.begin_read()?;
            let kept = txn.open_table(EVENTS)?.len()?;
            let last = txn.open_table(META)?.get(LAST)?.map_or(0, |v| v.value());
            Ok(LogStats {
                last_sequence: last,
                kept,
            })
        })
        .await
    }
}

/// Drops the oldest events (and their ids) past the count or the age.
fn trim(
    table: &mut redb::Table<'_, u64, &'static [u8]>,
    ids: &mut redb::Table<'_, &'static str, u64>,
) -> Result<(), redb::Error> {
    let cutoff =
        strata_proto::text::now_unix_ms() - i64::try_from(LOCAL_MAX_AGE.as_millis()).unwrap_or(i64::MAX);
    loop {
        let over = table.len()? > LOCAL_MAX_EVENTS;
        let Some((seq, oldest)) = table
            .first()?
            .map(|(k, v)| (k.value(), decode(v.value(), k.value())))
        else {
            return Ok(());
        };
        let old = oldest.as_ref().map_or(true, |e| e.at_unix_ms < cutoff);
        if !over && !old {
            return Ok(());
        }
        table.remove(seq)?;
        if let Ok(e) = oldest {
            ids.remove(event_id(&e).as_str())?;
        }
    }
}
