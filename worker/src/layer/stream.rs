//! The byte pipeline under the tar walk:
//! blob → [`HashingReader`] (digest of the raw bytes, computed on a helper
//! thread so it overlaps decompression) → buffer → decoder
//! (gzip, zstd or none) → [`Guard`] (uncompressed-byte and header caps) → tar.
//!
//! Failures are recorded in [`Shared`] by the reader where they happen, so a
//! single `io::Error` surfacing from the `tar` crate can be told apart: the
//! source failed, the decoder failed, a cap tripped, or (none of those) the
//! tar itself is malformed.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, BufRead, BufReader, Chain, Cursor, Read};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use sha2::Digest as _;

use super::limits::LimitKind;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "uncompressed tar",
        })
    }
}

/// Bytes sniffed from the start of a blob.
pub(crate) const MAGIC_LEN: usize = 4;

impl Compression {
    /// What the first bytes say. Anything not gzip or zstd is taken as a
    /// plain tar (the tar walk rejects garbage).
    pub fn sniff(prefix: &[u8]) -> Compression {
        match prefix {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            // zstd skippable frame (magic 0x184D2A5?, little-endian).
            [b0, 0x2a, 0x4d, 0x18, ..] if b0 & 0xf0 == 0x50 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// What an OCI or Docker layer media type claims. `Ok(None)` when the
    /// type says nothing about compression (`application/octet-stream`, or
    /// unknown); `Err(())` for layers we cannot read at all (encrypted).
    #[allow(clippy::result_unit_err)]
    pub fn from_media_type(media_type: &str) -> Result<Option<Compression>, ()> {
        let mt = media_type.trim().to_ascii_lowercase();
        if mt.contains("encrypted") {
            return Err(());
        }
        Ok(
            if mt.ends_with("+gzip") || mt.ends_with(".gzip") || mt.ends_with(".tar.gz") {
                Some(Compression::Gzip)
            } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
                Some(Compression::Zstd)
            } else if mt.ends_with(".tar") {
                Some(Compression::None)
            } else {
                None
            },
        )
    }
}

/// The first failure seen below the tar reader.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Reading the blob itself failed (network, file).
    Source(io::Error),
    /// The decoder rejected its input.
    Decode(io::Error),
    /// A cap tripped.
    Limit { which: LimitKind, limit: u64 },
}

/// State shared by the readers of one layer and the walker above them.
/// Single-threaded: one layer is read on one (blocking) thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    failure: RefCell<Option<Failure>>,
    /// Decompressed bytes delivered to the tar reader so far.
    uncompressed: Cell<u64>,
    /// Set while the tar crate reads headers: the `uncompressed` count then.
    armed_at: Cell<Option<u64>>,
}

impl Shared {
    fn record(&self, failure: Failure) {
        let mut slot = self.failure.borrow_mut();
        if slot.is_none() {
            *slot = Some(failure);
        }
    }

    pub(crate) fn take_failure(&self) -> Option<Failure> {
        self.failure.borrow_mut().take()
    }

    pub(crate) fn uncompressed(&self) -> u64 {
        self.uncompressed.get()
    }

    /// Start counting header bytes (call before asking for the next entry).
    pub(crate) fn arm(&self) {
        self.armed_at.set(Some(self.uncompressed.get()));
    }

    pub(crate) fn disarm(&self) {
        self.armed_at.set(None);
    }
}

/// The digest computation, run on a helper thread so hashing the raw blob
/// overlaps decompression instead of adding to it (see [`HashingReader`]).
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Raw chunks in flight to the hashing thread: bounds the memory it can
/// fall behind by (at most this many buffer-sized chunks).
pub(crate) const HASH_QUEUE: usize = 16;

impl Hasher {
    /// `algorithm` is a [`strata_proto::Digest`] algorithm; `None` if unknown.
    pub(crate) fn new(algorithm: &str) -> Option<Self> {
        match algorithm {
            "sha256" => Some(Hasher::Sha256(sha2::Sha256::new())),
            "sha512" => Some(Hasher::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    /// Hash every chunk until the sender is dropped, handing buffers back
    /// for reuse; returns `algorithm:hex`.
    pub(crate) fn run(mut self, chunks: Receiver<Vec<u8>>, spare: Sender<Vec<u8>>) -> String {
        for chunk in chunks {
            match &mut self {
                Hasher::Sha256(h) => h.update(&chunk),
                Hasher::Sha512(h) => h.update(&chunk),
            }
            // The reader may be gone already; the buffer is then just freed.
            let _ = spare.send(chunk);
        }
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// Counts every raw byte read from the blob and sends a copy to the hashing
/// thread. Buffers come back through `spare`, so only about [`HASH_QUEUE`]
/// of them ever exist.
pub(crate) struct HashingReader<R> {
    inner: R,
    chunks: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    bytes: u64,
    max_bytes: u64,
    shared: Rc<Shared>,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(
        inner: R,
        max_bytes: u64,
        shared: Rc<Shared>,
        chunks: SyncSender<Vec<u8>>,
        spare: Receiver<Vec<u8>>,
    ) -> Self {
        HashingReader {
            inner,
            chunks,
            spare,
            bytes: 0,
            max_bytes,
            shared,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.shared
                    .record(Failure::Source(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        self.bytes += n as u64;
        // Compressed data is never meaningfully larger than what it holds,
        // so the raw blob is held to the same cap (bounds the drain to EOF).
        if self.bytes > self.max_bytes {
            self.shared.record(Failure::Limit {
                which: LimitKind::UncompressedBytes,
                limit: self.max_bytes,
            });
            return Err(io::Error::other("raw blob exceeds max_uncompressed_bytes"));
        }
        if n > 0 {
            let mut chunk = self.spare.try_recv().unwrap_or_default();
            chunk.clear();
            chunk.extend_from_slice(buf.get(..n).unwrap_or_default());
            if self.chunks.send(chunk).is_err() {
                let e = io::Error::other("the hashing thread stopped");
                self.shared
                    .record(Failure::Source(io::Error::other(e.to_string())));
                return Err(e);
            }
        }
        Ok(n)
    }
}

/// The raw side: sniffed prefix put back in front of the rest of the blob.
pub(crate) type Source<R> = BufReader<Chain<Cursor<Vec<u8>>, HashingReader<R>>>;

/// Buffer under the decoder: large reads keep per-call overhead negligible.
const BUF_SIZE: usize = 128 * 1024;

pub(crate) fn source<R: Read>(prefix: Vec<u8>, rest: HashingReader<R>) -> Source<R> {
    BufReader::with_capacity(BUF_SIZE, Cursor::new(prefix).chain(rest))
}

/// One of the supported decoders over a buffered source. One per layer, so
/// the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Decoder<B: BufRead> {
    Gzip(flate2::bufread::MultiGzDecoder<B>),
    Zstd(zstd::stream::read::Decoder<'static, B>),
    Plain(B),
}

impl<B: BufRead> Decoder<B> {
    pub(crate) fn new(compression: Compression, inner: B) -> io::Result<Self> {
        Ok(match compression {
            // Multi-member, as Go's gzip reader (and so containerd) accepts.
            Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(inner)),
            // Multi-frame by default; the window is capped by zstd's default
            // (128 MiB), which bounds the decoder's memory.
            Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(inner)?),
            Compression::None => Decoder::Plain(inner),
        })
    }

    pub(crate) fn into_inner(self) -> B {
        match self {
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.into_inner(),
            Decoder::Plain(b) => b,
        }
    }
}

impl<B: BufRead> Read for Decoder<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Plain(b) => b.read(buf),
        }
    }
}

/// Counts decompressed bytes and enforces the total and header caps, so
/// neither a decompression bomb nor a huge GNU long-name / PAX header (which
/// the `tar` crate reads into memory whole) can grow memory past the caps.
pub(crate) struct Guard<D> {
    pub(crate) inner: D,
    shared: Rc<Shared>,
    max_total: u64,
    max_header: u64,
}

impl<D: Read> Guard<D> {
    pub(crate) fn new(inner: D, shared: Rc<Shared>, max_total: u64, max_header: u64) -> Self {
        Guard {
            inner,
            shared,
            max_total,
            max_header,
        }
    }
}

impl<D: Read> Read for Guard<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                // A source failure was already recorded below; otherwise the
                // decoder rejected its input.
                self.shared
                    .record(Failure::Decode(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        let total = self.shared.uncompressed.get() + n as u64;
        self.shared.uncompressed.set(total);
        if total > self.max_total {
            self.shared.record(Failure::Limit {
                which: LimitKind::UncompressedBytes,
                limit: self.max_total,
            });
            return Err(io::Error::other("max_uncompressed_bytes exceeded"));
        }
        if let Some(at) = self.shared.armed_at.get()
            && total - at > self.max_header
        {
            self.shared.record(Failure::Limit {
                which: LimitKind::HeaderBytes,
                limit: self.max_header,
            });
            return Err(io::Error::other("tar extension headers too large"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(Compression::sniff(&[0x50, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
        assert_eq!(Compression::sniff(&[0x1f]), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn reads_media_types() {
        let gz = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(gz, Ok(Some(Compression::Gzip)));
        let docker = Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip");
        assert_eq!(docker, Ok(Some(Compression::Gzip)));
        let zst = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd");
        assert_eq!(zst, Ok(Some(Compression::Zstd)));
        let plain = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar");
        assert_eq!(plain, Ok(Some(Compression::None)));
        assert_eq!(Compression::from_media_type("application/octet-stream"), Ok(None));
        assert!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").is_err()
        );
    }
}
