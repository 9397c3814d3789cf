//! The database file: `STRATADB` magic, a little-endian u32 format version,
//! then a zstd-compressed postcard encoding of the header and the
//! advisories. Written to a temporary file and renamed into place.
//!
//! postcard (compact, serde) rather than a hand-rolled layout: loading is one
//! decompression plus one decode, well under a second for 100,000+
//! advisories (see `loadtest/src/bin/match_bench.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Advisory, Db, DbStatus, VulnDbError};

const MAGIC: &[u8; 8] = b"STRATADB";
/// 2: advisories carry `modified`.
pub const FORMAT_VERSION: u32 = 2;
/// Bound on the decompressed database (hostile or corrupt files).
const MAX_DECOMPRESSED: usize = 8 * 1024 * 1024 * 1024;

#[derive(Deserialize)]
struct Body {
    status: DbStatus,
    advisories: Vec<Advisory>,
}

/// Sort everything so the same data always encodes to the same bytes.
pub(crate) fn canonicalise(advisories: &mut [Advisory]) {
    for a in advisories.iter_mut() {
        a.aliases.sort();
        a.aliases.dedup();
        a.affected.sort();
        a.affected.dedup();
    }
    advisories.sort_by(|a, b| a.id.cmp(&b.id));
}

pub(crate) fn status_for(advisories: &[Advisory], sources: Vec<String>, built_unix_ms: i64) -> DbStatus {
    let mut per_eco: BTreeMap<String, u64> = BTreeMap::new();
    for a in advisories {
        for e in &a.affected {
            *per_eco.entry(e.ecosystem.to_string()).or_default() += 1;
        }
    }
    DbStatus {
        version: content_version(advisories),
        format_version: FORMAT_VERSION,
        built_unix_ms,
        advisories: advisories.len() as u64,
        records_per_ecosystem: per_eco,
        sources,
    }
}

/// `osv-<16 hex>`: a hash of the canonical advisories only (not the build
/// time or the source paths), so re-importing the same data gives the same id.
fn content_version(advisories: &[Advisory]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT_VERSION.to_le_bytes());
    for a in advisories {
        if let Ok(bytes) = postcard::to_stdvec(a) {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
    }
    format!("osv-{}", &hex::encode(hasher.finalize())[..16])
}

/// The file's bytes: magic, format version, compressed body.
pub(crate) fn encode(name: &str, status: &DbStatus, advisories: &[Advisory]) -> Result<Vec<u8>, VulnDbError> {
    #[derive(Serialize)]
    struct BodyRef<'a> {
        status: &'a DbStatus,
        advisories: &'a [Advisory],
    }
    let encoded = postcard::to_stdvec(&BodyRef { status, advisories }).map_err(|e| VulnDbError::File {
        path: name.to_owned(),
        reason: format!("encoding: {e}"),
    })?;
    let compressed = zstd::encode_all(&encoded[..], 3).map_err(|source| VulnDbError::Io {
        path: name.to_owned(),
        source,
    })?;
    let mut out = Vec::with_capacity(12 + compressed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&compressed);
    Ok(out)
}

pub(crate) fn write(out: &Path, status: &DbStatus, advisories: &[Advisory]) -> Result<(), VulnDbError> {
    let path = out.display().to_string();
    let io = |source| VulnDbError::Io {
        path: path.clone(),
        source,
    };
    let bytes = encode(&path, status, advisories)?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(&bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(out).map_err(|e| io(e.error))?;
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<Db, VulnDbError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| VulnDbError::Io {
        path: name.clone(),
        source,
    })?;
    decode(&bytes, &name)
}

pub(crate) fn decode(bytes: &[u8], name: &str) -> Result<Db, VulnDbError> {
    let bad = |reason: String| VulnDbError::File {
        path: name.to_owned(),
        reason,
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("not a Strata vulnerability database (bad magic)".into()));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, this strata reads {FORMAT_VERSION}: re-import it (`strata db import` or `strata db update`)"
        )));
    }
    let mut decoder = zstd::Decoder::new(&bytes[12..]).map_err(|e| bad(format!("decompressing: {e}")))?;
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut decoder, MAX_DECOMPRESSED as u64 + 1),
        &mut decoded,
    )
    .map_err(|e| bad(format!("decompressing (truncated or corrupt?): {e}")))?;
    if decoded.len() > MAX_DECOMPRESSED {
        return Err(bad("decompresses to more than the limit".into()));
    }
    let body: Body = postcard::from_bytes(&decoded).map_err(|e| bad(format!("decoding (corrupt?): {e}")))?;
    Ok(Db {
        status: body.status,
        advisories: body.advisories,
    })
}
