//! One feed's records kept between polls, and the database built from
//! every feed's: the feed poller (`crate::feeds`) reads a feed that changed
//! into a [`FeedRecords`], keeps it (in memory and in the object store), and
//! [`combine`]s the latest good records of every feed into the next
//! database, so one feed changing does not need the others fetched again.
//!
//! # Contract
//! - Reading is stricter than `strata db import`: a record that cannot be
//!   read at all (malformed JSON, no id, an unreadable or oversized entry)
//!   fails the whole feed, so a broken export never replaces good data with
//!   part of itself. A record read whose parts cannot be used (an unknown
//!   ecosystem, a version the scheme rejects) is skipped as an import skips
//!   it; withdrawn records are left out (and so disappear from the next
//!   database).
//! - Records are kept normalised and not yet merged: aliases are merged
//!   across feeds by [`combine`], exactly as one import of every feed would.
//! - The encoded form (`STRATAFD`, a format version, zstd-compressed
//!   postcard) is read back only by the same format version; anything else
//!   is an error, and the poller then fetches the feed again.

use std::io::{Cursor, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::normalize::Record;
use super::source::{self, MAX_DOWNLOAD_BYTES};
use super::{Db, ImportSummary, VulnDbError};

const MAGIC: &[u8; 8] = b"STRATAFD";
const FORMAT_VERSION: u32 = 1;
/// Bound on a decoded snapshot (a hostile or corrupt object).
const MAX_DECODED_BYTES: u64 = 2 * MAX_DOWNLOAD_BYTES;

/// The normalised records of one feed (not yet merged with other feeds').
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedRecords {
    records: Vec<Record>,
}

impl FeedRecords {
    /// Records read (withdrawn and unreadable ones are not kept).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records of a download: a zip of OSV records or one record.
    /// Blocking (CPU work): call it off the async runtime.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<(FeedRecords, ImportSummary), VulnDbError> {
        let mut records = Vec::new();
        let mut summary = ImportSummary::default();
        source::read_blob(Cursor::new(bytes), origin, &mut records, &mut summary)
            .map_err(|reason| failed(origin, reason))?;
        strict(origin, FeedRecords { records }, summary)
    }

    /// The records of a directory tree of OSV JSON files. Blocking.
    pub fn from_dir(dir: &Path) -> Result<(FeedRecords, ImportSummary), VulnDbError> {
        let origin = dir.display().to_string();
        let mut records = Vec::new();
        let mut summary = ImportSummary::default();
        source::read_dir(dir, &mut records, &mut summary).map_err(|reason| failed(&origin, reason))?;
        strict(&origin, FeedRecords { records }, summary)
    }

    /// The stored form (see the module's contract).
    pub fn encode(&self) -> Result<Vec<u8>, VulnDbError> {
        let encoded = postcard::to_stdvec(self).map_err(|e| VulnDbError::File {
            path: "feed records".into(),
            reason: format!("encoding: {e}"),
        })?;
        let compressed = zstd::encode_all(&encoded[..], 3).map_err(|source| VulnDbError::Io {
            path: "feed records".into(),
            source,
        })?;
        let mut out = Vec::with_capacity(12 + compressed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&compressed);
        Ok(out)
    }

    /// Reads [`Self::encode`]'s bytes back; `name` says where they came from.
    pub fn decode(bytes: &[u8], name: &str) -> Result<FeedRecords, VulnDbError> {
        let bad = |reason: String| VulnDbError::File {
            path: name.to_owned(),
            reason,
        };
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("not Strata feed records (bad magic)".into()));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "feed records format {version}, this strata reads {FORMAT_VERSION}"
            )));
        }
        let decoder = zstd::Decoder::new(&bytes[12..]).map_err(|e| bad(format!("decompressing: {e}")))?;
        let mut decoded = Vec::new();
        decoder
            .take(MAX_DECODED_BYTES + 1)
            .read_to_end(&mut decoded)
            .map_err(|e| bad(format!("decompressing (truncated or corrupt?): {e}")))?;
        if decoded.len() as u64 > MAX_DECODED_BYTES {
            return Err(bad("decompresses to more than the limit".into()));
        }
        postcard::from_bytes(&decoded).map_err(|e| bad(format!("decoding (corrupt?): {e}")))
    }
}

/// One database from the records of every feed, aliases merged across
/// feeds; `sources` names them in its status. CPU work: off the runtime.
pub fn combine(feeds: &[&FeedRecords], sources: Vec<String>) -> Db {
    super::build(feeds.iter().flat_map(|f| f.records.iter()), sources)
}

fn failed(origin: &str, reason: String) -> VulnDbError {
    VulnDbError::Source {
        source_name: origin.to_owned(),
        reason,
    }
}

/// A feed with an unreadable record is a broken feed, not a smaller one.
fn strict(
    origin: &str,
    records: FeedRecords,
    summary: ImportSummary,
) -> Result<(FeedRecords, ImportSummary), VulnDbError> {
    if summary.unreadable == 0 {
        return Ok((records, summary));
    }
    let first = summary
        .skipped
        .iter()
        .find(|s| s.id == "?")
        .map(|s| format!(": {} ({})", s.reason, s.source))
        .unwrap_or_default();
    let reason = format!("{} unreadable records{first}", summary.unreadable);
    Err(failed(origin, strata_proto::text::cut_marked(&reason, 500)))
}
