//! Conditional fetching of one feed, per scheme: what was there at the last
//! good poll ([`Validators`]) is sent or compared, so a feed that has not
//! changed costs one small request and no download.
//!
//! - `http(s)://`: `If-None-Match` with the ETag and `If-Modified-Since`
//!   with the `Last-Modified` of the last good answer; `304` is
//!   [`Fetched::NotModified`].
//! - `s3://` and `file://` objects (through `object_store`): a `head`, its
//!   e_tag (else last_modified) compared with the last good one; `get` only
//!   when it differs.
//! - a directory (`file://` naming one, or a path): a fingerprint of its
//!   `*.json` files (relative path, size, mtime), with the newest mtime as
//!   its last-modified; read again only when the fingerprint differs.
//!
//! Every fetch is bounded as `vulndb::source` bounds an import: bytes of a
//! download or object, time of a request, files and depth of a directory.
//! Error messages never carry credentials (reqwest's URL is stripped).

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use object_store::ObjectStoreExt as _;
use sha2::{Digest as _, Sha256};

use crate::vulndb::source::{
    CONNECT_TIMEOUT, HTTP_TIMEOUT, MAX_DIR_DEPTH, MAX_DIR_FILES, MAX_DOWNLOAD_BYTES,
};

/// Bound on a validator kept and sent back (servers write short ones).
const MAX_VALIDATOR_BYTES: usize = 512;

/// Where a feed is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FeedSource {
    /// An `http(s)://` URL of an `all.zip` (or one record).
    Http(String),
    /// An `s3://` URL of an object.
    Object(String),
    /// A local path (`file://` or plain): a directory of records, or a file
    /// read as an object. Which one is decided at each poll.
    Local(PathBuf),
}

impl FeedSource {
    pub(crate) fn parse(url: &str) -> Result<FeedSource, String> {
        if url.is_empty() || url.len() > 4096 {
            return Err("empty or over 4096 bytes".into());
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
            return Ok(FeedSource::Http(url.to_owned()));
        }
        if url.starts_with("s3://") {
            url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
            return Ok(FeedSource::Object(url.to_owned()));
        }
        if url.starts_with("file://") {
            let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
            let path = parsed
                .to_file_path()
                .map_err(|_| "not a local absolute path".to_owned())?;
            return Ok(FeedSource::Local(path));
        }
        if url.contains("://") {
            return Err("unsupported scheme (use https://, http://, s3://, file://, a path or `osv`)".into());
        }
        std::path::absolute(url)
            .map(FeedSource::Local)
            .map_err(|e| format!("not a usable path: {e}"))
    }
}

/// What identifies the version of a feed last read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: String,
    pub last_modified: String,
}

/// What one poll found.
pub(crate) enum Fetched {
    /// The same as last time: nothing read.
    NotModified,
    /// New bytes (a zip or one record); `content` is their SHA-256.
    Body {
        bytes: Bytes,
        validators: Validators,
        content: String,
    },
    /// A directory whose fingerprint changed (its `content`, also the ETag).
    Dir {
        path: PathBuf,
        validators: Validators,
        content: String,
    },
}

/// One poll of `source`. `known`: the validators of the last good data
/// (`None`: fetch unconditionally, e.g. when the records are gone).
pub(crate) async fn fetch(
    source: &FeedSource,
    client: &reqwest::Client,
    known: Option<&Validators>,
) -> Result<Fetched, String> {
    match source {
        FeedSource::Http(url) => http(client, url, known).await,
        FeedSource::Object(url) => object(url, known).await,
        FeedSource::Local(path) => {
            let is_dir = tokio::fs::metadata(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
                .is_dir();
            if is_dir {
                dir(path, known).await
            } else {
                let url = url::Url::from_file_path(path)
                    .map_err(|_| format!("{}: not an absolute path", path.display()))?;
                object(url.as_str(), known).await
            }
        }
    }
}

/// The client every HTTP feed shares (connections are reused between polls).
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

async fn http(client: &reqwest::Client, url: &str, known: Option<&Validators>) -> Result<Fetched, String> {
    let mut request = client.get(url);
    if let Some(v) = known {
        if !v.etag.is_empty() {
            request = request.header(reqwest::header::IF_NONE_MATCH, &v.etag);
        }
        if !v.last_modified.is_empty() {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, &v.last_modified);
        }
    }
    let mut response = request.send().await.map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .filter(|v| v.len() <= MAX_VALIDATOR_BYTES)
            .unwrap_or_default()
            .to_owned()
    };
    let validators = Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    if response.content_length().is_some_and(|n| n > MAX_DOWNLOAD_BYTES) {
        return Err(format!("over the download limit of {MAX_DOWNLOAD_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() as u64 + chunk.len() as u64 > MAX_DOWNLOAD_BYTES {
            return Err(format!("over the download limit of {MAX_DOWNLOAD_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body_of(Bytes::from(body), validators))
}

async fn object(url: &str, known: Option<&Validators>) -> Result<Fetched, String> {
    let (store, path) = strata_worker::storage::open_url(url)?;
    let meta = store.head(&path).await.map_err(|e| e.to_string())?;
    let now = validators_of(&meta);
    if let Some(known) = known {
        let same = if now.etag.is_empty() || known.etag.is_empty() {
            !now.last_modified.is_empty() && now.last_modified == known.last_modified
        } else {
            now.etag == known.etag
        };
        if same {
            return Ok(Fetched::NotModified);
        }
    }
    if meta.size > MAX_DOWNLOAD_BYTES {
        return Err(format!(
            "{} bytes is over the limit of {MAX_DOWNLOAD_BYTES}",
            meta.size
        ));
    }
    let got = store.get(&path).await.map_err(|e| e.to_string())?;
    // The validators of what is read, which may be newer than the head's.
    let validators = validators_of(&got.meta);
    if got.meta.size > MAX_DOWNLOAD_BYTES {
        return Err(format!(
            "{} bytes is over the limit of {MAX_DOWNLOAD_BYTES}",
            got.meta.size
        ));
    }
    let bytes = got.bytes().await.map_err(|e| e.to_string())?;
    Ok(body_of(bytes, validators))
}

fn validators_of(meta: &object_store::ObjectMeta) -> Validators {
    Validators {
        etag: meta
            .e_tag
            .clone()
            .filter(|e| e.len() <= MAX_VALIDATOR_BYTES)
            .unwrap_or_default(),
        last_modified: meta.last_modified.to_rfc3339(),
    }
}

fn body_of(bytes: Bytes, validators: Validators) -> Fetched {
    let content = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    Fetched::Body {
        bytes,
        validators,
        content,
    }
}

async fn dir(path: &Path, known: Option<&Validators>) -> Result<Fetched, String> {
    let root = path.to_path_buf();
    let (fingerprint, newest) = tokio::task::spawn_blocking(move || fingerprint(&root))
        .await
        .map_err(|e| format!("directory walk failed: {e}"))??;
    if known.is_some_and(|k| k.etag == fingerprint) {
        return Ok(Fetched::NotModified);
    }
    let last_modified = time::OffsetDateTime::from_unix_timestamp_nanos(newest)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    Ok(Fetched::Dir {
        path: path.to_path_buf(),
        validators: Validators {
            etag: fingerprint.clone(),
            last_modified,
        },
        content: fingerprint,
    })
}

/// `dir-<hex>` over every `*.json` file's relative path, size and mtime
/// (sorted), and the newest mtime in nanoseconds. A file added, removed,
/// rewritten or touched changes it.
fn fingerprint(root: &Path) -> Result<(String, i128), String> {
    let mut files = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if depth + 1 > MAX_DIR_DEPTH {
                    return Err(format!("{}: deeper than {MAX_DIR_DEPTH} levels", path.display()));
                }
                stack.push((path, depth + 1));
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
                if files.len() >= MAX_DIR_FILES {
                    return Err(format!("more than {MAX_DIR_FILES} JSON files"));
                }
                let meta = entry.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as i128);
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                files.push((rel, meta.len(), mtime));
            }
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for (rel, size, mtime) in &files {
        hasher.update((rel.len() as u64).to_le_bytes());
        hasher.update(rel.as_bytes());
        hasher.update(size.to_le_bytes());
        hasher.update(mtime.to_le_bytes());
    }
    let newest = files.iter().map(|f| f.2).max().unwrap_or(0);
    Ok((format!("dir-{}", &hex::encode(hasher.finalize())[..32]), newest))
}

/// `https://user:secret@host/p?token=x` → `https://host/p?…`: the URL as it
/// may be shown, stored and used as a metric label.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.scheme() != "file" => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(None);
                return format!("{u}?…");
            }
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_by_scheme() {
        assert!(matches!(
            FeedSource::parse("https://h/PyPI/all.zip"),
            Ok(FeedSource::Http(_))
        ));
        assert!(matches!(
            FeedSource::parse("s3://b/k.zip"),
            Ok(FeedSource::Object(_))
        ));
        assert_eq!(
            FeedSource::parse("file:///srv/osv").unwrap(),
            FeedSource::Local("/srv/osv".into())
        );
        assert!(
            FeedSource::parse("ftp://h/x")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert!(FeedSource::parse("").is_err());
    }

    #[test]
    fn credentials_are_never_shown() {
        assert_eq!(
            redact("https://alice:s3cret@feeds.example/osv/all.zip?sig=abc"),
            "https://feeds.example/osv/all.zip?…"
        );
        assert_eq!(redact("s3://bucket/osv/all.zip"), "s3://bucket/osv/all.zip");
    }

    #[test]
    fn a_directory_fingerprint_moves_with_its_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.json"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let (one, newest) = fingerprint(dir.path()).unwrap();
        assert!(newest > 0);
        assert_eq!(fingerprint(dir.path()).unwrap().0, one);
        std::fs::write(dir.path().join("notes.txt"), "still ignored").unwrap();
        assert_eq!(fingerprint(dir.path()).unwrap().0, one);
        std::fs::write(dir.path().join("b.json"), "{}").unwrap();
        let (two, _) = fingerprint(dir.path()).unwrap();
        assert_ne!(two, one);
        std::fs::remove_file(dir.path().join("sub/a.json")).unwrap();
        assert_ne!(fingerprint(dir.path()).unwrap().0, two);
    }
}
