//! The layer reader's dispatch over a plain root filesystem directory
//! (`strata sbom dir:PATH`).
//!
//! Contract: the same analysers, path normalisation, whiteout handling and
//! caps as a layer, except `max_uncompressed_bytes`, which does not apply
//! (files nobody wants are never read). Symlinks are never followed, neither
//! to directories nor to files, so the walk cannot leave `root`; a wanted
//! file is opened and re-checked to be the same regular file that was
//! listed, so a file swapped for a symlink mid-walk is not read. Unreadable
//! subdirectories and files become warnings; only an unreadable `root` is
//! an error. The inventory has no digest and its packages no layer.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::LayerAnalysis;
use super::collect::Collector;
use super::limits::{LayerError, Limits};
use super::path::special;
use crate::analyzers::{Analyzer, HEAD_BYTES};

/// Analyse a root filesystem directory as if it were one layer.
pub fn analyze_dir(
    root: &Path,
    analyzers: &[Box<dyn Analyzer>],
    limits: &Limits,
) -> Result<LayerAnalysis, LayerError> {
    let layer = format!("dir:{}", root.display());
    let io_err = |source| LayerError::Io {
        layer: layer.clone(),
        source,
    };
    let meta = fs::metadata(root).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(io_err(std::io::Error::other("not a directory")));
    }
    // A directory is read by path: a hard link's target is always there.
    let keep = std::collections::BTreeSet::new();
    let mut c = Collector::new(&layer, analyzers, limits, &keep);
    // Explicit stack rather than recursion: depth is bounded by the path
    // length cap, but the thread's stack is not ours to spend.
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut names: Vec<(String, fs::DirEntry)> = Vec::new();
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if rel.is_empty() => return Err(io_err(e)),
            Err(e) => {
                c.warn(format!("{rel}: cannot list: {e}"));
                continue;
            }
        };
        for entry in read {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    c.warn(format!("{}: cannot list: {e}", display(&rel)));
                    break;
                }
            };
            c.count_entry()?;
            match entry.file_name().into_string() {
                Ok(name) => names.push((name, entry)),
                Err(name) => c.warn(format!("{}/{name:?}: name is not UTF-8, skipped", rel)),
            }
        }
        // Sorted, so results and warnings do not depend on readdir order.
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, entry) in names {
            let path = format!("{rel}/{name}");
            c.check_path_len(path.len())?;
            if let Some(special) = special(&path) {
                c.special(special);
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                c.warn(format!("{path}: cannot stat, skipped"));
                continue;
            };
            if kind.is_dir() {
                subdirs.push((entry.path(), path));
            } else if kind.is_file() {
                let Ok(meta) = entry.metadata() else {
                    c.warn(format!("{path}: cannot stat, skipped"));
                    continue;
                };
                let (size, mode) = (meta.len(), meta.mode() & 0o7777);
                let wanted_by = c.wanted_by(&path, size);
                if !wanted_by.is_empty() {
                    match read_file(&entry.path(), &path, &c) {
                        Ok(Ok(data)) => {
                            if c.streams() {
                                let head = &data[..data.len().min(HEAD_BYTES)];
                                let mut sinks = c.open(&path, mode, size, head);
                                if !sinks.is_empty() {
                                    sinks.write(&data);
                                }
                                // Capturing replaces what was at the path: first.
                                c.capture(path.clone(), wanted_by, data);
                                c.close(&path, sinks, true);
                            } else {
                                c.capture(path, wanted_by, data);
                            }
                        }
                        Ok(Err(warning)) => c.warn(warning),
                        Err(limit) => return Err(limit),
                    }
                } else if c.streams()
                    && let Err(warning) = stream_file(&entry.path(), &path, mode, size, &mut c)
                {
                    c.warn(warning);
                }
            }
            // Symlinks, sockets, FIFOs, devices: never opened.
        }
        // Reverse so the stack visits subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(c.finish(None))
}

fn display(rel: &str) -> &str {
    if rel.is_empty() { "/" } else { rel }
}

/// Shows a regular file nobody wants whole to the streaming analysers: its
/// head, then (when a sink opens) the rest, until no sink reads on. A file
/// that cannot be read is a warning.
fn stream_file(
    fs_path: &Path,
    path: &str,
    mode: u32,
    size: u64,
    c: &mut Collector<'_>,
) -> Result<(), String> {
    let mut file = open_listed(fs_path, path)?;
    let mut head = Vec::with_capacity(HEAD_BYTES.min(usize::try_from(size).unwrap_or(HEAD_BYTES)));
    (&mut file)
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("{path}: {e}, skipped"))?;
    let mut sinks = c.open(path, mode, size, &head);
    if sinks.is_empty() {
        return Ok(());
    }
    let mut complete = true;
    if sinks.write(&head) {
        let mut buf = vec![0u8; STREAM_BUF];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if !sinks.write(&buf[..n]) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    c.warn(format!("{path}: {e}, read in part"));
                    complete = false;
                    break;
                }
            }
        }
    }
    c.close(path, sinks, complete);
    Ok(())
}

/// Bytes read at a time from a streamed file.
const STREAM_BUF: usize = 64 * 1024;

/// Opens the regular file listed at `fs_path`, checking it is still that
/// file (not swapped for a symlink or another file since it was listed).
fn open_listed(fs_path: &Path, path: &str) -> Result<File, String> {
    let listed = match fs::symlink_metadata(fs_path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(format!("{path}: no longer a regular file, skipped")),
        Err(e) => return Err(format!("{path}: {e}, skipped")),
    };
    let file = File::open(fs_path).map_err(|e| format!("{path}: {e}, skipped"))?;
    let opened = file.metadata().map_err(|e| format!("{path}: {e}, skipped"))?;
    if !opened.is_file() || opened.dev() != listed.dev() || opened.ino() != listed.ino() {
        return Err(format!("{path}: replaced while reading, skipped"));
    }
    Ok(file)
}

/// The bytes of a wanted regular file; `Ok(Err(warning))` when it cannot be
/// read or is no longer the file that was listed, `Err` when over a cap.
fn read_file(fs_path: &Path, path: &str, c: &Collector<'_>) -> Result<Result<Vec<u8>, String>, LayerError> {
    let mut file = match open_listed(fs_path, path) {
        Ok(f) => f,
        Err(warning) => return Ok(Err(warning)),
    };
    let opened = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("{path}: {e}, skipped"))),
    };
    c.check_capture(path, opened.len())?;
    // Read at most one byte past the cap, in case the file grows.
    let cap = c.limits.max_file_bytes;
    let mut data = Vec::with_capacity(usize::try_from(opened.len()).unwrap_or(0));
    if let Err(e) = (&mut file).take(cap.saturating_add(1)).read_to_end(&mut data) {
        return Ok(Err(format!("{path}: {e}, skipped")));
    }
    c.check_capture(path, data.len() as u64)?;
    Ok(Ok(data))
}
