//! Images in an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), read in place.
//!
//! Choosing the image from `index.json`: with a tag, the entries whose
//! `org.opencontainers.image.ref.name` is the tag (or a full reference ending
//! in `:TAG`); without one, the only entry, or else a platform choice among
//! entries that declare platforms. An entry may be an index itself (as
//! `skopeo copy --all` writes): the same platform logic applies to it.
//!
//! Manifests and the config are read whole (bounded) and their digests
//! checked; layers are streamed, bounded to their descriptor's size.
//! Errors: `NotFound` for a missing directory, `index.json`, tag or blob.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use strata_proto::Digest;

use super::manifest::{self, Descriptor, Document};
use super::{BoundedReader, ImageSource, LayerDesc, LayerReader, Platform, ResolvedImage, SourceError};

pub struct OciLayoutSource {
    dir: PathBuf,
    tag: Option<String>,
    name: String,
}

impl OciLayoutSource {
    pub async fn open(dir: PathBuf, tag: Option<String>) -> Result<Self, SourceError> {
        let name = match &tag {
            Some(t) => format!("oci-dir:{}:{t}", dir.display()),
            None => format!("oci-dir:{}", dir.display()),
        };
        match tokio::fs::metadata(dir.join("index.json")).await {
            Ok(m) if m.is_file() => Ok(OciLayoutSource { dir, tag, name }),
            Ok(_) => Err(SourceError::format(&name, "index.json is not a file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let what = if tokio::fs::metadata(&dir).await.is_ok() {
                    "not an OCI image layout (no index.json)"
                } else {
                    "no such directory"
                };
                Err(SourceError::NotFound(format!("{name}: {what}")))
            }
            Err(e) => Err(SourceError::io(&name, e)),
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        // Safe as a path: Digest admits only `sha256|sha512` and lowercase hex.
        self.dir.join("blobs").join(digest.algorithm()).join(digest.hex())
    }

    /// Reads a small blob (manifest or config) whole and checks its digest.
    async fn read_small_blob(&self, desc: &LayerDesc, max: u64) -> Result<Vec<u8>, SourceError> {
        let what = format!("{}: blob {}", self.name, desc.digest);
        if desc.size > max {
            return Err(SourceError::format(
                what,
                format!("{} bytes, more than the {max} allowed", desc.size),
            ));
        }
        let bytes = read_bounded(&self.blob_path(&desc.digest), max, &what).await?;
        manifest::verify_blob(desc, &bytes, &what)?;
        Ok(bytes)
    }

    fn choose_top<'a>(
        &self,
        entries: &'a [Descriptor],
        wanted: Option<&Platform>,
    ) -> Result<(&'a Descriptor, Option<Platform>), SourceError> {
        let tags: Vec<&str> = entries
            .iter()
            .filter_map(|d| {
                d.annotations
                    .as_ref()?
                    .get(manifest::REF_NAME_ANNOTATION)
                    .map(String::as_str)
            })
            .collect();
        let tag_list = || {
            if tags.is_empty() {
                "none".to_owned()
            } else {
                tags.join(", ")
            }
        };
        let candidates: Vec<Descriptor> = match &self.tag {
            Some(tag) => {
                let suffix = format!(":{tag}");
                let found: Vec<Descriptor> = entries
                    .iter()
                    .filter(|d| {
                        d.annotations
                            .as_ref()
                            .and_then(|a| a.get(manifest::REF_NAME_ANNOTATION))
                            .is_some_and(|r| r == tag || (r.contains('/') && r.ends_with(&suffix)))
                    })
                    .cloned()
                    .collect();
                if found.is_empty() {
                    return Err(SourceError::NotFound(format!(
                        "{}: tag not found (tags: {})",
                        self.name,
                        tag_list()
                    )));
                }
                found
            }
            None => entries.to_vec(),
        };
        if candidates.is_empty() {
            return Err(SourceError::NotFound(format!(
                "{}: index.json lists no images",
                self.name
            )));
        }
        if candidates.len() == 1 {
            let only = &candidates[0];
            let i = entries.iter().position(|e| e.digest == only.digest).unwrap_or(0);
            return Ok((&entries[i], None));
        }
        if candidates.iter().all(|d| d.platform.is_none()) {
            return Err(SourceError::format(
                &self.name,
                format!(
                    "index.json holds {} images; name one with :TAG (tags: {})",
                    candidates.len(),
                    tag_list()
                ),
            ));
        }
        let (chosen, platform) = manifest::choose_entry(&candidates, wanted)?;
        let i = entries
            .iter()
            .position(|e| e.digest == chosen.digest)
            .unwrap_or(0);
        Ok((&entries[i], platform))
    }

    async fn resolve_inner(&self, wanted: Option<&Platform>) -> Result<ResolvedImage, SourceError> {
        let name = &self.name;
        let index_bytes =
            read_bounded(&self.dir.join("index.json"), manifest::MAX_MANIFEST_BYTES, name).await?;
        let context = format!("{name}: index.json");
        let Document::Index { manifests } = manifest::parse_document(&index_bytes, &context)? else {
            return Err(SourceError::format(context, "not an image index"));
        };
        let (entry, mut chosen) = self.choose_top(&manifests, wanted)?;
        let mut desc = manifest::to_layer_desc(entry, &context)?;
        let mut index_digest = None;
        for _ in 0..manifest::MAX_INDEX_DEPTH {
            let bytes = self.read_small_blob(&desc, manifest::MAX_MANIFEST_BYTES).await?;
            let context = format!("{name}: manifest {}", desc.digest);
            match manifest::parse_document(&bytes, &context)? {
                Document::Index { manifests } => {
                    let (entry, platform) = manifest::choose_entry(&manifests, wanted)?;
                    chosen = platform;
                    index_digest.get_or_insert(desc.digest.clone());
                    desc = manifest::to_layer_desc(entry, &context)?;
                }
                Document::Image { config, layers } => {
                    let (config_desc, layers) = manifest::image_parts(&config, &layers, &context)?;
                    let raw = self
                        .read_small_blob(&config_desc, manifest::MAX_CONFIG_BYTES)
                        .await?;
                    let config = manifest::parse_config(config_desc, raw.into(), &context)?;
                    let platform = match chosen {
                        Some(p) => Some(p),
                        None => manifest::config_platform(&config, wanted)?,
                    };
                    return Ok(ResolvedImage {
                        reference: name.clone(),
                        manifest_digest: desc.digest,
                        index_digest,
                        platform,
                        layers,
                        config,
                    });
                }
            }
        }
        Err(SourceError::format(name, "indexes nested too deep"))
    }
}

impl ImageSource for OciLayoutSource {
    fn resolve<'a>(
        &'a self,
        platform: Option<&'a Platform>,
    ) -> BoxFuture<'a, Result<ResolvedImage, SourceError>> {
        Box::pin(self.resolve_inner(platform))
    }

    fn open_layer<'a>(&'a self, layer: &'a LayerDesc) -> BoxFuture<'a, Result<LayerReader, SourceError>> {
        Box::pin(async move {
            let path = self.blob_path(&layer.digest);
            let what = format!("{}: blob {}", self.name, layer.digest);
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| not_found_or_io(e, &what))?;
            Ok(Box::new(BoundedReader::new(file, layer.size, layer.digest.to_string())) as LayerReader)
        })
    }
}

fn not_found_or_io(e: std::io::Error, what: &str) -> SourceError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SourceError::NotFound(format!("{what}: missing"))
    } else {
        SourceError::io(what, e)
    }
}

/// Reads a whole file of at most `max` bytes.
async fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, SourceError> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| not_found_or_io(e, what))?;
    let mut out = Vec::new();
    // Read one byte past the limit to tell "exactly max" from "too big".
    file.take(max + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|e| SourceError::io(what, e))?;
    if out.len() as u64 > max {
        return Err(SourceError::format(
            what,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(out)
}
