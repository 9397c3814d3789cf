//! The tar walk over one layer blob: see the contract in [`super`].

use std::collections::BTreeSet;
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::sync::mpsc;

use strata_proto::Digest;
use tar::EntryType;

use super::LayerAnalysis;
use super::collect::{Collector, Sinks};
use super::limits::{LayerError, LimitKind, Limits};
use super::path::{normalize, special};
use super::stream::{
    Compression, Decoder, Failure, Guard, HASH_QUEUE, Hasher, HashingReader, MAGIC_LEN, Shared, source,
};
use crate::analyzers::{Analyzer, HEAD_BYTES};

/// Read buffer for entries nobody wants: large enough that per-call
/// overhead through the reader stack stays negligible.
const SKIP_BUF: usize = 64 * 1024;

/// Buffer between the decoder and the tar reader.
const DECODED_BUF: usize = 128 * 1024;

/// Analyse one layer blob in a single pass. `media_type` is the manifest's
/// layer media type when known. Reads `blob` to EOF on success.
pub fn analyze_layer<R: Read>(
    blob: R,
    expected: &Digest,
    media_type: Option<&str>,
    analyzers: &[Box<dyn Analyzer>],
    limits: &Limits,
) -> Result<LayerAnalysis, LayerError> {
    analyze_layer_keeping(blob, expected, media_type, analyzers, limits, &BTreeSet::new())
}

/// [`analyze_layer`], also keeping the bytes of the files at `keep` (the
/// targets of wanted hard links that a first pass met only after their
/// bytes had gone past: [`LayerError::UnkeptLinkTarget`]), so the links
/// get them. See [`super::analyze_layer_reopening`].
pub fn analyze_layer_keeping<R: Read>(
    blob: R,
    expected: &Digest,
    media_type: Option<&str>,
    analyzers: &[Box<dyn Analyzer>],
    limits: &Limits,
    keep: &BTreeSet<String>,
) -> Result<LayerAnalysis, LayerError> {
    let layer = expected.as_str();
    let io_err = |source: io::Error| LayerError::Io {
        layer: layer.to_owned(),
        source,
    };

    let claimed = match media_type {
        Some(mt) => Compression::from_media_type(mt).map_err(|()| LayerError::MediaType {
            layer: layer.to_owned(),
            media_type: mt.to_owned(),
        })?,
        None => None,
    };

    let hasher = Hasher::new(expected.algorithm()).ok_or_else(|| LayerError::MediaType {
        layer: layer.to_owned(),
        media_type: format!("digest algorithm {}", expected.algorithm()),
    })?;
    let (chunks_tx, chunks_rx) = mpsc::sync_channel(HASH_QUEUE);
    let (spare_tx, spare_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let hashing = std::thread::Builder::new()
            .name("layer-digest".into())
            .spawn_scoped(scope, move || hasher.run(chunks_rx, spare_tx))
            .map_err(io_err)?;
        let shared = Rc::new(Shared::default());
        let raw = HashingReader::new(
            blob,
            limits.max_uncompressed_bytes,
            Rc::clone(&shared),
            chunks_tx,
            spare_rx,
        );
        // Dropping `raw` (on any return) ends the hashing thread; the scope
        // then joins it.
        let collector = Collector::new(layer, analyzers, limits, keep);
        let (collector, raw) = read_layer(raw, &shared, collector, claimed, media_type)?;
        drop(raw);
        let actual = hashing
            .join()
            .map_err(|_| io_err(io::Error::other("the hashing thread panicked")))?;
        if actual != expected.as_str() {
            return Err(LayerError::DigestMismatch {
                layer: layer.to_owned(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(collector.finish(Some(expected)))
    })
}

/// Everything but the digest check: sniff, decompress, walk, drain to EOF.
/// Returns the collector and the raw reader (to be dropped, ending the hash).
fn read_layer<'a, R: Read>(
    mut raw: HashingReader<R>,
    shared: &Rc<Shared>,
    mut collector: Collector<'a>,
    claimed: Option<Compression>,
    media_type: Option<&str>,
) -> Result<(Collector<'a>, HashingReader<R>), LayerError> {
    let (layer, limits) = (collector.layer, collector.limits);
    let prefix = read_prefix(&mut raw).map_err(|source| LayerError::Io {
        layer: layer.to_owned(),
        source,
    })?;
    let compression = Compression::sniff(&prefix);

    if let Some(claimed) = claimed
        && claimed != compression
    {
        collector.warn(format!(
            "media type {:?} says {claimed} but the blob is {compression}; reading it as {compression}",
            media_type.unwrap_or_default()
        ));
    }

    let decompress_err = |source: io::Error| LayerError::Decompress {
        layer: layer.to_owned(),
        compression,
        source,
    };
    let decoder = Decoder::new(compression, source(prefix, raw)).map_err(decompress_err)?;
    // The tar crate reads headers 512 bytes at a time; serving those from a
    // buffer keeps the decoder working on large outputs.
    let decoded = BufReader::with_capacity(DECODED_BUF, decoder);
    let guard = Guard::new(
        decoded,
        Rc::clone(shared),
        limits.max_uncompressed_bytes,
        limits.max_header_bytes(),
    );
    let classify = |e: io::Error| classify(shared, layer, compression, e);

    let mut archive = tar::Archive::new(guard);
    walk(&mut archive, shared, &mut collector).map_err(|e| match e {
        Walk::Io(e) => classify(e),
        Walk::Layer(e) => e,
    })?;

    // Past the end-of-archive block: drain the decompressed stream (padding
    // to the record size, or more members), then the raw blob, so the whole
    // blob is hashed and a corrupt tail is still caught by the decoder.
    let mut guard = archive.into_inner();
    io::copy(&mut guard, &mut io::sink()).map_err(classify)?;
    let mut rest = guard.inner.into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(classify)?;
    let (_, raw) = rest.into_inner().into_inner();
    Ok((collector, raw))
}

/// Up to [`MAGIC_LEN`] bytes from the start of the blob (fewer only at EOF).
fn read_prefix(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::with_capacity(MAGIC_LEN);
    r.take(MAGIC_LEN as u64).read_to_end(&mut prefix)?;
    Ok(prefix)
}

enum Walk {
    /// From the reader stack or the tar crate: classified by [`classify`].
    Io(io::Error),
    Layer(LayerError),
}

impl From<io::Error> for Walk {
    fn from(e: io::Error) -> Self {
        Walk::Io(e)
    }
}

impl From<LayerError> for Walk {
    fn from(e: LayerError) -> Self {
        Walk::Layer(e)
    }
}

fn tar_err(layer: &str, reason: impl Into<String>) -> Walk {
    Walk::Layer(LayerError::Tar {
        layer: layer.to_owned(),
        reason: reason.into(),
    })
}

fn walk<R: Read>(archive: &mut tar::Archive<R>, shared: &Shared, c: &mut Collector<'_>) -> Result<(), Walk> {
    let layer = c.layer;
    let mut entries = archive.entries()?;
    let mut buf = vec![0u8; SKIP_BUF];
    // Holes of GNU sparse files are zeros the tar crate makes up, never seen
    // by the byte guard: they count here, so reading them is bounded too.
    let mut sparse_bytes = 0u64;
    loop {
        shared.arm();
        let before = shared.uncompressed();
        let mut entry = match entries.next() {
            Some(entry) => entry?,
            None => {
                // The tar crate stops at a zero block or at EOF; only the
                // former (512 bytes past the previous entry's padding) is a
                // complete archive.
                if shared.uncompressed() - before < 512 {
                    return Err(tar_err(layer, "truncated: no end-of-archive block"));
                }
                shared.disarm();
                return Ok(());
            }
        };
        shared.disarm();
        c.count_entry()?;

        let raw_name = entry.path_bytes();
        c.check_path_len(raw_name.len())?;
        let Ok(name) = std::str::from_utf8(&raw_name) else {
            let lossy = String::from_utf8_lossy(&raw_name).into_owned();
            c.warn(format!("entry {lossy:?}: name is not UTF-8, skipped"));
            skip(&mut entry, &mut buf, 0, layer)?;
            continue;
        };
        let path = normalize(name).map_err(|_| LayerError::PathTraversal {
            layer: layer.to_owned(),
            path: name.to_owned(),
        })?;

        let kind = entry.header().entry_type();
        if kind == EntryType::GNUSparse {
            sparse_bytes = sparse_bytes.saturating_add(entry.size());
            let max = c.limits.max_uncompressed_bytes;
            if shared.uncompressed().saturating_add(sparse_bytes) > max {
                let detail = format!("sparse file {path}");
                return Err(LayerError::limit(layer, LimitKind::UncompressedBytes, max, detail).into());
            }
        }
        if let Some(special) = special(&path) {
            // Whiteouts are markers, not files, whatever their entry type.
            c.special(special);
            skip(&mut entry, &mut buf, 0, layer)?;
            continue;
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                let mode = entry.header().mode().unwrap_or(0);
                let wanted_by = c.wanted_by(&path, size);
                // Streaming analysers see the head first, then the rest.
                let (head, mut sinks) = if c.streams() {
                    let head = read_head(&mut entry, size, layer)?;
                    let sinks = c.open(&path, mode, size, &head);
                    (head, sinks)
                } else {
                    (Vec::new(), Sinks::none())
                };
                if wanted_by.is_empty() && !c.keeps(&path) {
                    c.forget(&path);
                    c.skipped_file(&path);
                    let already = head.len() as u64;
                    if sinks.is_empty() || !sinks.write(&head) {
                        skip(&mut entry, &mut buf, already, layer)?;
                    } else {
                        stream(&mut entry, &mut buf, already, Some(&mut sinks), layer)?;
                    }
                    c.close(&path, sinks, true);
                } else {
                    c.check_capture(&path, size)?;
                    let data = read_rest(&mut entry, head, size, layer)?;
                    if !sinks.is_empty() {
                        sinks.write(&data);
                    }
                    // Capturing replaces what was at the path: first.
                    c.capture(path.clone(), wanted_by, data);
                    c.close(&path, sinks, true);
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                c.check_path_len(target.len())?;
                skip(&mut entry, &mut buf, 0, layer)?;
                let Ok(target) = std::str::from_utf8(&target) else {
                    c.forget(&path);
                    c.warn(format!("hard link {path}: target is not UTF-8, skipped"));
                    continue;
                };
                let target = normalize(target).map_err(|_| LayerError::PathTraversal {
                    layer: layer.to_owned(),
                    path: target.to_owned(),
                })?;
                c.link(path, &target)?;
            }
            // Directories, symlinks (never followed), devices, FIFOs, PAX
            // global headers: no data for analysers.
            _ => {
                c.forget(&path);
                skip(&mut entry, &mut buf, 0, layer)?;
            }
        }
    }
}

/// The first `min(size, HEAD_BYTES)` bytes of an entry.
fn read_head(entry: &mut impl Read, size: u64, layer: &str) -> Result<Vec<u8>, Walk> {
    let want = size.min(HEAD_BYTES as u64);
    let mut head = Vec::with_capacity(want as usize);
    entry.take(want).read_to_end(&mut head)?;
    if (head.len() as u64) < want {
        return Err(truncated(layer, head.len() as u64, size));
    }
    Ok(head)
}

/// A wanted entry whole: `head` (already read) and the rest; `size` is
/// already within the caps.
fn read_rest(entry: &mut impl Read, head: Vec<u8>, size: u64, layer: &str) -> Result<Vec<u8>, Walk> {
    let mut data = head;
    data.reserve(usize::try_from(size).unwrap_or(0).saturating_sub(data.len()));
    let rest = size.saturating_sub(data.len() as u64);
    entry.take(rest).read_to_end(&mut data)?;
    if (data.len() as u64) < size {
        return Err(truncated(layer, data.len() as u64, size));
    }
    Ok(data)
}

fn truncated(layer: &str, seen: u64, size: u64) -> Walk {
    tar_err(layer, format!("truncated entry: {seen} of {size} bytes"))
}

/// Stream past an entry's data (`already` bytes of it read), checking that
/// all of it is there.
fn skip(
    entry: &mut tar::Entry<'_, impl Read>,
    buf: &mut [u8],
    already: u64,
    layer: &str,
) -> Result<(), Walk> {
    stream(entry, buf, already, None, layer)
}

/// Stream past an entry's data (`already` bytes of it read), feeding it to
/// `sinks` until none of them reads on, and checking that all of it is there.
fn stream(
    entry: &mut tar::Entry<'_, impl Read>,
    buf: &mut [u8],
    already: u64,
    mut sinks: Option<&mut Sinks>,
    layer: &str,
) -> Result<(), Walk> {
    let size = entry.size();
    let mut seen = already;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Walk::Io(e)),
        };
        seen += n as u64;
        if let Some(s) = sinks.as_deref_mut()
            && !s.write(&buf[..n])
        {
            sinks = None;
        }
    }
    if seen < size {
        return Err(truncated(layer, seen, size));
    }
    Ok(())
}

/// Name what went wrong below the tar reader, or blame the tar.
fn classify(shared: &Shared, layer: &str, compression: Compression, e: io::Error) -> LayerError {
    let layer = layer.to_owned();
    match shared.take_failure() {
        Some(Failure::Source(source)) => LayerError::Io { layer, source },
        Some(Failure::Decode(source)) => LayerError::Decompress {
            layer,
            compression,
            source,
        },
        Some(Failure::Limit { which, limit }) => LayerError::Limit {
            layer,
            which,
            limit,
            detail: String::new(),
        },
        None if e.kind() == io::ErrorKind::UnexpectedEof => LayerError::Tar {
            layer,
            reason: format!("truncated: {e}"),
        },
        None => LayerError::Tar {
            layer,
            reason: e.to_string(),
        },
    }
}
