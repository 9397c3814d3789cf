//! Layer throughput and memory benchmark for the streaming layer reader.
//!
//! 1. Memory: a layer of `--memory-mib` (default 1024) MiB uncompressed is
//!    generated and gzipped on the fly (never held whole) and streamed
//!    through `analyze_layer` with every analyser; peak RSS (`VmHWM`) is
//!    reported. Target: under 256 MiB. Run first, so the in-memory layer of
//!    step 2 does not count.
//! 2. Throughput: an OS-only gzip layer of `--size-mib` (default 400) MiB
//!    uncompressed, as a Debian base image's is (a dpkg status, text, and
//!    ELF executables and shared objects, which the streaming analysers
//!    for Go and Rust binaries read to the end), is built in memory. In the
//!    same run with the same decoder it is read by
//!    (a) plain decompression to a sink; (b) the full reader (digest,
//!    decompression, tar walk, capture, analysis) with the OS analysers only
//!    (dpkg, apk, rpm, os-release: the set before application analysers);
//!    (c) the full reader with every analyser (`analyzers::all()`); best of
//!    `--rounds` (default 3) each. Targets: (c)/(a) ≥ 0.85 and
//!    (c)/(b) ≥ 0.90 (application analysers cost an OS layer at most 10%).
//!
//! Run: `cargo run --release -p strata-loadtest --bin layer_throughput`.

use std::error::Error;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use strata_proto::Digest;
use strata_worker::analyzers::{self, Analyzer};
use strata_worker::layer::{Limits, analyze_layer};

const MIB: u64 = 1024 * 1024;
const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The analysers of an OS package set: what every analyser is compared with.
const OS_ANALYSERS: &[&str] = &["dpkg", "apk", "rpm", "os-release"];

/// Layer reader throughput and memory, with and without application analysers.
#[derive(clap::Parser)]
struct Options {
    /// Uncompressed size of the throughput layer, in MiB.
    #[arg(long, default_value_t = 400)]
    size_mib: u64,
    /// Uncompressed size of the streamed memory layer, in MiB.
    #[arg(long, default_value_t = 1024)]
    memory_mib: u64,
    /// Rounds of each measurement (the best counts).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

fn main() -> Result<(), Box<dyn Error>> {
    let Options {
        size_mib,
        memory_mib,
        rounds,
    } = clap::Parser::parse();
    let analyzers = analyzers::all();
    let os_only: Vec<Box<dyn Analyzer>> = analyzers::all()
        .into_iter()
        .filter(|a| OS_ANALYSERS.contains(&a.name()))
        .collect();
    let names = |set: &[Box<dyn Analyzer>]| set.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
    println!("analysers (c): {}", names(&analyzers));
    println!("analysers (b): {}", names(&os_only));
    let limits = Limits::default();

    // ---- 1. peak memory while streaming a large layer -----------------------
    let base_hwm = strata_loadtest::memory::peak_rss_kib();
    let gen_fast =
        || flate2::read::GzEncoder::new(LayerGen::new(memory_mib * MIB, 7), flate2::Compression::fast());
    let mut hasher = HashWriter(sha2::Sha256::new());
    io::copy(&mut gen_fast(), &mut hasher)?;
    let digest = Digest::sha256_from_hex(&hex::encode(hasher.0.finalize()))?;
    let started = Instant::now();
    let out = analyze_layer(gen_fast(), &digest, Some(GZ), &analyzers, &limits)?;
    let elapsed = started.elapsed();
    let peak = strata_loadtest::memory::peak_rss_kib();
    println!(
        "memory: {memory_mib} MiB uncompressed layer streamed (gzip generated on the fly): {} entries, \
         {} packages, {:.1} s incl. on-the-fly compression",
        out.entries,
        out.inventory.packages.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "memory: peak RSS (VmHWM) {:.1} MiB (before: {:.1} MiB); target < 256 MiB: {}",
        peak as f64 / 1024.0,
        base_hwm as f64 / 1024.0,
        if peak < 256 * 1024 { "PASS" } else { "FAIL" }
    );

    // ---- 2. throughput: decompress only vs. the full reader -----------------
    let started = Instant::now();
    let mut blob = Vec::new();
    flate2::read::GzEncoder::new(LayerGen::new(size_mib * MIB, 42), flate2::Compression::default())
        .read_to_end(&mut blob)?;
    let digest = Digest::sha256_from_hex(&hex::encode(sha2::Sha256::digest(&blob)))?;
    let uncompressed = plain_decompress(&blob, false)?;
    println!(
        "throughput: layer of {:.1} MiB uncompressed, {:.1} MiB gzip (level 6), built in {:.1} s",
        uncompressed as f64 / MIB as f64,
        blob.len() as f64 / MIB as f64,
        started.elapsed().as_secs_f64()
    );
    let mut best_plain = Duration::MAX;
    let mut best_os = Duration::MAX;
    let mut best_all = Duration::MAX;
    let (mut os_packages, mut all_packages) = (0, 0);
    let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
    for _ in 0..rounds {
        for chunked in [false, true] {
            let t = Instant::now();
            plain_decompress(&blob, chunked)?;
            best_plain = best_plain.min(t.elapsed());
        }
        for (set, best, packages) in [
            (&os_only, &mut best_os, &mut os_packages),
            (&analyzers, &mut best_all, &mut all_packages),
        ] {
            let c0 = cpu();
            let t = Instant::now();
            let out = analyze_layer(&blob[..], &digest, Some(GZ), set, &limits)?;
            let took = t.elapsed();
            if verbose {
                eprintln!(
                    "  {} analysers: {:.3} s, cpu {:.2} s",
                    set.len(),
                    took.as_secs_f64(),
                    cpu() - c0
                );
            }
            *best = (*best).min(took);
            *packages = out.inventory.packages.len();
        }
    }
    let mbps = |d: Duration| uncompressed as f64 / MIB as f64 / d.as_secs_f64();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "throughput: (a) decompress + discard:                 {:7.1} MiB/s",
        mbps(best_plain)
    );
    println!(
        "throughput: (b) full reader, OS analysers only:      {:7.1} MiB/s ({os_packages} packages)",
        mbps(best_os)
    );
    println!(
        "throughput: (c) full reader, every analyser:         {:7.1} MiB/s ({all_packages} packages)",
        mbps(best_all)
    );
    let (ca, cb) = (mbps(best_all) / mbps(best_plain), mbps(best_all) / mbps(best_os));
    println!(
        "throughput: ratio (c)/(a) = {ca:.3}; target >= 0.85: {}",
        verdict(ca >= 0.85)
    );
    println!(
        "throughput: ratio (c)/(b) = {cb:.3}; target >= 0.90: {}",
        verdict(cb >= 0.90)
    );
    println!(
        "final peak RSS (VmHWM, includes the in-memory layer): {:.1} MiB",
        strata_loadtest::memory::peak_rss_kib() as f64 / 1024.0
    );
    Ok(())
}

/// Decompress to a sink with the reader's decoder and buffer sizes (whole
/// slice as input, or 128 KiB input chunks as the reader feeds it: the
/// caller keeps the faster); returns bytes produced.
fn plain_decompress(blob: &[u8], chunked: bool) -> io::Result<u64> {
    let mut buf = vec![0u8; 128 * 1024];
    if chunked {
        let d = flate2::bufread::MultiGzDecoder::new(io::BufReader::with_capacity(128 * 1024, blob));
        return drain(d, &mut buf);
    }
    drain(flate2::bufread::MultiGzDecoder::new(blob), &mut buf)
}

fn drain(mut d: impl Read, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = d.read(buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// CPU seconds used by this process (user + system), from /proc at 10 ms
/// resolution: a figure other processes on the machine do not skew.
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

struct HashWriter(sha2::Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---- the generated layer -------------------------------------------------------

/// A deterministic, realistic-looking layer tar produced on demand, one
/// entry at a time, so even a multi-GiB layer costs a few MiB to generate.
struct LayerGen {
    rng: Rng,
    budget: u64,
    produced: u64,
    n: u64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl LayerGen {
    fn new(budget: u64, seed: u64) -> Self {
        LayerGen {
            rng: Rng(seed | 1),
            budget,
            produced: 0,
            n: 0,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        if self.produced >= self.budget {
            self.buf.resize(1024, 0); // end-of-archive blocks
            self.done = true;
            return;
        }
        self.n += 1;
        let n = self.n;
        let roll = self.rng.below(100);
        let (path, kind, data) = if n == 1 {
            (
                "var/lib/dpkg/status".to_owned(),
                tar::EntryType::Regular,
                dpkg_status(&mut self.rng, 450),
            )
        } else if roll < 10 {
            (
                format!("usr/share/dir{n}/"),
                tar::EntryType::Directory,
                Vec::new(),
            )
        } else if roll < 15 {
            let len = 16 * 1024 + self.rng.below(2 * MIB) as usize;
            (
                format!("usr/bin/tool{n}"),
                tar::EntryType::Regular,
                binary(len, &mut self.rng),
            )
        } else if roll < 40 {
            let len = 16 * 1024 + self.rng.below(2 * MIB) as usize;
            (
                format!("usr/lib/x86_64-linux-gnu/lib{n}.so"),
                tar::EntryType::Regular,
                binary(len, &mut self.rng),
            )
        } else {
            let len = 256 + self.rng.below(48 * 1024) as usize;
            (
                format!("usr/share/doc/pkg{}/file{n}.txt", n % 997),
                tar::EntryType::Regular,
                text(len, &mut self.rng),
            )
        };
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(
            if kind == tar::EntryType::Directory || path.starts_with("usr/bin/") {
                0o755
            } else {
                0o644
            },
        );
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        // Paths are short and plain, so set_path cannot fail here.
        if h.set_path(&path).is_err() {
            self.done = true;
            return;
        }
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(&data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
        self.produced += self.buf.len() as u64;
    }
}

impl Read for LayerGen {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.refill();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// xorshift64*: a few lines instead of a `rand` dependency; quality is
/// irrelevant, determinism and speed are what matter here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the",
    "package",
    "library",
    "version",
    "install",
    "system",
    "file",
    "data",
    "config",
    "service",
    "network",
    "security",
    "update",
    "kernel",
    "module",
    "python",
    "debian",
    "license",
    "copyright",
    "software",
    "under",
    "terms",
    "of",
    "and",
    "or",
    "with",
    "for",
    "this",
    "is",
    "provided",
    "as",
    "warranty",
    "function",
    "return",
    "value",
    "error",
    "string",
    "buffer",
    "memory",
    "thread",
];

fn text(len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// An ELF64 header whose program headers load code (70%), read-only data
/// (20%) and writable data (5%), the last 5% unloaded (symbols), as real
/// shared objects and executables lie; then about a third random bytes,
/// the rest repeated structure and symbol-like text: gzip shrinks it about
/// 2.5:1, as it does real shared objects. The streaming analysers open
/// every one (the Go one searches its writable data, the Rust one what
/// follows the loaded segments).
fn binary(len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0");
    out.resize(64, 0);
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&3u16.to_le_bytes());
    let at = |f: f64| (len as f64 * f) as u64;
    for (flags, from, to) in [(5u32, 0.0, 0.7), (4, 0.7, 0.9), (6, 0.9, 0.95)] {
        let mut ph = [0u8; 56];
        ph[..4].copy_from_slice(&1u32.to_le_bytes());
        ph[4..8].copy_from_slice(&flags.to_le_bytes());
        ph[8..16].copy_from_slice(&at(from).to_le_bytes());
        ph[32..40].copy_from_slice(&(at(to) - at(from)).to_le_bytes());
        out.extend_from_slice(&ph);
    }
    while out.len() < len {
        if rng.below(2) == 0 {
            for _ in 0..16 {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            let b = rng.next() as u8;
            out.extend(std::iter::repeat_n(b, 256));
            out.extend_from_slice(b"\x48\x89\xe5\x48\x83\xec\x10\xc3");
        }
    }
    out.truncate(len);
    out
}

fn dpkg_status(rng: &mut Rng, packages: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..packages {
        let desc = String::from_utf8_lossy(&text(300, rng)).replace('\n', " ");
        out.push_str(&format!(
            "Package: pkg{i}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
             Installed-Size: {}\nMaintainer: Debian <debian@example.org>\nArchitecture: amd64\n\
             Source: src{}\nVersion: 1.{i}-{}\nDepends: libc6 (>= 2.36)\nDescription: {desc}\n\n",
            rng.below(5000),
            i / 3,
            rng.below(9)
        ));
    }
    out.into_bytes()
}
