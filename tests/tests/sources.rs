//! Image sources against real servers: a real `docker-registry` process
//! (anonymous, htpasswd basic auth, and token auth with a real token
//! service issuing RS256 JWTs), OCI layout directories and docker-archive
//! tarballs written from the same images.
//!
//! Every test streams the layers it resolves and checks each one's sha256,
//! as the layer reader does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_worker::source::{
    ImageRef, ImageSource, LayerDesc, Platform, ResolvedImage, Source, SourceConfig, SourceError,
};
use tokio::io::AsyncReadExt;

use support::{Registry, TestImage};

fn source_config(registry: &Registry, docker_config: Option<PathBuf>) -> SourceConfig {
    SourceConfig {
        insecure_registries: vec![registry.addr.clone()],
        // A path that does not exist means "no credentials", independent of
        // the machine's own ~/.docker.
        docker_config: Some(
            docker_config.unwrap_or_else(|| PathBuf::from("/nonexistent/strata/config.json")),
        ),
    }
}

async fn open(reference: &str, config: &SourceConfig) -> Result<Box<dyn ImageSource>, SourceError> {
    let r = ImageRef::parse(reference)?;
    match Source::open(r, config).await? {
        Source::Image(s) => Ok(s),
        Source::RootDir(p) => panic!("{reference}: unexpected root dir {}", p.display()),
    }
}

async fn resolve(
    reference: &str,
    config: &SourceConfig,
    platform: Option<&str>,
) -> Result<(Box<dyn ImageSource>, ResolvedImage), SourceError> {
    let source = open(reference, config).await?;
    let platform = platform.map(|p| Platform::parse(p).unwrap_or_else(|e| panic!("{e}")));
    let resolved = source.resolve(platform.as_ref()).await?;
    Ok((source, resolved))
}

/// Streams every layer, checking its sha256 and its bytes against `image`.
async fn stream_all(source: &dyn ImageSource, resolved: &ResolvedImage, image: &TestImage) {
    assert_eq!(resolved.layers.len(), image.layers.len());
    for (desc, blob) in resolved.layers.iter().zip(&image.layers) {
        let mut reader = source
            .open_layer(desc)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", desc.digest));
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", desc.digest));
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            desc.digest.as_str()
        );
        assert!(bytes == blob.bytes, "{}: bytes differ", desc.digest);
    }
}

fn layer_digests(layers: &[LayerDesc]) -> Vec<String> {
    layers.iter().map(|l| l.digest.to_string()).collect()
}

fn expected_layers(image: &TestImage) -> Vec<(String, String, u64)> {
    image
        .layers
        .iter()
        .map(|b| (b.digest.clone(), b.media_type.clone(), b.bytes.len() as u64))
        .collect()
}

fn actual_layers(resolved: &ResolvedImage) -> Vec<(String, String, u64)> {
    resolved
        .layers
        .iter()
        .map(|l| (l.digest.to_string(), l.media_type.clone(), l.size))
        .collect()
}

#[tokio::test]
async fn anonymous_registry_resolve_and_stream_every_layer() {
    let registry = Registry::start(support::Auth::None).await;
    let image = TestImage::build("amd64", None);
    registry.push(&image, "test/app", "v1", None).await;
    let config = source_config(&registry, None);

    let reference = format!("{}/test/app:v1", registry.addr);
    let (source, resolved) = resolve(&reference, &config, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.reference, reference);
    assert_eq!(resolved.manifest_digest.as_str(), image.manifest_digest);
    assert_eq!(resolved.index_digest, None);
    assert_eq!(
        resolved.platform.as_ref().map(|p| p.to_string()).as_deref(),
        Some("linux/amd64")
    );
    assert_eq!(actual_layers(&resolved), expected_layers(&image));
    assert_eq!(resolved.config.desc.digest.as_str(), image.config.digest);
    assert_eq!(resolved.config.diff_ids, image.diff_ids);
    stream_all(source.as_ref(), &resolved, &image).await;

    // By digest too, and with tag and digest together.
    let by_digest = format!("{}/test/app@{}", registry.addr, image.manifest_digest);
    let (_, again) = resolve(&by_digest, &config, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layer_digests(&again.layers), layer_digests(&resolved.layers));
    let both = format!("{}/test/app:v1@{}", registry.addr, image.manifest_digest);
    assert!(resolve(&both, &config, None).await.is_ok());

    // Asking a single-platform image for another platform is an error.
    let err = resolve(&reference, &config, Some("linux/arm64")).await.err();
    assert!(
        matches!(err, Some(SourceError::PlatformNotFound { .. })),
        "{err:?}"
    );

    // A registry not marked insecure is spoken to over HTTPS only: this one
    // speaks plain HTTP, so that fails (and is not NotFound or success).
    let https_only = SourceConfig {
        insecure_registries: vec![],
        ..config.clone()
    };
    let err = resolve(&reference, &https_only, None).await.err();
    assert!(matches!(err, Some(SourceError::Registry { .. })), "{err:?}");
}

#[tokio::test]
async fn missing_tag_repository_and_blob_are_not_found() {
    let registry = Registry::start(support::Auth::None).await;
    let image = TestImage::build("amd64", None);
    registry.push(&image, "test/app", "v1", None).await;
    let config = source_config(&registry, None);

    for reference in [
        format!("{}/test/app:nope", registry.addr),
        format!("{}/test/absent:v1", registry.addr),
    ] {
        match resolve(&reference, &config, None).await {
            Err(SourceError::NotFound(msg)) => assert!(msg.contains(&reference), "{msg}"),
            other => panic!("{reference}: {:?}", other.map(|(_, r)| r)),
        }
    }

    let source = open(&format!("{}/test/app:v1", registry.addr), &config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let absent = LayerDesc {
        digest: format!("sha256:{}", "0".repeat(64))
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size: 1,
    };
    let err = source.open_layer(&absent).await.err();
    assert!(matches!(err, Some(SourceError::NotFound(_))), "{err:?}");
}

#[tokio::test]
async fn basic_auth_from_docker_config() {
    let registry = Registry::start(support::Auth::Htpasswd {
        user: "alice",
        password: "s3cret",
    })
    .await;
    let image = TestImage::build("amd64", None);
    registry
        .push(&image, "private/app", "v1", Some(("alice", "s3cret")))
        .await;
    let reference = format!("{}/private/app:v1", registry.addr);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

    // `auth` form (base64 user:password), keyed by host:port.
    let good = support::write_docker_config(dir.path(), "good.json", &registry.addr, "alice", "s3cret", true);
    let (source, resolved) = resolve(&reference, &source_config(&registry, Some(good)), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(actual_layers(&resolved), expected_layers(&image));
    stream_all(source.as_ref(), &resolved, &image).await;

    // `username`/`password` form, keyed by URL.
    let url_key = format!("http://{}/v2/", registry.addr);
    let plain = support::write_docker_config(dir.path(), "plain.json", &url_key, "alice", "s3cret", false);
    assert!(
        resolve(&reference, &source_config(&registry, Some(plain)), None)
            .await
            .is_ok()
    );

    let wrong = support::write_docker_config(dir.path(), "wrong.json", &registry.addr, "alice", "nope", true);
    let err = resolve(&reference, &source_config(&registry, Some(wrong)), None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");

    // No credentials at all.
    let err = resolve(&reference, &source_config(&registry, None), None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");
}

#[tokio::test]
async fn bearer_token_flow() {
    let tokens = support::TokenServer::start("bob", "t0ken-pass").await;
    let registry = Registry::start(support::Auth::Token(tokens.registry_auth_yaml())).await;
    let image = TestImage::build("amd64", None);
    registry
        .push(&image, "team/app", "v1", Some(("bob", "t0ken-pass")))
        .await;
    let reference = format!("{}/team/app:v1", registry.addr);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

    let good =
        support::write_docker_config(dir.path(), "good.json", &registry.addr, "bob", "t0ken-pass", true);
    let (source, resolved) = resolve(&reference, &source_config(&registry, Some(good)), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(actual_layers(&resolved), expected_layers(&image));
    stream_all(source.as_ref(), &resolved, &image).await;
    assert!(tokens.issued() >= 1, "no token was issued");

    let wrong = support::write_docker_config(dir.path(), "wrong.json", &registry.addr, "bob", "nope", true);
    let err = resolve(&reference, &source_config(&registry, Some(wrong)), None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");

    // Anonymous: the token service refuses anonymous pulls here.
    let err = resolve(&reference, &source_config(&registry, None), None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");
}

#[tokio::test]
async fn multi_platform_index_in_registry() {
    let registry = Registry::start(support::Auth::None).await;
    let amd = TestImage::build("amd64", None);
    let arm = TestImage::build("arm64", Some("v8"));
    let index = support::index_of(&[(&amd, "amd64", None), (&arm, "arm64", Some("v8"))]);
    registry.push(&amd, "multi/app", &amd.manifest_digest, None).await;
    registry.push(&arm, "multi/app", &arm.manifest_digest, None).await;
    registry
        .push_manifest("multi/app", "v1", &index, support::OCI_INDEX, None)
        .await;
    let config = source_config(&registry, None);
    let reference = format!("{}/multi/app:v1", registry.addr);
    let index_digest = support::sha256(&index);

    let (source, resolved) = resolve(&reference, &config, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.manifest_digest.as_str(), amd.manifest_digest);
    assert_eq!(
        resolved.index_digest.as_ref().map(|d| d.to_string()),
        Some(index_digest.clone())
    );
    assert_eq!(
        resolved.platform.as_ref().map(|p| p.to_string()).as_deref(),
        Some("linux/amd64")
    );
    stream_all(source.as_ref(), &resolved, &amd).await;

    let (source, resolved) = resolve(&reference, &config, Some("linux/arm64"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.manifest_digest.as_str(), arm.manifest_digest);
    assert_eq!(
        resolved.platform.as_ref().map(|p| p.to_string()).as_deref(),
        Some("linux/arm64/v8")
    );
    assert_eq!(resolved.config.architecture.as_deref(), Some("arm64"));
    stream_all(source.as_ref(), &resolved, &arm).await;

    match resolve(&reference, &config, Some("linux/s390x")).await {
        Err(e @ SourceError::PlatformNotFound { .. }) => {
            let SourceError::PlatformNotFound { wanted, offered } = &e else {
                unreachable!()
            };
            assert_eq!(wanted, "linux/s390x");
            assert_eq!(offered, &["linux/amd64", "linux/arm64/v8"]);
            assert!(e.to_string().contains("linux/amd64, linux/arm64/v8"), "{e}");
        }
        other => panic!("{:?}", other.map(|(_, r)| r)),
    }
}

#[tokio::test]
async fn oci_layout_and_docker_archive_match_the_registry() {
    let registry = Registry::start(support::Auth::None).await;
    let image = TestImage::build("amd64", None);
    registry.push(&image, "test/app", "v1", None).await;
    let (_, pushed) = resolve(
        &format!("{}/test/app:v1", registry.addr),
        &source_config(&registry, None),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let layout = dir.path().join("layout");
    support::write_oci_layout(&layout, &[(&image, "v1")], None);
    let archive = dir.path().join("image.tar");
    support::write_docker_archive(&archive, &image, "test/app:v1");
    let config = SourceConfig::default();

    for reference in [
        format!("oci-dir:{}", layout.display()),
        format!("oci-dir:{}:v1", layout.display()),
        format!("docker-archive:{}", archive.display()),
        format!("docker-archive:{}:v1", archive.display()),
    ] {
        let (source, resolved) = resolve(&reference, &config, None)
            .await
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(
            layer_digests(&resolved.layers),
            layer_digests(&pushed.layers),
            "{reference}"
        );
        let sizes = |r: &ResolvedImage| r.layers.iter().map(|l| l.size).collect::<Vec<_>>();
        assert_eq!(sizes(&resolved), sizes(&pushed), "{reference}");
        let types: Vec<&str> = resolved.layers.iter().map(|l| l.media_type.as_str()).collect();
        if reference.starts_with("oci-dir:") {
            assert_eq!(actual_layers(&resolved), actual_layers(&pushed), "{reference}");
        } else {
            // No manifest in an archive: types come from magic bytes.
            assert_eq!(types, image.docker_media_types(), "{reference}");
        }
        assert_eq!(
            resolved.config.desc.digest, pushed.config.desc.digest,
            "{reference}"
        );
        assert_eq!(resolved.config.diff_ids, image.diff_ids, "{reference}");
        stream_all(source.as_ref(), &resolved, &image).await;
        if reference.starts_with("oci-dir:") {
            assert_eq!(resolved.manifest_digest, pushed.manifest_digest);
        }
    }

    // Missing things are NotFound.
    for reference in [
        format!("oci-dir:{}:v2", layout.display()),
        format!("oci-dir:{}", dir.path().join("absent").display()),
        format!("docker-archive:{}:v2", archive.display()),
        format!("docker-archive:{}", dir.path().join("absent.tar").display()),
    ] {
        let err = resolve(&reference, &config, None).await.err();
        assert!(
            matches!(err, Some(SourceError::NotFound(_))),
            "{reference}: {err:?}"
        );
    }
    // A plain directory is not a layout; a file that is not a tarball is not an archive.
    let err = resolve(&format!("oci-dir:{}", dir.path().display()), &config, None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::NotFound(_))), "{err:?}");
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(
        &garbage,
        b"this is not a tar file at all, not even close............",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = resolve(&format!("docker-archive:{}", garbage.display()), &config, None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Format { .. })), "{err:?}");
}

#[tokio::test]
async fn oci_layout_with_nested_multi_platform_index() {
    let amd = TestImage::build("amd64", None);
    let arm = TestImage::build("arm64", Some("v8"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let layout = dir.path().join("layout");
    let index = support::index_of(&[(&amd, "amd64", None), (&arm, "arm64", Some("v8"))]);
    support::write_oci_layout(
        &layout,
        &[(&amd, "unused"), (&arm, "unused2")],
        Some((&index, "multi")),
    );
    let config = SourceConfig::default();
    let reference = format!("oci-dir:{}:multi", layout.display());

    let (source, resolved) = resolve(&reference, &config, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.manifest_digest.as_str(), amd.manifest_digest);
    assert_eq!(
        resolved.index_digest.as_ref().map(|d| d.to_string()),
        Some(support::sha256(&index))
    );
    stream_all(source.as_ref(), &resolved, &amd).await;
    let (_, resolved) = resolve(&reference, &config, Some("linux/arm64"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.manifest_digest.as_str(), arm.manifest_digest);
    let err = resolve(&reference, &config, Some("windows/amd64")).await.err();
    assert!(
        matches!(&err, Some(SourceError::PlatformNotFound { offered, .. }) if offered == &["linux/amd64", "linux/arm64/v8"]),
        "{err:?}"
    );
    // Several images and no tag: a clear error naming the tags.
    let err = resolve(&format!("oci-dir:{}", layout.display()), &config, None)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("multi")), "{err:?}");
}

#[tokio::test]
async fn broken_local_images_are_errors() {
    let image = TestImage::build("amd64", None);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = SourceConfig::default();

    // A truncated archive (manifest.json, written last, is cut off).
    let archive = dir.path().join("image.tar");
    support::write_docker_archive(&archive, &image, "test/app:v1");
    let len = std::fs::metadata(&archive)
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap_or_else(|e| panic!("{e}"));
    file.set_len(len / 2).unwrap_or_else(|e| panic!("{e}"));
    let err = resolve(&format!("docker-archive:{}", archive.display()), &config, None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Format { .. })), "{err:?}");

    // A layout whose config blob was altered: its digest no longer matches.
    let layout = dir.path().join("layout");
    support::write_oci_layout(&layout, &[(&image, "v1")], None);
    let config_blob = layout
        .join("blobs/sha256")
        .join(&image.config.digest["sha256:".len()..]);
    let mut altered = image.config.bytes.clone();
    altered[0] = b' ';
    std::fs::write(&config_blob, altered).unwrap_or_else(|e| panic!("{e}"));
    match resolve(&format!("oci-dir:{}", layout.display()), &config, None).await {
        Err(SourceError::Format { reason, .. }) => assert!(reason.contains("digest mismatch"), "{reason}"),
        other => panic!("{:?}", other.map(|(_, r)| r)),
    }

    // A layer blob shorter than its descriptor: the reader fails, it does not end quietly.
    support::write_oci_layout(&layout, &[(&image, "v1")], None);
    let (source, resolved) = resolve(&format!("oci-dir:{}", layout.display()), &config, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = &resolved.layers[0];
    let blob = layout.join("blobs/sha256").join(first.digest.hex());
    std::fs::write(&blob, &image.layers[0].bytes[..10]).unwrap_or_else(|e| panic!("{e}"));
    let mut reader = source.open_layer(first).await.unwrap_or_else(|e| panic!("{e}"));
    let mut sink = Vec::new();
    let err = reader.read_to_end(&mut sink).await.err().map(|e| e.kind());
    assert_eq!(err, Some(std::io::ErrorKind::UnexpectedEof));
}

#[tokio::test]
async fn dir_source_returns_the_path() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = ImageRef::parse(&format!("dir:{}", dir.path().display())).unwrap_or_else(|e| panic!("{e}"));
    match Source::open(r, &SourceConfig::default()).await {
        Ok(Source::RootDir(p)) => assert_eq!(p, dir.path()),
        other => panic!("{other:?}"),
    }
    let r = ImageRef::parse(&format!("dir:{}", dir.path().join("absent").display()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        Source::open(r, &SourceConfig::default()).await,
        Err(SourceError::NotFound(_))
    ));
}

/// Test plumbing: a registry process, a token service, an image builder.
mod support {
    use super::*;
    use std::io::Write as _;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference, RegistryOperation};
    use tokio::io::AsyncWriteExt;

    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

    pub fn sha256(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    pub struct Blob {
        pub bytes: Vec<u8>,
        pub digest: String,
        pub media_type: String,
    }

    impl Blob {
        fn new(bytes: Vec<u8>, media_type: &str) -> Blob {
            Blob {
                digest: sha256(&bytes),
                bytes,
                media_type: media_type.to_owned(),
            }
        }
        fn descriptor(&self) -> serde_json::Value {
            serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
        }
    }

    /// A small image: a gzip layer, an uncompressed layer, a zstd layer.
    pub struct TestImage {
        pub layers: Vec<Blob>,
        pub config: Blob,
        pub diff_ids: Vec<String>,
        pub manifest: Vec<u8>,
        pub manifest_digest: String,
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, *data)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        b.into_inner().unwrap_or_else(|e| panic!("{e}"))
    }

    impl TestImage {
        pub fn build(arch: &str, variant: Option<&str>) -> TestImage {
            let os_release = format!("ID=debian\nVERSION_ID=\"12\"\n# built for {arch}\n");
            let t1 = tar_of(&[
                ("etc/os-release", os_release.as_bytes()),
                ("etc/hostname", b"strata\n"),
            ]);
            let t2 = tar_of(&[(
                "usr/share/doc/readme",
                format!("layer two for {arch}\n").as_bytes(),
            )]);
            let t3 = tar_of(&[("opt/app/VERSION", b"1.0\n"), ("opt/app/.wh.old", b"")]);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&t1).unwrap_or_else(|e| panic!("{e}"));
            let gz = gz.finish().unwrap_or_else(|e| panic!("{e}"));
            let zst = zstd::encode_all(&t3[..], 3).unwrap_or_else(|e| panic!("{e}"));
            let diff_ids = vec![sha256(&t1), sha256(&t2), sha256(&t3)];
            let layers = vec![
                Blob::new(gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
                Blob::new(t2, "application/vnd.oci.image.layer.v1.tar"),
                Blob::new(zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
            ];
            let mut config = serde_json::json!({
                "architecture": arch,
                "os": "linux",
                "config": {"Env": ["PATH=/usr/bin"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            });
            if let Some(v) = variant {
                config["variant"] = v.into();
            }
            let config = Blob::new(config.to_string().into_bytes(), OCI_CONFIG);
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            })
            .to_string()
            .into_bytes();
            TestImage {
                manifest_digest: sha256(&manifest),
                manifest,
                layers,
                config,
                diff_ids,
            }
        }

        /// The docker-archive media type of each layer (the source reports
        /// Docker types, found by magic bytes).
        pub fn docker_media_types(&self) -> Vec<&'static str> {
            vec![
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.image.rootfs.diff.tar",
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ]
        }
    }

    /// An OCI index over images: `(image, arch, variant)`.
    pub fn index_of(images: &[(&TestImage, &str, Option<&str>)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|(img, arch, variant)| {
                let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = (*v).into();
                }
                serde_json::json!({
                    "mediaType": OCI_MANIFEST, "digest": img.manifest_digest,
                    "size": img.manifest.len(), "platform": platform,
                })
            })
            .chain(std::iter::once(serde_json::json!({
                // A buildx-style attestation entry: never chosen nor offered.
                "mediaType": OCI_MANIFEST, "digest": images[0].0.manifest_digest,
                "size": images[0].0.manifest.len(),
                "platform": {"os": "unknown", "architecture": "unknown"},
            })))
            .collect();
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
            .to_string()
            .into_bytes()
    }

    /// Writes an OCI layout holding `images` (tagged), plus optionally an
    /// index blob (tagged) that refers to them.
    pub fn write_oci_layout(dir: &Path, images: &[(&TestImage, &str)], index: Option<(&[u8], &str)>) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("{e}"));
        let put = |bytes: &[u8]| {
            let d = sha256(bytes);
            std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap_or_else(|e| panic!("{e}"));
        };
        let mut entries = Vec::new();
        for (img, tag) in images {
            for b in img.layers.iter().chain(std::iter::once(&img.config)) {
                put(&b.bytes);
            }
            put(&img.manifest);
            entries.push(serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        }
        if let Some((index, tag)) = index {
            put(index);
            entries.push(serde_json::json!({
                "mediaType": OCI_INDEX, "digest": sha256(index), "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        }
        let index_json =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        std::fs::write(dir.join("index.json"), index_json.to_string()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Writes a `docker save`-style tarball: classic `<id>/layer.tar` names,
    /// one of them a symlink into `blobs/sha256/` as Docker 25+ writes, and
    /// `manifest.json` last.
    pub fn write_docker_archive(path: &Path, image: &TestImage, repo_tag: &str) {
        let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
        let mut b = tar::Builder::new(file);
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data)
                .unwrap_or_else(|e| panic!("{e}"));
        };
        let config_name = format!("{}.json", &image.config.digest["sha256:".len()..]);
        add(&config_name, &image.config.bytes);
        let mut layer_names = Vec::new();
        let mut symlinks = Vec::new();
        for (i, layer) in image.layers.iter().enumerate() {
            let id = hex::encode(Sha256::digest(format!("v1-id-{i}-{}", layer.digest)));
            let name = format!("{id}/layer.tar");
            if i == 1 {
                let target = format!("blobs/sha256/{}", &layer.digest["sha256:".len()..]);
                add(&target, &layer.bytes);
                symlinks.push((name.clone(), format!("../{target}")));
            } else {
                add(&name, &layer.bytes);
            }
            layer_names.push(name);
        }
        for (name, target) in symlinks {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, &name, &target)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let manifest = serde_json::json!([{
            "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names,
        }]);
        let manifest = manifest.to_string();
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", manifest.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        b.into_inner()
            .unwrap_or_else(|e| panic!("{e}"))
            .sync_all()
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn write_docker_config(
        dir: &Path,
        name: &str,
        key: &str,
        user: &str,
        password: &str,
        as_auth: bool,
    ) -> PathBuf {
        let entry = if as_auth {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            serde_json::json!({"auth": auth})
        } else {
            serde_json::json!({"username": user, "password": password})
        };
        let mut auths = BTreeMap::new();
        auths.insert(key.to_owned(), entry);
        let path = dir.join(name);
        std::fs::write(&path, serde_json::json!({"auths": auths}).to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
    }

    pub enum Auth {
        None,
        Htpasswd {
            user: &'static str,
            password: &'static str,
        },
        /// The `auth:` section of the registry config.
        Token(String),
    }

    /// A `docker-registry` process on a free loopback port, killed on drop.
    pub struct Registry {
        pub addr: String,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl Drop for Registry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Registry {
        pub async fn start(auth: Auth) -> Registry {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let auth_yaml = match auth {
                Auth::None => String::new(),
                Auth::Htpasswd { user, password } => {
                    let out = Command::new("htpasswd")
                        .args(["-Bbn", user, password])
                        .output()
                        .unwrap_or_else(|e| panic!("htpasswd: {e}"));
                    assert!(out.status.success(), "htpasswd failed");
                    let file = dir.path().join("htpasswd");
                    std::fs::write(&file, out.stdout).unwrap_or_else(|e| panic!("{e}"));
                    format!(
                        "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                        file.display()
                    )
                }
                Auth::Token(yaml) => yaml,
            };
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth_yaml}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("{e}"));
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("docker-registry: {e}"));
            let registry = Registry {
                addr,
                child,
                _dir: dir,
            };
            let http = reqwest::Client::new();
            for _ in 0..200 {
                if http
                    .get(format!("http://{}/v2/", registry.addr))
                    .send()
                    .await
                    .is_ok()
                {
                    return registry;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("docker-registry did not start on {}", registry.addr);
        }

        fn client() -> Client {
            Client::new(ClientConfig {
                protocol: ClientProtocol::Http,
                platform_resolver: None,
                ..Default::default()
            })
        }

        fn auth(creds: Option<(&str, &str)>) -> RegistryAuth {
            creds.map_or(RegistryAuth::Anonymous, |(u, p)| {
                RegistryAuth::Basic(u.into(), p.into())
            })
        }

        /// Pushes the image's blobs, then its manifest under `tag` (a tag or a digest).
        pub async fn push(&self, image: &TestImage, repo: &str, tag: &str, creds: Option<(&str, &str)>) {
            let client = Self::client();
            let reference = self.reference(repo, tag);
            let auth = Self::auth(creds);
            client
                .auth(&reference, &auth, RegistryOperation::Push)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
                client
                    .push_blob(&reference, blob.bytes.clone(), &blob.digest)
                    .await
                    .unwrap_or_else(|e| panic!("push {}: {e}", blob.digest));
            }
            self.push_manifest_with(&client, &reference, &image.manifest, OCI_MANIFEST)
                .await;
        }

        pub async fn push_manifest(
            &self,
            repo: &str,
            tag: &str,
            body: &[u8],
            media_type: &str,
            creds: Option<(&str, &str)>,
        ) {
            let client = Self::client();
            let reference = self.reference(repo, tag);
            client
                .auth(&reference, &Self::auth(creds), RegistryOperation::Push)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            self.push_manifest_with(&client, &reference, body, media_type)
                .await;
        }

        async fn push_manifest_with(
            &self,
            client: &Client,
            reference: &Reference,
            body: &[u8],
            media_type: &str,
        ) {
            let content_type =
                reqwest::header::HeaderValue::from_str(media_type).unwrap_or_else(|e| panic!("{e}"));
            client
                .push_manifest_raw(reference, body.to_vec(), content_type)
                .await
                .unwrap_or_else(|e| panic!("push manifest {reference}: {e}"));
        }

        fn reference(&self, repo: &str, tag: &str) -> Reference {
            let text = if tag.starts_with("sha256:") {
                format!("{}/{repo}@{tag}", self.addr)
            } else {
                format!("{}/{repo}:{tag}", self.addr)
            };
            text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
        }
    }

    /// A token service for the registry's `auth.token`: checks HTTP basic
    /// credentials and issues RS256 JWTs signed by a key whose self-signed
    /// certificate is the registry's `rootcertbundle` (sent as `x5c`).
    pub struct TokenServer {
        port: u16,
        cert_pem: PathBuf,
        issued: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl Drop for TokenServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    const ISSUER: &str = "strata-test-issuer";
    const SERVICE: &str = "strata-test-registry";

    impl TokenServer {
        pub async fn start(user: &'static str, password: &'static str) -> TokenServer {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let key_pem = dir.path().join("key.pem");
            let key_der = dir.path().join("key.der");
            let cert_pem = dir.path().join("cert.pem");
            let cert_der = dir.path().join("cert.der");
            let openssl = |args: &[&str]| {
                let out = Command::new("openssl")
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| panic!("openssl: {e}"));
                assert!(
                    out.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            let p = |p: &Path| {
                p.to_str()
                    .unwrap_or_else(|| panic!("non-UTF-8 temp path"))
                    .to_owned()
            };
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &p(&key_pem),
            ]);
            openssl(&[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &p(&key_pem),
                "-outform",
                "DER",
                "-out",
                &p(&key_der),
            ]);
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                &p(&key_pem),
                "-out",
                &p(&cert_pem),
                "-days",
                "2",
                "-subj",
                "/CN=strata-test-token",
            ]);
            openssl(&[
                "x509",
                "-in",
                &p(&cert_pem),
                "-outform",
                "DER",
                "-out",
                &p(&cert_der),
            ]);
            let key = ring::signature::RsaKeyPair::from_pkcs8(
                &std::fs::read(&key_der).unwrap_or_else(|e| panic!("{e}")),
            )
            .unwrap_or_else(|e| panic!("key: {e}"));
            let x5c = base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(&cert_der).unwrap_or_else(|e| panic!("{e}")));

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
            let issued = Arc::new(AtomicUsize::new(0));
            let state = Arc::new((key, x5c, user, password, issued.clone()));
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let (key, x5c, user, password, issued) = &*state;
                        let _ = serve_token(stream, key, x5c, user, password, issued).await;
                    });
                }
            });
            TokenServer {
                port,
                cert_pem,
                issued,
                task,
                _dir: dir,
            }
        }

        pub fn registry_auth_yaml(&self) -> String {
            format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                self.port,
                self.cert_pem.display()
            )
        }

        pub fn issued(&self) -> usize {
            self.issued.load(Ordering::SeqCst)
        }
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => out.push(b),
                        None => out.extend_from_slice(&bytes[i..i + 3]),
                    }
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn serve_token(
        mut stream: tokio::net::TcpStream,
        key: &ring::signature::RsaKeyPair,
        x5c: &str,
        user: &str,
        password: &str,
        issued: &AtomicUsize,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request = String::from_utf8_lossy(&buf).into_owned();
        let target = request
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("");
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut scopes = Vec::new();
        let mut service = String::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "scope" => scopes.push(percent_decode(v)),
                "service" => service = percent_decode(v),
                _ => {}
            }
        }
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let authorized = request.lines().any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("authorization") && value.trim() == format!("Basic {expected}")
            })
        });
        let response = if !authorized || service != SERVICE {
            let body = r#"{"details":"invalid credentials"}"#;
            format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            let access: Vec<serde_json::Value> = scopes
                .iter()
                .filter_map(|s| {
                    // repository:NAME:ACTIONS (NAME has no ':' here)
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let n = issued.fetch_add(1, Ordering::SeqCst);
            let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
            let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
            let claims = serde_json::json!({
                "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                "iat": now, "jti": format!("token-{n}"), "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let mut sig = vec![0u8; key.public().modulus_len()];
            key.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| std::io::Error::other("signing failed"))?;
            let token = format!("{signing_input}.{}", b64(&sig));
            let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}
