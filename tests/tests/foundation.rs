//! Acceptance tests of issue 2 for the harness itself: every server is real
//! (nats-server ≥ 2.10, Debian's docker-registry, moto), nothing is mocked.

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt as _;
use serde_json::Value;
use strata_harness::{Compression, Image, Index, Layer, NatsServer, Registry, S3Server, sha256_digest};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn two_layer_image() -> Image {
    let base = Layer::builder()
        .dir("etc")
        .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
        .file("usr/share/doc/readme", vec![7u8; 50_000])
        .symlink("etc/alias", "os-release")
        .build(Compression::Gzip)
        .expect("base layer");
    let top = Layer::builder()
        .whiteout("usr/share/doc/readme")
        .opaque("var/cache")
        .file_mode("usr/local/bin/tool", "#!/bin/sh\n", 0o755)
        .build(Compression::Zstd)
        .expect("top layer");
    Image::builder()
        .layer(base)
        .layer(top)
        .platform("linux/amd64")
        .build()
        .expect("image")
}

#[tokio::test]
async fn pushed_two_layer_image_comes_back_with_the_same_digests() -> TestResult {
    let nats = NatsServer::start()?;
    let registry = Registry::start()?;
    // The broker is real and reachable, next to the registry.
    let client = async_nats::connect(nats.url()).await?;
    client.flush().await?;

    let image = two_layer_image();
    let pushed = image.push(&registry, "strata/two-layer", "v1").await?;
    // Storage outlives a registry restart on the same port.
    let mut registry = registry;
    registry.restart()?;
    assert_eq!(pushed, image.manifest_digest);

    let fetched = registry.client().get_manifest("strata/two-layer", "v1").await?;
    assert_eq!(fetched.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        fetched.digest_header.as_deref(),
        Some(image.manifest_digest.as_str())
    );
    assert_eq!(sha256_digest(&fetched.bytes), image.manifest_digest);
    assert_eq!(registry.get_count("/strata/two-layer/manifests/v1")?, 1);

    let manifest: Value = serde_json::from_slice(&fetched.bytes)?;
    let layer_digests: Vec<&str> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str())
        .collect();
    let expected: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layer_digests, expected);
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(image.config_digest.as_str())
    );

    for digest in layer_digests
        .iter()
        .copied()
        .chain([image.config_digest.as_str()])
    {
        assert_eq!(
            registry.blob_fetch_count(digest)?,
            0,
            "{digest} fetched before any GET"
        );
        let blob = registry.client().get_blob("strata/two-layer", digest).await?;
        assert_eq!(sha256_digest(&blob), digest);
        assert_eq!(registry.blob_fetch_count(digest)?, 1, "{digest} fetched once");
    }
    Ok(())
}

#[tokio::test]
async fn multi_platform_index_and_tampered_blob_are_served() -> TestResult {
    let registry = Registry::start()?;
    let shared = Layer::builder()
        .file("etc/os-release", "ID=alpine\n")
        .build(Compression::Gzip)?;
    let amd = Image::builder()
        .layer(shared.clone())
        .platform("linux/amd64")
        .build()?;
    let arm = Image::builder()
        .layer(shared.clone())
        .layer(Layer::builder().file("arm", "v8").build(Compression::None)?)
        .platform("linux/arm64/v8")
        .build()?;
    let index = Index::of(vec![amd.clone(), arm.clone()])?;
    assert_eq!(
        index.push(&registry, "strata/multi", "latest").await?,
        index.digest
    );

    let client = registry.client();
    let fetched = client.get_manifest("strata/multi", "latest").await?;
    assert_eq!(fetched.media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(sha256_digest(&fetched.bytes), index.digest);
    let listed: Value = serde_json::from_slice(&fetched.bytes)?;
    assert_eq!(listed["manifests"][1]["platform"]["variant"].as_str(), Some("v8"));
    let arm_fetched = client.get_manifest("strata/multi", &arm.manifest_digest).await?;
    assert_eq!(sha256_digest(&arm_fetched.bytes), arm.manifest_digest);
    assert_eq!(
        index.image("linux/arm64/v8").map(|i| &i.manifest_digest),
        Some(&arm.manifest_digest)
    );

    // Docker schema 2 media types are accepted too.
    let docker = Image::builder()
        .layer(shared.clone())
        .docker_media_types()
        .build()?;
    let docker_list = Index::of(vec![docker.clone()])?;
    docker_list.push(&registry, "strata/docker", "v1").await?;
    let fetched = client.get_manifest("strata/docker", "v1").await?;
    assert_eq!(
        fetched.media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let fetched = client
        .get_manifest("strata/docker", &docker.manifest_digest)
        .await?;
    assert_eq!(
        fetched.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(sha256_digest(&fetched.bytes), docker.manifest_digest);

    // A layer whose stored bytes no longer match its digest.
    let bad = Layer::builder()
        .file("x", vec![1u8; 4096])
        .build(Compression::Gzip)?
        .with_mismatched_digest();
    let image = Image::builder().layer(bad.clone()).build()?;
    image.push(&registry, "strata/tampered", "v1").await?;
    let served = client.get_blob("strata/tampered", &bad.digest).await?;
    assert_eq!(served, bad.blob);
    assert_ne!(sha256_digest(&served), bad.digest);
    Ok(())
}

#[tokio::test]
async fn jetstream_work_queue_dedups_and_delivers_each_message_once() -> TestResult {
    const N: usize = 50;
    let mut nats = NatsServer::start()?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    js.create_stream(stream::Config {
        name: "JOBS".into(),
        subjects: vec!["jobs.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await?;

    for i in 0..N {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("job-{i}").as_str());
        let ack = js
            .publish_with_headers("jobs.layer", headers, format!("{i}").into())
            .await?
            .await?;
        assert!(!ack.duplicate);
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "job-3");
    let ack = js
        .publish_with_headers("jobs.layer", headers, "3 again".into())
        .await?
        .await?;
    assert!(ack.duplicate, "same Nats-Msg-Id must be deduplicated");
    let mut jobs = js.get_stream("JOBS").await?;
    assert_eq!(jobs.info().await?.state.messages, N as u64);

    // The stream is on disk: it survives a server restart on the same port.
    nats.restart()?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let jobs = js.get_stream("JOBS").await?;
    let consumer = jobs
        .create_consumer(consumer::pull::Config {
            durable_name: Some("workers".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;

    let mut seen: HashMap<String, usize> = HashMap::new();
    // Bounded: at most N + 10 batches, each at most 10 s.
    for _ in 0..N + 10 {
        if seen.len() == N {
            break;
        }
        let mut batch = consumer
            .batch()
            .max_messages(N)
            .expires(Duration::from_secs(10))
            .messages()
            .await?;
        while let Some(message) = batch.next().await {
            let message = message?;
            *seen
                .entry(String::from_utf8(message.payload.to_vec())?)
                .or_default() += 1;
            message.double_ack().await?;
        }
    }
    let expected: BTreeSet<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(
        seen.values().all(|&n| n == 1),
        "each message delivered once: {seen:?}"
    );
    // Work-queue retention removes acked messages.
    let mut jobs = js.get_stream("JOBS").await?;
    assert_eq!(jobs.info().await?.state.messages, 0);
    Ok(())
}

#[tokio::test]
async fn key_value_bucket_works_so_the_server_is_new_enough() -> TestResult {
    let nats = NatsServer::start()?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "fleet".into(),
            history: 1,
            ..Default::default()
        })
        .await?;
    bucket.put("sha256.abc", "analysed".into()).await?;
    assert_eq!(bucket.get("sha256.abc").await?.as_deref(), Some(&b"analysed"[..]));
    assert_eq!(bucket.get("sha256.missing").await?, None);
    assert!(nats.store_dir().is_dir());
    Ok(())
}

#[tokio::test]
async fn registry_with_htpasswd_refuses_anonymous_clients() -> TestResult {
    let registry = Registry::builder().htpasswd("strata", "s3cret").start()?;
    assert_eq!(registry.credentials(), Some(("strata", "s3cret")));
    let image = two_layer_image();

    let anonymous = registry.anonymous_client();
    let refused = image
        .push_with(&anonymous, "private/app", "v1")
        .await
        .expect_err("anonymous push");
    assert_eq!(refused.http_status(), Some(401), "{refused}");

    image.push(&registry, "private/app", "v1").await?;
    let refused = anonymous
        .get_manifest("private/app", "v1")
        .await
        .expect_err("anonymous pull");
    assert_eq!(refused.http_status(), Some(401), "{refused}");
    let refused = anonymous
        .get_blob("private/app", &image.layers[0].digest)
        .await
        .expect_err("anonymous blob");
    assert_eq!(refused.http_status(), Some(401), "{refused}");

    let wrong = strata_harness::RegistryClient::new(&registry.url(), Some(("strata".into(), "nope".into())));
    assert_eq!(
        wrong
            .get_manifest("private/app", "v1")
            .await
            .err()
            .and_then(|e| e.http_status()),
        Some(401)
    );

    let fetched = registry.client().get_manifest("private/app", "v1").await?;
    assert_eq!(sha256_digest(&fetched.bytes), image.manifest_digest);
    let blob = registry
        .client()
        .get_blob("private/app", &image.layers[1].digest)
        .await?;
    assert_eq!(sha256_digest(&blob), image.layers[1].digest);
    Ok(())
}

/// Every file under `blobs/sha256/` is named by its own sha256.
fn assert_blobs_named_by_digest(dir: &std::path::Path) -> TestResult {
    let mut count = 0;
    for entry in std::fs::read_dir(dir.join("blobs/sha256"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(
            sha256_digest(&std::fs::read(entry.path())?),
            format!("sha256:{name}")
        );
        count += 1;
    }
    assert!(count > 0);
    Ok(())
}

#[test]
fn oci_layout_blobs_match_their_names_and_descriptors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let image = two_layer_image();
    image.write_oci_layout(dir.path(), "v1")?;
    let arm = Image::builder()
        .layer(image.layers[0].clone())
        .platform("linux/arm64")
        .build()?;
    let index = Index::of(vec![image.clone(), arm])?;
    index.write_oci_layout(dir.path(), "multi")?;
    // Rewriting a tag replaces its entry instead of adding a second one.
    image.write_oci_layout(dir.path(), "v1")?;

    assert_blobs_named_by_digest(dir.path())?;
    let layout: Value = serde_json::from_slice(&std::fs::read(dir.path().join("oci-layout"))?)?;
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index_json: Value = serde_json::from_slice(&std::fs::read(dir.path().join("index.json"))?)?;
    let manifests = index_json["manifests"].as_array().cloned().unwrap_or_default();
    assert_eq!(manifests.len(), 2);
    let by_ref = |tag: &str| {
        manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .cloned()
            .unwrap_or_default()
    };
    let v1 = by_ref("v1");
    assert_eq!(v1["digest"].as_str(), Some(image.manifest_digest.as_str()));
    assert_eq!(v1["size"].as_u64(), Some(image.manifest.len() as u64));
    assert_eq!(
        by_ref("multi")["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );

    // Every descriptor reachable from the manifest points at a blob of that size and digest.
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let manifest: Value = serde_json::from_slice(&std::fs::read(
        dir.path().join("blobs/sha256").join(hex(&image.manifest_digest)),
    )?)?;
    let descriptors = manifest["layers"].as_array().cloned().unwrap_or_default();
    for d in descriptors.iter().chain([&manifest["config"]]) {
        let bytes = std::fs::read(
            dir.path()
                .join("blobs/sha256")
                .join(hex(d["digest"].as_str().unwrap_or(""))),
        )?;
        assert_eq!(Some(bytes.len() as u64), d["size"].as_u64());
    }
    Ok(())
}

fn read_archive(
    path: &std::path::Path,
) -> Result<HashMap<String, Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.insert(name, bytes);
    }
    Ok(files)
}

/// The `manifest.json` of a docker archive names a config whose sha256 is in
/// its name, and layer tars whose sha256 are the config's diff_ids, in order.
fn assert_docker_manifest(files: &HashMap<String, Vec<u8>>, repo_tag: &str) -> TestResult {
    let manifest: Value = serde_json::from_slice(files.get("manifest.json").ok_or("no manifest.json")?)?;
    let entry = &manifest[0];
    assert_eq!(entry["RepoTags"][0], repo_tag);
    let config_name = entry["Config"].as_str().ok_or("no Config")?;
    let config_bytes = files.get(config_name).ok_or("config missing")?;
    let config_hex = config_name
        .trim_start_matches("blobs/sha256/")
        .trim_end_matches(".json");
    assert_eq!(format!("sha256:{config_hex}"), sha256_digest(config_bytes));
    let config: Value = serde_json::from_slice(config_bytes)?;
    let layers = entry["Layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(layers.len(), 2);
    for (i, layer) in layers.iter().enumerate() {
        let tar = files.get(layer.as_str().unwrap_or("")).ok_or("layer missing")?;
        assert_eq!(
            Some(sha256_digest(tar).as_str()),
            config["rootfs"]["diff_ids"][i].as_str()
        );
    }
    Ok(())
}

#[test]
fn docker_archives_match_docker_save_formats() -> TestResult {
    let dir = tempfile::tempdir()?;
    let image = two_layer_image();

    let classic = dir.path().join("classic.tar");
    image.write_docker_archive(&classic, "strata/app:v1")?;
    let again = dir.path().join("again.tar");
    image.write_docker_archive(&again, "strata/app:v1")?;
    assert_eq!(
        std::fs::read(&classic)?,
        std::fs::read(&again)?,
        "archives are deterministic"
    );
    let files = read_archive(&classic)?;
    assert_docker_manifest(&files, "strata/app:v1")?;
    assert!(files.contains_key("repositories"));

    // Docker 25+: an OCI layout inside, and manifest.json pointing into blobs/.
    let oci = dir.path().join("oci.tar");
    image.write_docker_archive_oci(&oci, "strata/app:v2")?;
    let files = read_archive(&oci)?;
    assert_docker_manifest(&files, "strata/app:v2")?;
    for (name, bytes) in &files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_digest(bytes), format!("sha256:{hex}"));
        }
    }
    let index: Value = serde_json::from_slice(files.get("index.json").ok_or("no index.json")?)?;
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v2"
    );
    let manifest_digest = index["manifests"][0]["digest"].as_str().ok_or("no digest")?;
    let manifest_name = format!("blobs/sha256/{}", manifest_digest.trim_start_matches("sha256:"));
    let manifest: Value = serde_json::from_slice(files.get(&manifest_name).ok_or("manifest blob missing")?)?;
    assert_eq!(
        manifest["layers"][0]["digest"].as_str(),
        Some(image.layers[0].diff_id.as_str())
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    Ok(())
}

#[tokio::test]
async fn s3_server_creates_buckets() -> TestResult {
    let s3 = S3Server::start()?;
    s3.create_bucket("inventories")?;
    let listing = reqwest::get(s3.url()).await?.text().await?;
    assert!(listing.contains("<Name>inventories</Name>"), "{listing}");
    Ok(())
}

#[tokio::test]
async fn dropping_a_server_kills_it_and_removes_its_directory() -> TestResult {
    let nats = NatsServer::start()?;
    let (url, store) = (nats.url(), nats.store_dir());
    assert!(store.is_dir());
    drop(nats);
    assert!(!store.exists(), "{} left behind", store.display());
    assert!(async_nats::connect(&url).await.is_err(), "{url} still answers");

    let registry = Registry::start()?;
    let (storage, port) = (registry.storage_dir(), registry.port());
    drop(registry);
    assert!(!storage.exists(), "{} left behind", storage.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "registry port {port} still open"
    );
    Ok(())
}
