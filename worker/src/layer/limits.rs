//! Caps on what one layer (or root directory) may cost, and the errors the
//! reader returns.
//!
//! Every cap is a hard error for the layer that crosses it, naming the layer
//! and the limit: a hostile blob gets a clear failure in bounded memory and
//! time, never a partial or silent result.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use strata_proto::Digest;

use super::stream::Compression;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Caps for one layer. `Default` holds values sized for real images (a
/// 10 GiB CUDA layer, an rpmdb of a large Fedora image) that still keep one
/// worker's memory bounded. Deserialised from the worker's config; a field
/// left out keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of the decompressed tar stream (and of the raw blob).
    pub max_uncompressed_bytes: u64,
    /// Bytes of one file captured for an analyser.
    pub max_file_bytes: u64,
    /// Bytes of all files captured from one layer together.
    pub max_captured_bytes: u64,
    /// Tar entries (or directory entries) in one layer.
    pub max_entries: u64,
    /// Bytes of one entry's path or link target, as stored.
    pub max_path_len: u64,
    /// Archives inside archives (a jar in a war in a layer): how deep an
    /// analyser that opens nested archives may go. The layer itself is 0.
    pub max_nesting_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed_bytes: 16 * GIB,
            max_file_bytes: 128 * MIB,
            max_captured_bytes: 192 * MIB,
            max_entries: 2_000_000,
            max_path_len: 4096,
            max_nesting_depth: 3,
        }
    }
}

impl Limits {
    /// Bytes the tar reader may consume between two entries: extension
    /// headers (GNU long names, PAX records, sparse maps) are read into
    /// memory by the `tar` crate, so they are capped here. Derived, not
    /// configured: two long paths plus generous room for PAX xattrs.
    pub fn max_header_bytes(&self) -> u64 {
        self.max_path_len.saturating_mul(2).saturating_add(MIB)
    }
}

/// Which cap was crossed; callers branch on it (metrics, retry policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    UncompressedBytes,
    FileBytes,
    CapturedBytes,
    Entries,
    PathLength,
    NestingDepth,
    /// Extension headers between two entries (see [`Limits::max_header_bytes`]).
    HeaderBytes,
}

impl LimitKind {
    /// The config field that sets this cap.
    pub fn config_name(self) -> &'static str {
        match self {
            LimitKind::UncompressedBytes => "max_uncompressed_bytes",
            LimitKind::FileBytes => "max_file_bytes",
            LimitKind::CapturedBytes => "max_captured_bytes",
            LimitKind::Entries => "max_entries",
            LimitKind::PathLength => "max_path_len",
            LimitKind::NestingDepth => "max_nesting_depth",
            LimitKind::HeaderBytes => "max_header_bytes (2 * max_path_len + 1 MiB)",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_name())
    }
}

/// Why a layer (or root directory) could not be analysed. `layer` is the
/// layer digest, or `dir:PATH` for [`super::analyze_dir`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    #[error("layer {layer}: digest mismatch: blob hashes to {actual}")]
    DigestMismatch {
        layer: String,
        expected: Digest,
        actual: String,
    },
    #[error("layer {layer}: limit {which} = {limit} exceeded{}", detail_suffix(.detail))]
    Limit {
        layer: String,
        which: LimitKind,
        limit: u64,
        detail: String,
    },
    #[error("layer {layer}: {compression} stream is malformed or truncated: {source}")]
    Decompress {
        layer: String,
        compression: Compression,
        source: io::Error,
    },
    #[error("layer {layer}: malformed tar: {reason}")]
    Tar { layer: String, reason: String },
    #[error("layer {layer}: entry {path:?} escapes the root with `..`")]
    PathTraversal { layer: String, path: String },
    #[error("layer {layer}: unsupported media type {media_type:?}")]
    MediaType { layer: String, media_type: String },
    #[error("layer {layer}: reading: {source}")]
    Io { layer: String, source: io::Error },
    /// A file an analyser reads is a hard link to an earlier entry whose
    /// bytes were not kept (no analyser reads the target's path): reporting
    /// the layer without it would be a silent wrong answer.
    #[error(
        "layer {layer}: hard link {path:?} -> {target:?}: an analyser reads {path:?}, but its bytes went past under {target:?}, which none reads; the layer is refused rather than reported without it"
    )]
    UnkeptLinkTarget {
        layer: String,
        path: String,
        target: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl LayerError {
    pub(crate) fn limit(layer: &str, which: LimitKind, limit: u64, detail: impl Into<String>) -> Self {
        LayerError::Limit {
            layer: layer.to_owned(),
            which,
            limit,
            detail: detail.into(),
        }
    }

    /// The layer (digest or `dir:PATH`) this error is about.
    pub fn layer(&self) -> &str {
        match self {
            LayerError::DigestMismatch { layer, .. }
            | LayerError::Limit { layer, .. }
            | LayerError::Decompress { layer, .. }
            | LayerError::Tar { layer, .. }
            | LayerError::PathTraversal { layer, .. }
            | LayerError::MediaType { layer, .. }
            | LayerError::Io { layer, .. }
            | LayerError::UnkeptLinkTarget { layer, .. } => layer,
        }
    }
}

/// How deep into archives-inside-archives a reader is. The layer is depth 0;
/// an analyser that opens a nested archive must call [`Nesting::enter`]
/// first, so the cap holds however the nesting is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nesting {
    depth: u32,
}

impl Nesting {
    pub fn depth(self) -> u32 {
        self.depth
    }

    /// One level deeper, or a [`LimitKind::NestingDepth`] error naming the
    /// layer and the archive being opened.
    pub fn enter(self, limits: &Limits, layer: &str, archive_path: &str) -> Result<Nesting, LayerError> {
        let depth = self.depth.saturating_add(1);
        if depth > limits.max_nesting_depth {
            return Err(LayerError::limit(
                layer,
                LimitKind::NestingDepth,
                u64::from(limits.max_nesting_depth),
                format!("opening {archive_path}"),
            ));
        }
        Ok(Nesting { depth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_deserialise_partially_and_reject_unknown_fields() {
        let l: Limits = serde_json::from_str(r#"{"max_entries": 10}"#).unwrap();
        assert_eq!(l.max_entries, 10);
        assert_eq!(l.max_file_bytes, Limits::default().max_file_bytes);
        assert!(serde_json::from_str::<Limits>(r#"{"max_entrys": 10}"#).is_err());
    }

    #[test]
    fn nesting_stops_at_the_cap() {
        let limits = Limits {
            max_nesting_depth: 2,
            ..Limits::default()
        };
        let one = Nesting::default().enter(&limits, "L", "/a.jar").unwrap();
        let two = one.enter(&limits, "L", "/a.jar!/b.jar").unwrap();
        assert_eq!(two.depth(), 2);
        let err = two.enter(&limits, "L", "/a.jar!/b.jar!/c.jar").unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::Limit {
                    which: LimitKind::NestingDepth,
                    limit: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("max_nesting_depth"), "{err}");
        assert!(err.to_string().contains("c.jar"), "{err}");
    }
}
