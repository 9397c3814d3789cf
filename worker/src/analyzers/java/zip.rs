//! A push-based reader of a zip archive's local entries, fed the archive's
//! bytes in order, one pass, holding only what it needs: never the archive.
//!
//! # States
//! `Header` (the 30 fixed bytes of a local file header) → `Names` (its name
//! and extra field) → `Data` (the entry's bytes) → `Descriptor` (after an
//! entry written with flag bit 3) → `Header` again, until a signature that
//! is not a local header: the central directory or the end record ends the
//! entries (complete), anything else stops the archive with a warning.
//!
//! # What is decompressed
//! Only what must be: interesting entries (`META-INF/MANIFEST.MF`, Maven
//! `pom.properties`, kept up to [`KEEP_CAP`]) and nested archives, whose
//! inflated bytes feed a nested [`Archive`]. Every other entry is skipped by
//! its compressed size, unread; only a DEFLATED entry whose size is not in
//! its local header (bit 3) must be inflated (output discarded) to find its
//! end. Every inflated byte of one top-level archive, nested ones included,
//! counts against [`Ctx::max_inflated`] (zip bombs). A STORED entry with bit
//! 3 cannot be delimited without the central directory (at the archive's
//! end): the archive stops there, with a warning.

use flate2::{Decompress, FlushDecompress, Status};
use strata_proto::Package;

use super::meta::{self, Found};
use crate::analyzers::common;
use crate::layer::{Limits, Nesting};

pub(super) const LOCAL: [u8; 4] = *b"PK\x03\x04";
const CENTRAL: [u8; 4] = *b"PK\x01\x02";
const END: [u8; 4] = *b"PK\x05\x06";
const ZIP64_END: [u8; 4] = *b"PK\x06\x06";
const ZIP64_LOCATOR: [u8; 4] = *b"PK\x06\x07";
const SIGNATURE: [u8; 4] = *b"PK\x05\x05";
const DESCRIPTOR: [u8; 4] = *b"PK\x07\x08";

/// The fixed part of a local file header.
const FIXED: usize = 30;
/// Bytes looked at after an entry written with a data descriptor: the
/// longest descriptor (zip64, signed: 24) and the next signature.
const DESCRIPTOR_PEEK: usize = 28;
/// Most bytes of one interesting entry kept (a manifest's main section, a
/// `pom.properties`); a manifest is cut there (its main section comes
/// first), a larger `pom.properties` is not a real one.
pub(super) const KEEP_CAP: usize = 64 * 1024;
/// Output buffer of one inflater.
const INFLATE_BUF: usize = 32 * 1024;

/// File extensions of the archives read (and of nested ones opened).
pub(super) const EXTENSIONS: [&str; 5] = ["jar", "war", "ear", "jpi", "hpi"];

/// Whether `name` ends with one of [`EXTENSIONS`], case-insensitively.
pub(super) fn is_archive_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && !stem.ends_with('/') && EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e))
    })
}

/// What one top-level archive's readers share: caps, the inflation budget,
/// and what was found.
pub(super) struct Ctx {
    pub limits: Limits,
    /// Bytes inflated so far, nested archives included.
    pub inflated: u64,
    pub max_inflated: u64,
    /// The budget ran out: every reader stops.
    pub exhausted: bool,
    pub warnings: Vec<String>,
    pub packages: Vec<Package>,
}

impl Ctx {
    pub fn warn(&mut self, message: String) {
        common::warn(&mut self.warnings, message);
    }
}

/// One archive being read: the top-level file or one nested in it.
pub(super) struct Archive {
    /// `/usr/share/java/x.jar`, or `/app.war!/WEB-INF/lib/x.jar`.
    path: String,
    nesting: Nesting,
    state: State,
    /// Header, name or descriptor bytes collected so far.
    pending: Vec<u8>,
    /// Bytes of the archive consumed: the offset of the next byte.
    at: u64,
    /// No more bytes wanted.
    done: bool,
    /// The entries section ended at its central directory or end record.
    complete: bool,
    found: Found,
}

enum State {
    Header,
    Names(Fixed),
    Data(Box<Entry>),
    Descriptor { zip64: bool },
}

/// A local file header's fixed fields.
#[derive(Clone, Copy)]
struct Fixed {
    flags: u16,
    method: u16,
    compressed: u64,
    name_len: usize,
    extra_len: usize,
}

struct Entry {
    name: String,
    target: Target,
    /// Compressed bytes left, when known (`None`: DEFLATED with bit 3,
    /// ended by the deflate stream itself).
    left: Option<u64>,
    /// Present while the entry's bytes are being inflated.
    inflater: Option<Box<Inflater>>,
    /// A data descriptor follows the data (bit 3).
    descriptor: bool,
    zip64: bool,
}

struct Inflater {
    z: Decompress,
    out: Vec<u8>,
}

enum Target {
    Skip,
    Keep { kind: Kept, data: Vec<u8>, cut: bool },
    Nested { archive: Box<Archive>, reading: bool },
}

#[derive(Clone, Copy, PartialEq)]
enum Kept {
    Manifest,
    PomProperties,
}

impl Target {
    /// Whether the entry's (uncompressed) bytes are still wanted.
    fn reading(&self) -> bool {
        match self {
            Target::Skip => false,
            Target::Keep { cut, .. } => !*cut,
            Target::Nested { reading, .. } => *reading,
        }
    }

    /// Gives the next uncompressed bytes to whoever reads them.
    fn deliver(&mut self, bytes: &[u8], ctx: &mut Ctx) {
        match self {
            Target::Skip => {}
            Target::Keep { data, cut, .. } => {
                let room = KEEP_CAP - data.len().min(KEEP_CAP);
                if bytes.len() > room {
                    *cut = true;
                }
                data.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Target::Nested { archive, reading } => {
                if *reading {
                    *reading = archive.write(bytes, ctx);
                }
            }
        }
    }
}

/// Why reading an archive stopped before its end.
struct Stop;

impl Archive {
    pub fn new(path: String, nesting: Nesting) -> Archive {
        Archive {
            path,
            nesting,
            state: State::Header,
            pending: Vec::new(),
            at: 0,
            done: false,
            complete: false,
            found: Found::default(),
        }
    }

    /// The next bytes of the archive; false once no more are wanted.
    pub fn write(&mut self, input: &[u8], ctx: &mut Ctx) -> bool {
        // A nested reader may have spent the budget: every level stops.
        if !self.done && (self.run(input, ctx).is_err() || ctx.exhausted) {
            self.done = true;
        }
        !self.done
    }

    /// The archive ended (or its reader stopped): what it holds joins
    /// `ctx.packages`.
    pub fn finish(mut self, ctx: &mut Ctx) {
        let state = std::mem::replace(&mut self.state, State::Header);
        match state {
            State::Data(entry) => {
                // Cut inside an entry: a nested archive still says what it
                // read; a kept file cut short is not trusted.
                if let Target::Nested { archive, .. } = entry.target {
                    archive.finish(ctx);
                }
                if !self.done {
                    ctx.warn(format!("{}: truncated inside entry {}", self.path, entry.name));
                }
            }
            _ if !self.done && self.at > 0 => {
                ctx.warn(format!(
                    "{}: ends after {} bytes, before its central directory (truncated)",
                    self.path, self.at
                ));
            }
            _ => {}
        }
        super::archive_packages(&self.path, &self.found, self.complete, ctx);
    }

    fn run(&mut self, mut input: &[u8], ctx: &mut Ctx) -> Result<(), Stop> {
        while !self.done && !ctx.exhausted {
            match &mut self.state {
                State::Header => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let used = self.collect(input, FIXED);
                    input = &input[used..];
                    if self.pending.len() >= 4 && self.pending[..4] != LOCAL {
                        return self.end_of_entries(ctx);
                    }
                    if self.pending.len() < FIXED {
                        continue;
                    }
                    let p = &self.pending;
                    let u16_at = |i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
                    let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
                    self.state = State::Names(Fixed {
                        flags: u16_at(6),
                        method: u16_at(8),
                        compressed: u64::from(u32_at(18)),
                        name_len: usize::from(u16_at(26)),
                        extra_len: usize::from(u16_at(28)),
                    });
                }
                State::Names(fixed) => {
                    let fixed = *fixed;
                    let used = self.collect(input, FIXED + fixed.name_len + fixed.extra_len);
                    input = &input[used..];
                    if self.pending.len() < FIXED + fixed.name_len + fixed.extra_len {
                        return Ok(());
                    }
                    let entry = self.start_entry(fixed, ctx)?;
                    self.pending.clear();
                    self.state = State::Data(Box::new(entry));
                }
                State::Data(entry) => {
                    let (used, ended) = feed(&self.path, entry, input, ctx)?;
                    self.at += used as u64;
                    input = &input[used..];
                    if !ended {
                        if input.is_empty() {
                            return Ok(());
                        }
                        continue;
                    }
                    if let State::Data(entry) = std::mem::replace(&mut self.state, State::Header) {
                        if entry.descriptor {
                            self.state = State::Descriptor { zip64: entry.zip64 };
                        }
                        self.end_entry(*entry, ctx);
                    }
                }
                State::Descriptor { zip64 } => {
                    let zip64 = *zip64;
                    if input.is_empty() {
                        return Ok(());
                    }
                    let used = self.collect(input, DESCRIPTOR_PEEK);
                    input = &input[used..];
                    if self.pending.len() < DESCRIPTOR_PEEK {
                        continue;
                    }
                    // What follows is the descriptor then the next
                    // signature; `at` counted the peeked bytes, so the rest
                    // is counted again below.
                    let len = descriptor_len(&self.pending, zip64);
                    let rest = self.pending.split_off(len);
                    self.at -= rest.len() as u64;
                    self.pending.clear();
                    self.state = State::Header;
                    self.run(&rest, ctx)?;
                }
            }
        }
        Ok(())
    }

    /// Moves bytes of `input` into `pending` until it holds `want`; returns
    /// how many were taken.
    fn collect(&mut self, input: &[u8], want: usize) -> usize {
        let take = want.saturating_sub(self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..take]);
        self.at += take as u64;
        take
    }

    /// A signature other than a local header where one could start: the
    /// entries ended, or this is not (or no longer) a zip archive.
    fn end_of_entries(&mut self, ctx: &mut Ctx) -> Result<(), Stop> {
        self.done = true;
        let sig = [self.pending[0], self.pending[1], self.pending[2], self.pending[3]];
        if [CENTRAL, END, ZIP64_END, ZIP64_LOCATOR, SIGNATURE].contains(&sig) {
            self.complete = true;
            return Ok(());
        }
        // A nested "archive" that is not a zip at all says nothing.
        let sig_at = self.at - self.pending.len() as u64;
        if sig_at > 0 {
            ctx.warn(format!(
                "{}: no zip entry at byte {sig_at}: the rest of the archive is not read",
                self.path
            ));
        }
        Err(Stop)
    }

    /// The header in `pending` is whole: what to do with the entry's bytes.
    fn start_entry(&mut self, fixed: Fixed, ctx: &mut Ctx) -> Result<Entry, Stop> {
        let names = &self.pending[FIXED..];
        let name = String::from_utf8_lossy(&names[..fixed.name_len]).into_owned();
        let zip64 = zip64_compressed(&names[fixed.name_len..], fixed.compressed);
        let descriptor = fixed.flags & 0x08 != 0;
        let compressed = zip64.unwrap_or(fixed.compressed);
        let left = (!descriptor || compressed != 0).then_some(compressed);
        let kind = kind_of(&name);
        let mut target = match kind {
            Some(Wanted::Kept(kind)) => Target::Keep {
                kind,
                data: Vec::new(),
                cut: false,
            },
            Some(Wanted::Nested) => {
                let path = format!("{}!/{}", self.path, name);
                match self.nesting.enter(&ctx.limits, "", &path) {
                    Ok(nesting) => Target::Nested {
                        archive: Box::new(Archive::new(path, nesting)),
                        reading: true,
                    },
                    Err(_) => {
                        ctx.warn(format!(
                            "{path}: archive nested deeper than max_nesting_depth = {}, not read",
                            ctx.limits.max_nesting_depth
                        ));
                        Target::Skip
                    }
                }
            }
            None => Target::Skip,
        };
        let readable = fixed.flags & 0x01 == 0 && (fixed.method == 0 || fixed.method == 8);
        if !readable && kind.is_some() {
            ctx.warn(format!(
                "{}: entry {name} is encrypted or compressed with method {}: not read",
                self.path, fixed.method
            ));
            target = Target::Skip;
        }
        let inflate = fixed.method == 8 && (left.is_none() || target.reading());
        if left.is_none() && !inflate {
            ctx.warn(format!(
                "{}: entry {name} (method {}) has no size before its data: the rest of the archive is not read",
                self.path, fixed.method
            ));
            return Err(Stop);
        }
        Ok(Entry {
            name,
            target,
            left,
            inflater: inflate.then(|| {
                Box::new(Inflater {
                    z: Decompress::new(false),
                    out: vec![0; INFLATE_BUF],
                })
            }),
            descriptor,
            zip64: zip64.is_some(),
        })
    }

    /// An entry's bytes all went past: keep what it said.
    fn end_entry(&mut self, entry: Entry, ctx: &mut Ctx) {
        match entry.target {
            Target::Skip => {}
            Target::Nested { archive, .. } => archive.finish(ctx),
            Target::Keep { kind, data, cut } => {
                let at = format!("{}!/{}", self.path, entry.name);
                match kind {
                    Kept::PomProperties if cut => {
                        ctx.warn(format!("{at}: over {KEEP_CAP} bytes, not read"));
                    }
                    Kept::PomProperties => match meta::pom_properties(&data) {
                        Ok(pom) => self.found.poms.push(pom),
                        Err(e) => ctx.warn(format!("{at}: {e}")),
                    },
                    Kept::Manifest => {
                        if self.found.manifest.is_none() {
                            self.found.manifest = Some(meta::manifest(&data, cut));
                        }
                    }
                }
            }
        }
    }
}

enum Wanted {
    Kept(Kept),
    Nested,
}

/// Whether an entry is read, by its name.
fn kind_of(name: &str) -> Option<Wanted> {
    if name.eq_ignore_ascii_case("META-INF/MANIFEST.MF") {
        return Some(Wanted::Kept(Kept::Manifest));
    }
    if name.starts_with("META-INF/maven/") && name.ends_with("/pom.properties") {
        return Some(Wanted::Kept(Kept::PomProperties));
    }
    is_archive_name(name).then_some(Wanted::Nested)
}

/// The compressed size from a zip64 extra field (id 1), when the local
/// header's is `0xffffffff`. In a local header the field holds both sizes,
/// uncompressed first.
fn zip64_compressed(mut extra: &[u8], compressed: u64) -> Option<u64> {
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let data = extra.get(4..4 + len)?;
        if id == 1 {
            let u64_at = |i: usize| {
                data.get(i..i + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            };
            return match (compressed == 0xffff_ffff, len) {
                (true, 16..) => u64_at(8),
                (true, 8..) => u64_at(0),
                // A zip64 entry whose local size is exact (or a bit-3 zero).
                _ => Some(compressed),
            };
        }
        extra = &extra[4 + len..];
    }
    None
}

/// The length of the data descriptor at the start of `b`: with or without
/// its (optional) signature, with 4- or 8-byte sizes. The one followed by a
/// zip signature wins; failing that, the header's zip64 says.
fn descriptor_len(b: &[u8], zip64: bool) -> usize {
    let signed = b[..4] == DESCRIPTOR;
    let mut lens = if signed { [16, 24] } else { [12, 20] };
    if zip64 {
        lens.reverse();
    }
    let next = |len: usize| {
        b.get(len..len + 4).is_some_and(|s| {
            [LOCAL, CENTRAL, END, ZIP64_END, ZIP64_LOCATOR, SIGNATURE]
                .iter()
                .any(|m| m == s)
        })
    };
    lens.into_iter().find(|&len| next(len)).unwrap_or(lens[0])
}

/// Feeds an entry's compressed bytes: returns how many of `input` it took
/// and whether its data ended.
fn feed(path: &str, entry: &mut Entry, input: &[u8], ctx: &mut Ctx) -> Result<(usize, bool), Stop> {
    // Nobody reads on and the size is known: stop inflating, skip.
    if entry.inflater.is_some() && entry.left.is_some() && !entry.target.reading() {
        entry.inflater = None;
    }
    let avail = match entry.left {
        Some(left) => input.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
        None => input.len(),
    };
    let Some(inflater) = entry.inflater.as_mut() else {
        // STORED, or skipped by size.
        let left = entry.left.unwrap_or(0);
        if entry.target.reading() {
            entry.target.deliver(&input[..avail], ctx);
        }
        entry.left = Some(left - avail as u64);
        return Ok((avail, left == avail as u64));
    };
    let mut used = 0;
    loop {
        let (in_before, out_before) = (inflater.z.total_in(), inflater.z.total_out());
        let status = inflater
            .z
            .decompress(&input[used..avail], &mut inflater.out, FlushDecompress::None);
        let consumed = (inflater.z.total_in() - in_before) as usize;
        let produced = (inflater.z.total_out() - out_before) as usize;
        used += consumed;
        if produced > 0 {
            ctx.inflated += produced as u64;
            if ctx.inflated > ctx.max_inflated {
                ctx.exhausted = true;
                ctx.warn(format!(
                    "{path}: over {} bytes inflated in one archive (a zip bomb?): the rest is not read",
                    ctx.max_inflated
                ));
                return Err(Stop);
            }
            entry.target.deliver(&inflater.out[..produced], ctx);
            if ctx.exhausted {
                return Err(Stop);
            }
        }
        match status {
            Ok(Status::StreamEnd) => break,
            Ok(_) if consumed == 0 && produced == 0 => {
                // Needs more input (or, with a known size, the size ran
                // out first: the entry ends there).
                let left = entry.left.map(|l| l - used as u64);
                entry.left = left;
                return Ok((used, left == Some(0)));
            }
            Ok(_) => {
                if entry.left.is_some() && !entry.target.reading() {
                    // Skip the rest by size.
                    entry.inflater = None;
                    entry.left = entry.left.map(|l| l - used as u64);
                    let (more, ended) = feed(path, entry, &input[used..], ctx)?;
                    return Ok((used + more, ended));
                }
            }
            Err(e) => {
                ctx.warn(format!("{path}: entry {}: corrupt deflate data: {e}", entry.name));
                if entry.left.is_none() {
                    return Err(Stop);
                }
                entry.target = Target::Skip;
                break;
            }
        }
    }
    // The deflate stream ended (or broke): a known size still says where
    // the entry ends; otherwise it ends here.
    entry.inflater = None;
    match entry.left {
        Some(left) => {
            entry.left = Some(left - used as u64);
            let (more, ended) = feed(path, entry, &input[used..], ctx)?;
            Ok((used + more, ended))
        }
        None => Ok((used, true)),
    }
}
