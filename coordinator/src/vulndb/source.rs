//! Where OSV records come from. Every read is bounded: record size, zip
//! entry count and sizes, download size, directory depth and file count.

use std::fmt;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::ObjectStoreExt;

use super::normalize::{self, Record};
use super::{ImportSummary, VulnDbError};

/// Bytes of one OSV record.
pub(crate) const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;
/// Entries of one zip (osv.dev's largest export holds a few hundred thousand).
const MAX_ZIP_ENTRIES: usize = 2_000_000;
/// Bytes of one download or object (an `all.zip`).
pub(crate) const MAX_DOWNLOAD_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// JSON files of one directory tree, and its depth.
pub(crate) const MAX_DIR_FILES: usize = 2_000_000;
pub(crate) const MAX_DIR_DEPTH: usize = 32;
/// One download, whole (an `all.zip` of a large ecosystem takes minutes on a slow link).
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(600);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The blocking part of reading one source.
type ReadWork = Box<dyn FnOnce(&mut Vec<Record>, &mut ImportSummary) -> Result<(), String> + Send>;

/// One place to import from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A directory of `*.json` records, read recursively.
    Dir(PathBuf),
    /// One file: an OSV JSON record or a zip of them (by its magic bytes).
    File(PathBuf),
    /// An `http(s)://` URL of a zip or a JSON record.
    Http(String),
    /// An object-store URL (`s3://bucket/key`, `file:///path`) of a zip or a JSON record.
    ObjectStore(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(p) | Source::File(p) => write!(f, "{}", p.display()),
            Source::Http(u) | Source::ObjectStore(u) => f.write_str(u),
        }
    }
}

impl Source {
    /// `http(s)://…`, `s3://…` / `file://…`, or a local path (directory or file).
    pub fn parse(s: &str) -> Result<Source, VulnDbError> {
        let bad = |reason: &str| VulnDbError::Source {
            source_name: s.chars().take(200).collect(),
            reason: reason.into(),
        };
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or over 4096 bytes"));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            url::Url::parse(s).map_err(|e| bad(&format!("invalid URL: {e}")))?;
            return Ok(Source::Http(s.to_owned()));
        }
        if s.starts_with("s3://") || s.starts_with("file://") {
            url::Url::parse(s).map_err(|e| bad(&format!("invalid URL: {e}")))?;
            return Ok(Source::ObjectStore(s.to_owned()));
        }
        if s.contains("://") {
            return Err(bad(
                "unsupported URL scheme (use http(s)://, s3://, file:// or a path)",
            ));
        }
        let path = PathBuf::from(s);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Source::Dir(path)),
            Ok(_) => Ok(Source::File(path)),
            Err(e) => Err(bad(&format!("cannot read: {e}"))),
        }
    }

    /// Read every record of this source into `records`.
    pub(crate) async fn read_into(
        &self,
        records: &mut Vec<Record>,
        summary: &mut ImportSummary,
    ) -> Result<(), VulnDbError> {
        let name = self.to_string();
        let err = |reason: String| VulnDbError::Source {
            source_name: name.clone(),
            reason,
        };
        let work: ReadWork = match self {
            Source::Dir(path) => {
                let path = path.clone();
                Box::new(move |r, s| read_dir(&path, r, s))
            }
            Source::File(path) => {
                let path = path.clone();
                Box::new(move |r, s| {
                    let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                    read_blob(file, &path.display().to_string(), r, s)
                })
            }
            Source::Http(url) => {
                let bytes = fetch_http(url).await.map_err(err)?;
                let url = url.clone();
                Box::new(move |r, s| read_blob(Cursor::new(bytes), &url, r, s))
            }
            Source::ObjectStore(url) => {
                let bytes = fetch_object(url).await.map_err(err)?;
                let url = url.clone();
                Box::new(move |r, s| read_blob(Cursor::new(bytes), &url, r, s))
            }
        };
        // Parsing is CPU work: off the async runtime.
        let mut taken_records = std::mem::take(records);
        let mut taken_summary = std::mem::take(summary);
        let (back_records, back_summary, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut taken_records, &mut taken_summary);
            (taken_records, taken_summary, result)
        })
        .await
        .map_err(|e| err(format!("import task failed: {e}")))?;
        *records = back_records;
        *summary = back_summary;
        result.map_err(err)
    }
}

/// A zip of records, or one JSON record, told apart by the zip magic.
pub(crate) fn read_blob<R: Read + Seek>(
    mut reader: R,
    origin: &str,
    records: &mut Vec<Record>,
    summary: &mut ImportSummary,
) -> Result<(), String> {
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut reader, &mut magic).map_err(|e| e.to_string())?;
    reader
        .seek(std::io::SeekFrom::Start(0))
        .map_err(|e| e.to_string())?;
    if n == 4 && magic == *b"PK\x03\x04" {
        return read_zip(reader, origin, records, summary);
    }
    let mut bytes = Vec::new();
    reader
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(format!(
            "not a zip, and over the {MAX_RECORD_BYTES}-byte limit of one record"
        ));
    }
    records.extend(normalize::record(&bytes, origin, summary));
    Ok(())
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_zip<R: Read + Seek>(
    reader: R,
    origin: &str,
    records: &mut Vec<Record>,
    summary: &mut ImportSummary,
) -> Result<(), String> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("bad zip: {e}"))?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(format!(
            "{} zip entries is over the limit of {MAX_ZIP_ENTRIES}",
            zip.len()
        ));
    }
    let mut buf = Vec::new();
    for i in 0..zip.len() {
        let mut entry = match zip.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                summary.unreadable(origin, format!("zip entry {i}: {e}"));
                continue;
            }
        };
        let name = entry.name().map(|n| n.to_string()).unwrap_or_default();
        if entry.is_dir() || !name.ends_with(".json") {
            continue;
        }
        let entry_origin = format!("{origin}!{name}");
        if entry.size() > MAX_RECORD_BYTES {
            summary.unreadable(
                &entry_origin,
                format!("{} bytes is over the record limit", entry.size()),
            );
            continue;
        }
        buf.clear();
        // The declared size can lie: bound the read itself too.
        match (&mut entry).take(MAX_RECORD_BYTES + 1).read_to_end(&mut buf) {
            Ok(_) if buf.len() as u64 > MAX_RECORD_BYTES => {
                summary.unreadable(&entry_origin, "over the record size limit");
            }
            Ok(_) => records.extend(normalize::record(&buf, &entry_origin, summary)),
            Err(e) => summary.unreadable(&entry_origin, format!("cannot read zip entry: {e}")),
        }
    }
    Ok(())
}

pub(crate) fn read_dir(
    root: &Path,
    records: &mut Vec<Record>,
    summary: &mut ImportSummary,
) -> Result<(), String> {
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut files = 0usize;
    // Symbolic links are followed (a feed kept as a link to a checkout is
    // common); each directory is read once, so a link loop ends.
    let mut seen = std::collections::HashSet::new();
    while let Some((dir, depth)) = stack.pop() {
        if let Ok(real) = std::fs::canonicalize(&dir)
            && !seen.insert(real)
        {
            continue;
        }
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .collect();
        // A stable order: the same tree gives the same skips in the same order.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Ok(mut kind) = entry.file_type() else { continue };
            if kind.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(target) => kind = target.file_type(),
                    Err(e) => {
                        summary.unreadable(&path.display().to_string(), format!("broken link: {e}"));
                        continue;
                    }
                }
            }
            if kind.is_dir() {
                if depth + 1 > MAX_DIR_DEPTH {
                    return Err(format!("{}: deeper than {MAX_DIR_DEPTH} levels", path.display()));
                }
                stack.push((path, depth + 1));
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "json") {
                files += 1;
                if files > MAX_DIR_FILES {
                    return Err(format!("more than {MAX_DIR_FILES} JSON files"));
                }
                let origin = path.display().to_string();
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        let mut bytes = Vec::new();
                        match f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes) {
                            Ok(_) if bytes.len() as u64 > MAX_RECORD_BYTES => {
                                summary.unreadable(&origin, "over the record size limit")
                            }
                            Ok(_) => records.extend(normalize::record(&bytes, &origin, summary)),
                            Err(e) => summary.unreadable(&origin, format!("cannot read: {e}")),
                        }
                    }
                    Err(e) => summary.unreadable(&origin, format!("cannot open: {e}")),
                }
            }
        }
    }
    Ok(())
}

async fn fetch_http(url: &str) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    if response.content_length().is_some_and(|n| n > MAX_DOWNLOAD_BYTES) {
        return Err(format!("over the download limit of {MAX_DOWNLOAD_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() as u64 + chunk.len() as u64 > MAX_DOWNLOAD_BYTES {
            return Err(format!("over the download limit of {MAX_DOWNLOAD_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `s3://bucket/key` (credentials and endpoint from the usual `AWS_*`
/// environment variables) or `file:///path`.
async fn fetch_object(url: &str) -> Result<Vec<u8>, String> {
    let (store, path) = strata_worker::storage::open_url(url)?;
    let meta = store.head(&path).await.map_err(|e| e.to_string())?;
    if meta.size > MAX_DOWNLOAD_BYTES {
        return Err(format!(
            "{} bytes is over the limit of {MAX_DOWNLOAD_BYTES}",
            meta.size
        ));
    }
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    Ok(bytes.to_vec())
}
