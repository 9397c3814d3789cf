//! A synthetic fleet with the structure of real ones, for fleet-scale runs
//! (`bin/fleet.rs`) and the synthetic registry (`synthreg`).
//!
//! - A few dozen **base images**: Debian 11 and 10, Ubuntu 22.04, Alpine,
//!   a distroless-like base, and Python, Node, Java and Go runtimes on them,
//!   several patch variants each. Runtime bases share their distro's layer,
//!   as `python:3.12` shares `debian:11`'s.
//! - **Repositories** of 1–8 tags (plus `latest`), each on a base picked
//!   with a Zipf-like popularity (a few bases carry most of the fleet); half
//!   of them add one of a dozen organisation-wide intermediate layers.
//! - **Application layers**, 1–3 per image: dependencies (shared by a run
//!   of a repository's tags, replaced every few releases), the code (one
//!   per image), and sometimes configuration.
//!
//! Package databases and manifests hold real names and versions
//! ([`data::RealData`]); each layer is padded with incompressible bytes to
//! the configured size. Everything follows from the seed: the same config
//! gives the same layers, digests and tags, so a layer can be generated
//! again from its spec whenever its blob is asked for.

pub mod data;

use std::collections::HashMap;
use std::sync::Arc;

use strata_harness::{Compression, Layer};

pub use data::RealData;

/// What to generate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Distinct images (manifests); `latest` tags add none.
    pub images: usize,
    pub seed: u64,
    /// Padding of each base layer (distro and runtime), bytes.
    pub base_bytes: usize,
    /// Padding of each application and intermediate layer, bytes.
    pub app_bytes: usize,
    /// Release tags per repository at most (besides `latest`).
    pub max_tags: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            images: 10_000,
            seed: 1,
            base_bytes: 256 << 10,
            app_bytes: 16 << 10,
            max_tags: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Os {
    Debian11,
    Debian10,
    Ubuntu2204,
    Alpine310,
    Distroless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    None,
    Python,
    Node,
    Java,
    Go,
}

/// What a layer holds; with the fleet's seed, all that is needed to make
/// its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Os {
        os: Os,
        variant: u32,
    },
    Runtime {
        runtime: Runtime,
        variant: u32,
    },
    /// Organisation-wide intermediate layer `k` for a runtime.
    Shared {
        runtime: Runtime,
        k: u32,
    },
    /// A repository's dependencies, generation `generation`.
    Deps {
        repo: u32,
        generation: u32,
        runtime: Runtime,
    },
    /// An image's code (one per image; `revision` > 0 once its tag moved).
    Code {
        image: u32,
        revision: u32,
    },
    Config {
        image: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Base {
    pub name: String,
    pub os: Os,
    pub runtime: Runtime,
    /// Indexes into [`Fleet::layers`].
    pub layers: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub repo: usize,
    pub base: usize,
    /// Indexes into [`Fleet::layers`], lowest first.
    pub layers: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    /// (tag, image index), `latest` last.
    pub tags: Vec<(String, usize)>,
}

/// The generated fleet: specs only (no bytes), cheap to hold for 100,000 images.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub config: FleetConfig,
    pub data: Arc<RealData>,
    pub bases: Vec<Base>,
    pub layers: Vec<LayerKind>,
    pub images: Vec<ImageSpec>,
    pub repositories: Vec<Repository>,
    index: HashMap<LayerKind, usize>,
}

/// Variants per distro, and per runtime (each on a distro).
const OS_VARIANTS: &[(Os, u32)] = &[
    (Os::Debian11, 5),
    (Os::Debian10, 3),
    (Os::Ubuntu2204, 3),
    (Os::Alpine310, 3),
    (Os::Distroless, 2),
];
const RUNTIMES: &[(Runtime, Os, u32)] = &[
    (Runtime::Python, Os::Debian11, 4),
    (Runtime::Node, Os::Debian11, 4),
    (Runtime::Java, Os::Ubuntu2204, 3),
    (Runtime::Go, Os::Debian11, 3),
];
/// Organisation-wide intermediate layers per runtime.
const SHARED_PER_RUNTIME: u32 = 3;

/// A seeded generator for one purpose (`what`, `a`, `b`).
fn rng_for(seed: u64, what: u64, a: u64, b: u64) -> fastrand::Rng {
    // SplitMix-style mixing: nearby inputs give unrelated streams.
    let mut x = seed ^ what.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ a.rotate_left(21) ^ b.rotate_left(42);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    fastrand::Rng::with_seed(x ^ (x >> 31))
}

/// Index in `0..n` with probability ∝ 1 / (rank + 1)^1.1: a few items carry most.
fn zipf(rng: &mut fastrand::Rng, n: usize) -> usize {
    let weights: Vec<f64> = (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut x = rng.f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    n - 1
}

impl Fleet {
    pub fn generate(config: FleetConfig, data: Arc<RealData>) -> Fleet {
        let mut fleet = Fleet {
            config,
            data,
            bases: Vec::new(),
            layers: Vec::new(),
            images: Vec::new(),
            repositories: Vec::new(),
            index: HashMap::new(),
        };
        fleet.make_bases();
        fleet.make_repositories();
        fleet
    }

    fn layer(&mut self, kind: LayerKind) -> usize {
        if let Some(&i) = self.index.get(&kind) {
            return i;
        }
        self.layers.push(kind);
        self.index.insert(kind, self.layers.len() - 1);
        self.layers.len() - 1
    }

    fn make_bases(&mut self) {
        for &(os, variants) in OS_VARIANTS {
            for variant in 0..variants {
                let layer = self.layer(LayerKind::Os { os, variant });
                self.bases.push(Base {
                    name: format!("{}-v{variant}", os_name(os)),
                    os,
                    runtime: Runtime::None,
                    layers: vec![layer],
                });
            }
        }
        for &(runtime, os, variants) in RUNTIMES {
            let os_variants = OS_VARIANTS.iter().find(|(o, _)| *o == os).map_or(1, |(_, v)| *v);
            for variant in 0..variants {
                let os_layer = self.layer(LayerKind::Os {
                    os,
                    variant: variant % os_variants,
                });
                let rt_layer = self.layer(LayerKind::Runtime { runtime, variant });
                self.bases.push(Base {
                    name: format!("{}-v{variant}", runtime_name(runtime)),
                    os,
                    runtime,
                    layers: vec![os_layer, rt_layer],
                });
            }
        }
        // Popularity order: shuffled once, then Zipf over it.
        let mut rng = rng_for(self.config.seed, 1, 0, 0);
        rng.shuffle(&mut self.bases);
    }

    fn make_repositories(&mut self) {
        let mut rng = rng_for(self.config.seed, 2, 0, 0);
        let max_tags = self.config.max_tags.max(1);
        while self.images.len() < self.config.images {
            let repo = self.repositories.len();
            let base = zipf(&mut rng, self.bases.len());
            let runtime = self.bases[base].runtime;
            // Mostly a few tags, sometimes many (mean about 4).
            let wanted = 1 + (0..max_tags - 1).take_while(|_| rng.f64() < 0.75).count();
            let tags = wanted.min(self.config.images - self.images.len());
            let shared = (rng.f64() < 0.5).then(|| {
                let k = zipf(&mut rng, SHARED_PER_RUNTIME as usize) as u32;
                self.layer(LayerKind::Shared { runtime, k })
            });
            let has_config = rng.f64() < 0.3;
            let mut entries = Vec::with_capacity(tags + 1);
            for t in 0..tags {
                let image = self.images.len();
                let mut layers = self.bases[base].layers.clone();
                layers.extend(shared);
                // Dependencies change every third release.
                layers.push(self.layer(LayerKind::Deps {
                    repo: repo as u32,
                    generation: (t / 3) as u32,
                    runtime,
                }));
                layers.push(self.layer(LayerKind::Code {
                    image: image as u32,
                    revision: 0,
                }));
                if has_config {
                    layers.push(self.layer(LayerKind::Config { image: image as u32 }));
                }
                self.images.push(ImageSpec { repo, base, layers });
                entries.push((format!("v1.{t}.0"), image));
            }
            if let Some(&(_, last)) = entries.last() {
                entries.push(("latest".to_owned(), last));
            }
            self.repositories.push(Repository {
                name: format!("team{}/svc{repo}", repo % 97),
                tags: entries,
            });
        }
    }

    /// A new image for `image` with its code layer at `revision` (a new
    /// release under the same tags): returns the new image's index.
    pub fn new_revision(&mut self, image: usize, revision: u32) -> usize {
        let spec = self.images[image].clone();
        let code = self.layer(LayerKind::Code {
            image: image as u32,
            revision,
        });
        let mut layers = spec.layers.clone();
        if let Some(at) = layers
            .iter()
            .position(|&l| matches!(self.layers[l], LayerKind::Code { .. }))
        {
            layers[at] = code;
        }
        self.images.push(ImageSpec { layers, ..spec });
        self.images.len() - 1
    }

    /// Layers the images use, each once, and in how many images' layer
    /// lists they appear in all (without dedup).
    pub fn layer_references(&self) -> (usize, usize) {
        let mut used = vec![false; self.layers.len()];
        let mut refs = 0;
        for image in &self.images {
            for &l in &image.layers {
                used[l] = true;
                refs += 1;
            }
        }
        (used.iter().filter(|u| **u).count(), refs)
    }

    /// Layer `i`'s files (path, bytes), padding included.
    pub fn layer_files(&self, i: usize) -> Vec<(String, Vec<u8>)> {
        let kind = self.layers[i];
        let (what, a, b) = kind_key(kind);
        let mut rng = rng_for(self.config.seed, what, a, b);
        let mut files = Vec::new();
        let pad = match kind {
            LayerKind::Os { os, variant } => {
                self.os_files(os, variant, &mut rng, &mut files);
                (
                    "usr/lib/x86_64-linux-gnu/libsynthetic-base.so",
                    self.config.base_bytes,
                )
            }
            LayerKind::Runtime { runtime, variant } => {
                self.runtime_files(runtime, variant, &mut rng, &mut files);
                ("usr/local/lib/libsynthetic-runtime.so", self.config.base_bytes)
            }
            LayerKind::Shared { runtime, .. } => {
                self.deps_files(runtime, 3 + rng.usize(..5), &mut rng, &mut files);
                ("opt/org/shared.bin", self.config.app_bytes)
            }
            LayerKind::Deps { runtime, .. } => {
                self.deps_files(runtime, 5 + rng.usize(..25), &mut rng, &mut files);
                ("app/vendor.bin", self.config.app_bytes)
            }
            LayerKind::Code { image, revision } => {
                files.push((
                    "app/VERSION".to_owned(),
                    format!("image {image} revision {revision}\n").into(),
                ));
                ("app/app.bin", self.config.app_bytes)
            }
            LayerKind::Config { image } => {
                files.push((
                    "app/config/app.yaml".to_owned(),
                    format!("image: {image}\nreplicas: 3\n").into(),
                ));
                ("app/config/blob.bin", self.config.app_bytes / 8)
            }
        };
        let mut padding = vec![0u8; pad.1];
        rng.fill(&mut padding);
        files.push((pad.0.to_owned(), padding));
        files
    }

    /// Layer `i` built (gzip, deterministic: the same bytes every time).
    pub fn build_layer(&self, i: usize) -> Layer {
        let mut builder = Layer::builder();
        for (path, bytes) in self.layer_files(i) {
            builder = builder.file(&path, bytes);
        }
        builder
            .build(Compression::Gzip)
            .unwrap_or_else(|e| panic!("building synthetic layer {i}: {e}"))
    }

    fn os_files(&self, os: Os, variant: u32, rng: &mut fastrand::Rng, files: &mut Vec<(String, Vec<u8>)>) {
        let (id, version, pretty) = match os {
            Os::Debian11 | Os::Distroless => ("debian", "11", "Debian GNU/Linux 11 (bullseye)"),
            Os::Debian10 => ("debian", "10", "Debian GNU/Linux 10 (buster)"),
            Os::Ubuntu2204 => ("ubuntu", "22.04", "Ubuntu 22.04.4 LTS"),
            Os::Alpine310 => ("alpine", "3.10.9", "Alpine Linux v3.10"),
        };
        files.push((
            "etc/os-release".to_owned(),
            format!("PRETTY_NAME=\"{pretty}\"\nID={id}\nVERSION_ID=\"{version}\"\n").into(),
        ));
        let d = &self.data;
        // Variants differ in which packages they carry.
        let pick = |pool: &data::Packages, n: usize, rng: &mut fastrand::Rng| -> data::Packages {
            let mut chosen: Vec<usize> = (0..pool.len()).collect();
            rng.shuffle(&mut chosen);
            chosen.truncate(n.min(pool.len()));
            chosen.sort_unstable();
            chosen.into_iter().map(|i| pool[i].clone()).collect()
        };
        let n = 60 + 10 * variant as usize;
        match os {
            Os::Debian11 | Os::Debian10 | Os::Ubuntu2204 => {
                // (No Ubuntu data here: Ubuntu bases carry buster's names and versions.)
                let pool = if os == Os::Debian11 {
                    &d.bullseye
                } else {
                    &d.buster
                };
                let status: String = pick(pool, n, rng)
                    .iter()
                    .map(|(name, version)| dpkg_stanza(name, version))
                    .collect();
                files.push(("var/lib/dpkg/status".to_owned(), status.into()));
            }
            Os::Distroless => {
                for (name, version) in pick(&d.bullseye, 4 + variant as usize, rng) {
                    files.push((
                        format!("var/lib/dpkg/status.d/{name}"),
                        dpkg_stanza(&name, &version).into(),
                    ));
                }
            }
            Os::Alpine310 => {
                let installed: String = pick(&d.alpine, n / 2, rng)
                    .iter()
                    .map(|(name, version)| format!("P:{name}\nV:{version}\nA:x86_64\no:{name}\nT:{name}\n\n"))
                    .collect();
                files.push(("lib/apk/db/installed".to_owned(), installed.into()));
            }
        }
    }

    fn runtime_files(
        &self,
        runtime: Runtime,
        variant: u32,
        rng: &mut fastrand::Rng,
        files: &mut Vec<(String, Vec<u8>)>,
    ) {
        match runtime {
            Runtime::Python => {
                for name in ["pip", "setuptools", "wheel"] {
                    if let Some(version) = self.pypi_version(name, rng) {
                        files.push(python_metadata(
                            &format!("usr/local/lib/python3.1{variant}"),
                            name,
                            &version,
                        ));
                    }
                }
            }
            Runtime::Node => {
                let version = format!("{}.{}.0", 8 + variant, rng.u32(..10));
                files.push((
                    "usr/local/lib/node_modules/npm/package.json".to_owned(),
                    format!("{{\"name\":\"npm\",\"version\":\"{version}\"}}\n").into(),
                ));
            }
            Runtime::Java | Runtime::Go | Runtime::None => {}
        }
    }

    /// `n` dependencies of an application in `runtime`'s ecosystem.
    fn deps_files(
        &self,
        runtime: Runtime,
        n: usize,
        rng: &mut fastrand::Rng,
        files: &mut Vec<(String, Vec<u8>)>,
    ) {
        let names: Vec<&String> = self.data.pypi.keys().collect();
        match runtime {
            // Python apps, and the organisation's tooling on every other base.
            Runtime::Python | Runtime::None | Runtime::Java | Runtime::Go => {
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..n {
                    let name = names[zipf_popular(rng, names.len())];
                    if !seen.insert(name) {
                        continue;
                    }
                    if let Some(version) = self.pypi_version(name, rng) {
                        files.push(python_metadata("app/venv/lib/python3.12", name, &version));
                    }
                }
            }
            Runtime::Node => {
                let mut packages = serde_json::Map::new();
                packages.insert("".into(), serde_json::json!({"name": "app", "version": "1.0.0"}));
                for k in 0..n {
                    let name = format!("synthetic-dep-{}", zipf_popular(rng, 2_000));
                    let version = format!("{}.{}.{}", 1 + k % 4, rng.u32(..20), rng.u32(..10));
                    packages.insert(
                        format!("node_modules/{name}"),
                        serde_json::json!({"version": version}),
                    );
                }
                let lock = serde_json::json!({
                    "name": "app", "version": "1.0.0", "lockfileVersion": 3, "packages": packages,
                });
                files.push(("app/package-lock.json".to_owned(), lock.to_string().into()));
            }
        }
    }

    fn pypi_version(&self, name: &str, rng: &mut fastrand::Rng) -> Option<String> {
        let versions = self.data.pypi.get(name)?;
        Some(versions[rng.usize(..versions.len())].clone())
    }
}

/// Popular-first index among `n` (a Zipf-like draw over a fixed order:
/// the same few packages appear in most applications).
fn zipf_popular(rng: &mut fastrand::Rng, n: usize) -> usize {
    // Inverse-power draw: cheap for large `n`.
    let u = rng.f64().max(1e-12);
    ((n as f64).powf(u) - 1.0).floor().clamp(0.0, (n - 1) as f64) as usize
}

fn kind_key(kind: LayerKind) -> (u64, u64, u64) {
    let rt = |r: Runtime| r as u64;
    match kind {
        LayerKind::Os { os, variant } => (10, os as u64, variant.into()),
        LayerKind::Runtime { runtime, variant } => (11, rt(runtime), variant.into()),
        LayerKind::Shared { runtime, k } => (12, rt(runtime), k.into()),
        LayerKind::Deps {
            repo,
            generation,
            runtime,
        } => (13, u64::from(repo) << 8 | rt(runtime), generation.into()),
        LayerKind::Code { image, revision } => (14, image.into(), revision.into()),
        LayerKind::Config { image } => (15, image.into(), 0),
    }
}

fn os_name(os: Os) -> &'static str {
    match os {
        Os::Debian11 => "debian-11",
        Os::Debian10 => "debian-10",
        Os::Ubuntu2204 => "ubuntu-22.04",
        Os::Alpine310 => "alpine-3.10",
        Os::Distroless => "distroless-11",
    }
}

fn runtime_name(r: Runtime) -> &'static str {
    match r {
        Runtime::Python => "python-3.12",
        Runtime::Node => "node-20",
        Runtime::Java => "temurin-17",
        Runtime::Go => "golang-1.22",
        Runtime::None => "scratch",
    }
}

fn dpkg_stanza(name: &str, version: &str) -> String {
    format!("Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n")
}

fn python_metadata(prefix: &str, name: &str, version: &str) -> (String, Vec<u8>) {
    (
        format!("{prefix}/site-packages/{name}-{version}.dist-info/METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n").into(),
    )
}

#[cfg(test)]
mod tests;
