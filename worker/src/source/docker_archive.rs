//! Images in a `docker save` tarball, read in place: the tarball is never
//! extracted. Opening walks the tar headers once (seeking over file data)
//! to note where each entry's bytes lie; a layer is then streamed straight
//! from its offset in the tarball.
//!
//! `manifest.json` lists, per image, the config path, `RepoTags` and the
//! layer paths, base first. Both the classic layout (`<id>/layer.tar`,
//! `<hex>.json`) and Docker 25+'s (`blobs/sha256/<hex>`, with symlinks from
//! the classic names) are read; symlinks and hard links inside the archive
//! are followed (a few hops).
//!
//! Layer digests: taken from a `blobs/<alg>/<hex>` path (after links); else, for an
//! uncompressed layer, the config's `diff_ids` entry (the digest of exactly
//! those bytes); else computed by hashing the entry once. The caller
//! verifies every layer's digest while streaming it, so a wrong name is an
//! error there, never a silent result. Media types come from magic bytes
//! (gzip, zstd, else tar). There is no manifest in the archive:
//! `manifest_digest` is the digest of an OCI manifest synthesised from the
//! config and layers (deterministic, but not a registry's manifest digest).
//!
//! Errors: `NotFound` for a missing file, tag or blob; `Format` for a
//! tarball without a usable `manifest.json` or with too many entries.

use std::collections::HashMap;
use std::io::{Read, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use strata_proto::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::OnceCell;

use super::manifest;
use super::{
    BoundedReader, ImageConfig, ImageSource, LayerDesc, LayerReader, Platform, ResolvedImage, SourceError,
};

/// Most tar entries indexed.
const MAX_ENTRIES: usize = 100_000;
/// Most images listed in `manifest.json`.
const MAX_IMAGES: usize = 1000;
/// Longest entry path kept.
const MAX_PATH: usize = 4096;
/// Most link hops followed to reach an entry.
const MAX_LINK_HOPS: usize = 8;

#[derive(Debug, Clone)]
enum Entry {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink (target relative to the link's directory) or a hard link
    /// (target from the archive root), already made absolute in the archive.
    Link(String),
}

/// Where the bytes of each layer digest are, for `open_layer`.
#[derive(Debug, Clone, Copy)]
struct Loc {
    offset: u64,
    size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

struct Resolved {
    image: ResolvedImage,
    locs: HashMap<Digest, Loc>,
}

pub struct DockerArchiveSource {
    path: PathBuf,
    tag: Option<String>,
    name: String,
    entries: Arc<HashMap<String, Entry>>,
    manifest_json: Vec<u8>,
    resolved: OnceCell<Resolved>,
}

impl DockerArchiveSource {
    pub async fn open(path: PathBuf, tag: Option<String>) -> Result<Self, SourceError> {
        let name = match &tag {
            Some(t) => format!("docker-archive:{}:{t}", path.display()),
            None => format!("docker-archive:{}", path.display()),
        };
        let (ctx, file_path) = (name.clone(), path.clone());
        let indexed = tokio::task::spawn_blocking(move || match std::fs::File::open(&file_path) {
            Ok(file) => index_tar(file, &ctx).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SourceError::io(&ctx, e)),
        })
        .await
        .map_err(|e| SourceError::format(&name, format!("indexing task failed: {e}")))??;
        let Some((entries, manifest_json)) = indexed else {
            return Err(SourceError::NotFound(format!("{name}: no such file")));
        };
        let manifest_json = manifest_json
            .ok_or_else(|| SourceError::format(&name, "no manifest.json: not a docker save tarball"))?;
        Ok(DockerArchiveSource {
            path,
            tag,
            name,
            entries: Arc::new(entries),
            manifest_json,
            resolved: OnceCell::new(),
        })
    }

    /// Follows links to the file entry at `path`; returns it with its final path.
    fn locate(&self, path: &str) -> Result<(Loc, String), SourceError> {
        let mut cur = normalize(Path::new(path))
            .ok_or_else(|| SourceError::format(&self.name, format!("bad path {path:?} in manifest.json")))?;
        for _ in 0..MAX_LINK_HOPS {
            match self.entries.get(&cur) {
                Some(Entry::File { offset, size }) => {
                    return Ok((
                        Loc {
                            offset: *offset,
                            size: *size,
                        },
                        cur,
                    ));
                }
                Some(Entry::Link(target)) => cur = target.clone(),
                None => {
                    return Err(SourceError::NotFound(format!(
                        "{}: {cur} is not in the archive",
                        self.name
                    )));
                }
            }
        }
        Err(SourceError::format(&self.name, format!("{path}: too many links")))
    }

    fn choose_image<'a>(&self, images: &'a [ArchiveImage]) -> Result<&'a ArchiveImage, SourceError> {
        let all_tags = || {
            let t: Vec<&str> = images
                .iter()
                .flat_map(|i| i.repo_tags.iter().flatten())
                .map(String::as_str)
                .collect();
            if t.is_empty() {
                "none".to_owned()
            } else {
                t.join(", ")
            }
        };
        match (&self.tag, images) {
            (_, []) => Err(SourceError::format(&self.name, "manifest.json lists no images")),
            (None, [only]) => Ok(only),
            (None, _) => Err(SourceError::format(
                &self.name,
                format!(
                    "the archive holds {} images; name one with :TAG (tags: {})",
                    images.len(),
                    all_tags()
                ),
            )),
            (Some(tag), _) => {
                let suffix = format!(":{tag}");
                images
                    .iter()
                    .find(|i| {
                        i.repo_tags
                            .iter()
                            .flatten()
                            .any(|t| t == tag || t.ends_with(&suffix))
                    })
                    .ok_or_else(|| {
                        SourceError::NotFound(format!("{}: tag not found (tags: {})", self.name, all_tags()))
                    })
            }
        }
    }

    async fn resolve_all(&self) -> Result<Resolved, SourceError> {
        let name = &self.name;
        let images: Vec<ArchiveImage> = serde_json::from_slice(&self.manifest_json)
            .map_err(|e| SourceError::format(name, format!("manifest.json: {e}")))?;
        if images.len() > MAX_IMAGES {
            return Err(SourceError::format(
                name,
                format!("manifest.json lists more than {MAX_IMAGES} images"),
            ));
        }
        let image = self.choose_image(&images)?;
        if image.layers.len() > manifest::MAX_LAYERS {
            return Err(SourceError::format(
                name,
                format!("more than {} layers", manifest::MAX_LAYERS),
            ));
        }

        let (config_loc, _) = self.locate(&image.config)?;
        if config_loc.size > manifest::MAX_CONFIG_BYTES {
            return Err(SourceError::format(
                name,
                format!(
                    "config {} is larger than {} bytes",
                    image.config,
                    manifest::MAX_CONFIG_BYTES
                ),
            ));
        }
        let raw = self.read_at(config_loc).await?;
        let config_desc = LayerDesc {
            digest: manifest::sha256_digest(&raw),
            media_type: manifest::DOCKER_CONFIG.into(),
            size: config_loc.size,
        };
        let config = manifest::parse_config(config_desc, raw.into(), &format!("{name}: {}", image.config))?;

        let mut layers = Vec::with_capacity(image.layers.len());
        let mut locs = HashMap::new();
        for (i, layer_path) in image.layers.iter().enumerate() {
            let (loc, final_path) = self.locate(layer_path)?;
            let magic = self
                .read_at(Loc {
                    offset: loc.offset,
                    size: loc.size.min(4),
                })
                .await?;
            let media_type = media_type_from_magic(&magic);
            let digest = match digest_from_path(&final_path) {
                Some(d) => d,
                None => match config.diff_ids.get(i).and_then(|d| d.parse::<Digest>().ok()) {
                    Some(d) if media_type == manifest::DOCKER_LAYER_TAR => d,
                    _ => self.hash_at(loc).await?,
                },
            };
            locs.insert(digest.clone(), loc);
            layers.push(LayerDesc {
                digest,
                media_type: media_type.to_owned(),
                size: loc.size,
            });
        }
        let manifest_digest = synthesized_manifest_digest(&config, &layers);
        let platform = config_platform_lenient(&config);
        Ok(Resolved {
            image: ResolvedImage {
                reference: name.clone(),
                manifest_digest,
                index_digest: None,
                platform,
                layers,
                config,
            },
            locs,
        })
    }

    async fn resolved(&self) -> Result<&Resolved, SourceError> {
        self.resolved.get_or_try_init(|| self.resolve_all()).await
    }

    /// Reads a small region of the tarball (size bounded by the caller).
    async fn read_at(&self, loc: Loc) -> Result<Vec<u8>, SourceError> {
        let mut reader = self.open_at(loc).await?;
        let mut out = Vec::with_capacity(usize::try_from(loc.size).unwrap_or(0));
        reader
            .read_to_end(&mut out)
            .await
            .map_err(|e| SourceError::io(&self.name, e))?;
        Ok(out)
    }

    async fn open_at(
        &self,
        loc: Loc,
    ) -> Result<BoundedReader<tokio::io::Take<tokio::fs::File>>, SourceError> {
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| SourceError::io(&self.name, e))?;
        file.seek(SeekFrom::Start(loc.offset))
            .await
            .map_err(|e| SourceError::io(&self.name, e))?;
        Ok(BoundedReader::new(
            file.take(loc.size),
            loc.size,
            format!("{} at offset {}", self.name, loc.offset),
        ))
    }

    /// The sha256 of a region, computed by streaming it.
    async fn hash_at(&self, loc: Loc) -> Result<Digest, SourceError> {
        use sha2::Digest as _;
        let mut reader = self.open_at(loc).await?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| SourceError::io(&self.name, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hex = hex::encode(hasher.finalize());
        Digest::sha256_from_hex(&hex).map_err(|e| SourceError::format(&self.name, e.to_string()))
    }
}

impl ImageSource for DockerArchiveSource {
    fn resolve<'a>(
        &'a self,
        platform: Option<&'a Platform>,
    ) -> BoxFuture<'a, Result<ResolvedImage, SourceError>> {
        Box::pin(async move {
            let image = self.resolved().await?.image.clone();
            if let Some(wanted) = platform {
                manifest::config_platform(&image.config, Some(wanted))?;
            }
            Ok(image)
        })
    }

    fn open_layer<'a>(&'a self, layer: &'a LayerDesc) -> BoxFuture<'a, Result<LayerReader, SourceError>> {
        Box::pin(async move {
            let resolved = self.resolved().await?;
            if resolved.image.config.desc.digest == layer.digest {
                let raw = std::io::Cursor::new(resolved.image.config.raw.clone());
                return Ok(
                    Box::new(BoundedReader::new(raw, layer.size, layer.digest.to_string())) as LayerReader,
                );
            }
            let loc =
                resolved.locs.get(&layer.digest).copied().ok_or_else(|| {
                    SourceError::NotFound(format!("{}: no layer {}", self.name, layer.digest))
                })?;
            let file_reader = self.open_at(loc).await?;
            // Bound again by the caller's descriptor: a size mismatch is an error.
            Ok(Box::new(BoundedReader::new(
                file_reader,
                layer.size,
                layer.digest.to_string(),
            )) as LayerReader)
        })
    }
}

/// Every entry's location by path, and the bytes of `manifest.json` if present.
type TarIndex = (HashMap<String, Entry>, Option<Vec<u8>>);

/// Walks the tar headers once, seeking over data. Returns every regular
/// file's data location, every link, and the bytes of `manifest.json`.
fn index_tar(file: std::fs::File, name: &str) -> Result<TarIndex, SourceError> {
    let io = |e: std::io::Error| SourceError::format(name, format!("reading the tarball: {e}"));
    let mut archive = tar::Archive::new(file);
    let mut entries = HashMap::new();
    let mut manifest_json = None;
    for entry in archive.entries_with_seek().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if entries.len() >= MAX_ENTRIES {
            return Err(SourceError::format(
                name,
                format!("more than {MAX_ENTRIES} entries"),
            ));
        }
        let raw_path = entry.path().map_err(io)?.into_owned();
        let Some(path) = normalize(&raw_path) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            if path == "manifest.json" {
                if entry.size() > manifest::MAX_MANIFEST_BYTES {
                    return Err(SourceError::format(name, "manifest.json is too large"));
                }
                let mut buf = Vec::new();
                (&mut entry)
                    .take(manifest::MAX_MANIFEST_BYTES)
                    .read_to_end(&mut buf)
                    .map_err(io)?;
                manifest_json = Some(buf);
            }
            entries.insert(
                path,
                Entry::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
            );
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name().map_err(io)? else {
                continue;
            };
            let joined = if kind.is_symlink() && !target.is_absolute() {
                Path::new(&path).parent().unwrap_or(Path::new("")).join(&target)
            } else {
                target.into_owned()
            };
            if let Some(t) = normalize(&joined) {
                entries.insert(path, Entry::Link(t));
            }
        }
    }
    Ok((entries, manifest_json))
}

/// An archive path as `a/b/c`: no leading `/` or `./`, `..` resolved
/// (never above the root). `None` for empty or overlong paths.
fn normalize(path: &Path) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let s = parts.join("/");
    (!s.is_empty() && s.len() <= MAX_PATH).then_some(s)
}

/// `blobs/sha256/<hex>` (content-addressed, as Docker 25+ writes) → its digest.
fn digest_from_path(path: &str) -> Option<Digest> {
    let p = normalize(Path::new(path))?;
    let rest = p.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

fn media_type_from_magic(magic: &[u8]) -> &'static str {
    match magic {
        [0x1f, 0x8b, ..] => manifest::DOCKER_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => manifest::OCI_LAYER_ZSTD,
        _ => manifest::DOCKER_LAYER_TAR,
    }
}

fn synthesized_manifest_digest(config: &ImageConfig, layers: &[LayerDesc]) -> Digest {
    let desc = |d: &LayerDesc| serde_json::json!({"mediaType": d.media_type, "digest": d.digest.as_str(), "size": d.size});
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": desc(&config.desc),
        "layers": layers.iter().map(desc).collect::<Vec<_>>(),
    });
    manifest::sha256_digest(doc.to_string().as_bytes())
}

/// The platform the config declares, if it does (never an error).
fn config_platform_lenient(config: &ImageConfig) -> Option<Platform> {
    manifest::config_platform(config, None).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize(Path::new("./a/b/../c")).as_deref(), Some("a/c"));
        assert_eq!(normalize(Path::new("/x")).as_deref(), Some("x"));
        assert_eq!(normalize(Path::new("../x")), None);
        assert_eq!(normalize(Path::new(".")), None);
        let hex = "ab".repeat(32);
        assert_eq!(
            digest_from_path(&format!("blobs/sha256/{hex}")).map(|d| d.to_string()),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_from_path(&format!("{hex}/layer.tar")), None);
        assert_eq!(digest_from_path("blobs/sha256/../../etc"), None);
    }

    #[test]
    fn magic() {
        assert_eq!(
            media_type_from_magic(&[0x1f, 0x8b, 8, 0]),
            manifest::DOCKER_LAYER_GZIP
        );
        assert_eq!(
            media_type_from_magic(&[0x28, 0xb5, 0x2f, 0xfd]),
            manifest::OCI_LAYER_ZSTD
        );
        assert_eq!(media_type_from_magic(b"etc/"), manifest::DOCKER_LAYER_TAR);
        assert_eq!(media_type_from_magic(b""), manifest::DOCKER_LAYER_TAR);
    }
}
