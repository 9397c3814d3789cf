//! A worker's layer job on real parts: blobs from a real registry (and from
//! object storage), inventories written to a local directory and to a real
//! S3-compatible server (moto), read back by content address.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use strata_harness::image::{Compression, Image, Layer};
use strata_harness::registry::Registry;
use strata_harness::s3::S3Server;
use strata_proto::v1::{self, blob_source::Location, layer_result::Outcome};
use strata_proto::{Digest, Ecosystem};
use strata_worker::job::{self, JobContext};

const STATUS: &str = "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.11-1~deb12u2\n\nPackage: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\n";

fn layer() -> Layer {
    Layer::builder()
        .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
        .file("var/lib/dpkg/status", STATUS)
        .build(Compression::Gzip)
        .unwrap()
}

fn registry_job(ctx: &JobContext, registry: &Registry, repo: &str, layer: &Layer) -> v1::LayerJob {
    v1::LayerJob {
        digest: layer.digest.clone(),
        media_type: layer.media_type().to_owned(),
        size: layer.size(),
        source: Some(v1::BlobSource {
            location: Some(Location::Registry(v1::RegistryBlob {
                registry: registry.host(),
                repository: repo.to_owned(),
                insecure: true,
            })),
        }),
        analyzer_set_version: ctx.analyzer_set_version(),
        priority: v1::Priority::Ci.into(),
        queued_unix_ms: 0,
    }
}

fn analysed(result: &v1::LayerResult) -> &v1::LayerAnalysed {
    match result.outcome.as_ref() {
        Some(Outcome::Analysed(a)) => a,
        other => panic!("expected analysed, got {other:?}"),
    }
}

fn failed(result: &v1::LayerResult) -> &v1::LayerFailed {
    match result.outcome.as_ref() {
        Some(Outcome::Failed(f)) => f,
        other => panic!("expected failed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_layer_is_analysed_once_and_stored_by_content_address() {
    let registry = Registry::start().unwrap();
    let layer = layer();
    let image = Image::builder().layer(layer.clone()).build().unwrap();
    image.push(&registry, "team/app", "1").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let mut ctx = JobContext::new("worker-1", store.clone());
    // A job may ask for plain HTTP only to a registry the worker lists.
    let refused = job::process(&ctx, &registry_job(&ctx, &registry, "team/app", &layer), 1).await;
    let f = failed(&refused);
    assert!(f.permanent, "{f:?}");
    assert!(
        f.error.contains("(registry policy: insecure_registries)"),
        "{f:?}"
    );
    ctx.source.insecure_registries.push(registry.host());
    let job = registry_job(&ctx, &registry, "team/app", &layer);

    let result = job::process(&ctx, &job, 1).await;
    assert_eq!(result.worker_id, "worker-1");
    assert_eq!(result.attempt, 1);
    let done = analysed(&result);
    assert_eq!(done.packages, 2);
    let digest: Digest = layer.digest.parse().unwrap();
    let key = job::inventory_key(&ctx.analyzer_set_version(), &digest);
    assert_eq!(done.inventory_key, key.to_string());
    assert!(key.to_string().starts_with("inventories/"));

    let inventory = job::read_inventory(store.as_ref(), &ctx.analyzer_set_version(), &digest)
        .await
        .unwrap();
    assert_eq!(inventory.digest.as_ref(), Some(&digest));
    assert!(
        inventory
            .packages
            .iter()
            .all(|p| p.layer.as_ref() == Some(&digest) && p.ecosystem == Ecosystem::Debian)
    );
    assert_eq!(
        inventory.os_release.as_ref().map(|o| o.version_id.as_str()),
        Some("12")
    );
    assert_eq!(registry.blob_fetch_count(&layer.digest).unwrap(), 1);

    // Running the same job again (a redelivery) writes the same bytes.
    let first = std::fs::read(dir.path().join(key.to_string())).unwrap();
    analysed(&job::process(&ctx, &job, 2).await);
    assert_eq!(std::fs::read(dir.path().join(key.to_string())).unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_blobs_fail_permanently_unreachable_registries_transiently() {
    let registry = Registry::start().unwrap();
    let good = layer();
    let corrupt = Layer::garbage(Compression::Gzip, b"\x1f\x8b\x08\x00 not deflate at all".to_vec());
    let image = Image::builder()
        .layer(good.clone())
        .layer(corrupt.clone())
        .build()
        .unwrap();
    image.push(&registry, "team/bad", "1").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = JobContext::new(
        "w",
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
    );
    ctx.source.insecure_registries = vec![registry.host(), "127.0.0.1:1".into()];

    let result = job::process(&ctx, &registry_job(&ctx, &registry, "team/bad", &corrupt), 1).await;
    let f = failed(&result);
    assert!(f.permanent, "{f:?}");
    assert!(f.error.contains(&corrupt.digest), "{}", f.error);

    // A blob served with the wrong bytes for its digest.
    let tampered = layer().with_mismatched_digest();
    let image = Image::builder().layer(tampered.clone()).build().unwrap();
    image.push(&registry, "team/tampered", "1").await.unwrap();
    let f = failed(
        &job::process(
            &ctx,
            &registry_job(&ctx, &registry, "team/tampered", &tampered),
            1,
        )
        .await,
    )
    .clone();
    assert!(!f.error.is_empty());

    // Nothing listens there (listed, so the policy lets it be tried):
    // transient, a retry may work.
    let mut job = registry_job(&ctx, &registry, "team/bad", &good);
    if let Some(Location::Registry(r)) = job.source.as_mut().and_then(|s| s.location.as_mut()) {
        r.registry = "127.0.0.1:1".into();
    }
    let f = failed(&job::process(&ctx, &job, 1).await).clone();
    assert!(!f.permanent, "{f:?}");

    // A job for another analyser set is left for a worker that runs it.
    let mut job = registry_job(&ctx, &registry, "team/bad", &good);
    job.analyzer_set_version = "someone-else".into();
    assert!(!failed(&job::process(&ctx, &job, 1).await).permanent);
    // A malformed digest can never succeed.
    job.digest = "sha256:nope".into();
    assert!(failed(&job::process(&ctx, &job, 1).await).permanent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventories_go_to_s3_and_blobs_can_come_from_object_storage() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("strata").unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(s3.url())
            .with_allow_http(true)
            .with_bucket_name("strata")
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    let ctx = JobContext::new("w", store.clone());

    // The blob itself lives in a local directory, named by a file:// URL.
    let blobs = tempfile::tempdir().unwrap();
    let layer = layer();
    let blob_path = blobs.path().join("layer.tar.gz");
    std::fs::write(&blob_path, &layer.blob).unwrap();
    let job = v1::LayerJob {
        digest: layer.digest.clone(),
        media_type: layer.media_type().to_owned(),
        size: layer.size(),
        source: Some(v1::BlobSource {
            location: Some(Location::ObjectStore(v1::ObjectStoreBlob {
                url: format!("file://{}", blob_path.display()),
            })),
        }),
        analyzer_set_version: ctx.analyzer_set_version(),
        priority: v1::Priority::Background.into(),
        queued_unix_ms: 0,
    };
    let done = analysed(&job::process(&ctx, &job, 1).await).clone();
    assert_eq!(done.packages, 2);
    let digest: Digest = layer.digest.parse().unwrap();
    let inventory = job::read_inventory(store.as_ref(), &ctx.analyzer_set_version(), &digest)
        .await
        .unwrap();
    assert_eq!(inventory.packages.len(), 2);
}
