//! `submit` of an image already scanned: one manifest `HEAD`, no config blob
//! GET, no image-record write; a tag moved to another image is noticed.
//! In process: a coordinator on the embedded state store with the
//! in-process queue and a worker (what `strata serve` runs), a registry
//! behind a counting proxy.

use std::time::Duration;

use strata_coordinator::cluster::SubmitRequest;
use strata_coordinator::cluster::records::{ScanRecord, image_key};
use strata_harness::{
    ClusterSandbox, Compression, Image, Index, Layer, Registry, RegistryProxy, SandboxQueue,
};
use strata_worker::run::WorkerOptions;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn image(marker: &str) -> Result<Image, BoxError> {
    Ok(Image::builder()
        .layer(
            Layer::builder()
                .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
                .file(
                    "var/lib/dpkg/status",
                    "Package: base\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n\n",
                )
                .build(Compression::Gzip)?,
        )
        .layer(
            Layer::builder()
                .file("srv/marker", marker)
                .build(Compression::Gzip)?,
        )
        .build()?)
}

/// A coordinator on the embedded state store with the in-process queue and
/// one worker of two slots, what `strata serve` runs.
async fn start(pull_host: &str) -> Result<ClusterSandbox, BoxError> {
    Ok(ClusterSandbox::builder()
        .queue(SandboxQueue::Memory)
        .workers(1)
        .worker_options(WorkerOptions {
            concurrency: 2,
            ..WorkerOptions::default()
        })
        .insecure_registry(pull_host)
        .start()
        .await?)
}

async fn submit(sandbox: &ClusterSandbox, reference: &str) -> Result<(ScanRecord, bool), BoxError> {
    submit_for(sandbox, reference, "").await
}

async fn submit_for(
    sandbox: &ClusterSandbox,
    reference: &str,
    platform: &str,
) -> Result<(ScanRecord, bool), BoxError> {
    Ok(sandbox
        .coordinator()
        .submit(SubmitRequest {
            reference: reference.to_owned(),
            platform: platform.to_owned(),
            insecure_registry: true,
            ..Default::default()
        })
        .await?)
}

async fn complete(sandbox: &ClusterSandbox, id: &str) -> Result<(), BoxError> {
    sandbox.wait_scan(id, Duration::from_secs(120)).await?;
    Ok(())
}

async fn image_revision(sandbox: &ClusterSandbox, reference: &str) -> Result<u64, BoxError> {
    Ok(sandbox
        .buckets()
        .images
        .get(&image_key(reference))
        .await?
        .ok_or("no image record")?
        .revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_is_cheap_and_a_moved_tag_is_noticed() -> Result<(), BoxError> {
    let registry = Registry::start()?;
    let proxy = RegistryProxy::builder(&registry).start()?;
    let a = image("a")?;
    let b = image("b")?;
    a.push(&registry, "app", "1").await?;
    let setup = start(&proxy.host()).await?;
    let reference = format!("{}/app:1", proxy.host());

    let (first, existed) = submit(&setup, &reference).await?;
    assert!(!existed);
    assert_eq!(first.image_digest, a.manifest_digest);
    complete(&setup, &first.id).await?;
    let config_gets = proxy.blob_requests(&a.config_digest);
    assert_eq!(config_gets, 1, "the first submit reads the config once");
    let revision = image_revision(&setup, &reference).await?;

    // Resubmits: the existing scan, without the config blob, without a
    // write, each for one manifest HEAD and no manifest GET.
    let (gets, heads) = (proxy.manifest_gets(), proxy.manifest_heads());
    for _ in 0..5 {
        let (again, existed) = submit(&setup, &reference).await?;
        assert!(existed);
        assert_eq!(again.id, first.id);
    }
    assert_eq!(proxy.manifest_gets(), gets, "a resubmit fetched the manifest");
    assert_eq!(proxy.manifest_heads(), heads + 5, "one HEAD per resubmit");
    assert_eq!(
        proxy.blob_requests(&a.config_digest),
        config_gets,
        "config fetched again"
    );
    assert_eq!(
        image_revision(&setup, &reference).await?,
        revision,
        "the unchanged image record was rewritten"
    );

    // The tag moves: a new scan of B.
    b.push(&registry, "app", "1").await?;
    let (moved, existed) = submit(&setup, &reference).await?;
    assert!(!existed, "the moved tag returned the old scan");
    assert_eq!(moved.image_digest, b.manifest_digest);
    assert_ne!(moved.id, first.id);
    assert_eq!(proxy.blob_requests(&b.config_digest), 1);
    complete(&setup, &moved.id).await?;
    assert!(
        image_revision(&setup, &reference).await? > revision,
        "the moved tag was not recorded"
    );
    let (again, existed) = submit(&setup, &reference).await?;
    assert!(existed);
    assert_eq!(again.id, moved.id);
    assert_eq!(proxy.blob_requests(&b.config_digest), 1);

    // And back to A: the earlier scan, still without fetching A's config.
    a.push(&registry, "app", "1").await?;
    let (back, existed) = submit(&setup, &reference).await?;
    assert!(existed);
    assert_eq!(back.id, first.id);
    assert_eq!(proxy.blob_requests(&a.config_digest), config_gets);

    // A digest reference needs no request at all to find its scan.
    let by_digest = format!("{}/app@{}", proxy.host(), b.manifest_digest);
    let before = proxy.requests();
    let (pinned, existed) = submit(&setup, &by_digest).await?;
    assert!(existed);
    assert_eq!(pinned.id, moved.id);
    assert_eq!(proxy.requests(), before, "a known digest asked the registry");
    assert_eq!(proxy.blob_requests(&b.config_digest), 1);

    setup.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_maps_per_platform() -> Result<(), BoxError> {
    let registry = Registry::start()?;
    let proxy = RegistryProxy::builder(&registry).start()?;
    let amd = Image::builder()
        .platform("linux/amd64")
        .layer(Layer::builder().file("srv/x", "amd").build(Compression::Gzip)?)
        .build()?;
    let arm = Image::builder()
        .platform("linux/arm64")
        .layer(Layer::builder().file("srv/x", "arm").build(Compression::Gzip)?)
        .build()?;
    let index = Index::of(vec![amd.clone(), arm.clone()])?;
    index.push(&registry, "multi", "1").await?;
    let setup = start(&proxy.host()).await?;
    let reference = format!("{}/multi:1", proxy.host());

    let (amd_scan, _) = submit(&setup, &reference).await?;
    assert_eq!(amd_scan.image_digest, amd.manifest_digest);
    let (arm_scan, existed) = submit_for(&setup, &reference, "linux/arm64").await?;
    assert!(!existed, "the index's arm64 image is another scan");
    assert_eq!(arm_scan.image_digest, arm.manifest_digest);
    complete(&setup, &amd_scan.id).await?;
    complete(&setup, &arm_scan.id).await?;
    let (amd_gets, arm_gets) = (
        proxy.blob_requests(&amd.config_digest),
        proxy.blob_requests(&arm.config_digest),
    );
    for _ in 0..3 {
        assert_eq!(submit(&setup, &reference).await?.0.id, amd_scan.id);
        assert_eq!(
            submit_for(&setup, &reference, "linux/arm64").await?.0.id,
            arm_scan.id
        );
    }
    assert_eq!(proxy.blob_requests(&amd.config_digest), amd_gets);
    assert_eq!(proxy.blob_requests(&arm.config_digest), arm_gets);
    setup.stop().await?;
    Ok(())
}
