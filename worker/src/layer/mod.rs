//! The streaming layer reader: one pass over a layer blob turns it into a
//! [`LayerInventory`], with no tar entry ever written to disk.
//!
//! # Contract
//! - [`analyze_layer`] reads the blob (`std::io::Read`, synchronous: async
//!   callers run it in `spawn_blocking` behind `tokio_util`'s `SyncIoBridge`)
//!   to EOF, hashing it (on one short-lived helper thread, so hashing
//!   overlaps decompression), and fails with [`LayerError::DigestMismatch`] when
//!   it is not the expected digest: never a silent result for the wrong bytes.
//!   Analysers run only after the digest matched. A corrupt blob often fails
//!   in the decoder or the tar walk first, so its error may be
//!   `Decompress`/`Tar` rather than `DigestMismatch`: an error either way.
//! - Compression (gzip, zstd, none) is decided by the magic bytes, which
//!   win over the media type as they do in containerd; a media type that
//!   disagrees adds a warning, an encrypted one is an error.
//! - The tar is walked from the stream. Each analyser is handed only the
//!   regular files it [`wants`](crate::analyzers::Analyzer::wants), captured
//!   in memory, and its `analyze` is called once with all of them.
//! - Paths are absolute and normalised (`./a//b` → `/a/b`); a name (or
//!   hard-link target) that climbs above the root with `..` fails the layer
//!   ([`LayerError::PathTraversal`]), as Docker refuses such layers.
//! - Whiteouts (`.wh.NAME`) and opaque directories (`.wh..wh..opq`) are
//!   recorded, never treated as files.
//! - Hard links: a wanted link gets the bytes of its target when the target
//!   was captured earlier in the layer. A target earlier in the layer whose
//!   bytes went past (a tar writer stores the first of two names of one
//!   inode as the file: `status-old` before `status`) fails that pass with
//!   [`LayerError::UnkeptLinkTarget`]; [`analyze_layer_reopening`] then
//!   reads the layer again keeping that target's bytes (at most
//!   [`MAX_LINK_TARGET_PASSES`] targets, one more read of the blob each),
//!   which is what the worker and `strata scan` do. A target not in the
//!   layer is a warning; symlinks are
//!   never followed; devices, FIFOs and directories hold no data. An entry
//!   that is not captured replaces a file captured earlier at the same path.
//! - Every cap in [`Limits`] is an error naming the layer and the limit.
//!   Malformed or truncated gzip, zstd or tar is an error for that layer.
//!   A tar must end with its end-of-archive block: a stream cut exactly at
//!   an entry boundary would otherwise look complete.
//! - An analyser's error (or panic) is a [`Warning`], not a failed layer.
//!
//! [`analyze_dir`] runs the same dispatch over a root filesystem directory.

mod collect;
mod dir;
mod limits;
mod path;
mod stream;
mod stream_async;
mod walk;

#[cfg(test)]
mod tests;

use strata_proto::LayerInventory;

pub use dir::analyze_dir;
pub use limits::{LayerError, LimitKind, Limits, Nesting};
pub use stream::Compression;
pub use stream_async::{MAX_LINK_TARGET_PASSES, analyze_layer_reopening, analyze_layer_stream};
pub use walk::{analyze_layer, analyze_layer_keeping};

/// A non-fatal problem met while reading a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The analyser it came from; `None` for the reader itself (a skipped
    /// hard link, a non-UTF-8 name, a media type that disagrees with the blob).
    pub analyzer: Option<&'static str>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.analyzer {
            Some(a) => write!(f, "{a}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What one layer (or root directory) yielded.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAnalysis {
    pub inventory: LayerInventory,
    pub warnings: Vec<Warning>,
    /// Tar (or directory) entries seen.
    pub entries: u64,
    /// Bytes of the files captured for analysers.
    pub captured_bytes: u64,
}
