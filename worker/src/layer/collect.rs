//! What one walk (a layer's tar, or a root directory) gathers, and the
//! dispatch to analysers at its end.
//!
//! The walker reports entries in order; the collector counts them against
//! the caps, keeps the bytes of files some analyser wants (each file once,
//! shared by every analyser that wants it and by hard links to it), opens
//! streaming analysers' sinks on files whose head they recognise and keeps
//! what each sink found, records whiteouts, and finally calls each analyser
//! once with its files. An analyser's (or sink's) error or panic becomes a
//! warning: the layer still succeeds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use strata_proto::{Digest, LayerInventory};

use super::limits::{LayerError, LimitKind, Limits};
use super::path::Special;
use super::{LayerAnalysis, Warning};
use crate::analyzers::{Analysis, Analyzer, EntryHead, EntrySink, LayerFile, analyzer_set_version};

struct Captured {
    data: Rc<Vec<u8>>,
    /// Indexes into the analyser list.
    wanted_by: Vec<usize>,
}

pub(crate) struct Collector<'a> {
    pub(crate) layer: &'a str,
    analyzers: &'a [Box<dyn Analyzer>],
    pub(crate) limits: &'a Limits,
    /// In entry order; `None` once a later entry at the same path replaced it.
    files: Vec<(String, Option<Captured>)>,
    by_path: HashMap<String, usize>,
    captured_bytes: u64,
    entries: u64,
    whiteouts: BTreeSet<String>,
    opaque_dirs: BTreeSet<String>,
    warnings: Vec<Warning>,
    /// Indexes of the analysers that stream.
    streamers: Vec<usize>,
    /// What sinks found, by the path of the file they read (sorted, so
    /// results do not depend on the order of entries of different paths).
    streamed: BTreeMap<String, Vec<(usize, Analysis)>>,
    /// Hashes of the paths of regular files whose bytes were not kept, so a
    /// wanted hard link to one is known for what it is (8 bytes a file,
    /// bounded by `max_entries`).
    skipped: HashSet<u64>,
    /// Paths whose bytes are kept although no analyser wants them: the
    /// targets of wanted hard links found by an earlier pass over this
    /// layer (see [`super::analyze_layer_keeping`]).
    keep: &'a BTreeSet<String>,
}

/// The sinks open on one file, by analyser index.
pub(crate) struct Sinks(Vec<(usize, Option<Box<dyn EntrySink>>)>);

impl Sinks {
    pub(crate) fn none() -> Sinks {
        Sinks(Vec::new())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Feeds the next bytes to every sink still reading; false once none is.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> bool {
        let mut reading = false;
        for (_, slot) in &mut self.0 {
            let Some(sink) = slot.as_mut() else {
                continue;
            };
            // A panicking sink is dropped (its finish becomes a warning).
            match catch_unwind(AssertUnwindSafe(|| sink.write(chunk))) {
                Ok(true) => reading = true,
                Ok(false) => {}
                Err(_) => *slot = None,
            }
        }
        reading
    }
}

impl<'a> Collector<'a> {
    pub(crate) fn new(
        layer: &'a str,
        analyzers: &'a [Box<dyn Analyzer>],
        limits: &'a Limits,
        keep: &'a BTreeSet<String>,
    ) -> Self {
        Collector {
            layer,
            analyzers,
            limits,
            files: Vec::new(),
            by_path: HashMap::new(),
            captured_bytes: 0,
            entries: 0,
            whiteouts: BTreeSet::new(),
            opaque_dirs: BTreeSet::new(),
            warnings: Vec::new(),
            streamers: analyzers
                .iter()
                .enumerate()
                .filter(|(_, a)| a.streams())
                .map(|(i, _)| i)
                .collect(),
            streamed: BTreeMap::new(),
            skipped: HashSet::new(),
            keep,
        }
    }

    /// Whether `path`'s bytes are kept for a hard link to it, wanted or not.
    pub(crate) fn keeps(&self, path: &str) -> bool {
        self.keep.contains(path)
    }

    /// Whether any analyser streams (then every regular file's head is read
    /// before the rest of it).
    pub(crate) fn streams(&self) -> bool {
        !self.streamers.is_empty()
    }

    /// Sinks of the streaming analysers that recognise this file.
    pub(crate) fn open(&self, path: &str, mode: u32, size: u64, head: &[u8]) -> Sinks {
        let entry = EntryHead {
            path,
            mode,
            size,
            head,
            limits: self.limits,
        };
        let mut sinks = Vec::new();
        for &i in &self.streamers {
            // An `open` that panics counts as not recognising the file.
            if let Ok(Some(sink)) = catch_unwind(AssertUnwindSafe(|| self.analyzers[i].open(&entry))) {
                sinks.push((i, Some(sink)));
            }
        }
        Sinks(sinks)
    }

    /// The file at `path` ended: keep what its sinks found (replacing what
    /// an earlier entry at the same path gave).
    pub(crate) fn close(&mut self, path: &str, sinks: Sinks, complete: bool) {
        if sinks.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for (i, slot) in sinks.0 {
            let analysis = match slot.map(|sink| catch_unwind(AssertUnwindSafe(|| sink.finish(complete)))) {
                Some(Ok(analysis)) => analysis,
                _ => Analysis {
                    warnings: vec![format!("{path}: analyser panicked")],
                    ..Analysis::default()
                },
            };
            found.push((i, analysis));
        }
        self.streamed.insert(path.to_owned(), found);
    }

    pub(crate) fn warn(&mut self, message: String) {
        self.warnings.push(Warning {
            analyzer: None,
            message,
        });
    }

    /// Count one entry against `max_entries`.
    pub(crate) fn count_entry(&mut self) -> Result<(), LayerError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(LayerError::limit(
                self.layer,
                LimitKind::Entries,
                self.limits.max_entries,
                "",
            ));
        }
        Ok(())
    }

    /// Check a stored name (entry path or link target) against `max_path_len`.
    pub(crate) fn check_path_len(&self, len: usize) -> Result<(), LayerError> {
        if len as u64 > self.limits.max_path_len {
            return Err(LayerError::limit(
                self.layer,
                LimitKind::PathLength,
                self.limits.max_path_len,
                format!("a name of {len} bytes"),
            ));
        }
        Ok(())
    }

    /// Indexes of the analysers that want the regular file at `path` whole,
    /// `size` bytes long. One whose own cap it is over is left out, with a
    /// warning: that file is not for it, the layer goes on.
    pub(crate) fn wanted_by(&mut self, path: &str, size: u64) -> Vec<usize> {
        let mut wanted = Vec::new();
        for (i, a) in self.analyzers.iter().enumerate() {
            if !a.wants(path) {
                continue;
            }
            let max = a.max_file_bytes(path);
            if size > max {
                self.warnings.push(Warning {
                    analyzer: Some(a.name()),
                    message: format!(
                        "{path}: {size} bytes is over this analyser's {max}-byte limit, skipped"
                    ),
                });
                continue;
            }
            wanted.push(i);
        }
        wanted
    }

    /// Check a wanted file's size against the per-file and total caps before
    /// reading it.
    pub(crate) fn check_capture(&self, path: &str, size: u64) -> Result<(), LayerError> {
        if size > self.limits.max_file_bytes {
            return Err(LayerError::limit(
                self.layer,
                LimitKind::FileBytes,
                self.limits.max_file_bytes,
                format!("{path} is {size} bytes"),
            ));
        }
        if self.captured_bytes.saturating_add(size) > self.limits.max_captured_bytes {
            return Err(LayerError::limit(
                self.layer,
                LimitKind::CapturedBytes,
                self.limits.max_captured_bytes,
                format!("capturing {path}"),
            ));
        }
        Ok(())
    }

    /// Keep a wanted file's bytes (after [`Self::check_capture`]). A later
    /// entry at the same path replaces an earlier one, as on disk.
    pub(crate) fn capture(&mut self, path: String, wanted_by: Vec<usize>, data: Vec<u8>) {
        self.captured_bytes += data.len() as u64;
        self.insert(
            path,
            Captured {
                data: Rc::new(data),
                wanted_by,
            },
        );
    }

    fn insert(&mut self, path: String, captured: Captured) {
        self.forget(&path);
        self.by_path.insert(path.clone(), self.files.len());
        self.files.push((path, Some(captured)));
    }

    /// A non-captured entry (directory, symlink, unwanted file) now occupies
    /// `path`: drop whatever was captured there earlier in this layer.
    pub(crate) fn forget(&mut self, path: &str) {
        if let Some(i) = self.by_path.remove(path)
            && let Some(slot) = self.files.get_mut(i)
        {
            slot.1 = None;
        }
        self.streamed.remove(path);
    }

    /// A hard link `path` → `target` (both normalised). When an analyser
    /// wants `path`, it gets the target's bytes if the target was captured
    /// earlier in this layer (tar hard links point backwards); otherwise
    /// the bytes have already streamed past and the link is skipped with a
    /// warning.
    /// A regular file at `path` went past without its bytes kept.
    pub(crate) fn skipped_file(&mut self, path: &str) {
        self.skipped.insert(path_hash(path));
    }

    pub(crate) fn link(&mut self, path: String, target: &str) -> Result<(), LayerError> {
        // What sinks found in the target is found at the link too.
        let streamed = self
            .streamed
            .get(target)
            .map(|found| relocate(found, target, &path));
        let data = self
            .by_path
            .get(target)
            .and_then(|&i| self.files.get(i))
            .and_then(|(_, c)| c.as_ref())
            .map(|c| Rc::clone(&c.data));
        let size = data.as_ref().map_or(0, |d| d.len() as u64);
        let wanted_by = self.wanted_by(&path, size);
        self.forget(&path);
        if let Some(found) = streamed {
            self.streamed.insert(path.clone(), found);
        }
        if wanted_by.is_empty() {
            return Ok(());
        }
        match data {
            Some(data) => self.insert(path, Captured { data, wanted_by }),
            // The target was a file of this layer whose bytes went past.
            None if self.skipped.contains(&path_hash(target)) => {
                return Err(LayerError::UnkeptLinkTarget {
                    layer: self.layer.to_owned(),
                    path,
                    target: target.to_owned(),
                });
            }
            // No such entry earlier in this layer (a link out of it).
            None => {
                self.warn(format!(
                    "hard link {path} -> {target}: target not in this layer, skipped"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn special(&mut self, special: Special) {
        match special {
            Special::Whiteout(p) => {
                self.whiteouts.insert(p);
            }
            Special::Opaque(d) => {
                self.opaque_dirs.insert(d);
            }
            Special::Ignored => {}
        }
    }

    /// Run every analyser on its files and assemble the inventory.
    pub(crate) fn finish(self, digest: Option<&Digest>) -> LayerAnalysis {
        let mut warnings = self.warnings;
        let mut packages = Vec::new();
        let mut os_release = None;
        let mut analyzed = BTreeSet::new();
        for (i, analyzer) in self.analyzers.iter().enumerate() {
            let files: Vec<LayerFile<'_>> = self
                .files
                .iter()
                .filter_map(|(path, c)| c.as_ref().map(|c| (path, c)))
                .filter(|(_, c)| c.wanted_by.contains(&i))
                .map(|(path, c)| LayerFile {
                    path,
                    data: c.data.as_slice(),
                })
                .collect();
            if files.is_empty() {
                continue;
            }
            analyzed.extend(files.iter().map(|f| f.path.to_owned()));
            let name = analyzer.name();
            // The trait promises no panics; a broken analyser still must not
            // take the layer (or the worker thread) down with it.
            match catch_unwind(AssertUnwindSafe(|| analyzer.analyze(&files))) {
                Ok(Ok(analysis)) => {
                    packages.extend(analysis.packages);
                    if os_release.is_none() {
                        os_release = analysis.os_release;
                    }
                    warnings.extend(analysis.warnings.into_iter().map(|message| Warning {
                        analyzer: Some(name),
                        message,
                    }));
                }
                Ok(Err(err)) => warnings.push(Warning {
                    analyzer: Some(name),
                    message: err.to_string(),
                }),
                Err(_) => warnings.push(Warning {
                    analyzer: Some(name),
                    message: "analyser panicked".into(),
                }),
            }
        }
        // What sinks found, in path order; a file a sink claimed counts as
        // read (composition: it replaces a lower layer's file at that path).
        for (path, found) in self.streamed {
            analyzed.insert(path);
            for (i, analysis) in found {
                let name = self.analyzers[i].name();
                packages.extend(analysis.packages);
                warnings.extend(analysis.warnings.into_iter().map(|message| Warning {
                    analyzer: Some(name),
                    message,
                }));
            }
        }
        for p in &mut packages {
            p.layer = digest.cloned();
        }
        LayerAnalysis {
            inventory: LayerInventory {
                digest: digest.cloned(),
                analyzer_set_version: analyzer_set_version(self.analyzers),
                packages,
                whiteouts: self.whiteouts.into_iter().collect(),
                opaque_dirs: self.opaque_dirs.into_iter().collect(),
                analyzed_files: analyzed.into_iter().collect(),
                os_release,
            },
            warnings,
            entries: self.entries,
            captured_bytes: self.captured_bytes,
        }
    }
}

/// Sinks' findings for a file, as found at a hard link to it: package paths
/// under `from` move to `to` (`/a.jar!/x` → `/b.jar!/x`).
fn relocate(found: &[(usize, Analysis)], from: &str, to: &str) -> Vec<(usize, Analysis)> {
    found
        .iter()
        .map(|(i, a)| {
            let mut a = a.clone();
            for p in &mut a.packages {
                if let Some(rest) = p.path.strip_prefix(from) {
                    p.path = format!("{to}{rest}");
                }
            }
            (*i, a)
        })
        .collect()
}

fn path_hash(path: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}
