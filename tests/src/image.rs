//! Builds OCI images in memory, deterministically, and ships them three ways:
//! pushed to a [`Registry`], written as an OCI image layout directory, or as a
//! `docker save` archive.
//!
//! Every tar entry gets a fixed mtime, uid/gid 0 and no user names, and the
//! compressors run without timestamps, so the same tree always gives the same
//! digests. Entries are written in the order they were added.
//!
//! For tests of bad input, [`Layer`] also makes broken blobs: bytes that do not
//! match their digest ([`Layer::with_mismatched_digest`]), a truncated stream
//! ([`Layer::truncated`]) and arbitrary bytes ([`Layer::garbage`]).

use std::io::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::registry::{Registry, RegistryClient};
use crate::{HarnessError, Result, sha256_digest};

/// The mtime of every entry: 2023-11-14T22:13:20Z.
pub const FIXED_MTIME: u64 = 1_700_000_000;
const FIXED_CREATED: &str = "2023-11-14T22:13:20Z";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The Docker schema 2 layer media type (Docker itself uses the OCI type for zstd).
    pub fn docker_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        match self {
            Compression::None => Ok(tar.to_vec()),
            Compression::Gzip => {
                // GzEncoder writes mtime 0 and no file name: deterministic.
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder
                    .write_all(tar)
                    .map_err(|e| HarnessError::io("gzip-compressing a layer", e))?;
                encoder
                    .finish()
                    .map_err(|e| HarnessError::io("gzip-compressing a layer", e))
            }
            Compression::Zstd => {
                zstd::encode_all(tar, 3).map_err(|e| HarnessError::io("zstd-compressing a layer", e))
            }
        }
    }
}

/// Which family of media types manifests and layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaTypes {
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2 and manifest lists.
    Docker,
}

#[derive(Debug, Clone)]
enum Entry {
    File {
        path: String,
        bytes: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    /// Written with the name bytes as given, bypassing the tar crate's checks.
    Raw {
        name: Vec<u8>,
        bytes: Vec<u8>,
    },
}

/// Collects the entries of one layer; see [`Layer::builder`].
#[derive(Debug, Clone, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
}

/// Tar paths in layers are relative: `/etc/x` is stored as `etc/x`.
fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

impl LayerBuilder {
    /// A regular file, mode 0644.
    pub fn file(self, path: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.file_mode(path, bytes, 0o644)
    }

    /// A regular file with the given permission bits.
    pub fn file_mode(mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entries.push(Entry::File {
            path: relative(path),
            bytes: bytes.into(),
            mode,
        });
        self
    }

    /// A directory, mode 0755.
    pub fn dir(mut self, path: &str) -> Self {
        self.entries.push(Entry::Dir { path: relative(path) });
        self
    }

    /// A symbolic link at `path` pointing to `target` (stored as given).
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            path: relative(path),
            target: target.to_owned(),
        });
        self
    }

    /// A hard link at `path` to the earlier entry `target`.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Hardlink {
            path: relative(path),
            target: relative(target),
        });
        self
    }

    /// Deletes `path` from lower layers: an empty `<dir>/.wh.<name>` entry.
    pub fn whiteout(mut self, path: &str) -> Self {
        let path = relative(path);
        let whiteout = match path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.entries.push(Entry::File {
            path: whiteout,
            bytes: Vec::new(),
            mode: 0o644,
        });
        self
    }

    /// Hides everything lower layers put under `dir`: `<dir>/.wh..wh..opq`.
    pub fn opaque(mut self, dir: &str) -> Self {
        let dir = relative(dir);
        let marker = if dir.is_empty() {
            ".wh..wh..opq".to_owned()
        } else {
            format!("{dir}/.wh..wh..opq")
        };
        self.entries.push(Entry::File {
            path: marker,
            bytes: Vec::new(),
            mode: 0o644,
        });
        self
    }

    /// Everything under the host directory `host` (regular files with their
    /// permission bits, directories, symbolic links as they are), placed
    /// under `at` in the image, in name order. For content made by real
    /// tools (`pip install --target`, `npm install`, a `.deb` unpacked).
    pub fn tree(mut self, at: &str, host: &std::path::Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |what: &std::path::Path| {
            let what = what.display().to_string();
            move |e| crate::HarnessError::io(what, e)
        };
        let at = relative(at);
        let mut names: Vec<std::fs::DirEntry> = std::fs::read_dir(host)
            .map_err(io(host))?
            .collect::<std::io::Result<_>>()
            .map_err(io(host))?;
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if at.is_empty() {
                name
            } else {
                format!("{at}/{name}")
            };
            let fs_path = entry.path();
            let meta = std::fs::symlink_metadata(&fs_path).map_err(io(&fs_path))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&fs_path).map_err(io(&fs_path))?;
                self = self.symlink(&path, &target.to_string_lossy());
            } else if meta.is_dir() {
                self = self.dir(&path).tree(&path, &fs_path)?;
            } else if meta.is_file() {
                let bytes = std::fs::read(&fs_path).map_err(io(&fs_path))?;
                self = self.file_mode(&path, bytes, meta.permissions().mode() & 0o7777);
            }
        }
        Ok(self)
    }

    /// A regular file whose name is written verbatim (at most 100 bytes), so
    /// hostile names such as `../../etc/passwd` or `/abs` can be made.
    pub fn raw_file(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.entries.push(Entry::Raw {
            name: name.as_bytes().to_vec(),
            bytes: bytes.into(),
        });
        self
    }

    /// The uncompressed tar stream.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append(&mut builder, entry)?;
        }
        builder
            .into_inner()
            .map_err(|e| HarnessError::io("finishing a layer tar", e))
    }

    /// The layer, compressed as asked.
    pub fn build(&self, compression: Compression) -> Result<Layer> {
        let tar = self.tar()?;
        let blob = compression.compress(&tar)?;
        Ok(Layer {
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(&tar),
            blob,
            tar,
            compression,
            honest_blob: None,
        })
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn fail(path: &str) -> impl Fn(std::io::Error) -> HarnessError + '_ {
    move |e| HarnessError::io(format!("adding {path} to a layer tar"), e)
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> Result<()> {
    match entry {
        Entry::File { path, bytes, mode } => {
            let mut h = header(tar::EntryType::Regular, *mode, bytes.len() as u64);
            builder
                .append_data(&mut h, path, bytes.as_slice())
                .map_err(fail(path))
        }
        Entry::Dir { path } => {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            builder
                .append_data(&mut h, path, std::io::empty())
                .map_err(fail(path))
        }
        Entry::Symlink { path, target } => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            builder.append_link(&mut h, path, target).map_err(fail(path))
        }
        Entry::Hardlink { path, target } => {
            let mut h = header(tar::EntryType::Link, 0o644, 0);
            builder.append_link(&mut h, path, target).map_err(fail(path))
        }
        Entry::Raw { name, bytes } => {
            let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            let field = &mut h.as_old_mut().name;
            if name.len() > field.len() {
                return Err(HarnessError::Image(format!(
                    "raw tar name longer than 100 bytes: {name:?}"
                )));
            }
            field.fill(0);
            field[..name.len()].copy_from_slice(name);
            h.set_cksum();
            builder
                .append(&h, bytes.as_slice())
                .map_err(fail(&String::from_utf8_lossy(name)))
        }
    }
}

/// One layer: its blob as stored in a registry, and the uncompressed tar.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The bytes served for this layer (compressed).
    pub blob: Vec<u8>,
    /// The digest the manifest declares for the blob; `sha256(blob)` unless tampered.
    pub digest: String,
    /// `sha256` of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// The uncompressed tar (what a docker archive stores).
    pub tar: Vec<u8>,
    pub compression: Compression,
    /// For a tampered layer: the bytes that do hash to `digest`, uploaded first
    /// so the registry accepts the push.
    honest_blob: Option<Vec<u8>>,
}

impl Layer {
    pub fn builder() -> LayerBuilder {
        LayerBuilder::default()
    }

    /// The OCI media type.
    pub fn media_type(&self) -> &'static str {
        self.compression.oci_media_type()
    }

    /// The media type under the given family.
    pub fn media_type_for(&self, types: MediaTypes) -> &'static str {
        match types {
            MediaTypes::Oci => self.compression.oci_media_type(),
            MediaTypes::Docker => self.compression.docker_media_type(),
        }
    }

    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }

    /// True when the blob no longer hashes to the declared digest.
    pub fn is_tampered(&self) -> bool {
        self.honest_blob.is_some()
    }

    /// The same layer with one byte in the middle of its blob (and of its tar)
    /// flipped, still declared under the old digest and diff_id: a reader that
    /// verifies digests must reject it. Pushed through [`Image::push`], the
    /// registry serves the flipped bytes; OCI layouts and docker archives store
    /// them under the old names.
    pub fn with_mismatched_digest(mut self) -> Layer {
        let honest = self.blob.clone();
        flip_middle(&mut self.blob);
        flip_middle(&mut self.tar);
        self.honest_blob.get_or_insert(honest);
        self
    }

    /// The blob cut to its first `len` bytes (a broken compressed stream), with
    /// its digest recomputed so it pushes cleanly; `diff_id` and `tar` stay those
    /// of the whole layer.
    pub fn truncated(mut self, len: usize) -> Layer {
        self.blob.truncate(len);
        self.digest = sha256_digest(&self.blob);
        self.honest_blob = None;
        self
    }

    /// A layer whose tar is written by `write` straight into the compressor,
    /// never held whole: for layers that inflate to gigabytes (bombs, a
    /// million entries). `tar` stays empty (no docker archive of it), the
    /// diff_id is hashed as the tar streams past.
    pub fn streamed(
        compression: Compression,
        write: impl FnOnce(&mut tar::Builder<&mut dyn std::io::Write>) -> std::io::Result<()>,
    ) -> Result<Layer> {
        let fail = |e| HarnessError::io("streaming a layer", e);
        let mut hashing = Hashing {
            inner: match compression {
                Compression::None => Box::new(Vec::new()) as Box<dyn Finish>,
                Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
                    Vec::new(),
                    flate2::Compression::default(),
                )),
                Compression::Zstd => Box::new(zstd::Encoder::new(Vec::new(), 3).map_err(fail)?),
            },
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
        };
        {
            let mut builder = tar::Builder::new(&mut hashing as &mut dyn std::io::Write);
            write(&mut builder).map_err(fail)?;
            builder.finish().map_err(fail)?;
        }
        let diff_id = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hashing.hasher)));
        let blob = hashing.inner.finish_box().map_err(fail)?;
        Ok(Layer {
            digest: sha256_digest(&blob),
            diff_id,
            blob,
            tar: Vec::new(),
            compression,
            honest_blob: None,
        })
    }

    /// A layer made of arbitrary `bytes`, declared with `compression`'s media
    /// type (say, gzip that is not gzip). Digest and diff_id are `sha256(bytes)`.
    pub fn garbage(compression: Compression, bytes: impl Into<Vec<u8>>) -> Layer {
        let bytes = bytes.into();
        let digest = sha256_digest(&bytes);
        Layer {
            diff_id: digest.clone(),
            digest,
            tar: bytes.clone(),
            blob: bytes,
            compression,
            honest_blob: None,
        }
    }
}

/// A compressor (or a plain buffer) that hands back its bytes at the end.
trait Finish: std::io::Write {
    fn finish_box(self: Box<Self>) -> std::io::Result<Vec<u8>>;
}

impl Finish for Vec<u8> {
    fn finish_box(self: Box<Self>) -> std::io::Result<Vec<u8>> {
        Ok(*self)
    }
}

impl Finish for flate2::write::GzEncoder<Vec<u8>> {
    fn finish_box(self: Box<Self>) -> std::io::Result<Vec<u8>> {
        (*self).finish()
    }
}

impl Finish for zstd::Encoder<'static, Vec<u8>> {
    fn finish_box(self: Box<Self>) -> std::io::Result<Vec<u8>> {
        (*self).finish()
    }
}

/// Hashes what passes through to `inner` (the uncompressed tar).
struct Hashing {
    inner: Box<dyn Finish>,
    hasher: sha2::Sha256,
}

impl std::io::Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn flip_middle(bytes: &mut [u8]) {
    let middle = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(middle) {
        *b ^= 0xff;
    }
}

/// `os/arch[/variant]`, as in `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Platform> {
        let mut parts = text.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_owned(),
                architecture: arch.to_owned(),
                variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
            }),
            _ => Err(HarnessError::Image(format!(
                "bad platform {text:?}: want os/arch[/variant]"
            ))),
        }
    }

    fn to_json(&self) -> Value {
        let mut value = json!({ "os": self.os, "architecture": self.architecture });
        if let (Some(variant), Some(map)) = (&self.variant, value.as_object_mut()) {
            map.insert("variant".into(), json!(variant));
        }
        value
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Collects layers and settings of one image; see [`Image::builder`].
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    platform: String,
    media_types: MediaTypes,
    env: Vec<String>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            platform: "linux/amd64".to_owned(),
            media_types: MediaTypes::Oci,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        }
    }
}

impl ImageBuilder {
    /// Appends a layer (lowest first).
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// `os/arch[/variant]`; `linux/amd64` by default.
    pub fn platform(mut self, platform: &str) -> Self {
        self.platform = platform.to_owned();
        self
    }

    /// Docker schema 2 media types instead of OCI ones.
    pub fn docker_media_types(mut self) -> Self {
        self.media_types = MediaTypes::Docker;
        self
    }

    /// Adds a `KEY=value` to the config's `Env`.
    pub fn env(mut self, entry: &str) -> Self {
        self.env.push(entry.to_owned());
        self
    }

    pub fn build(self) -> Result<Image> {
        let platform = Platform::parse(&self.platform)?;
        let mut config = json!({
            "created": FIXED_CREATED,
            "os": platform.os,
            "architecture": platform.architecture,
            "config": { "Env": self.env },
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": self.layers.iter().enumerate()
                .map(|(i, _)| json!({ "created": FIXED_CREATED, "created_by": format!("strata-harness layer {i}") }))
                .collect::<Vec<_>>(),
        });
        if let (Some(variant), Some(map)) = (&platform.variant, config.as_object_mut()) {
            map.insert("variant".into(), json!(variant));
        }
        let config = to_bytes(&config)?;
        let config_digest = sha256_digest(&config);
        let (manifest_type, config_type) = match self.media_types {
            MediaTypes::Oci => (OCI_MANIFEST, OCI_CONFIG),
            MediaTypes::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": { "mediaType": config_type, "digest": config_digest, "size": config.len() },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": l.media_type_for(self.media_types),
                "digest": l.digest,
                "size": l.size(),
            })).collect::<Vec<_>>(),
        });
        let manifest = to_bytes(&manifest)?;
        Ok(Image {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            config_digest,
            config,
            layers: self.layers,
            platform,
            media_types: self.media_types,
        })
    }
}

fn to_bytes(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| HarnessError::Image(format!("serialising JSON: {e}")))
}

/// A built single-platform image.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub platform: Platform,
    pub media_types: MediaTypes,
}

impl Image {
    pub fn builder() -> ImageBuilder {
        ImageBuilder::default()
    }

    pub fn manifest_media_type(&self) -> &'static str {
        match self.media_types {
            MediaTypes::Oci => OCI_MANIFEST,
            MediaTypes::Docker => DOCKER_MANIFEST,
        }
    }

    /// The descriptor of this image's manifest, with its platform.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.manifest_media_type(),
            "digest": self.manifest_digest,
            "size": self.manifest.len(),
            "platform": self.platform.to_json(),
        })
    }

    /// Pushes blobs, config and manifest to `registry` as `repo:tag`, with the
    /// registry's credentials; then, for tampered layers, swaps the stored blob
    /// for the tampered bytes. Returns the manifest digest the registry reports.
    pub async fn push(&self, registry: &Registry, repo: &str, tag: &str) -> Result<String> {
        let digest = self.push_with(&registry.client(), repo, tag).await?;
        for layer in self.layers.iter().filter(|l| l.is_tampered()) {
            registry.overwrite_blob(&layer.digest, &layer.blob)?;
        }
        Ok(digest)
    }

    /// Pushes through any client (say, an anonymous one). Tampered layers are
    /// pushed with their honest bytes: only [`Image::push`] can tamper.
    pub async fn push_with(&self, client: &RegistryClient, repo: &str, reference: &str) -> Result<String> {
        self.push_blobs(client, repo).await?;
        client
            .push_manifest(repo, reference, self.manifest_media_type(), &self.manifest)
            .await
    }

    async fn push_blobs(&self, client: &RegistryClient, repo: &str) -> Result<()> {
        let mut pushed = std::collections::HashSet::new();
        for layer in &self.layers {
            if pushed.insert(layer.digest.clone()) {
                let bytes = layer.honest_blob.as_deref().unwrap_or(&layer.blob);
                client.push_blob(repo, &layer.digest, bytes).await?;
            }
        }
        client.push_blob(repo, &self.config_digest, &self.config).await
    }

    /// Writes (or adds to) an OCI image layout at `dir`, with this image's
    /// manifest in `index.json` annotated `org.opencontainers.image.ref.name: tag`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> Result<()> {
        let mut blobs = vec![(self.manifest_digest.as_str(), self.manifest.as_slice())];
        self.collect_blobs(&mut blobs);
        let mut descriptor = self.descriptor();
        if let Some(map) = descriptor.as_object_mut() {
            map.remove("platform");
        }
        write_layout(dir, tag, descriptor, &blobs)
    }

    fn collect_blobs<'a>(&'a self, blobs: &mut Vec<(&'a str, &'a [u8])>) {
        blobs.push((&self.config_digest, &self.config));
        for layer in &self.layers {
            blobs.push((&layer.digest, &layer.blob));
        }
    }

    /// Writes a `docker save` archive at `path`: `manifest.json` (Config,
    /// RepoTags, Layers), `repositories`, `<config hex>.json`, and each layer's
    /// uncompressed tar as `<diff_id hex>/layer.tar`.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) -> Result<()> {
        let (repo, tag) = repo_tag
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .ok_or_else(|| HarnessError::Image(format!("docker archive: want repo:tag, got {repo_tag:?}")))?;
        let config_name = format!("{}.json", hex_of(&self.config_digest));
        let layer_names: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", hex_of(&l.diff_id)))
            .collect();
        let manifest = json!([{ "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names }]);
        let last_layer = self.layers.last().map(|l| hex_of(&l.diff_id)).unwrap_or_default();
        let repositories = json!({ repo: { tag: last_layer } });

        let mut archive = tar::Builder::new(Vec::new());
        let mut written = std::collections::HashSet::new();
        for (layer, name) in self.layers.iter().zip(&layer_names) {
            if written.insert(name.clone()) {
                let dir = name.trim_end_matches("/layer.tar");
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                archive
                    .append_data(&mut h, dir, std::io::empty())
                    .map_err(archive_err(path))?;
                let mut h = header(tar::EntryType::Regular, 0o644, layer.tar.len() as u64);
                archive
                    .append_data(&mut h, name, layer.tar.as_slice())
                    .map_err(archive_err(path))?;
            }
        }
        for (name, bytes) in [
            (config_name.clone(), self.config.clone()),
            ("manifest.json".to_owned(), to_bytes(&manifest)?),
            ("repositories".to_owned(), to_bytes(&repositories)?),
        ] {
            let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            archive
                .append_data(&mut h, &name, bytes.as_slice())
                .map_err(archive_err(path))?;
        }
        let bytes = archive.into_inner().map_err(archive_err(path))?;
        std::fs::write(path, bytes).map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// Writes an archive the way `docker save` does since Docker 25: an OCI
    /// image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) whose
    /// manifest lists the uncompressed layer tars (digest = diff_id), plus the
    /// classic `manifest.json` whose Config and Layers point into `blobs/`.
    pub fn write_docker_archive_oci(&self, path: &Path, repo_tag: &str) -> Result<()> {
        let (_, tag) = repo_tag
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .ok_or_else(|| HarnessError::Image(format!("docker archive: want repo:tag, got {repo_tag:?}")))?;
        let blob_name = |digest: &str| format!("blobs/sha256/{}", hex_of(digest));
        let manifest = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": self.config_digest, "size": self.config.len() },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": Compression::None.oci_media_type(),
                "digest": l.diff_id,
                "size": l.tar.len(),
            })).collect::<Vec<_>>(),
        }))?;
        let manifest_digest = sha256_digest(&manifest);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": repo_tag,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        });
        let docker_manifest = json!([{
            "Config": blob_name(&self.config_digest),
            "RepoTags": [repo_tag],
            "Layers": self.layers.iter().map(|l| blob_name(&l.diff_id)).collect::<Vec<_>>(),
        }]);

        let mut files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (blob_name(&self.config_digest), self.config.clone()),
            (blob_name(&manifest_digest), manifest),
        ];
        for layer in &self.layers {
            files.push((blob_name(&layer.diff_id), layer.tar.clone()));
        }
        files.push(("index.json".to_owned(), to_bytes(&index)?));
        files.push(("manifest.json".to_owned(), to_bytes(&docker_manifest)?));

        let mut archive = tar::Builder::new(Vec::new());
        let mut written = std::collections::HashSet::new();
        for dir in ["blobs", "blobs/sha256"] {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            archive
                .append_data(&mut h, dir, std::io::empty())
                .map_err(archive_err(path))?;
        }
        for (name, bytes) in files {
            if written.insert(name.clone()) {
                let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
                archive
                    .append_data(&mut h, &name, bytes.as_slice())
                    .map_err(archive_err(path))?;
            }
        }
        let bytes = archive.into_inner().map_err(archive_err(path))?;
        std::fs::write(path, bytes).map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }
}

fn archive_err(path: &Path) -> impl Fn(std::io::Error) -> HarnessError + '_ {
    move |e| HarnessError::io(format!("building docker archive {}", path.display()), e)
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A multi-platform image index (OCI) or manifest list (Docker) over images.
#[derive(Debug, Clone)]
pub struct Index {
    pub images: Vec<Image>,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub media_types: MediaTypes,
}

impl Index {
    /// An index over `images`; its media type follows the first image's.
    pub fn of(images: Vec<Image>) -> Result<Index> {
        let media_types = images.first().map(|i| i.media_types).unwrap_or_default();
        let media_type = match media_types {
            MediaTypes::Oci => OCI_INDEX,
            MediaTypes::Docker => DOCKER_MANIFEST_LIST,
        };
        let manifest = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": images.iter().map(Image::descriptor).collect::<Vec<_>>(),
        }))?;
        Ok(Index {
            digest: sha256_digest(&manifest),
            manifest,
            images,
            media_types,
        })
    }

    pub fn media_type(&self) -> &'static str {
        match self.media_types {
            MediaTypes::Oci => OCI_INDEX,
            MediaTypes::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    /// The image for `platform` (`os/arch[/variant]`), if the index has it.
    pub fn image(&self, platform: &str) -> Option<&Image> {
        let wanted = Platform::parse(platform).ok()?;
        self.images.iter().find(|i| i.platform == wanted)
    }

    /// Pushes every image by digest, then the index as `repo:tag`; tampered
    /// layers are swapped in afterwards as in [`Image::push`].
    pub async fn push(&self, registry: &Registry, repo: &str, tag: &str) -> Result<String> {
        let digest = self.push_with(&registry.client(), repo, tag).await?;
        for layer in self
            .images
            .iter()
            .flat_map(|i| &i.layers)
            .filter(|l| l.is_tampered())
        {
            registry.overwrite_blob(&layer.digest, &layer.blob)?;
        }
        Ok(digest)
    }

    pub async fn push_with(&self, client: &RegistryClient, repo: &str, tag: &str) -> Result<String> {
        for image in &self.images {
            image.push_with(client, repo, &image.manifest_digest).await?;
        }
        client
            .push_manifest(repo, tag, self.media_type(), &self.manifest)
            .await
    }

    /// Writes (or adds to) an OCI layout whose `index.json` points at this
    /// index (nested, as skopeo writes it) under the ref name `tag`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> Result<()> {
        let mut blobs = vec![(self.digest.as_str(), self.manifest.as_slice())];
        for image in &self.images {
            blobs.push((&image.manifest_digest, &image.manifest));
            image.collect_blobs(&mut blobs);
        }
        let descriptor =
            json!({ "mediaType": self.media_type(), "digest": self.digest, "size": self.manifest.len() });
        write_layout(dir, tag, descriptor, &blobs)
    }
}

/// Writes blobs under `blobs/sha256/<hex>`, the `oci-layout` marker, and adds
/// `descriptor` (annotated with `tag`) to `index.json`, replacing an entry with
/// the same ref name.
fn write_layout(dir: &Path, tag: &str, mut descriptor: Value, blobs: &[(&str, &[u8])]) -> Result<()> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e| HarnessError::io(format!("writing OCI layout {what}"), e)
    };
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io(&blob_dir))?;
    for (digest, bytes) in blobs {
        let path = blob_dir.join(hex_of(digest));
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    let marker = dir.join("oci-layout");
    std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&marker))?;

    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    if let Some(map) = descriptor.as_object_mut() {
        map.insert("annotations".into(), json!({ REF_NAME: tag }));
    }
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    manifests
        .retain(|m| m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))) != Some(&json!(tag)));
    manifests.push(descriptor);
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    std::fs::write(&index_path, to_bytes(&index)?).map_err(io(&index_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn sample() -> LayerBuilder {
        Layer::builder()
            .dir("etc")
            .file("/etc/os-release", "ID=debian\n")
            .symlink("etc/alt", "os-release")
            .whiteout("usr/bin/gone")
            .opaque("var/cache")
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            out.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        }
        out
    }

    #[test]
    fn layers_are_deterministic_and_digests_match() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let a = sample().build(compression).unwrap();
            let b = sample().build(compression).unwrap();
            assert_eq!(a.digest, b.digest, "{compression:?}");
            assert_eq!(a.digest, sha256_digest(&a.blob));
            assert_eq!(a.diff_id, sha256_digest(&a.tar));
        }
    }

    #[test]
    fn compressed_blobs_decompress_to_the_tar() {
        let gz = sample().build(Compression::Gzip).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.blob.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, gz.tar);
        let zs = sample().build(Compression::Zstd).unwrap();
        assert_eq!(zstd::decode_all(zs.blob.as_slice()).unwrap(), zs.tar);
    }

    #[test]
    fn whiteouts_opaque_and_raw_names_are_written() {
        let tar = sample().raw_file("../../escape", "x").tar().unwrap();
        assert_eq!(
            names(&tar),
            [
                "etc",
                "etc/os-release",
                "etc/alt",
                "usr/bin/.wh.gone",
                "var/cache/.wh..wh..opq",
                "../../escape"
            ]
        );
    }

    #[test]
    fn broken_layers_are_broken() {
        let good = sample().build(Compression::Gzip).unwrap();
        let bad = good.clone().with_mismatched_digest();
        assert_eq!(bad.digest, good.digest);
        assert_ne!(sha256_digest(&bad.blob), bad.digest);
        assert!(bad.is_tampered());
        let cut = good.clone().truncated(good.blob.len() / 2);
        assert_eq!(cut.digest, sha256_digest(&cut.blob));
        let mut out = Vec::new();
        assert!(
            flate2::read::GzDecoder::new(cut.blob.as_slice())
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn platforms_parse() {
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn manifest_lists_layers_and_config() {
        let image = Image::builder()
            .layer(sample().build(Compression::Gzip).unwrap())
            .layer(Layer::builder().file("a", "b").build(Compression::Zstd).unwrap())
            .build()
            .unwrap();
        let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], json!(image.config_digest));
        assert_eq!(
            manifest["layers"][1]["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar+zstd")
        );
        let config: Value = serde_json::from_slice(&image.config).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], json!(image.layers[0].diff_id));
    }
}
