//! The manifest JSON shapes shared by registries and OCI layouts (OCI image
//! manifest and index, Docker schema 2 manifest and manifest list), parsed
//! with size and count bounds, and the checks that turn them into
//! [`LayerDesc`]s and an [`ImageConfig`].
//!
//! Returns `Format` errors (never panics) for: oversized documents, schema 1
//! manifests, artifacts whose config is not an image config, digests that
//! are not `sha256:`/`sha512:` lowercase hex, negative sizes.

use serde::Deserialize;
use strata_proto::Digest;

use super::platform::{self, Platform};
use super::{ImageConfig, LayerDesc, SourceError};

/// Largest manifest or index read (the Distribution spec's suggested limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config read.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Most layers in one image (Docker itself stops at 127).
pub const MAX_LAYERS: usize = 1000;
/// Most entries in one index.
pub const MAX_INDEX_ENTRIES: usize = 1000;
/// Most indexes nested inside indexes followed before giving up.
pub const MAX_INDEX_DEPTH: usize = 4;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The media types asked for from a registry.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The annotation naming a manifest's tag in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<RawPlatform>,
    #[serde(default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl RawPlatform {
    fn to_platform(&self) -> Platform {
        Platform {
            os: self.os.to_ascii_lowercase(),
            architecture: self.architecture.to_ascii_lowercase(),
            variant: self
                .variant
                .as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| v.to_ascii_lowercase()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest document: an image, or an index of images.
#[derive(Debug)]
pub enum Document {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

/// Parses a manifest or index. `context` names it in errors.
pub fn parse_document(bytes: &[u8], context: &str) -> Result<Document, SourceError> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(SourceError::format(
            context,
            format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| SourceError::format(context, format!("invalid manifest JSON: {e}")))?;
    if raw.schema_version == Some(1) {
        return Err(SourceError::format(
            context,
            "Docker schema 1 manifests are not supported",
        ));
    }
    let is_index = match raw.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) if !other.is_empty() => {
            return Err(SourceError::format(
                context,
                format!("unsupported manifest media type {other:?}"),
            ));
        }
        // No media type (allowed by OCI): tell by shape.
        _ => raw.manifests.is_some(),
    };
    if is_index {
        let manifests = raw.manifests.unwrap_or_default();
        if manifests.len() > MAX_INDEX_ENTRIES {
            return Err(SourceError::format(
                context,
                format!("index has more than {MAX_INDEX_ENTRIES} entries"),
            ));
        }
        return Ok(Document::Index { manifests });
    }
    let config = raw
        .config
        .ok_or_else(|| SourceError::format(context, "image manifest has no config"))?;
    let layers = raw.layers.unwrap_or_default();
    if layers.len() > MAX_LAYERS {
        return Err(SourceError::format(
            context,
            format!("more than {MAX_LAYERS} layers"),
        ));
    }
    Ok(Document::Image { config, layers })
}

/// Chooses from an index's entries: `wanted`, else `linux/amd64`. Entries that
/// are not manifests or indexes (signatures, attestations) are skipped.
pub fn choose_entry<'a>(
    manifests: &'a [Descriptor],
    wanted: Option<&Platform>,
) -> Result<(&'a Descriptor, Option<Platform>), SourceError> {
    let offered: Vec<Option<Platform>> = manifests
        .iter()
        .map(|d| {
            let usable = d.media_type.is_empty() || ACCEPTED_MANIFESTS.contains(&d.media_type.as_str());
            d.platform
                .as_ref()
                .filter(|_| usable)
                .map(RawPlatform::to_platform)
        })
        .collect();
    let default = Platform::linux_amd64();
    let i = platform::choose(&offered, wanted.unwrap_or(&default))?;
    Ok((&manifests[i], offered[i].clone()))
}

/// Checks a descriptor's digest and size, returning them as a [`LayerDesc`].
pub fn to_layer_desc(d: &Descriptor, context: &str) -> Result<LayerDesc, SourceError> {
    let digest: Digest = d
        .digest
        .parse()
        .map_err(|e: strata_proto::ParseError| SourceError::format(context, e.to_string()))?;
    let size = u64::try_from(d.size)
        .map_err(|_| SourceError::format(context, format!("{}: negative size {}", d.digest, d.size)))?;
    Ok(LayerDesc {
        digest,
        media_type: d.media_type.clone(),
        size,
    })
}

/// Checks an image manifest's config descriptor and layers.
pub fn image_parts(
    config: &Descriptor,
    layers: &[Descriptor],
    context: &str,
) -> Result<(LayerDesc, Vec<LayerDesc>), SourceError> {
    if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
        return Err(SourceError::format(
            context,
            format!(
                "not a container image: config media type {:?} (an OCI artifact?)",
                config.media_type
            ),
        ));
    }
    let config = to_layer_desc(config, context)?;
    if config.size > MAX_CONFIG_BYTES {
        return Err(SourceError::format(
            context,
            format!("config larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let layers = layers
        .iter()
        .map(|l| to_layer_desc(l, context))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((config, layers))
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses the image config (whose digest the caller has checked).
pub fn parse_config(desc: LayerDesc, raw: bytes::Bytes, context: &str) -> Result<ImageConfig, SourceError> {
    let c: RawConfig = serde_json::from_slice(&raw)
        .map_err(|e| SourceError::format(context, format!("config {}: invalid JSON: {e}", desc.digest)))?;
    let diff_ids = c.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() > MAX_LAYERS {
        return Err(SourceError::format(
            context,
            format!("config lists more than {MAX_LAYERS} diff_ids"),
        ));
    }
    let lower = |s: Option<String>| s.filter(|s| !s.is_empty()).map(|s| s.to_ascii_lowercase());
    Ok(ImageConfig {
        desc,
        raw,
        os: lower(c.os),
        architecture: lower(c.architecture),
        variant: lower(c.variant),
        diff_ids,
    })
}

/// The platform a single image's config declares, checked against `wanted`.
pub fn config_platform(
    config: &ImageConfig,
    wanted: Option<&Platform>,
) -> Result<Option<Platform>, SourceError> {
    let declared = match (&config.os, &config.architecture) {
        (Some(os), Some(arch)) => Some(Platform {
            os: os.clone(),
            architecture: arch.clone(),
            variant: config.variant.clone(),
        }),
        _ => None,
    };
    if let (Some(wanted), Some(declared)) = (wanted, &declared)
        && !declared.satisfies(wanted)
    {
        return Err(SourceError::PlatformNotFound {
            wanted: wanted.to_string(),
            offered: vec![declared.to_string()],
        });
    }
    Ok(declared)
}

/// The sha256 digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    // Always well-formed: 64 lowercase hex characters.
    Digest::sha256_from_hex(&hex).unwrap_or_else(|_| unreachable!("sha256 hex is always valid"))
}

/// Checks that `bytes` are the blob `desc` names (size and digest).
pub fn verify_blob(desc: &LayerDesc, bytes: &[u8], context: &str) -> Result<(), SourceError> {
    if bytes.len() as u64 != desc.size {
        return Err(SourceError::format(
            context,
            format!(
                "{}: {} bytes, descriptor says {}",
                desc.digest,
                bytes.len(),
                desc.size
            ),
        ));
    }
    let actual = match desc.digest.algorithm() {
        "sha256" => sha256_digest(bytes),
        "sha512" => {
            use sha2::Digest as _;
            let hex = hex::encode(sha2::Sha512::digest(bytes));
            format!("sha512:{hex}")
                .parse()
                .map_err(|e: strata_proto::ParseError| SourceError::format(context, e.to_string()))?
        }
        other => {
            return Err(SourceError::format(
                context,
                format!("unsupported digest algorithm {other}"),
            ));
        }
    };
    if actual != desc.digest {
        return Err(SourceError::format(
            context,
            format!("digest mismatch: expected {}, got {actual}", desc.digest),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":10,"platform":{{"os":"unknown","architecture":"unknown"}}}}
            ]}}"#
        )
    }

    #[test]
    fn index_choice() {
        let Ok(Document::Index { manifests }) = parse_document(index_json().as_bytes(), "t") else {
            panic!("not an index")
        };
        let (d, p) = choose_entry(&manifests, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.digest.as_str(), p), (D1, Some(Platform::linux_amd64())));
        let arm = Platform::parse("linux/arm64").unwrap_or_else(|e| panic!("{e}"));
        let (d, _) = choose_entry(&manifests, Some(&arm)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.digest, D2);
        let ppc = Platform::parse("linux/ppc64le").unwrap_or_else(|e| panic!("{e}"));
        let err = choose_entry(&manifests, Some(&ppc)).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "platform linux/ppc64le not found in the image index; it offers: linux/amd64, linux/arm64/v8"
            )
        );
    }

    #[test]
    fn image_manifest_checks() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":5}},
               "layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{D2}","size":7}}]}}"#
        );
        let Ok(Document::Image { config, layers }) = parse_document(m.as_bytes(), "t") else {
            panic!("not an image")
        };
        let (c, l) = image_parts(&config, &layers, "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.size, l.len(), l[0].size, l[0].digest.as_str()), (5, 1, 7, D2));

        let artifact = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D1}","size":5}},"layers":[]}}"#
        );
        let Ok(Document::Image { config, layers }) = parse_document(artifact.as_bytes(), "t") else {
            panic!()
        };
        assert!(matches!(
            image_parts(&config, &layers, "t"),
            Err(SourceError::Format { .. })
        ));

        let bad_digest = format!(
            r#"{{"config":{{"mediaType":"{OCI_CONFIG}","digest":"sha256:../../etc/passwd","size":5}},"layers":[]}}"#
        );
        let Ok(Document::Image { config, layers }) = parse_document(bad_digest.as_bytes(), "t") else {
            panic!()
        };
        assert!(matches!(
            image_parts(&config, &layers, "t"),
            Err(SourceError::Format { .. })
        ));
    }

    #[test]
    fn bad_documents_are_format_errors() {
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        for doc in [
            &b""[..],
            b"null",
            b"{",
            b"[]",
            br#"{"schemaVersion":1,"fsLayers":[]}"#,
            br#"{"mediaType":"text/html"}"#,
            br#"{"schemaVersion":2,"layers":[]}"#,
            &big,
        ] {
            assert!(
                matches!(parse_document(doc, "t"), Err(SourceError::Format { .. })),
                "{:?}",
                &doc[..doc.len().min(40)]
            );
        }
    }

    #[test]
    fn config_platform_check() {
        let raw = bytes::Bytes::from_static(
            br#"{"os":"linux","architecture":"arm64","rootfs":{"diff_ids":["x"]}}"#,
        );
        let desc = LayerDesc {
            digest: sha256_digest(&raw),
            media_type: OCI_CONFIG.into(),
            size: raw.len() as u64,
        };
        verify_blob(&desc, &raw, "t").unwrap_or_else(|e| panic!("{e}"));
        assert!(verify_blob(&desc, b"other", "t").is_err());
        let c = parse_config(desc, raw, "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.diff_ids, ["x"]);
        assert_eq!(
            config_platform(&c, None)
                .ok()
                .flatten()
                .map(|p| p.to_string())
                .as_deref(),
            Some("linux/arm64")
        );
        assert!(matches!(
            config_platform(&c, Some(&Platform::linux_amd64())),
            Err(SourceError::PlatformNotFound { .. })
        ));
    }
}
