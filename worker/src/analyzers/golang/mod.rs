//! Go binaries: the build information the Go linker embeds in every
//! executable it makes (ELF, Mach-O and PE alike), read as the file streams
//! past, never captured whole (binaries are large).
//!
//! What it lists, per binary, with the binary's path:
//! - the toolchain as package `stdlib`, version as OSV writes Go's
//!   (`go1.19.8` → `1.19.8`): standard-library advisories are most of Go's;
//! - the main module (`mod` line), whatever its version: `(devel)` for a
//!   binary built outside version control, or without module information
//!   (then named by its `path` line); nothing matches `(devel)`;
//! - every dependency (`dep`), a `=>` replacement taking its place.
//!
//! A binary whose head is not an executable format is not looked at. In an
//! executable, the 32-byte header is searched for at 16-byte aligned
//! offsets (`buildinfo.rs`); once the strings after it are read, the rest
//! of the file streams past unread. Binaries from Go before 1.18 (pointers
//! instead of inline strings) get a warning, not packages: following the
//! pointers needs the whole file.

mod buildinfo;

use memchr::memmem;
use strata_proto::purl::Purl;
use strata_proto::{Ecosystem, Package};

use super::common::{self, MAX_PACKAGES};
use super::{Analysis, Analyzer, EntryHead, EntrySink};
use buildinfo::{ALIGN, HEADER, Header, MAGIC, MAX_MODINFO, MAX_VERSION};

pub struct GoBinaries;

impl Analyzer for GoBinaries {
    fn name(&self) -> &'static str {
        "go-binary"
    }

    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> bool {
        true
    }

    fn open(&self, entry: &EntryHead<'_>) -> Option<Box<dyn EntrySink>> {
        // The smallest Go binary is far larger than a header.
        if entry.size < HEADER as u64 || !is_executable(entry.head) {
            return None;
        }
        // In an ELF file the header lies in the first writable segment
        // (`.go.buildinfo` opens the data segment): only that is searched.
        let window = match super::elf::segments(entry.head).and_then(|s| s.writable) {
            Some((from, to)) => (from - from % ALIGN, to),
            None => (0, u64::MAX),
        };
        Some(Box::new(Sink::new(entry.path, window)))
    }
}

/// ELF, Mach-O (thin or fat) or PE, by the first bytes.
pub(super) fn is_executable(head: &[u8]) -> bool {
    const MAGICS: [&[u8]; 7] = [
        b"\x7fELF",
        b"\xfe\xed\xfa\xce",
        b"\xce\xfa\xed\xfe",
        b"\xfe\xed\xfa\xcf",
        b"\xcf\xfa\xed\xfe",
        b"\xca\xfe\xba\xbe",
        b"MZ",
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
}

/// Bytes kept between two chunks so a header cut by a chunk boundary is
/// still found.
const TAIL: usize = MAGIC.len() - 1;

/// The search for one binary's build information, fed as it streams.
struct Sink {
    path: String,
    finder: memmem::Finder<'static>,
    /// Bytes given so far: the offset in the file of the next chunk.
    seen: u64,
    /// The part of the file searched, `[from, to)`; the rest streams past.
    window: (u64, u64),
    /// The last (up to [`TAIL`]) bytes searched, and the offset of the first.
    tail: Vec<u8>,
    tail_at: u64,
    /// A header found at offset `.0`: its bytes so far.
    collecting: Option<(u64, Vec<u8>)>,
    found: Option<Found>,
}

/// What the search ended with.
enum Found {
    Info { version: String, modinfo: Vec<u8> },
    OldFormat,
}

/// The bytes from a header on: enough to read, too few yet, or not a header.
enum Parse {
    Complete(Found),
    NeedMore,
    Invalid,
}

impl Sink {
    fn new(path: &str, window: (u64, u64)) -> Sink {
        Sink {
            path: path.to_owned(),
            finder: memmem::Finder::new(MAGIC).into_owned(),
            seen: 0,
            window,
            tail: Vec::with_capacity(TAIL),
            tail_at: 0,
            collecting: None,
            found: None,
        }
    }

    /// Searches `data` (at file offset `at`), or adds it to a header being
    /// read. A candidate header is checked where it lies; only one that
    /// runs past `data` is copied (then completed by the next chunks), so
    /// a file full of stray magic costs one pass, not one copy each.
    fn scan(&mut self, data: &[u8], at: u64) {
        if self.found.is_some() || data.is_empty() {
            return;
        }
        if let Some((start, mut bytes)) = self.collecting.take() {
            let take = data.len().min(collect_cap().saturating_sub(bytes.len()));
            bytes.extend_from_slice(&data[..take]);
            return self.settle(start, bytes, &data[take..], at + take as u64);
        }
        // A header across the previous chunk's end and this one's start.
        if !self.tail.is_empty() {
            let mut joint = self.tail.clone();
            let tail_len = joint.len();
            let tail_at = self.tail_at;
            joint.extend_from_slice(&data[..data.len().min(MAGIC.len())]);
            if let Some(i) = self
                .finder
                .find_iter(&joint)
                .find(|&i| i < tail_len && (tail_at + i as u64).is_multiple_of(ALIGN))
            {
                let mut bytes = joint[i..tail_len].to_vec();
                let take = data.len().min(collect_cap().saturating_sub(bytes.len()));
                bytes.extend_from_slice(&data[..take]);
                return self.settle(tail_at + i as u64, bytes, &data[take..], at + take as u64);
            }
        }
        for i in self.finder.find_iter(data) {
            if !(at + i as u64).is_multiple_of(ALIGN) {
                continue;
            }
            match parse(&data[i..]) {
                Parse::Invalid => continue,
                Parse::Complete(found) => {
                    self.found = Some(found);
                    return;
                }
                Parse::NeedMore => {
                    self.collecting = Some((at + i as u64, data[i..].to_vec()));
                    return;
                }
            }
        }
        // Keep the last bytes for a header cut by the boundary.
        if data.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TAIL..]);
            self.tail_at = at + (data.len() - TAIL) as u64;
        } else {
            let joint_at = if self.tail.is_empty() { at } else { self.tail_at };
            self.tail.extend_from_slice(data);
            let cut = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..cut);
            self.tail_at = joint_at + cut as u64;
        }
    }

    /// Reads the header collected at `start`; not one after all: search on
    /// from the byte after it, then `rest` (not yet looked at). A verdict
    /// comes as soon as the lengths are read, so what is searched again is
    /// at most one chunk.
    fn settle(&mut self, start: u64, bytes: Vec<u8>, rest: &[u8], rest_at: u64) {
        match parse(&bytes) {
            Parse::Complete(found) => self.found = Some(found),
            Parse::NeedMore if bytes.len() < collect_cap() => self.collecting = Some((start, bytes)),
            Parse::NeedMore | Parse::Invalid => {
                self.tail.clear();
                self.scan(&bytes[1..], start + 1);
                self.scan(rest, rest_at);
            }
        }
    }

    fn packages(&self, version: &str, modinfo: &[u8], warnings: &mut Vec<String>) -> Vec<Package> {
        let mut modules: Vec<(String, String)> = Vec::new();
        match buildinfo::stdlib_version(version) {
            Some(v) => modules.push(("stdlib".to_owned(), v)),
            None => common::warn(
                warnings,
                format!(
                    "{}: toolchain {:?} is not a Go release: its standard library is not listed",
                    self.path,
                    common::clip(version)
                ),
            ),
        }
        if let Some(body) = buildinfo::strip_sentinels(modinfo) {
            let text = String::from_utf8_lossy(body);
            let parsed = buildinfo::parse_modinfo(&text, MAX_PACKAGES);
            for m in parsed.main.into_iter().chain(parsed.deps) {
                modules.push((m.path, m.version));
            }
        }
        let mut packages = Vec::with_capacity(modules.len());
        for (name, version) in modules {
            match Purl::package(Ecosystem::Go, &name, &version, None) {
                Ok(purl) => packages.push(Package {
                    ecosystem: Ecosystem::Go,
                    purl: purl.to_string(),
                    name,
                    version,
                    source_name: None,
                    source_version: None,
                    arch: None,
                    path: self.path.clone(),
                    layer: None,
                    evidence: Default::default(),
                }),
                Err(e) => common::warn(warnings, format!("{}: {}: {e}", self.path, common::clip(&name))),
            }
        }
        packages
    }
}

/// Most bytes collected from a header on: the header, two varints and the
/// two strings at their longest.
fn collect_cap() -> usize {
    HEADER + 20 + (MAX_VERSION + MAX_MODINFO) as usize
}

/// The build information at the start of `b` (which starts with the magic).
fn parse(b: &[u8]) -> Parse {
    if b.len() < MAGIC.len() + 2 {
        return Parse::NeedMore;
    }
    match buildinfo::header(b[MAGIC.len()], b[MAGIC.len() + 1]) {
        Header::Invalid => return Parse::Invalid,
        Header::Pointers => return Parse::Complete(Found::OldFormat),
        Header::Inline => {}
    }
    let mut pos = HEADER;
    let mut strings = Vec::with_capacity(2);
    for max in [MAX_VERSION, MAX_MODINFO] {
        let Some((len, n)) = buildinfo::uvarint(b.get(pos..).unwrap_or_default()) else {
            return if b.len() < pos + 10 {
                Parse::NeedMore
            } else {
                Parse::Invalid
            };
        };
        if len > max {
            return Parse::Invalid;
        }
        let end = pos + n + len as usize;
        if b.len() < end {
            return Parse::NeedMore;
        }
        strings.push(&b[pos + n..end]);
        pos = end;
    }
    let version = String::from_utf8_lossy(strings[0]).into_owned();
    Parse::Complete(Found::Info {
        version,
        modinfo: strings[1].to_vec(),
    })
}

impl EntrySink for Sink {
    fn write(&mut self, chunk: &[u8]) -> bool {
        let at = self.seen;
        self.seen += chunk.len() as u64;
        let (from, to) = self.window;
        let start = usize::try_from(from.saturating_sub(at))
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        // A header being read may run past the window: let it finish.
        let end = if self.collecting.is_some() {
            chunk.len()
        } else {
            usize::try_from(to.saturating_sub(at))
                .unwrap_or(usize::MAX)
                .min(chunk.len())
        };
        if start < end {
            self.scan(&chunk[start..end], at + start as u64);
        }
        self.found.is_none() && (self.seen < to || self.collecting.is_some())
    }

    fn finish(self: Box<Self>, _complete: bool) -> Analysis {
        let mut warnings = Vec::new();
        let packages = match &self.found {
            Some(Found::Info { version, modinfo }) => self.packages(version, modinfo, &mut warnings),
            Some(Found::OldFormat) => {
                warnings.push(format!(
                    "{}: Go build information from before Go 1.18 (pointers, not inline): not read",
                    self.path
                ));
                Vec::new()
            }
            // Not a Go binary: nothing to say.
            None => Vec::new(),
        };
        Analysis {
            packages,
            os_release: None,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests;
