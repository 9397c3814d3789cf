//! Image sources against real servers: the harness's `docker-registry`
//! (anonymous and htpasswd basic auth), a registry behind token auth with a
//! real token service issuing RS256 JWTs, and OCI layout directories and
//! docker-archive tarballs written by the harness from the same images.
//!
//! Every test streams the layers it resolves and checks each one's sha256,
//! as the layer reader does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_harness::{Compression, Image, Index, Layer, Registry};
use strata_worker::source::{
    ImageRef, ImageSource, LayerDesc, Platform, ResolvedImage, Source, SourceConfig, SourceError, SourcePool,
};
use tokio::io::AsyncReadExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// [`source_config`] with the token service listed as a plain-HTTP host
/// too: the registry policy checks the realm a registry names like a
/// redirect.
fn token_config(
    registry_host: &str,
    tokens: &support::TokenServer,
    docker_config: Option<PathBuf>,
) -> SourceConfig {
    let mut config = source_config(registry_host, docker_config);
    config.insecure_registries.push(tokens.host());
    config
}

fn source_config(registry_host: &str, docker_config: Option<PathBuf>) -> SourceConfig {
    SourceConfig {
        insecure_registries: vec![registry_host.to_owned()],
        // A path that does not exist means "no credentials", independent of
        // the machine's own ~/.docker.
        docker_config: Some(
            docker_config.unwrap_or_else(|| PathBuf::from("/nonexistent/strata/config.json")),
        ),
        ..SourceConfig::default()
    }
}

async fn open(reference: &str, config: &SourceConfig) -> Result<Box<dyn ImageSource>, SourceError> {
    match Source::open(ImageRef::parse(reference)?, config).await? {
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
    let platform = platform.map(Platform::parse).transpose()?;
    let resolved = source.resolve(platform.as_ref()).await?;
    Ok((source, resolved))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn read_layer(source: &dyn ImageSource, desc: &LayerDesc) -> std::io::Result<Vec<u8>> {
    let mut reader = source.open_layer(desc).await.map_err(std::io::Error::other)?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// Streams every layer, checking its sha256 and that it is `expected[i]`.
async fn stream_all(source: &dyn ImageSource, resolved: &ResolvedImage, expected: &[&[u8]]) -> TestResult {
    assert_eq!(resolved.layers.len(), expected.len());
    for (desc, want) in resolved.layers.iter().zip(expected) {
        let bytes = read_layer(source, desc).await?;
        assert_eq!(sha256(&bytes), desc.digest.as_str());
        assert!(bytes == *want, "{}: bytes differ", desc.digest);
    }
    Ok(())
}

fn blobs(image: &Image) -> Vec<&[u8]> {
    image.layers.iter().map(|l| l.blob.as_slice()).collect()
}

fn tars(image: &Image) -> Vec<&[u8]> {
    image.layers.iter().map(|l| l.tar.as_slice()).collect()
}

/// `(digest, media type, size)` of each layer.
fn layers_of(resolved: &ResolvedImage) -> Vec<(String, String, u64)> {
    resolved
        .layers
        .iter()
        .map(|l| (l.digest.to_string(), l.media_type.clone(), l.size))
        .collect()
}

fn pushed_layers(image: &Image) -> Vec<(String, String, u64)> {
    image
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.media_type().to_owned(), l.size()))
        .collect()
}

fn digests(resolved: &ResolvedImage) -> Vec<String> {
    resolved.layers.iter().map(|l| l.digest.to_string()).collect()
}

/// An image with one layer of each compression; `platform` as `os/arch[/variant]`.
fn mixed_image(platform: &str) -> Result<Image, Box<dyn std::error::Error>> {
    let base = Layer::builder()
        .file(
            "/etc/os-release",
            format!("ID=debian\nVERSION_ID=\"12\"\n# {platform}\n"),
        )
        .file("/etc/hostname", "strata\n")
        .build(Compression::Gzip)?;
    let middle = Layer::builder()
        .file("/usr/share/doc/readme", format!("layer two, {platform}\n"))
        .build(Compression::None)?;
    let top = Layer::builder()
        .file("/opt/app/VERSION", "1.0\n")
        .whiteout("/opt/app/old")
        .build(Compression::Zstd)?;
    Ok(Image::builder()
        .platform(platform)
        .layer(base)
        .layer(middle)
        .layer(top)
        .build()?)
}

/// An image whose layers are uncompressed, as `docker save` stores them, so
/// its registry digests and its archive digests are the same bytes.
fn plain_image() -> Result<Image, Box<dyn std::error::Error>> {
    let a = Layer::builder()
        .file("/etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n")
        .build(Compression::None)?;
    let b = Layer::builder()
        .file("/lib/apk/db/installed", "P:musl\nV:1.2.4-r2\n\n")
        .build(Compression::None)?;
    Ok(Image::builder().layer(a).layer(b).build()?)
}

#[tokio::test]
async fn anonymous_registry_resolve_and_stream_every_layer() -> TestResult {
    let registry = Registry::start()?;
    let image = mixed_image("linux/amd64")?;
    image.push(&registry, "test/app", "v1").await?;
    let config = source_config(&registry.host(), None);

    let reference = format!("{}/test/app:v1", registry.host());
    let (source, resolved) = resolve(&reference, &config, None).await?;
    assert_eq!(resolved.reference, reference);
    assert_eq!(resolved.manifest_digest.as_str(), image.manifest_digest);
    assert_eq!(resolved.index_digest, None);
    assert_eq!(
        resolved.platform.as_ref().map(|p| p.to_string()).as_deref(),
        Some("linux/amd64")
    );
    assert_eq!(layers_of(&resolved), pushed_layers(&image));
    assert_eq!(resolved.config.desc.digest.as_str(), image.config_digest);
    assert_eq!(resolved.config.raw.as_ref(), image.config.as_slice());
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(resolved.config.diff_ids, diff_ids);
    stream_all(source.as_ref(), &resolved, &blobs(&image)).await?;

    // By digest too, and with tag and digest together.
    let by_digest = format!("{}/test/app@{}", registry.host(), image.manifest_digest);
    let (_, again) = resolve(&by_digest, &config, None).await?;
    assert_eq!(digests(&again), digests(&resolved));
    let both = format!("{}/test/app:v1@{}", registry.host(), image.manifest_digest);
    assert_eq!(
        resolve(&both, &config, None).await?.1.manifest_digest,
        resolved.manifest_digest
    );

    // Asking a single-platform image for another platform is an error.
    let err = resolve(&reference, &config, Some("linux/arm64")).await.err();
    assert!(
        matches!(err, Some(SourceError::PlatformNotFound { .. })),
        "{err:?}"
    );

    // A registry not marked insecure is spoken to over HTTPS only: this one
    // speaks plain HTTP, so that fails (and is not NotFound or success).
    // (The open policy: the strict one would refuse the loopback address
    // before any HTTPS is tried.)
    let https_only = SourceConfig {
        insecure_registries: vec![],
        policy: strata_worker::source::RegistryPolicy::open(),
        ..config.clone()
    };
    let err = resolve(&reference, &https_only, None).await.err();
    assert!(matches!(err, Some(SourceError::Registry { .. })), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn docker_media_types_resolve_too() -> TestResult {
    let registry = Registry::start()?;
    let layer = Layer::builder()
        .file("/etc/os-release", "ID=debian\n")
        .build(Compression::Gzip)?;
    let image = Image::builder().docker_media_types().layer(layer).build()?;
    image.push(&registry, "test/docker", "v1").await?;
    let config = source_config(&registry.host(), None);
    let (source, resolved) = resolve(&format!("{}/test/docker:v1", registry.host()), &config, None).await?;
    assert_eq!(resolved.manifest_digest.as_str(), image.manifest_digest);
    assert_eq!(
        resolved.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        resolved.config.desc.media_type,
        "application/vnd.docker.container.image.v1+json"
    );
    stream_all(source.as_ref(), &resolved, &blobs(&image)).await
}

#[tokio::test]
async fn missing_tag_repository_and_blob_are_not_found() -> TestResult {
    let registry = Registry::start()?;
    mixed_image("linux/amd64")?
        .push(&registry, "test/app", "v1")
        .await?;
    let config = source_config(&registry.host(), None);

    for reference in [
        format!("{}/test/app:nope", registry.host()),
        format!("{}/test/absent:v1", registry.host()),
    ] {
        match resolve(&reference, &config, None).await {
            Err(SourceError::NotFound(msg)) => assert!(msg.contains(&reference), "{msg}"),
            other => panic!("{reference}: {:?}", other.map(|(_, r)| r)),
        }
    }

    let source = open(&format!("{}/test/app:v1", registry.host()), &config).await?;
    let absent = LayerDesc {
        digest: format!("sha256:{}", "0".repeat(64)).parse()?,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size: 1,
    };
    let err = source.open_layer(&absent).await.err();
    assert!(matches!(err, Some(SourceError::NotFound(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn tampered_registry_blob_fails_while_streaming() -> TestResult {
    let registry = Registry::start()?;
    let good = Layer::builder()
        .file("/etc/os-release", "ID=debian\n")
        .build(Compression::Gzip)?;
    let bad = Layer::builder()
        .file("/etc/hostname", "x".repeat(4096))
        .build(Compression::Gzip)?
        .with_mismatched_digest();
    let image = Image::builder().layer(good).layer(bad).build()?;
    image.push(&registry, "test/tampered", "v1").await?;
    let config = source_config(&registry.host(), None);
    let (source, resolved) = resolve(&format!("{}/test/tampered:v1", registry.host()), &config, None).await?;
    assert!(read_layer(source.as_ref(), &resolved.layers[0]).await.is_ok());
    // The registry serves other bytes under the digest: an error, never a result.
    assert!(read_layer(source.as_ref(), &resolved.layers[1]).await.is_err());
    Ok(())
}

#[tokio::test]
async fn basic_auth_from_docker_config() -> TestResult {
    let registry = Registry::builder().htpasswd("alice", "s3cret").start()?;
    let image = mixed_image("linux/amd64")?;
    image.push(&registry, "private/app", "v1").await?;
    let host = registry.host();
    let reference = format!("{host}/private/app:v1");
    let dir = tempfile::tempdir()?;

    // `auth` form (base64 user:password), keyed by host:port.
    let good = support::write_docker_config(dir.path(), "good.json", &host, "alice", "s3cret", true)?;
    let (source, resolved) = resolve(&reference, &source_config(&host, Some(good.clone())), None).await?;
    assert_eq!(layers_of(&resolved), pushed_layers(&image));
    stream_all(source.as_ref(), &resolved, &blobs(&image)).await?;
    let fresh = open(&reference, &source_config(&host, Some(good.clone()))).await?;
    assert_eq!(
        read_layer(fresh.as_ref(), &resolved.layers[0]).await?,
        image.layers[0].blob
    );

    // `username`/`password` form, keyed by URL.
    let url_key = format!("http://{host}/v2/");
    let plain = support::write_docker_config(dir.path(), "plain.json", &url_key, "alice", "s3cret", false)?;
    assert!(
        resolve(&reference, &source_config(&host, Some(plain)), None)
            .await
            .is_ok()
    );

    let wrong = support::write_docker_config(dir.path(), "wrong.json", &host, "alice", "nope", true)?;
    let err = resolve(&reference, &source_config(&host, Some(wrong)), None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");

    // No credentials at all.
    let err = resolve(&reference, &source_config(&host, None), None).await.err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn bearer_token_flow() -> TestResult {
    let tokens = support::TokenServer::start("bob", "t0ken-pass").await?;
    let registry = support::TokenRegistry::start(&tokens.registry_auth_yaml()).await?;
    let image = mixed_image("linux/amd64")?;
    registry
        .push(&image, "team/app", "v1", ("bob", "t0ken-pass"))
        .await?;
    let host = registry.addr.clone();
    let reference = format!("{host}/team/app:v1");
    let dir = tempfile::tempdir()?;

    let issued_for_push = tokens.issued();
    let good = support::write_docker_config(dir.path(), "good.json", &host, "bob", "t0ken-pass", true)?;
    // A token service on plain HTTP that the policy does not list is
    // refused before it is asked (the registry names it; a hostile one
    // could name an internal service).
    let issued_before = tokens.issued();
    let err = resolve(&reference, &source_config(&host, Some(good.clone())), None)
        .await
        .err();
    assert!(
        matches!(&err, Some(SourceError::Policy(p)) if p.rule == "insecure_registries"),
        "{err:?}"
    );
    assert_eq!(tokens.issued(), issued_before, "the token service was not asked");
    let (source, resolved) = resolve(
        &reference,
        &token_config(&host, &tokens, Some(good.clone())),
        None,
    )
    .await?;
    assert_eq!(layers_of(&resolved), pushed_layers(&image));
    stream_all(source.as_ref(), &resolved, &blobs(&image)).await?;
    assert!(
        tokens.issued() > issued_for_push,
        "no token was issued for the pull"
    );

    // A worker opens layers by descriptor without resolving first: the
    // token flow must happen on that path too.
    let fresh = open(&reference, &token_config(&host, &tokens, Some(good.clone()))).await?;
    let bytes = read_layer(fresh.as_ref(), &resolved.layers[2]).await?;
    assert_eq!(bytes, image.layers[2].blob);

    let wrong = support::write_docker_config(dir.path(), "wrong.json", &host, "bob", "nope", true)?;
    let err = resolve(&reference, &token_config(&host, &tokens, Some(wrong)), None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");

    // Anonymous: this token service refuses anonymous requests.
    let err = resolve(&reference, &token_config(&host, &tokens, None), None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");
    Ok(())
}

/// The tags of `repository` on `host`, through the pool as the coordinator's
/// `RegisterRepository` lists them (limits: 10,000 tags, 200 pages, 4 MiB).
async fn list_tags(host: &str, repository: &str, config: &SourceConfig) -> Result<Vec<String>, SourceError> {
    let ImageRef::Registry(reference) = ImageRef::parse(&format!("{host}/{repository}"))? else {
        panic!("{host}/{repository}: not a registry reference");
    };
    let pool = SourcePool::new();
    let source = pool.registry(reference, config)?;
    source
        .list_tags(10_000, 200, 4 << 20)
        .await
        .map_err(SourceError::from)
}

#[tokio::test]
async fn tag_list_with_basic_auth_from_docker_config() -> TestResult {
    let registry = Registry::builder().htpasswd("alice", "s3cret").start()?;
    let image = mixed_image("linux/amd64")?;
    for tag in ["v2", "v1", "latest"] {
        image.push(&registry, "private/app", tag).await?;
    }
    let host = registry.host();
    let dir = tempfile::tempdir()?;

    let good = support::write_docker_config(dir.path(), "good.json", &host, "alice", "s3cret", true)?;
    let config = source_config(&host, Some(good));
    assert_eq!(
        list_tags(&host, "private/app", &config).await?,
        ["latest", "v1", "v2"]
    );
    // A limit below the count is refused, not truncated.
    let reference: oci_client::Reference = format!("{host}/private/app").parse()?;
    let err = strata_worker::source::RegistrySource::new(reference, &config)?
        .list_tags(2, 200, 4 << 20)
        .await
        .err()
        .ok_or("3 tags listed under a limit of 2")?;
    assert!(err.is_too_many_tags(), "{err}");
    let err = list_tags(&host, "private/nothing", &config).await.err();
    assert!(matches!(err, Some(SourceError::NotFound(_))), "{err:?}");

    let wrong = support::write_docker_config(dir.path(), "wrong.json", &host, "alice", "nope", true)?;
    let err = list_tags(&host, "private/app", &source_config(&host, Some(wrong)))
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");
    let err = list_tags(&host, "private/app", &source_config(&host, None))
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");

    // Anonymous against an open registry.
    let open_registry = Registry::start()?;
    image.push(&open_registry, "public/app", "v1").await?;
    let open_host = open_registry.host();
    assert_eq!(
        list_tags(&open_host, "public/app", &source_config(&open_host, None)).await?,
        ["v1"]
    );
    Ok(())
}

#[tokio::test]
async fn tag_list_with_bearer_token_flow() -> TestResult {
    let tokens = support::TokenServer::start("bob", "t0ken-pass").await?;
    let registry = support::TokenRegistry::start(&tokens.registry_auth_yaml()).await?;
    let image = mixed_image("linux/amd64")?;
    for tag in ["v1", "v1.1"] {
        registry
            .push(&image, "team/app", tag, ("bob", "t0ken-pass"))
            .await?;
    }
    let host = registry.addr.clone();
    let dir = tempfile::tempdir()?;
    let good = support::write_docker_config(dir.path(), "good.json", &host, "bob", "t0ken-pass", true)?;
    let issued = tokens.issued();
    assert_eq!(
        list_tags(&host, "team/app", &token_config(&host, &tokens, Some(good))).await?,
        ["v1", "v1.1"]
    );
    assert!(tokens.issued() > issued, "no token was issued for the tag list");
    let err = list_tags(&host, "team/app", &token_config(&host, &tokens, None))
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Unauthorized(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn multi_platform_index_in_registry() -> TestResult {
    let registry = Registry::start()?;
    let index = Index::of(vec![mixed_image("linux/amd64")?, mixed_image("linux/arm64/v8")?])?;
    index.push(&registry, "multi/app", "v1").await?;
    let config = source_config(&registry.host(), None);
    let reference = format!("{}/multi/app:v1", registry.host());
    let amd = index.image("linux/amd64").ok_or("no amd64")?;
    let arm = index.image("linux/arm64/v8").ok_or("no arm64")?;

    let (source, resolved) = resolve(&reference, &config, None).await?;
    assert_eq!(resolved.manifest_digest.as_str(), amd.manifest_digest);
    assert_eq!(
        resolved.index_digest.as_ref().map(|d| d.to_string()),
        Some(index.digest.clone())
    );
    assert_eq!(
        resolved.platform.as_ref().map(|p| p.to_string()).as_deref(),
        Some("linux/amd64")
    );
    stream_all(source.as_ref(), &resolved, &blobs(amd)).await?;

    let (source, resolved) = resolve(&reference, &config, Some("linux/arm64")).await?;
    assert_eq!(resolved.manifest_digest.as_str(), arm.manifest_digest);
    assert_eq!(
        resolved.platform.as_ref().map(|p| p.to_string()).as_deref(),
        Some("linux/arm64/v8")
    );
    assert_eq!(resolved.config.architecture.as_deref(), Some("arm64"));
    stream_all(source.as_ref(), &resolved, &blobs(arm)).await?;

    match resolve(&reference, &config, Some("linux/s390x")).await {
        Err(e @ SourceError::PlatformNotFound { .. }) => {
            let text = e.to_string();
            let SourceError::PlatformNotFound { wanted, offered } = e else {
                unreachable!()
            };
            assert_eq!(wanted, "linux/s390x");
            assert_eq!(offered, ["linux/amd64", "linux/arm64/v8"]);
            assert!(text.contains("linux/amd64, linux/arm64/v8"), "{text}");
        }
        other => panic!("{:?}", other.map(|(_, r)| r)),
    }
    Ok(())
}

#[tokio::test]
async fn oci_layout_and_docker_archives_match_the_registry() -> TestResult {
    let registry = Registry::start()?;
    let dir = tempfile::tempdir()?;
    let local = SourceConfig::default();
    for (name, image) in [("mixed", mixed_image("linux/amd64")?), ("plain", plain_image()?)] {
        image.push(&registry, &format!("test/{name}"), "v1").await?;
        let (_, pushed) = resolve(
            &format!("{}/test/{name}:v1", registry.host()),
            &source_config(&registry.host(), None),
            None,
        )
        .await?;

        // An OCI layout holds the very blobs the registry holds.
        let layout = dir.path().join(format!("{name}-layout"));
        image.write_oci_layout(&layout, "v1")?;
        for reference in [
            format!("oci-dir:{}", layout.display()),
            format!("oci-dir:{}:v1", layout.display()),
        ] {
            let (source, resolved) = resolve(&reference, &local, None).await?;
            assert_eq!(layers_of(&resolved), layers_of(&pushed), "{reference}");
            assert_eq!(resolved.manifest_digest, pushed.manifest_digest, "{reference}");
            assert_eq!(
                resolved.config.desc.digest, pushed.config.desc.digest,
                "{reference}"
            );
            stream_all(source.as_ref(), &resolved, &blobs(&image)).await?;
        }

        // A docker archive holds each layer uncompressed, as `docker save`
        // does: its digests are the diff_ids, which for uncompressed layers
        // are the registry's digests.
        let classic = dir.path().join(format!("{name}.tar"));
        image.write_docker_archive(&classic, &format!("test/{name}:v1"))?;
        let docker25 = dir.path().join(format!("{name}-25.tar"));
        image.write_docker_archive_oci(&docker25, &format!("test/{name}:v1"))?;
        let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        for archive in [&classic, &docker25] {
            for reference in [
                format!("docker-archive:{}", archive.display()),
                format!("docker-archive:{}:v1", archive.display()),
            ] {
                let (source, resolved) = resolve(&reference, &local, None).await?;
                assert_eq!(digests(&resolved), diff_ids, "{reference}");
                if name == "plain" {
                    assert_eq!(digests(&resolved), digests(&pushed), "{reference}");
                }
                assert!(
                    resolved
                        .layers
                        .iter()
                        .all(|l| l.media_type == "application/vnd.docker.image.rootfs.diff.tar"),
                    "{reference}"
                );
                assert_eq!(
                    resolved.config.desc.digest, pushed.config.desc.digest,
                    "{reference}"
                );
                assert_eq!(
                    resolved.platform.as_ref().map(|p| p.to_string()).as_deref(),
                    Some("linux/amd64")
                );
                stream_all(source.as_ref(), &resolved, &tars(&image)).await?;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn missing_local_images_are_not_found() -> TestResult {
    let dir = tempfile::tempdir()?;
    let image = plain_image()?;
    let layout = dir.path().join("layout");
    image.write_oci_layout(&layout, "v1")?;
    let archive = dir.path().join("image.tar");
    image.write_docker_archive(&archive, "test/app:v1")?;
    let config = SourceConfig::default();
    for reference in [
        format!("oci-dir:{}:v2", layout.display()),
        format!("oci-dir:{}", dir.path().join("absent").display()),
        // A directory that is not a layout.
        format!("oci-dir:{}", dir.path().display()),
        format!("docker-archive:{}:v2", archive.display()),
        format!("docker-archive:{}", dir.path().join("absent.tar").display()),
    ] {
        let err = resolve(&reference, &config, None).await.err();
        assert!(
            matches!(err, Some(SourceError::NotFound(_))),
            "{reference}: {err:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn oci_layout_with_nested_multi_platform_index() -> TestResult {
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("layout");
    let index = Index::of(vec![mixed_image("linux/amd64")?, mixed_image("linux/arm64/v8")?])?;
    index.write_oci_layout(&layout, "multi")?;
    plain_image()?.write_oci_layout(&layout, "plain")?;
    let amd = index.image("linux/amd64").ok_or("no amd64")?;
    let arm = index.image("linux/arm64/v8").ok_or("no arm64")?;
    let config = SourceConfig::default();
    let reference = format!("oci-dir:{}:multi", layout.display());

    let (source, resolved) = resolve(&reference, &config, None).await?;
    assert_eq!(resolved.manifest_digest.as_str(), amd.manifest_digest);
    assert_eq!(
        resolved.index_digest.as_ref().map(|d| d.to_string()),
        Some(index.digest.clone())
    );
    stream_all(source.as_ref(), &resolved, &blobs(amd)).await?;
    let (_, resolved) = resolve(&reference, &config, Some("linux/arm64")).await?;
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
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("multi") && e.contains("plain")),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn broken_local_images_are_errors() -> TestResult {
    let image = plain_image()?;
    let dir = tempfile::tempdir()?;
    let config = SourceConfig::default();

    // Not a tarball at all.
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(
        &garbage,
        "this is not a tar file at all, not even close".repeat(20),
    )?;
    let err = resolve(&format!("docker-archive:{}", garbage.display()), &config, None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Format { .. })), "{err:?}");

    // A truncated archive (manifest.json, written after the layers, is cut off).
    let archive = dir.path().join("image.tar");
    image.write_docker_archive(&archive, "test/app:v1")?;
    let len = std::fs::metadata(&archive)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)?
        .set_len(len / 2)?;
    let err = resolve(&format!("docker-archive:{}", archive.display()), &config, None)
        .await
        .err();
    assert!(matches!(err, Some(SourceError::Format { .. })), "{err:?}");

    // A layout whose config blob was altered: its digest no longer matches.
    let layout = dir.path().join("layout");
    image.write_oci_layout(&layout, "v1")?;
    let config_blob = layout
        .join("blobs/sha256")
        .join(&image.config_digest["sha256:".len()..]);
    let mut altered = image.config.clone();
    altered[0] = b' ';
    std::fs::write(&config_blob, altered)?;
    match resolve(&format!("oci-dir:{}", layout.display()), &config, None).await {
        Err(SourceError::Format { reason, .. }) => assert!(reason.contains("digest mismatch"), "{reason}"),
        other => panic!("{:?}", other.map(|(_, r)| r)),
    }

    // A layer blob shorter than its descriptor: the reader fails, it does not end quietly.
    image.write_oci_layout(&layout, "v1")?;
    let (source, resolved) = resolve(&format!("oci-dir:{}", layout.display()), &config, None).await?;
    let first = &resolved.layers[0];
    let blob = layout.join("blobs/sha256").join(first.digest.hex());
    std::fs::write(&blob, &image.layers[0].blob[..10])?;
    let err = read_layer(source.as_ref(), first).await.err().map(|e| e.kind());
    assert_eq!(err, Some(std::io::ErrorKind::UnexpectedEof));
    Ok(())
}

#[tokio::test]
async fn dir_source_returns_the_path() -> TestResult {
    let dir = tempfile::tempdir()?;
    let r = ImageRef::parse(&format!("dir:{}", dir.path().display()))?;
    match Source::open(r, &SourceConfig::default()).await {
        Ok(Source::RootDir(p)) => assert_eq!(p, dir.path()),
        other => panic!("{other:?}"),
    }
    let r = ImageRef::parse(&format!("dir:{}", dir.path().join("absent").display()))?;
    assert!(matches!(
        Source::open(r, &SourceConfig::default()).await,
        Err(SourceError::NotFound(_))
    ));
    Ok(())
}

/// Test plumbing the harness does not have: Docker config files, and a
/// registry behind token auth with its token service.
mod support {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference, RegistryOperation};
    use tokio::io::AsyncWriteExt;

    type Error = Box<dyn std::error::Error>;

    pub fn write_docker_config(
        dir: &Path,
        name: &str,
        key: &str,
        user: &str,
        password: &str,
        as_auth: bool,
    ) -> Result<PathBuf, Error> {
        let entry = if as_auth {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            serde_json::json!({"auth": auth})
        } else {
            serde_json::json!({"username": user, "password": password})
        };
        let auths = BTreeMap::from([(key.to_owned(), entry)]);
        let path = dir.join(name);
        std::fs::write(&path, serde_json::json!({"auths": auths}).to_string())?;
        Ok(path)
    }

    /// A `docker-registry` process whose `auth:` is token auth (the harness's
    /// Registry knows only htpasswd), killed on drop.
    pub struct TokenRegistry {
        pub addr: String,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl Drop for TokenRegistry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl TokenRegistry {
        pub async fn start(auth_yaml: &str) -> Result<TokenRegistry, Error> {
            let dir = tempfile::tempdir()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth_yaml}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config)?;
            let binary =
                std::env::var_os("STRATA_DOCKER_REGISTRY").unwrap_or_else(|| "docker-registry".into());
            let child = Command::new(binary)
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let registry = TokenRegistry {
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
                    return Ok(registry);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(format!("docker-registry did not start on {}", registry.addr).into())
        }

        /// Pushes through oci-client, which does the token flow for push.
        pub async fn push(
            &self,
            image: &Image,
            repo: &str,
            tag: &str,
            creds: (&str, &str),
        ) -> Result<(), Error> {
            let client = Client::new(ClientConfig {
                protocol: ClientProtocol::Http,
                platform_resolver: None,
                ..Default::default()
            });
            let reference: Reference = format!("{}/{repo}:{tag}", self.addr).parse()?;
            let auth = RegistryAuth::Basic(creds.0.into(), creds.1.into());
            client.auth(&reference, &auth, RegistryOperation::Push).await?;
            for layer in &image.layers {
                client
                    .push_blob(&reference, layer.blob.clone(), &layer.digest)
                    .await?;
            }
            client
                .push_blob(&reference, image.config.clone(), &image.config_digest)
                .await?;
            let content_type = reqwest::header::HeaderValue::from_str(image.manifest_media_type())?;
            client
                .push_manifest_raw(&reference, image.manifest.clone(), content_type)
                .await?;
            Ok(())
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
        pub async fn start(user: &'static str, password: &'static str) -> Result<TokenServer, Error> {
            let dir = tempfile::tempdir()?;
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
            let key = ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(&key_der)?)
                .unwrap_or_else(|e| panic!("key: {e}"));
            let x5c = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&cert_der)?);

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
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
            Ok(TokenServer {
                port,
                cert_pem,
                issued,
                task,
                _dir: dir,
            })
        }

        pub fn registry_auth_yaml(&self) -> String {
            format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                self.port,
                self.cert_pem.display()
            )
        }

        /// `127.0.0.1:PORT`: the token service speaks plain HTTP.
        pub fn host(&self) -> String {
            format!("127.0.0.1:{}", self.port)
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
