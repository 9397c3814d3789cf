//! Key-value buckets the coordinator keeps its state in: JetStream
//! key-value buckets in the cluster (replicated with the streams, surviving a
//! coordinator restart and shared by every process that connects), or an
//! embedded `redb` file for `strata serve` (crash-safe, one process).
//!
//! Every write that must not lose a concurrent one is a compare-and-set on
//! the key's revision (`create` when absent, `update` at a revision).

use std::path::Path;
use std::sync::Arc;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt};

/// Longest value accepted (records are small JSON; a scan of 128 layers is a few KiB).
pub const MAX_VALUE_BYTES: i32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("state bucket {bucket}: {what}: {reason}")]
    Backend {
        bucket: String,
        what: String,
        reason: String,
    },
}

/// A value and the revision it was written at.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Bytes,
    pub revision: u64,
}

/// What a compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Written; the new revision.
    Written(u64),
    /// Someone else wrote first (or the key exists, for `create`).
    Conflict,
}

/// One change seen by [`Kv::watch_after`]: `value` is `None` for a
/// deleted or purged key.
#[derive(Debug, Clone)]
pub struct Change {
    pub key: String,
    pub value: Option<Bytes>,
    pub revision: u64,
}

/// The stream of a bucket's changes.
pub type Changes = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Change, KvError>> + Send>>;

/// One bucket. Cheap to clone.
#[derive(Clone)]
pub enum Kv {
    Nats(Box<kv::Store>, String),
    Local(LocalKv),
}

impl Kv {
    /// Opens (creating when missing) a JetStream bucket.
    pub async fn nats(
        js: &async_nats::jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<Kv, KvError> {
        let err = |what: &str, e: &dyn std::fmt::Display| KvError::Backend {
            bucket: bucket.to_owned(),
            what: what.to_owned(),
            reason: e.to_string(),
        };
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    history: 1,
                    max_value_size: MAX_VALUE_BYTES,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| err("creating", &e))?,
        };
        Ok(Kv::Nats(Box::new(store), bucket.to_owned()))
    }

    /// Opens (creating when missing) a JetStream bucket whose entries expire
    /// `max_age` after they were last written: the coordinators' presence
    /// and leases (`peers.rs`), which end by themselves when their holder
    /// stops renewing them, by the NATS server's clock. A bucket that
    /// exists keeps its own expiry (said in a warning when it differs).
    pub async fn nats_expiring(
        js: &async_nats::jetstream::Context,
        bucket: &str,
        replicas: usize,
        max_age: std::time::Duration,
    ) -> Result<(Kv, std::time::Duration), KvError> {
        let err = |what: &str, e: &dyn std::fmt::Display| KvError::Backend {
            bucket: bucket.to_owned(),
            what: what.to_owned(),
            reason: e.to_string(),
        };
        let mut effective = max_age;
        let store = match js.get_key_value(bucket).await {
            Ok(mut store) => {
                let info = store
                    .stream
                    .info()
                    .await
                    .map_err(|e| err("reading the bucket's settings", &e))?;
                effective = info.config.max_age;
                if effective.is_zero() {
                    return Err(err(
                        "checking the bucket's expiry",
                        &"its entries never expire, so a dead coordinator would hold its leases forever; \
                          delete the bucket (`nats kv del strata_coordinators`) and the coordinators create it again",
                    ));
                }
                if effective != max_age {
                    tracing::warn!(
                        bucket,
                        stored_secs = effective.as_secs_f64(),
                        wanted_secs = max_age.as_secs_f64(),
                        "the bucket keeps the expiry it was created with, and that is the lease time used (delete the bucket to change it)"
                    );
                }
                store
            }
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    history: 1,
                    max_value_size: 64 * 1024,
                    max_age,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| err("creating", &e))?,
        };
        Ok((Kv::Nats(Box::new(store), bucket.to_owned()), effective))
    }

    /// Deletes `key` only if it is still at `revision`: an error when it
    /// is not (someone else wrote it since) or the store is away.
    pub async fn delete_at(&self, key: &str, revision: u64) -> Result<(), KvError> {
        match self {
            Kv::Nats(store, _) => store
                .delete_expect_revision(key, Some(revision))
                .await
                .map_err(|e| self.error(&format!("delete {key} at {revision}"), e)),
            Kv::Local(_) => match self.get(key).await? {
                Some(e) if e.revision == revision => self.delete(key).await,
                _ => Err(self.error(&format!("delete {key} at {revision}"), "written since")),
            },
        }
    }

    /// Every change written to the bucket after `revision` (see
    /// [`Self::last_revision`]), as the server orders them; `None` for a
    /// local bucket (one process writes it: its hooks see every change). A
    /// bucket keeps one value per key, so a watch from a revision sees each
    /// key's latest value since, not every step between.
    pub async fn watch_after(&self, revision: u64) -> Result<Option<Changes>, KvError> {
        let Kv::Nats(store, _) = self else {
            return Ok(None);
        };
        let watch = store
            .watch_all_from_revision(revision + 1)
            .await
            .map_err(|e| self.error("watching", e))?;
        let name = self.name().to_owned();
        Ok(Some(Box::pin(watch.map(move |entry| match entry {
            Ok(e) => Ok(Change {
                value: (e.operation == Operation::Put).then_some(e.value),
                key: e.key,
                revision: e.revision,
            }),
            Err(e) => Err(KvError::Backend {
                bucket: name.clone(),
                what: "watching".to_owned(),
                reason: e.to_string(),
            }),
        }))))
    }

    /// The revision of the bucket's latest write (0: empty, or local):
    /// where a watch started before reading the bucket begins.
    pub async fn last_revision(&self) -> Result<u64, KvError> {
        match self {
            Kv::Nats(store, _) => store
                .status()
                .await
                .map(|s| s.info.state.last_sequence)
                .map_err(|e| self.error("status", e)),
            Kv::Local(_) => Ok(0),
        }
    }

    /// The embedded database a local bucket lives in (`None` in the
    /// cluster): `strata serve` keeps its event log in the same file.
    pub fn local_db(&self) -> Option<&Arc<redb::Database>> {
        match self {
            Kv::Nats(..) => None,
            Kv::Local(l) => Some(&l.db),
        }
    }

    fn name(&self) -> &str {
        match self {
            Kv::Nats(_, name) => name,
            Kv::Local(l) => l.table,
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> KvError {
        KvError::Backend {
            bucket: self.name().to_owned(),
            what: what.to_owned(),
            reason: e.to_string(),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        match self {
            Kv::Nats(store, _) => match store.entry(key).await {
                Ok(Some(e)) if e.operation == Operation::Put => Ok(Some(Entry {
                    value: e.value,
                    revision: e.revision,
                })),
                Ok(_) => Ok(None),
                Err(e) => Err(self.error(&format!("get {key}"), e)),
            },
            Kv::Local(l) => l.get(key).await.map_err(|e| self.error(&format!("get {key}"), e)),
        }
    }

    /// Writes `value` only if `key` does not exist.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<Cas, KvError> {
        match self {
            Kv::Nats(store, _) => match store.create(key, value).await {
                Ok(rev) => Ok(Cas::Written(rev)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Cas::Conflict),
                Err(e) => Err(self.error(&format!("create {key}"), e)),
            },
            Kv::Local(l) => l
                .cas(key, value, None)
                .await
                .map_err(|e| self.error(&format!("create {key}"), e)),
        }
    }

    /// Writes `value` only if `key` is still at `revision`.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<Cas, KvError> {
        match self {
            Kv::Nats(store, _) => match store.update(key, value, revision).await {
                Ok(rev) => Ok(Cas::Written(rev)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Cas::Conflict),
                Err(e) => Err(self.error(&format!("update {key}"), e)),
            },
            Kv::Local(l) => l
                .cas(key, value, Some(revision))
                .await
                .map_err(|e| self.error(&format!("update {key}"), e)),
        }
    }

    /// Writes `value` whatever is there.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        match self {
            Kv::Nats(store, _) => store
                .put(key, value)
                .await
                .map_err(|e| self.error(&format!("put {key}"), e)),
            Kv::Local(l) => l
                .put(key, value)
                .await
                .map_err(|e| self.error(&format!("put {key}"), e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        match self {
            Kv::Nats(store, _) => store
                .delete(key)
                .await
                .map_err(|e| self.error(&format!("delete {key}"), e)),
            Kv::Local(l) => l
                .delete(key)
                .await
                .map_err(|e| self.error(&format!("delete {key}"), e)),
        }
    }

    /// Every key (the fleet is bounded by what was submitted: thousands to
    /// tens of thousands of keys).
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        match self {
            Kv::Nats(store, _) => {
                let keys = store.keys().await.map_err(|e| self.error("listing keys", e))?;
                keys.try_collect()
                    .await
                    .map_err(|e| self.error("listing keys", e))
            }
            Kv::Local(l) => l.keys().await.map_err(|e| self.error("listing keys", e)),
        }
    }
}

/// A table in an embedded `redb` database. The stored value is the
/// revision (8 bytes, big-endian) followed by the value.
#[derive(Clone)]
pub struct LocalKv {
    db: Arc<redb::Database>,
    table: &'static str,
}

type Table = redb::TableDefinition<'static, &'static str, &'static [u8]>;

/// The embedded database file `strata serve` keeps its state in.
pub fn open_local_db(path: &Path) -> Result<Arc<redb::Database>, KvError> {
    redb::Database::create(path)
        .map(Arc::new)
        .map_err(|e| KvError::Backend {
            bucket: path.display().to_string(),
            what: "opening".to_owned(),
            reason: e.to_string(),
        })
}

impl LocalKv {
    /// `table` names the bucket; it must be a `'static` name (ours are constants).
    pub fn new(db: Arc<redb::Database>, table: &'static str) -> LocalKv {
        LocalKv { db, table }
    }

    fn def(&self) -> Table {
        redb::TableDefinition::new(self.table)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database, Table) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, String> {
        let db = self.db.clone();
        let def = self.def();
        tokio::task::spawn_blocking(move || f(&db, def))
            .await
            .map_err(|e| format!("state task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, String> {
        let key = key.to_owned();
        self.blocking(move |db, def| {
            use redb::ReadableDatabase as _;
            let txn = db.begin_read()?;
            let table = match txn.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(key.as_str())?.and_then(|v| split(v.value())))
        })
        .await
    }

    async fn cas(&self, key: &str, value: Bytes, expect: Option<u64>) -> Result<Cas, String> {
        let key = key.to_owned();
        self.blocking(move |db, def| {
            use redb::ReadableTable as _;
            let txn = db.begin_write()?;
            let outcome = {
                let mut table = txn.open_table(def)?;
                let current = table
                    .get(key.as_str())?
                    .and_then(|v| split(v.value()))
                    .map(|e| e.revision);
                if current != expect {
                    Cas::Conflict
                } else {
                    let revision = current.unwrap_or(0) + 1;
                    table.insert(key.as_str(), join(revision, &value).as_slice())?;
                    Cas::Written(revision)
                }
            };
            txn.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, String> {
        let key = key.to_owned();
        self.blocking(move |db, def| {
            use redb::ReadableTable as _;
            let txn = db.begin_write()?;
            let revision = {
                let mut table = txn.open_table(def)?;
                let current = table
                    .get(key.as_str())?
                    .and_then(|v| split(v.value()))
                    .map(|e| e.revision);
                let revision = current.unwrap_or(0) + 1;
                table.insert(key.as_str(), join(revision, &value).as_slice())?;
                revision
            };
            txn.commit()?;
            Ok(revision)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        let key = key.to_owned();
        self.blocking(move |db, def| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(def)?;
                table.remove(key.as_str())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<String>, String> {
        self.blocking(move |db, def| {
            use redb::{ReadableDatabase as _, ReadableTable as _};
            let txn = db.begin_read()?;
            let table = match txn.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut keys = Vec::new();
            for item in table.iter()? {
                let (k, _) = item?;
                keys.push(k.value().to_owned());
            }
            Ok(keys)
        })
        .await
    }
}

fn join(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn split(stored: &[u8]) -> Option<Entry> {
    let (rev, value) = stored.split_at_checked(8)?;
    let revision = u64::from_be_bytes(rev.try_into().ok()?);
    Some(Entry {
        value: Bytes::copy_from_slice(value),
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_compare_and_set_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let kv = Kv::Local(LocalKv::new(open_local_db(&path).unwrap(), "t"));
            assert!(kv.get("a").await.unwrap().is_none());
            assert!(kv.keys().await.unwrap().is_empty());
            assert_eq!(
                kv.create("a", Bytes::from_static(b"1")).await.unwrap(),
                Cas::Written(1)
            );
            assert_eq!(
                kv.create("a", Bytes::from_static(b"x")).await.unwrap(),
                Cas::Conflict
            );
            assert_eq!(
                kv.update("a", Bytes::from_static(b"2"), 7).await.unwrap(),
                Cas::Conflict
            );
            assert_eq!(
                kv.update("a", Bytes::from_static(b"2"), 1).await.unwrap(),
                Cas::Written(2)
            );
            assert_eq!(kv.put("b", Bytes::from_static(b"3")).await.unwrap(), 1);
        }
        let kv = Kv::Local(LocalKv::new(open_local_db(&path).unwrap(), "t"));
        let e = kv.get("a").await.unwrap().unwrap();
        assert_eq!((e.value.as_ref(), e.revision), (b"2".as_ref(), 2));
        let mut keys = kv.keys().await.unwrap();
        keys.sort();
        assert_eq!(keys, ["a", "b"]);
        kv.delete("a").await.unwrap();
        assert!(kv.get("a").await.unwrap().is_none());
    }
}
