//! What survives a restart, and where:
//!
//! - **Feed state** ([`FeedState`], JSON): one record per feed URL (without
//!   credentials) in the coordinator's `strata_images` bucket (JetStream
//!   key-value in the cluster, the embedded `redb` file for `strata serve`),
//!   key `feed.<32 hex of the SHA-256 of the URL>` (keys may not hold `:`;
//!   the fleet index reads only its own `ref.` and `repo.` keys there).
//! - **A feed's last good records**: in the object store at
//!   `feeds/<key>/<content>.records` ([`FeedRecords`]' encoding), named by
//!   the content they were read from (the SHA-256 of the download, or a
//!   directory's fingerprint), which the state records. The state is written
//!   after the records and the records it replaces are removed after it, so
//!   the state never names records that are not there; records it does not
//!   name are not read.
//! - **The combined database in force**: `vulndb/feeds.stratadb` in the
//!   object store (for `strata serve`, under its data directory), the
//!   database file's bytes. Its sources name each feed with the content its
//!   records came from, so a start can tell whether it is the combination of
//!   the records the state names.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cluster::kv::Kv;
use crate::vulndb::{Db, FeedRecords};

/// Where the combined database in force is kept.
pub const COMBINED_PATH: &str = "vulndb/feeds.stratadb";
/// Prefix of feed state keys in the `strata_images` bucket.
pub const KEY_PREFIX: &str = "feed.";

/// One feed's state, as stored and as `AdminService` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeedState {
    /// The feed's URL without credentials.
    pub url: String,
    /// 0: never.
    pub last_success_unix_ms: i64,
    pub last_attempt_unix_ms: i64,
    /// Empty after a success.
    pub last_error: String,
    pub consecutive_failures: u32,
    /// Validators of the last good data (a directory's fingerprint as ETag).
    pub etag: String,
    pub last_modified: String,
    /// What the last good records were read from: `sha256:<hex>` of the
    /// download, or a directory's fingerprint. Empty: none yet.
    pub content: String,
    pub next_poll_unix_ms: i64,
    /// Records of this feed in the data in force.
    pub records: u64,
}

/// The state key of a feed, from its URL without credentials.
pub fn feed_key(shown_url: &str) -> String {
    let h = Sha256::digest(shown_url.as_bytes());
    format!("{KEY_PREFIX}{}", &hex::encode(h)[..32])
}

pub(super) async fn load_state(kv: &Kv, key: &str) -> Result<Option<FeedState>, String> {
    let Some(entry) = kv.get(key).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    serde_json::from_slice(&entry.value)
        .map(Some)
        .map_err(|e| format!("feed state {key}: {e}"))
}

pub(super) async fn save_state(kv: &Kv, key: &str, state: &FeedState) -> Result<(), String> {
    let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    kv.put(key, Bytes::from(json))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn records_path(key: &str, content: &str) -> StorePath {
    // `sha256:<hex>` → `sha256-<hex>`: one path segment, no `:`.
    StorePath::from(format!("feeds/{key}/{}.records", content.replace(':', "-")))
}

/// A feed's records read from `content`, if stored.
pub(super) async fn load_records(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    content: &str,
) -> Result<Option<FeedRecords>, String> {
    if content.is_empty() {
        return Ok(None);
    }
    let path = records_path(key, content);
    let bytes = match store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(|e| format!("{path}: {e}"))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    tokio::task::spawn_blocking(move || FeedRecords::decode(&bytes, path.as_ref()))
        .await
        .map_err(|e| format!("decoding feed records: {e}"))?
        .map(Some)
        .map_err(|e| e.to_string())
}

pub(super) async fn save_records(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    content: &str,
    records: Arc<FeedRecords>,
) -> Result<(), String> {
    let bytes = tokio::task::spawn_blocking(move || records.encode())
        .await
        .map_err(|e| format!("encoding feed records: {e}"))?
        .map_err(|e| e.to_string())?;
    let path = records_path(key, content);
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| format!("storing {path}: {e}"))
}

/// Removes the records of `key` read from other content than `keep`
/// (best effort: a leftover is never read).
pub(super) async fn remove_other_records(store: &Arc<dyn ObjectStore>, key: &str, keep: &str) {
    use futures::TryStreamExt as _;
    let prefix = StorePath::from(format!("feeds/{key}"));
    let keep = records_path(key, keep);
    let listed: Result<Vec<_>, _> = store.list(Some(&prefix)).try_collect().await;
    match listed {
        Ok(metas) => {
            for meta in metas.into_iter().filter(|m| m.location != keep) {
                if let Err(err) = store.delete(&meta.location).await {
                    tracing::debug!(path = %meta.location, error = %err, "old feed records not removed");
                }
            }
        }
        Err(err) => tracing::debug!(feed = key, error = %err, "old feed records not listed"),
    }
}

/// The combined database stored by an earlier run, if any and readable.
pub(super) async fn load_combined(store: &Arc<dyn ObjectStore>) -> Result<Option<Db>, String> {
    let path = StorePath::from(COMBINED_PATH);
    let bytes = match store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(|e| format!("{path}: {e}"))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    tokio::task::spawn_blocking(move || Db::from_bytes(&bytes, COMBINED_PATH))
        .await
        .map_err(|e| format!("decoding {COMBINED_PATH}: {e}"))?
        .map(Some)
        .map_err(|e| e.to_string())
}

pub(super) async fn save_combined(store: &Arc<dyn ObjectStore>, db: Arc<Db>) -> Result<(), String> {
    let bytes = tokio::task::spawn_blocking(move || db.to_bytes())
        .await
        .map_err(|e| format!("encoding the database: {e}"))?
        .map_err(|e| e.to_string())?;
    store
        .put(&StorePath::from(COMBINED_PATH), PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| format!("storing {COMBINED_PATH}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_no_colon_and_differ_by_url() {
        let a = feed_key("https://h/PyPI/all.zip");
        assert!(a.starts_with("feed.") && a.len() == 5 + 32 && !a.contains(':'));
        assert_ne!(a, feed_key("https://h/Go/all.zip"));
        assert!(!records_path(&a, "sha256:ab").as_ref().contains(':'));
    }

    #[test]
    fn state_reads_back_with_fields_added_later_defaulted() {
        let s: FeedState = serde_json::from_str(r#"{"url":"u","etag":"\"x\""}"#).unwrap();
        assert_eq!((s.url.as_str(), s.etag.as_str(), s.records), ("u", "\"x\"", 0));
    }
}
