//! Rust binaries built with `cargo auditable`: the dependency list it embeds
//! (the `.dep-v0` section: zlib-compressed JSON, `{"packages":[…]}`), read
//! as the file streams past, never captured whole.
//!
//! Finding the section by name would need the section headers, which sit
//! at the end of the file, after the section itself has streamed past. So
//! the data is found by content instead, in any executable format: each
//! zlib header (`0x78` and a valid second byte) is tried by inflating a few
//! bytes, and the audit data is the one that begins `{"packages":[`. Once
//! found, it is inflated as it streams (the deflate stream ends itself),
//! capped, then parsed; the rest of the file streams past unread.
//!
//! What it lists, each with the binary's path: every package of kind
//! `runtime` (build-time dependencies are not in the binary), evidence
//! `Installed`; `local` sources (the binary's own workspace crates) with
//! evidence `App`, never matched.

use flate2::{Decompress, FlushDecompress, Status};
use strata_proto::purl::Purl;
use strata_proto::{Ecosystem, Evidence, Package};

use super::common::{self, MAX_PACKAGES};
use super::{Analysis, Analyzer, EntryHead, EntrySink};

/// What the audit data inflates to first.
const PREFIX: &[u8] = br#"{"packages":["#;
/// Compressed bytes a candidate may need before its first [`PREFIX`] bytes
/// come out (a zlib header and a deflate block header; generous).
const PROBE_BYTES: usize = 64;
/// Longest audit data accepted, inflated (tens of KiB for hundreds of crates).
const MAX_JSON: usize = 8 << 20;
/// Candidates tried per binary before giving up (a file of nothing but zlib
/// headers must cost bounded time).
const MAX_PROBES: u32 = 200_000;

pub struct CargoAuditable;

impl Analyzer for CargoAuditable {
    fn name(&self) -> &'static str {
        "cargo-auditable"
    }

    fn version(&self) -> u32 {
        1
    }

    fn streams(&self) -> bool {
        true
    }

    fn open(&self, entry: &EntryHead<'_>) -> Option<Box<dyn EntrySink>> {
        if entry.size < PREFIX.len() as u64 || !super::golang::is_executable(entry.head) {
            return None;
        }
        // In an ELF file the audit data is a section that is not loaded:
        // only what follows the loaded segments is searched.
        let from = super::elf::segments(entry.head).map_or(0, |s| s.load_end);
        Some(Box::new(Sink {
            path: entry.path.to_owned(),
            from,
            seen: 0,
            tail: Vec::with_capacity(PROBE_BYTES),
            probe: Decompress::new(true),
            probes: 0,
            state: State::Searching,
        }))
    }
}

struct Sink {
    path: String,
    /// Bytes before this offset are not searched (an ELF's loaded segments).
    from: u64,
    /// Bytes given so far.
    seen: u64,
    /// The last bytes searched: a candidate near a chunk's end is tried
    /// again with the next chunk's start.
    tail: Vec<u8>,
    /// Reused for every probe (reset, not reallocated).
    probe: Decompress,
    probes: u32,
    state: State,
}

enum State {
    Searching,
    Inflating { inflate: Decompress, json: Vec<u8> },
    Done(Result<Vec<u8>, String>),
}

/// What trying a candidate zlib stream said.
enum Probe {
    Found,
    NotIt,
    NeedMore,
}

impl Sink {
    /// Tries the zlib stream at the start of `bytes`.
    fn try_candidate(&mut self, bytes: &[u8]) -> Probe {
        self.probes += 1;
        self.probe.reset(true);
        let mut out = [0u8; PREFIX.len()];
        match self.probe.decompress(bytes, &mut out, FlushDecompress::None) {
            Err(_) => Probe::NotIt,
            Ok(_) => {
                let made = self.probe.total_out() as usize;
                if out[..made] != PREFIX[..made] {
                    Probe::NotIt
                } else if made == PREFIX.len() {
                    Probe::Found
                } else if bytes.len() < PROBE_BYTES {
                    Probe::NeedMore
                } else {
                    Probe::NotIt
                }
            }
        }
    }

    /// Searches `data`; on a find, inflates from there on.
    fn search(&mut self, data: &[u8]) {
        // Candidates that start in the tail, completed by this chunk.
        if !self.tail.is_empty() {
            let mut joint = std::mem::take(&mut self.tail);
            let tail_len = joint.len();
            joint.extend_from_slice(&data[..data.len().min(PROBE_BYTES)]);
            for i in candidates(&joint).take_while(|&i| i < tail_len) {
                if self.probes >= MAX_PROBES {
                    return self.give_up();
                }
                match self.try_candidate(&joint[i..]) {
                    Probe::Found => return self.inflate_from(&joint[i..tail_len], data),
                    // Only when this chunk is short: all of it is in `joint`.
                    Probe::NeedMore => {
                        self.tail = joint[i..].to_vec();
                        return;
                    }
                    Probe::NotIt => {}
                }
            }
        }
        for i in candidates(data) {
            if self.probes >= MAX_PROBES {
                return self.give_up();
            }
            match self.try_candidate(&data[i..]) {
                Probe::Found => return self.inflate_from(&[], &data[i..]),
                Probe::NeedMore => {
                    // Runs past this chunk: the tail keeps it for the next.
                    self.tail = data[i..].to_vec();
                    return;
                }
                Probe::NotIt => {}
            }
        }
        let keep = data.len().min(PROBE_BYTES);
        self.tail = data[data.len() - keep..].to_vec();
    }

    fn give_up(&mut self) {
        self.state = State::Done(Err(format!(
            "{}: more than {MAX_PROBES} compressed-data candidates: not searched further",
            self.path
        )));
    }

    /// Starts inflating the audit data from `a` then `b` (contiguous).
    fn inflate_from(&mut self, a: &[u8], b: &[u8]) {
        self.state = State::Inflating {
            inflate: Decompress::new(true),
            json: Vec::new(),
        };
        self.inflate(a);
        self.inflate(b);
    }

    fn inflate(&mut self, mut input: &[u8]) {
        let State::Inflating { inflate, json } = &mut self.state else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        while !input.is_empty() {
            let before_in = inflate.total_in();
            let before_out = inflate.total_out();
            let status = inflate.decompress(input, &mut buf, FlushDecompress::None);
            let used = (inflate.total_in() - before_in) as usize;
            let made = (inflate.total_out() - before_out) as usize;
            input = &input[used..];
            if json.len() + made > MAX_JSON {
                let path = self.path.clone();
                self.state = State::Done(Err(format!("{path}: audit data over {MAX_JSON} bytes")));
                return;
            }
            json.extend_from_slice(&buf[..made]);
            match status {
                Ok(Status::StreamEnd) => {
                    let json = std::mem::take(json);
                    self.state = State::Done(Ok(json));
                    return;
                }
                Ok(_) if used == 0 && made == 0 => return,
                Ok(_) => {}
                Err(e) => {
                    let path = self.path.clone();
                    self.state = State::Done(Err(format!("{path}: audit data: {e}")));
                    return;
                }
            }
        }
    }
}

/// Offsets of possible zlib headers: `0x78` then a byte that makes a valid
/// header with the usual compression levels.
fn candidates(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(0x78, data)
        .filter(move |&i| matches!(data.get(i + 1), Some(0x01 | 0x5e | 0x9c | 0xda)))
}

impl EntrySink for Sink {
    fn write(&mut self, chunk: &[u8]) -> bool {
        let at = self.seen;
        self.seen += chunk.len() as u64;
        match self.state {
            State::Searching => {
                let skip = usize::try_from(self.from.saturating_sub(at))
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                self.search(&chunk[skip..]);
            }
            State::Inflating { .. } => self.inflate(chunk),
            State::Done(_) => return false,
        }
        !matches!(self.state, State::Done(_))
    }

    fn finish(self: Box<Self>, _complete: bool) -> Analysis {
        let mut out = Analysis::default();
        match self.state {
            State::Done(Ok(json)) => out.packages = packages(&self.path, &json, &mut out.warnings),
            State::Done(Err(warning)) => out.warnings.push(warning),
            State::Inflating { .. } => out.warnings.push(format!("{}: audit data cut short", self.path)),
            // Not built with cargo auditable: nothing to say.
            State::Searching => {}
        }
        out
    }
}

/// `cargo auditable`'s format (`auditable-serde`'s `VersionInfo`).
#[derive(serde::Deserialize)]
struct VersionInfo {
    packages: Vec<AuditPackage>,
}

#[derive(serde::Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    kind: String,
}

fn packages(path: &str, json: &[u8], warnings: &mut Vec<String>) -> Vec<Package> {
    let info: VersionInfo = match serde_json::from_slice(json) {
        Ok(info) => info,
        Err(e) => {
            common::warn(
                warnings,
                format!("{path}: audit data is not cargo auditable's: {e}"),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<Package> = Vec::new();
    for p in info.packages.into_iter().take(MAX_PACKAGES) {
        if p.kind == "build" {
            continue;
        }
        let evidence = if p.source == "local" {
            Evidence::App
        } else {
            Evidence::Installed
        };
        let (name, version) = match (
            common::field_str("name", p.name.as_bytes()),
            common::field_str("version", p.version.as_bytes()),
        ) {
            (Ok(n), Ok(v)) if !n.is_empty() && !v.is_empty() => (n.to_owned(), v.to_owned()),
            _ => {
                common::warn(
                    warnings,
                    format!("{path}: a package without a usable name or version"),
                );
                continue;
            }
        };
        match Purl::package(Ecosystem::CratesIo, &name, &version, None) {
            Ok(purl) => out.push(Package {
                ecosystem: Ecosystem::CratesIo,
                purl: purl.to_string(),
                name,
                version,
                source_name: None,
                source_version: None,
                arch: None,
                path: path.to_owned(),
                layer: None,
                evidence,
            }),
            Err(e) => common::warn(warnings, format!("{path}: {}: {e}", common::clip(&name))),
        }
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version);
    out
}

#[cfg(test)]
mod tests;
